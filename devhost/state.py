"""The devhost's state directory (git-ignored ``.devhost/`` by default).

* ``keys.json``: the local function key and event-topic key, generated with :mod:`secrets`
  on first use (never a fixed default), readable only by the owner.
* ``state.json``: what ``up`` runs (pids, ports, functions), written by the running host,
  removed when it stops; ``down`` and ``status`` read it.
* ``events.jsonl``: the journal, one JSON object per line: ``{"kind": "published", ...}`` for
  every event the fabric accepted, ``{"kind": "delivered" | "deadlettered", "id", "subscription"}``
  when a delivery finished (the fabric resumes the unfinished ones on start).
* ``watcher.json``: the blobs the watcher has announced (name -> eTag per container).
* ``children.json``: every process ``up`` started (``host``, ``azurite``, ``func``), written the moment
  it starts: pid, process start time (so a recycled pid is never taken for ours) and what it holds
  (ports, data folder). ``down`` stops what is recorded there even when the host itself was killed,
  and the next ``up`` adopts (Azurite on the same ports and folder) or stops what a dead host left.

Other tools may read ``state.json`` and ``keys.json`` as plain JSON (they are the devhost's
interface to the app's own CLI): ``state.json`` holds ``pid``, ``ready``, ``http_port``,
``route_prefix``, ``fabric_port``, ``azurite.ports`` and ``endpoints`` (the values of the
non-secret ``{devhost:...}`` placeholders: ``storage``, ``events_endpoint``, ``http_url``...);
``keys.json`` holds ``function`` and ``events``; ``events.jsonl`` is the journal described above.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from devhost.azurite import ROOT
from devhost.procs import pid_alive, read_json, write_json  # the state files' readers (re-exported)

DEFAULT_DIR = ROOT / ".devhost"
_lock = threading.Lock()


def keys_path(state_dir: Path) -> Path:
    return state_dir / "keys.json"


def load_keys(state_dir: Path) -> dict[str, str]:
    """The local keys, created on first use."""
    path = keys_path(state_dir)
    with _lock:
        try:
            keys = json.loads(path.read_text())
            if isinstance(keys, dict) and keys.get("function") and keys.get("events"):
                return {"function": str(keys["function"]), "events": str(keys["events"])}
        except (OSError, ValueError):
            pass
        state_dir.mkdir(parents=True, exist_ok=True)
        keys = {"function": secrets.token_urlsafe(32), "events": secrets.token_urlsafe(32)}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keys, fh)
        tmp.replace(path)
        return keys


def state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def journal_path(state_dir: Path) -> Path:
    return state_dir / "events.jsonl"


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def children_path(state_dir: Path) -> Path:
    return state_dir / "children.json"


def process_started(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), or None if it does not exist."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def record_child(state_dir: Path, role: str, pid: int, **info: Any) -> None:
    """Note a process ``up`` started (see the module docstring), before anything else can fail."""
    with _lock:
        data = read_children(state_dir)
        data[role] = {"pid": pid, "started": process_started(pid), **info}
        write_json(children_path(state_dir), data)


def forget_child(state_dir: Path, role: str) -> None:
    with _lock:
        data = read_children(state_dir)
        if data.pop(role, None) is not None:
            if data:
                write_json(children_path(state_dir), data)
            else:
                remove(children_path(state_dir))


def read_children(state_dir: Path) -> dict[str, dict[str, Any]]:
    data = read_json(children_path(state_dir))
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("pid"), int)}


def child_alive(record: dict[str, Any]) -> bool:
    """The recorded process still runs, and it is the same process (not a recycled pid)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    started, recorded = process_started(pid), record.get("started")
    return started is None or recorded is None or abs(started - float(recorded)) < 1.0


class Journal:
    """Append-only JSON lines, safe across threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)


def read_journal(state_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        lines = journal_path(state_dir).read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if kind is None or rec.get("kind") == kind:
            out.append(rec)
    return out
