"""dicomflow's own command line (dev and operations; not deployed): ``python -m tools <command>``.

``synth`` (a synthetic corpus), ``upload`` (files into the inbox, with every outcome), ``demo`` (the whole
pipeline on the local stack), ``config`` (AI models and routing rules, validated), ``reprocess`` (run
inference and routing again for stable studies). The local runtime itself is ``python -m devhost``; these
commands find it through its state files (tools/stack.py) or talk to Azure by identity.
"""
