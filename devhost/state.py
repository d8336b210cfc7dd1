"""The devhost's state directory (git-ignored ``.devhost/`` by default).

* ``keys.json``: the local function key and event-topic key, generated with :mod:`secrets`
  on first use (never a fixed default), readable only by the owner.
* ``state.json``: what ``up`` runs (pids, ports, functions), written by the running host,
  removed when it stops; ``down`` and ``status`` read it.
* ``events.jsonl``: the journal, one JSON object per line: ``{"kind": "published", ...}`` for
  every event the fabric accepted, ``{"kind": "delivered" | "deadlettered", "id", "subscription"}``
  when a delivery finished (the fabric resumes the unfinished ones on start).
* ``watcher.json``: the blobs the watcher has announced (name -> eTag per container).
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


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists": look at /proc where available.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


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
