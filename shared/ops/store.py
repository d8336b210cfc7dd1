"""Operation rows: one per long-running operation, in the operations table (keys in shared/index/keys.py)."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.index import keys, tables
from shared.ports import Row, TableStore


class Status(enum.StrEnum):
    """Operation status, as the Azure DICOM service names it."""

    NOT_STARTED = "notStarted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED})


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_operation_id(value: str) -> bool:
    """32 lower-case hex digits (how ids are made here)."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


@dataclass(slots=True)
class Operation:
    id: str
    type: str
    status: Status = Status.NOT_STARTED
    created: str = ""
    updated: str = ""
    percent: int = 0
    #: What the operation works on, as paths under the DICOMweb root (``extendedquerytags/00180050``).
    resources: list[str] = field(default_factory=list)
    #: What it reports (counts, errors): the ``results`` of the status JSON.
    results: dict[str, Any] = field(default_factory=dict)
    #: Its input, as the request that started it gave it (the handler's to read).
    params: dict[str, Any] = field(default_factory=dict)
    #: Where the next step resumes (the handler's own).
    cursor: dict[str, Any] = field(default_factory=dict)
    #: The next step does not start before this time (epoch seconds).
    not_before: float = 0.0
    #: A runner works on it until this time (epoch seconds); others leave it alone meanwhile.
    lease_until: float = 0.0
    #: Steps that ended in an unexpected error; at :data:`shared.ops.runner.MAX_FAILURES` it fails.
    failures: int = 0
    etag: str = ""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def to_entity(self) -> dict[str, Any]:
        pk, rk = keys.operation_keys(self.id)
        return {"PartitionKey": pk, "RowKey": rk, "type": self.type, "status": str(self.status),
                "created": self.created, "updated": self.updated, "percent": self.percent,
                "resources": orjson.dumps(self.resources).decode(), "results": orjson.dumps(self.results).decode(),
                "params": orjson.dumps(self.params).decode(), "cursor": orjson.dumps(self.cursor).decode(),
                "not_before": float(self.not_before), "lease_until": float(self.lease_until),
                "failures": self.failures}

    @classmethod
    def from_row(cls, row: Row) -> Operation:
        def doc(name: str, empty: Any) -> Any:
            raw = row.get(name)
            return orjson.loads(raw) if raw else empty

        return cls(id=str(row["PartitionKey"]), type=str(row.get("type", "")),
                   status=Status(str(row.get("status", Status.NOT_STARTED))), created=str(row.get("created", "")),
                   updated=str(row.get("updated", "")),
                   percent=int(row.get("percent", 0)), resources=doc("resources", []), results=doc("results", {}),
                   params=doc("params", {}), cursor=doc("cursor", {}), not_before=float(row.get("not_before", 0.0)),
                   lease_until=float(row.get("lease_until", 0.0)), failures=int(row.get("failures", 0)),
                   etag=row.etag)

    def to_json(self, base_url: str) -> dict[str, Any]:
        """The status document (the Azure DICOM service's operation shape); ``base_url`` is the DICOMweb
        root as the client addressed it."""
        out: dict[str, Any] = {"operationId": self.id, "type": self.type, "createdTime": self.created,
                               "lastUpdatedTime": self.updated, "status": str(self.status),
                               "percentComplete": self.percent}
        if self.resources:
            out["resources"] = [f"{base_url}/{r}" for r in self.resources]
        if self.results:
            out["results"] = self.results
        return out

    def reference(self, base_url: str) -> dict[str, str]:
        """``{"id", "href"}``: what a request that starts an operation answers with 202."""
        return {"id": self.id, "href": f"{base_url}/operations/{self.id}"}


class OperationStore:
    """The operations table. Writes after the first are conditional on the ETag last read, so two runners
    of one operation never both record a step (:class:`~shared.ports.RowChanged` for the loser)."""

    def __init__(self, tables_: TableStore) -> None:
        self.t = tables_

    def create(self, type_: str, *, params: dict[str, Any] | None = None, resources: list[str] | None = None,
               not_before: float = 0.0) -> Operation:
        now = now_iso()
        op = Operation(id=uuid.uuid4().hex, type=type_, created=now, updated=now, params=dict(params or {}),
                       resources=list(resources or []), not_before=not_before)
        op.etag = self.t.insert(tables.OPERATIONS, op.to_entity())
        return op

    def get(self, operation_id: str) -> Operation | None:
        if not is_operation_id(operation_id):
            return None
        row = self.t.get(tables.OPERATIONS, *keys.operation_keys(operation_id))
        return Operation.from_row(row) if row is not None else None

    def save(self, op: Operation) -> Operation:
        """Write ``op`` if nobody did since it was read (else :class:`~shared.ports.RowChanged`)."""
        op.updated = now_iso()
        op.etag = self.t.replace(tables.OPERATIONS, op.to_entity(), etag=op.etag)
        return op

    def unfinished(self, type_: str | None = None) -> list[Operation]:
        """Operations not completed or failed (of one type): a small table, read whole."""
        ops = [Operation.from_row(r) for r in self.t.query(tables.OPERATIONS)]
        return [o for o in ops if not o.done and (type_ is None or o.type == type_)]
