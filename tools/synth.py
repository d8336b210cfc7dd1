"""``python -m tools synth OUT_DIR``: write a realistic synthetic DICOM corpus.

The corpus (patients with non-ASCII names in several character sets, CT/MR series, a multi-frame
breast tomosynthesis instance, DX, a Comprehensive SR and a set of deliberately broken files) and
its ``manifest.json`` are described in :mod:`tools.corpus`. Examples::

    python -m tools synth /tmp/corpus                       # 6 patients, 40 CT slices each
    python -m tools synth /tmp/corpus --patients 2 --slices 5 --no-broken
    python -m tools synth /tmp/big --large-frames 128       # + a 1 GiB multi-frame instance
    python -m tools synth /tmp/phi --sentinel 'SENTINEL^LEAK' # every patient named SENTINEL^LEAK

Module interface for the tools CLI: :func:`add_arguments` and :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from tools.corpus import CorpusOptions, load_manifest, write_corpus

HELP = "write a synthetic DICOM corpus (good and deliberately broken files) with a manifest"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write (created if missing)")
    parser.add_argument("--patients", type=int, default=6, help="number of patients (default 6)")
    parser.add_argument("--slices", type=int, default=40,
                        help="CT slices per patient; MR series get half as many (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed for UIDs and pixel noise (default 0)")
    parser.add_argument("--broken", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the deliberately broken set under OUT_DIR/broken (default: yes)")
    parser.add_argument("--large-frames", type=int, default=0, metavar="N",
                        help="also write a multi-frame instance of N frames of 2048x2048 (8 MiB each; "
                             "128 = 1 GiB), streamed to disk")
    parser.add_argument("--size", type=int, default=256, metavar="PX",
                        help="rows and columns of CT/MR slices (default 256)")
    parser.add_argument("--sentinel", metavar="NAME", default=None,
                        help="use NAME as every patient's name (for PHI-leak tests)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    for name in ("patients", "slices", "size"):
        if getattr(args, name) < 1:
            print(f"synth: --{name} must be at least 1, got {getattr(args, name)}.", file=sys.stderr)
            return 2
    if args.large_frames < 0:
        print(f"synth: --large-frames must not be negative, got {args.large_frames}.", file=sys.stderr)
        return 2
    options = CorpusOptions(patients=args.patients, slices=args.slices, seed=args.seed, broken=args.broken,
                            large_frames=args.large_frames, sentinel=args.sentinel, rows=args.size, cols=args.size)
    started = time.monotonic()
    try:
        files = write_corpus(args.out_dir, options, progress=not args.quiet and sys.stderr.isatty())
    except (OSError, ValueError) as exc:
        print(f"synth: could not write the corpus to {args.out_dir}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    manifest = load_manifest(args.out_dir)
    print(summary(manifest, args.out_dir, elapsed))
    return 0 if files else 1


def summary(manifest: dict, out_dir: Path, elapsed: float) -> str:
    """A short table: files by kind and modality, bytes, where the manifest is."""
    files = manifest["files"]
    by_kind: Counter[str] = Counter()
    size: Counter[str] = Counter()
    for f in files:
        key = f["kind"] if f["kind"] != "good" else f"good {f.get('modality') or '?'}"
        by_kind[key] += 1
        size[key] += f["size_bytes"]
    lines = [f"Wrote {len(files)} files ({sum(size.values()) / 2**20:.1f} MiB) in {elapsed:.1f} s to {out_dir}"]
    width = max(len(k) for k in by_kind) if by_kind else 4
    for key in sorted(by_kind):
        lines.append(f"  {key:<{width}}  {by_kind[key]:>6} files  {size[key] / 2**20:>9.1f} MiB")
    expect = Counter(f["expect"] for f in files)
    lines.append(f"Expected outcomes: {', '.join(f'{k} {v}' for k, v in sorted(expect.items()))}")
    lines.append(f"Manifest: {Path(out_dir) / 'manifest.json'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools synth", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
