"""``python -m bench`` (``make bench``): every benchmark in turn, then bench/README.md.

    python -m bench            # full sizes (about 45 minutes on the 2-core machine)
    python -m bench --quick    # small sizes (about 8 minutes)

Each benchmark runs as its own process (fresh memory, one failure does not stop the others);
the exit code is 1 if any failed. Orthanc is installed first if missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT

BENCHMARKS = ("bench.ingest", "bench.large", "bench.query", "bench.dimse", "bench.hostile", "bench.follow",
              "bench.update", "bench.retrieve", "bench.migrate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="run every benchmark, rewrite bench/README.md")
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--only", choices=[b.split(".")[1] for b in BENCHMARKS], action="append",
                        help="run only these (repeatable)")
    args = parser.parse_args(argv)
    from bench.orthanc import ensure_installed

    ensure_installed()
    failed = []
    for module in BENCHMARKS:
        if args.only and module.split(".")[1] not in args.only:
            continue
        print(f"== {module}", file=sys.stderr)
        code = subprocess.call([sys.executable, "-m", module, *(["--quick"] if args.quick else [])], cwd=ROOT)
        if code != 0:
            failed.append(module)
    from bench.report import render

    render()
    if failed:
        print(f"failed: {', '.join(failed)} (see above); the README keeps their last results", file=sys.stderr)
        return 1
    print("bench/README.md rewritten", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
