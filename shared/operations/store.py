"""Long-running operations: one record per operation, in the shape the Azure DICOM service reports.

``POST /studies/$bulkUpdate`` (and a patient merge) create an :class:`Operation`, lock its studies and put
one message on :data:`shared.storage.layout.OPERATIONS_QUEUE`; the ``operations`` function runs it and
saves progress on the record as it goes, so ``GET /operations/{id}`` reports it and a re-delivered
message resumes where the record says. The status JSON (:meth:`Operation.status_json`)::

    {"operationId": "1323c0...", "id": "1323c0...", "type": "update", "createdTime": "...Z",
     "lastUpdatedTime": "...Z", "status": "running", "percentComplete": 40,
     "resources": ["https://.../api/dicomweb/studies/1.2.3"],
     "results": {"studyProcessed": 2, "studyUpdated": 2, "studyFailed": 0, "instanceUpdated": 16,
                 "errors": []}}

``operationId`` is the Azure service's name for the id (``id`` is given too, as in the reference the
POST answers). Status values: ``notStarted``, ``running``, ``completed``, ``failed``; the HTTP answer is
202 while an operation runs and 200 once it has ended.

Study locks: one operation per study at a time. A study's lock row names the operation that holds it;
a lock whose operation has ended (or made no progress for :data:`STALE_SECONDS`: its worker and every
retry died) is taken over.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.index import keys, tables
from shared.index.store import utcnow
from shared.ports import Row, RowChanged, RowExists, TableStore

#: Archive blob metadata: the operation that wrote this version of an instance (routing's ``resendUpdates``
#: sends such a version again).
OPERATION_META: Final = "dicomflow_operation"
#: An operation that made no progress for this long no longer holds its studies.
STALE_SECONDS: Final = 1800.0
#: Errors kept on a record (a table property holds 64 KiB): the count says how many there were.
MAX_ERRORS: Final = 100


class OperationStatus(enum.StrEnum):
    NOT_STARTED = "notStarted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (OperationStatus.COMPLETED, OperationStatus.FAILED)


class OperationType(enum.StrEnum):
    UPDATE = "update"


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(slots=True)
class Operation:
    """One operation: what it was asked to do (``spec``), over which studies, and how far it got."""

    id: str
    type: OperationType
    studies: list[str]
    spec: dict[str, Any]
    #: Who asked (a token's subject, ``cli:<user>``): for the audit record.
    actor: str = ""
    status: OperationStatus = OperationStatus.NOT_STARTED
    created: str = field(default_factory=utcnow)
    updated: str = field(default_factory=utcnow)
    #: Studies finished (updated or failed), in the order they were done.
    done: list[str] = field(default_factory=list)
    study_updated: int = 0
    study_failed: int = 0
    instance_updated: int = 0
    instance_total: int = 0
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    #: The study being worked on, and how many of its instances are done (progress within it).
    current: str = ""
    current_done: int = 0
    current_total: int = 0
    #: Epoch seconds of the last saved progress (stale locks are judged by it).
    heartbeat: float = field(default_factory=time.time)
    etag: str = ""

    @property
    def percent(self) -> int:
        if self.status is OperationStatus.COMPLETED:
            return 100
        if not self.studies:
            return 100 if self.status.ended else 0
        part = self.current_done / self.current_total if self.current and self.current_total else 0.0
        return min(99 if not self.status.ended else 100, int(100 * (len(self.done) + part) / len(self.studies)))

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def status_json(self, base_url: str = "") -> dict[str, Any]:
        """The Azure DICOM service's operation status shape (``base_url``: the DICOMweb root)."""
        results: dict[str, Any] = {
            "studyProcessed": len(self.done), "studyUpdated": self.study_updated, "studyFailed": self.study_failed,
            "instanceUpdated": self.instance_updated + (self.current_done if self.current else 0),
        }
        if self.errors:
            results["errors"] = list(self.errors)
            if self.error_count > len(self.errors):
                results["errors"].append(f"... and {self.error_count - len(self.errors)} more")
        root = base_url.rstrip("/")
        return {
            "operationId": self.id, "id": self.id, "type": str(self.type), "createdTime": self.created,
            "lastUpdatedTime": self.updated, "status": str(self.status), "percentComplete": self.percent,
            "resources": [f"{root}/studies/{s}" for s in self.studies],
            "results": results,
        }

    def to_entity(self) -> dict[str, Any]:
        pk, rk = keys.operation_keys(self.id)
        return {
            "PartitionKey": pk, "RowKey": rk, "type": str(self.type), "status": str(self.status),
            "studies": orjson.dumps(self.studies).decode(), "spec": orjson.dumps(self.spec).decode(),
            "actor": self.actor, "created": self.created, "updated": self.updated,
            "done": orjson.dumps(self.done).decode(), "study_updated": self.study_updated,
            "study_failed": self.study_failed, "instance_updated": self.instance_updated,
            "instance_total": self.instance_total, "errors": orjson.dumps(self.errors).decode(),
            "error_count": self.error_count, "heartbeat": self.heartbeat, "current": self.current,
            "current_done": self.current_done, "current_total": self.current_total,
        }

    @classmethod
    def from_row(cls, row: Row) -> Operation:
        return cls(
            id=str(row["RowKey"]), type=OperationType(str(row.get("type", "update"))),
            studies=list(orjson.loads(str(row.get("studies") or "[]"))),
            spec=dict(orjson.loads(str(row.get("spec") or "{}"))), actor=str(row.get("actor", "")),
            status=OperationStatus(str(row.get("status", "notStarted"))), created=str(row.get("created", "")),
            updated=str(row.get("updated", "")), done=list(orjson.loads(str(row.get("done") or "[]"))),
            study_updated=int(row.get("study_updated", 0)), study_failed=int(row.get("study_failed", 0)),
            instance_updated=int(row.get("instance_updated", 0)), instance_total=int(row.get("instance_total", 0)),
            errors=list(orjson.loads(str(row.get("errors") or "[]"))), error_count=int(row.get("error_count", 0)),
            heartbeat=float(row.get("heartbeat", 0.0)), current=str(row.get("current", "")),
            current_done=int(row.get("current_done", 0)), current_total=int(row.get("current_total", 0)),
            etag=row.etag,
        )


