"""The extended query tags table, and the per-process cache that ingest and QIDO-RS read.

Ingest and QIDO-RS never read the table on their path: :class:`TagCache` holds the list for
``DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS`` (60 by default) and is filled when a process gets ready
(:meth:`shared.services.Services.ensure_ready`). So a process may index new uploads with a list up to that
old; the reindex operation of a new tag therefore starts only once every process has seen the tag and
every write made with an older list has landed (:func:`reindex_delay`), and it indexes whatever such
writes left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from shared.extended.tags import DELETING, ExtendedTag
from shared.index import keys, tables
from shared.index.store import utcnow
from shared.ports import Row, RowChanged, TableOp, TableStore

BATCH = 100


@dataclass(frozen=True, slots=True)
class ErrorRow:
    study: str
    series: str
    sop: str
    created: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"studyInstanceUid": self.study, "seriesInstanceUid": self.series, "sopInstanceUid": self.sop,
                "createdTime": self.created, "errorMessage": self.message}


@dataclass(frozen=True, slots=True)
class NewError:
    """An indexing error to record: the tag's path, the instance, and what failed (never the value)."""

    path: str
    study: str
    series: str
    sop: str
    message: str


class TagStore:
    def __init__(self, tables_: TableStore) -> None:
        self.t = tables_

    def all(self) -> list[ExtendedTag]:
        return [ExtendedTag.from_entity(r) for r in self.t.query(tables.EXTENDED_TAGS,
                                                                 pk=keys.EXTENDED_TAG_PARTITION)]

    def get(self, path: str) -> tuple[ExtendedTag, str] | None:
        row = self.t.get(tables.EXTENDED_TAGS, *keys.extended_tag_keys(path))
        return (ExtendedTag.from_entity(row), row.etag) if row is not None else None

    def add(self, tags: Sequence[ExtendedTag]) -> None:
        """All of them or none (one transaction): :class:`~shared.ports.RowExists` if one exists already."""
        ops = [TableOp("insert", t.to_entity(*keys.extended_tag_keys(t.path))) for t in tags]
        for i in range(0, len(ops), BATCH):
            self.t.transact(tables.EXTENDED_TAGS, ops[i:i + BATCH])

    def replace(self, tag: ExtendedTag, etag: str) -> str:
        """Conditional on ``etag`` (:class:`~shared.ports.RowChanged` if it changed)."""
        return self.t.replace(tables.EXTENDED_TAGS, tag.to_entity(*keys.extended_tag_keys(tag.path)), etag=etag)

    def delete(self, path: str) -> None:
        """The tag and its errors."""
        self.t.delete(tables.EXTENDED_TAGS, *keys.extended_tag_keys(path))
        pk = keys.extended_error_partition(path)
        rows = [TableOp("delete", {"PartitionKey": pk, "RowKey": r["RowKey"]})
                for r in self.t.query(tables.EXTENDED_TAGS, pk=pk, select=["PartitionKey", "RowKey"])]
        for i in range(0, len(rows), BATCH):
            try:
                self.t.transact(tables.EXTENDED_TAGS, rows[i:i + BATCH])
            except RowChanged:  # one of them is gone already (a concurrent delete): one by one
                for op in rows[i:i + BATCH]:
                    self.t.delete(tables.EXTENDED_TAGS, pk, op.entity["RowKey"])

    # -- errors ------------------------------------------------------------------------------------
    def record_errors(self, errors: Iterable[NewError]) -> None:
        """Upsert error rows (one batch per tag and 100) and flag their tags (idempotent: a repeated
        indexing of one instance keeps one row)."""
        now = utcnow()
        by_path: dict[str, list[TableOp]] = {}
        for e in errors:
            pk, rk = keys.extended_error_keys(e.path, e.study, e.series, e.sop)
            by_path.setdefault(e.path, []).append(TableOp("upsert", {
                "PartitionKey": pk, "RowKey": rk, "study": e.study, "series": e.series, "sop": e.sop,
                "created": now, "message": e.message}))
        for path, ops in by_path.items():
            for i in range(0, len(ops), BATCH):
                self.t.transact(tables.EXTENDED_TAGS, ops[i:i + BATCH])
            pk, rk = keys.extended_tag_keys(path)
            self.t.merge(tables.EXTENDED_TAGS, {"PartitionKey": pk, "RowKey": rk, "has_errors": True})

    def errors(self, path: str) -> list[ErrorRow]:
        return [ErrorRow(str(r["study"]), str(r["series"]), str(r["sop"]), str(r.get("created", "")),
                         str(r.get("message", "")))
                for r in self.t.query(tables.EXTENDED_TAGS, pk=keys.extended_error_partition(path))]

    def error_count(self, path: str) -> int:
        return sum(1 for _ in self.t.query(tables.EXTENDED_TAGS, pk=keys.extended_error_partition(path),
                                           select=["RowKey"]))


class TagCache:
    """The tag list as one process sees it: re-read at most every ``ttl`` seconds, on use."""

    def __init__(self, store: TagStore, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._tags: tuple[ExtendedTag, ...] = ()
        self._at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> tuple[ExtendedTag, ...]:
        """Every tag (any status), as read at most ``ttl`` seconds ago."""
        now = self.clock()
        if self._at is not None and now - self._at < self.ttl:
            return self._tags
        with self._lock:
            if self._at is None or self.clock() - self._at >= self.ttl:
                self._tags = tuple(self.store.all())
                self._at = self.clock()
            return self._tags

    def indexed(self) -> tuple[ExtendedTag, ...]:
        """The tags ingest indexes (all but those being deleted)."""
        return tuple(t for t in self.current() if t.status != DELETING)

    def queryable(self) -> tuple[ExtendedTag, ...]:
        """The tags QIDO-RS matches on (Ready and Enabled)."""
        return tuple(t for t in self.current() if t.queryable)

    def invalidate(self) -> None:
        """Read the table again on next use (after this process changed it)."""
        with self._lock:
            self._at = None


def reindex_delay(ttl: float, grace: float) -> float:
    """How long after a tag is added its reindex operation waits: every process has re-read the list within
    ``ttl``, and a write made with an older list lands within ``grace`` of taking it."""
    return ttl + grace


def row_extended(row: Row) -> dict[str, list[object]]:
    """The ``extended`` property of a row as read (the index's JSON), or an empty mapping."""
    import orjson

    raw = row.get("extended")
    return dict(orjson.loads(raw)) if raw else {}
