"""Where a migration is: one SQLite file per source and destination (standard library, crash-safe: every
change is a committed transaction), so an interrupted run resumes where it stopped.

One row per study of the window: its state (``pending`` → ``moving`` → ``verified`` | ``failed``), the
source's instance count when it was verified, how many instances were verified, the attempts and the
reason of the last failure. A ``verified`` study is skipped by the next run unless the source's count
has changed since (then it is moved again). Only UIDs, counts, states and reasons are kept: no
patient data (the reason sentences carry none either).

    sqlite3 .migrate/ORTHANC@127.0.0.1_4242.sqlite "select state, count(*) from studies group by state"
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PENDING: Final = "pending"
MOVING: Final = "moving"
VERIFIED: Final = "verified"
FAILED: Final = "failed"

_SCHEMA: Final = """
create table if not exists studies (
    study text primary key,
    state text not null,
    source_count integer,
    verified_instances integer not null default 0,
    attempts integer not null default 0,
    reason text not null default '',
    updated_at real not null
);
create table if not exists runs (
    id integer primary key autoincrement,
    started_at real not null,
    finished_at real,
    source text not null,
    destination text not null,
    window text not null,
    summary text
);
"""


@dataclass(frozen=True, slots=True)
class StudyState:
    study: str
    state: str
    source_count: int | None
    verified_instances: int
    attempts: int
    reason: str


class MigrationState:
    """The state file. Thread-safe (one connection, one lock): workers record as they go."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")  # a verified study survives a power cut
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, study: str) -> StudyState | None:
        with self._lock:
            row = self._db.execute("select study, state, source_count, verified_instances, attempts, reason "
                                   "from studies where study = ?", (study,)).fetchone()
        return StudyState(*row) if row else None

    def all(self) -> dict[str, StudyState]:
        with self._lock:
            rows = self._db.execute("select study, state, source_count, verified_instances, attempts, reason "
                                    "from studies").fetchall()
        return {r[0]: StudyState(*r) for r in rows}

    def _set(self, study: str, state: str, **values: object) -> None:
        cols = {"state": state, "updated_at": time.time(), **values}
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        updates = ", ".join(f"{k} = excluded.{k}" for k in cols)
        with self._lock:
            # Column names come from this module's own keywords, never from input: values are bound.
            self._db.execute(f"insert into studies (study, {names}) values (?, {marks}) "  # noqa: S608
                             f"on conflict(study) do update set {updates}", (study, *cols.values()))

    def planned(self, study: str) -> None:
        """A study of the window, recorded as pending unless it has a state already."""
        with self._lock:
            self._db.execute("insert or ignore into studies (study, state, updated_at) values (?, ?, ?)",
                             (study, PENDING, time.time()))

    def moving(self, study: str) -> None:
        with self._lock:
            self._db.execute("update studies set state = ?, attempts = attempts + 1, updated_at = ? where study = ?",
                             (MOVING, time.time(), study))

    def verified(self, study: str, source_count: int, instances: int) -> None:
        self._set(study, VERIFIED, source_count=source_count, verified_instances=instances, reason="")

    def failed(self, study: str, reason: str, instances: int = 0) -> None:
        self._set(study, FAILED, reason=reason, verified_instances=instances)

    def start_run(self, source: str, destination: str, window: str) -> int:
        with self._lock:
            cur = self._db.execute("insert into runs (started_at, source, destination, window) values (?, ?, ?, ?)",
                                   (time.time(), source, destination, window))
        return int(cur.lastrowid or 0)

    def finish_run(self, run: int, summary: str) -> None:
        with self._lock:
            self._db.execute("update runs set finished_at = ?, summary = ? where id = ?", (time.time(), summary, run))


def default_path(root: Path, source: str, destination: str) -> Path:
    """``.migrate/<source>_to_<destination>.sqlite``: one file per pair, so a resume finds it by itself."""
    def safe(text: str) -> str:
        return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)

    return root / ".migrate" / f"{safe(source)}_to_{safe(destination)}.sqlite"