@dataclass(frozen=True, slots=True)
class OperationMessage:
    """The queue message that runs (or resumes) an operation."""

    operation: str

    def to_message(self) -> str:
        return orjson.dumps({"operation": self.operation}).decode()

    @classmethod
    def from_message(cls, body: bytes | str) -> OperationMessage:
        """Parse a queue message; one that is not ours raises ``ValueError`` (the trigger's poison handling
        parks it after its retries)."""
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("operation"), str) or not doc["operation"]:
            raise ValueError("An operations message is a JSON object with an 'operation' id.")
        return cls(str(doc["operation"]))


@dataclass(frozen=True, slots=True)
class Conflict:
    """A study another operation holds."""

    study: str
    operation: str


class OperationStore:
    """Operation records and study locks in :data:`shared.index.tables.OPERATIONS`."""

    def __init__(self, tables_: TableStore) -> None:
        self.t = tables_

    def get(self, operation_id: str) -> Operation | None:
        row = self.t.get(tables.OPERATIONS, *keys.operation_keys(operation_id))
        return Operation.from_row(row) if row is not None else None

    def create(self, op: Operation) -> Operation:
        op.etag = self.t.insert(tables.OPERATIONS, op.to_entity())
        return op

    def save(self, op: Operation) -> Operation:
        """Write the record as changed by its one runner (conditional: a second runner of the same
        operation, a re-delivered message, gets :class:`RowChanged` and stops)."""
        op.updated = utcnow()
        op.heartbeat = time.time()
        op.etag = self.t.replace(tables.OPERATIONS, op.to_entity(), etag=op.etag or "*")
        return op

    def recent(self, limit: int = 50) -> list[Operation]:
        """The latest operations (newest first), for ``python -m tools update list``."""
        rows = self.t.query(tables.OPERATIONS, pk=keys.OPERATION_PARTITION)
        ops = sorted((Operation.from_row(r) for r in rows), key=lambda o: o.created, reverse=True)
        return ops[:limit]

    # -- study locks ----------------------------------------------------------------------------
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
        entity = {"PartitionKey": pk, "RowKey": rk, "operation": operation_id, "at": utcnow()}
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
            if self.live(holder):
                return holder
            try:
                self.t.replace(tables.OPERATIONS, entity, etag=row.etag)
                return None
            except RowChanged:
                continue
        row = self.t.get(tables.OPERATIONS, pk, rk)
        return str(row.get("operation", "?")) if row is not None else "?"

    def live(self, operation_id: str) -> bool:
        """Whether the operation still holds its studies (not ended, not stale)."""
        op = self.get(operation_id)
        if op is None or op.status.ended:
            return False
        return time.time() - op.heartbeat < STALE_SECONDS

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

    def holder(self, study: str) -> str | None:
        row = self.t.get(tables.OPERATIONS, *keys.study_lock_keys(study))
        return str(row["operation"]) if row is not None else None

