"""AI inference on stable series: a model protocol, a registry read from the config
container, a built-in deterministic model, and highdicom writers (SEG + SR).

Layout: ``model.py`` (the protocol and value types), ``pixels.py`` (decoded pixel
data and geometry), ``builtin.py`` (the offline body/tissue segmentation model),
``registry.py`` (which models run, from ``dicomflow-config``), ``writers.py``
(DICOM SEG and TID 1500 SR with deterministic UIDs), ``service.py`` (one call per
event: read the archive, run models, write results to the inbox).
"""
