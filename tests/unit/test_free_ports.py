"""The local port allocator: never a port another live taker holds, never the kernel's ephemeral range."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devhost import procs

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_allocating_at_once_never_share_a_port_and_stay_below_the_ephemeral_range() -> None:
    # Each taker lives until both have answered (a reservation ends with its taker).
    code = ("import json, sys; from devhost import procs; print(json.dumps(procs.free_ports(150)), flush=True);"
            " sys.stdin.read()")
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True) for _ in range(2)]
    try:
        first, second = (set(json.loads(r.stdout.readline())) for r in runs if r.stdout)
    finally:
        for r in runs:
            r.communicate(timeout=60)
    assert len(first) == len(second) == 150
    assert not first & second
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(first | second) < low


def test_a_listening_port_and_a_live_reservation_are_skipped_and_a_dead_ones_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(procs, "PORTS_DIR", tmp_path)
    # Above the ephemeral range: neither the kernel nor the allocator (for other workers) hands these out.
    base = next(b for b in range(61100, 65500, 7) if all(procs._bindable(b + i) for i in range(3)))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        monkeypatch.setattr(procs, "_listen_range", lambda: range(base, base + 3))
        (tmp_path / str(base + 1)).write_text(str(procs.os.getpid()))  # held by a live process: this one
        (tmp_path / str(base + 2)).write_text("999999999")  # its taker is gone
        assert procs.free_ports(1) == [base + 2]
        with pytest.raises(OSError, match="no 1 free local ports"):
            procs.free_ports(1)

