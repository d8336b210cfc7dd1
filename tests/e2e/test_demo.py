"""`make demo` is a promise to a newcomer: it runs the whole pipeline and says so."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil

from devhost.azurite import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_pipeline_and_leaves_nothing_running(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(5)]
    argv = [sys.executable, "-m", "devhost", "demo", "--http-port", str(ports[0]), "--fabric-port", str(ports[1]),
            "--azurite-ports", ",".join(map(str, ports[2:])), "--azurite-dir", str(tmp_path / "azurite"),
            "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    counts = dict(re.findall(r"^\s+(archived|quarantined)\s+(\d+)$", out, re.M))
    assert int(counts["archived"]) > 40 and int(counts["quarantined"]) >= 10, out
    assert "PatientName=muller* (case- and accent-insensitive) -> " in out
    assert re.search(r"QIDO finds [1-9]\d* SEG/SR series", out), out[-2000:]
    assert re.search(r"files received by storescp: [1-9]", out), out[-2000:]
    assert "devhost stopped" in out
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))]
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
