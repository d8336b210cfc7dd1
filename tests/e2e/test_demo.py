"""`make demo` is a promise to a newcomer: it runs the whole pipeline and says so, the same way every time.
Run twice on one checkout (same state and Azurite data folders), the second run uploads new studies, not
duplicates, and reports the counts of its own run, not the sum of both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil

from devhost.azurite import free_port

ROOT = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path) -> str:
    ports = [free_port() for _ in range(5)]
    argv = [sys.executable, "-m", "tools", "demo", "--http-port", str(ports[0]), "--fabric-port", str(ports[1]),
            "--azurite-ports", ",".join(map(str, ports[2:])), "--azurite-dir", str(tmp_path / "azurite"),
            "--state-dir", str(tmp_path / "state"), "--settings", str(ROOT / "local.settings.example.json"),
            "--patients", "1", "--slices", "6", "--size", "64"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def facts(out: str) -> dict[str, int]:
    """The numbers a newcomer reads off one run."""
    upload = dict(re.findall(r"^\s+(archived|quarantined|duplicate|updated)\s+(\d+)$", out, re.M))
    events = dict(re.findall(r"^(Dicom\.\w+|Microsoft\.Storage\.\w+)\s+(\d+)$", out, re.M))
    found = {
        "archived": int(upload.get("archived", 0)),
        "quarantined": int(upload.get("quarantined", 0)),
        "duplicate": int(upload.get("duplicate", 0)) + int(upload.get("updated", 0)),
        "muller": int(re.search(r"PatientName=muller\* .* -> (\d+) study", out).group(1)),  # type: ignore[union-attr]
        "seg_sr_series": int(re.search(r"QIDO finds (\d+) SEG/SR series", out).group(1)),  # type: ignore[union-attr]
        "received": int(re.search(r"files received by storescp: (\d+)", out).group(1)),  # type: ignore[union-attr]
    }
    for kind in ("Dicom.ImageCreated", "Dicom.IngestFailed", "Dicom.InferenceCompleted"):
        found[kind] = int(events.get(kind, 0))
    return found


def test_demo_runs_the_pipeline_twice_the_same_way_and_leaves_nothing_running(tmp_path: Path) -> None:
    first = demo(tmp_path)
    one = facts(first)
    assert one["archived"] >= 10 and one["quarantined"] >= 10 and one["duplicate"] == 0, first
    assert one["muller"] >= 1 and one["seg_sr_series"] >= 1 and one["received"] >= 1, first[-2000:]
    assert one["Dicom.ImageCreated"] >= one["archived"]  # every stored instance announced (AI results may follow)
    assert "RoutingFailed: 0;" in first, first[-2000:]  # every routed instance reached the reading room
    assert "/microscopy?StudyInstanceUIDs=" in first or "Read the studies in OHIF" not in first  # the slide's link
    assert "devhost stopped" in first

    second = demo(tmp_path)
    two = facts(second)
    # The same numbers (not the sum of both runs, not duplicates); event counts that depend on when the
    # AI results' own settle runs (ImageCreated of the results) are left out.
    same = ("archived", "quarantined", "duplicate", "muller", "seg_sr_series", "Dicom.IngestFailed")
    assert {k: two[k] for k in same} == {k: one[k] for k in same}, (first[-3000:], second[-3000:])
    assert two["received"] >= 1 and two["Dicom.ImageCreated"] >= two["archived"]
    assert "devhost stopped" in second
    leftovers = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers
