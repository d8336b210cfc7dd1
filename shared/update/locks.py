"""One bulk update per study at a time: a lock row per study, naming the operation that holds it.

The rows live beside the operation rows (:func:`shared.index.keys.study_lock_keys`). A lock is taken before
its operation is created (so no step can start on a study another operation holds) and released when the
operation ends; a lock whose operation has ended, or made no progress for :data:`STALE_SECONDS` (its runner
and every retry died), or was never created (:data:`CREATE_GRACE_SECONDS` after the lock), is taken over.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from shared.index import keys, tables
from shared.ops.store import OperationStore
from shared.ports import RowChanged, RowExists, TableStore

STALE_SECONDS: Final = 1800.0
CREATE_GRACE_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class Conflict:
    """A study another live operation holds."""

    study: str
    operation: str


class StudyLocks:
    def __init__(self, tables_: TableStore) -> None:
        self.t = tables_
        self.ops = OperationStore(tables_)

    def lock(self, operation_id: str, studies: Sequence[str]) -> list[Conflict]:
        """Lock every study for ``operation_id``, or none: the studies other live operations hold."""
        taken: list[str] = []
        conflicts: list[Conflict] = []
        for study in studies:
            holder = self._take(operation_id, study)
            if holder is None:
                taken.append(study)
            else:
                conflicts.append(Conflict(study, holder))
        if conflicts:
            self.unlock(operation_id, taken)
        return conflicts

    def _take(self, operation_id: str, study: str) -> str | None:
        """None when ``operation_id`` now holds ``study``, else the live operation that does."""
        pk, rk = keys.study_lock_keys(study)
        entity = {"PartitionKey": pk, "RowKey": rk, "operation": operation_id, "at": time.time()}
        for _ in range(3):
            try:
                self.t.insert(tables.OPERATIONS, entity)
                return None
            except RowExists:
                pass
            row = self.t.get(tables.OPERATIONS, pk, rk)
            if row is None:
                continue
            holder = str(row.get("operation", ""))
            if holder == operation_id:
                return None
            if self.live(holder, locked_at=float(row.get("at", 0.0))):
                return holder
            try:
                self.t.replace(tables.OPERATIONS, entity, etag=row.etag)
                return None
            except RowChanged:
                continue
        return self.holder(study) or "?"

    def live(self, operation_id: str, *, locked_at: float = 0.0) -> bool:
        """Whether ``operation_id`` still holds what it locked."""
        op = self.ops.get(operation_id)
        if op is None:
            return time.time() - locked_at < CREATE_GRACE_SECONDS  # being created right now
        if op.done:
            return False
        try:
            updated = dt.datetime.fromisoformat(op.updated.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return True
        return time.time() - updated < STALE_SECONDS

    def holder(self, study: str) -> str | None:
        row = self.t.get(tables.OPERATIONS, *keys.study_lock_keys(study))
        return str(row["operation"]) if row is not None else None

    def held(self, studies: Iterable[str]) -> list[Conflict]:
        """The studies of ``studies`` a live operation holds now."""
        out = []
        for study in studies:
            row = self.t.get(tables.OPERATIONS, *keys.study_lock_keys(study))
            if row is not None and self.live(str(row["operation"]), locked_at=float(row.get("at", 0.0))):
                out.append(Conflict(study, str(row["operation"])))
        return out

    def unlock(self, operation_id: str, studies: Iterable[str]) -> None:
        """Release the studies ``operation_id`` holds (a lock another operation took over stays)."""
        for study in studies:
            pk, rk = keys.study_lock_keys(study)
            row = self.t.get(tables.OPERATIONS, pk, rk)
            if row is None or str(row.get("operation", "")) != operation_id:
                continue
            try:
                self.t.delete(tables.OPERATIONS, pk, rk, etag=row.etag)
            except RowChanged:
                continue
