"""Hostile headers: our bounded parse vs pydicom's own, file by file, memory and time.

    .venv/bin/python -m bench.hostile            # every shape, 2 repetitions (about 8 minutes)
    .venv/bin/python -m bench.hostile --quick    # 1 repetition

Each shape (``tests/hostile.py`` builds them in memory, small on the wire) is read in a fresh child
process, twice per repetition:

* ours: what ingest does before it writes, ``read_header_bytes`` + ``validate`` + ``to_dicom_json``
  (``shared/dicom/bounds.py`` meters it against the default ``DICOMFLOW_HEADER_*`` limits);
* pydicom: the same file through ``pydicom.dcmread(stop_before_pixels=True, defer_size=64 KiB)`` and
  ``to_json_dict()``, pydicom's own unbounded path (what the header parse amounted to before issue 19),
  under an address-space cap (``--cap-gib``, default 4) so a runaway is a MemoryError, not the machine
  swapping.

Per run: the outcome (parsed, or the reason/exception), wall time, and the child's peak resident memory
above what it held before the parse (``ru_maxrss``). The host-level figures (the function host's peak
through the inbox and STOW-RS) are measured by ``tests/e2e/test_hostile_e2e.py``.

Results: ``bench/results/hostile.json`` and the README table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import common
from bench.common import spread

MIB = 1024 * 1024
KIB = 1024


def shapes() -> dict[str, tuple[str, Callable[[], bytes]]]:
    # The test suite's builders (tests/ is not type-checked as the app is, so not followed by mypy here).
    hostile: Any = importlib.import_module("tests.hostile")
    instances: Any = importlib.import_module("tests.instances")
    instance, uid = instances.instance, instances.uid

    return {
        "ct": ("a normal CT slice (control)", lambda: instance(uid("b", 1), uid("b", 2), uid("b", 3))),
        "deflated": ("a normal deflated file (control)", lambda: hostile.deflated_ok("b-dfl")),
        "bomb": ("deflate bomb: 512 MiB of zeros inflated from 0.5 MiB", lambda: hostile.deflate_bomb("b-bomb")),
        "flood-defined": ("1,000,000 empty items, sequence of defined length",
                          lambda: hostile.item_flood("b-fd", 1_000_000)),
        "flood-undefined": ("1,000,000 empty items, undefined length",
                            lambda: hostile.item_flood("b-fu", 1_000_000, defined=False)),
        "flood-deflated": ("3,000,000 empty items, deflated", lambda: hostile.item_flood("b-fz", 3_000_000,
                                                                                          deflate=True)),
        "deep": ("sequences nested 20,000 deep", lambda: hostile.deep_nesting("b-deep", 20_000)),
    }


def _ours(data: bytes) -> str:
    from shared.dicom.dicomjson import to_dicom_json
    from shared.dicom.header import read_header_bytes
    from shared.dicom.validate import validate
    from shared.errors import BadInput

    try:
        h = read_header_bytes(data)
        s, se, i, _ = validate(h)
        doc = to_dicom_json(h, s, se, i)
    except BadInput as bad:
        return f"refused: {bad.reason}"
    return f"parsed ({len(doc)} attributes)"


def _pydicom(data: bytes) -> str:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, defer_size=64 * KIB)
    return f"parsed ({len(ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: 'x'))} " \
           "attributes)"


def _child(which: str, shape: str, cap: int, out: Any) -> None:
    import warnings

    import pydicom  # noqa: F401 - imported before the measurement, as in a running worker

    from shared.dicom import dicomjson, header  # noqa: F401 - likewise

    warnings.simplefilter("ignore")
    sys.setrecursionlimit(1000)
    data = shapes()[shape][1]()
    if which == "pydicom":
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB
    out.put({"before": before, "wire_kib": len(data) / KIB})
    t = time.perf_counter()
    try:
        outcome = (_ours if which == "ours" else _pydicom)(data)
    except Exception as exc:
        outcome = f"failed: {type(exc).__name__}"
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB
    out.put({"outcome": outcome, "seconds": seconds, "growth_mib": max(0, peak - before) / MIB,
             "wire_kib": len(data) / KIB})


def run_one(which: str, shape: str, cap: int, timeout: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(which, shape, cap, q))
    p.start()
    start: dict[str, Any] = q.get(timeout=60)  # the child's memory before the parse, the file's size
    p.join(timeout)
    if p.is_alive():
        peak = common.peak_rss(p.pid or 0)  # what it reached until now (VmHWM), then it is stopped
        p.kill()
        p.join()
        return {"outcome": f"no answer in {timeout:.0f} s (killed)", "seconds": timeout,
                "growth_mib": max(0, peak - start["before"]) / MIB, "wire_kib": start["wire_kib"]}
    if q.empty():
        return {"outcome": f"died (exit {p.exitcode})", "seconds": float("nan"), "growth_mib": float("nan"),
                "wire_kib": start["wire_kib"]}
    result: dict[str, Any] = q.get()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 2, --quick 1)")
    parser.add_argument("--cap-gib", type=float, default=4.0, help="address-space cap of pydicom's children")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a child is killed")
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 2)
    cap = int(args.cap_gib * 1024 * MIB)
    rows = []
    for shape, (label, _) in shapes().items():
        row: dict[str, Any] = {"shape": shape, "label": label}
        for which in ("ours", "pydicom"):
            runs = [run_one(which, shape, cap, args.timeout) for _ in range(reps)]
            row[which] = {"outcome": runs[-1]["outcome"], "seconds": spread([r["seconds"] for r in runs]),
                          "growth_mib": spread([r["growth_mib"] for r in runs])}
            row["wire_kib"] = runs[-1].get("wire_kib")
            print(f"{shape:16s} {which:8s} {row[which]['outcome']:40s} "
                  f"{row[which]['seconds']['median']:7.2f} s  +{row[which]['growth_mib']['median']:7.0f} MiB",
                  file=sys.stderr)
        rows.append(row)
    name = "hostile-quick" if args.quick else "hostile"
    path = common.save_result(name, {"reps": reps, "cap_gib": args.cap_gib, "rows": rows})
    print(json.dumps({"saved": str(path)}))
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
