"""Reading and writing the index tables over the table port. Keys come only from
:mod:`shared.index.keys`; table names only from :mod:`shared.index.tables`.

What lives where (the key schema is in :mod:`shared.index.keys`):

* An instance row carries the index fields of all three levels, the instance's DICOM JSON
  (compressed, :func:`~shared.index.records.pack_meta`) and the sequence of the change that
  made it. It is written in ONE transaction with that change entry (the study's outbox), so
  ingest costs one table request per instance.
* Series/study rows, lookup rows, series metadata bundles, events and the region's change
  feed are derived from the study partition by the settle step.
* Pending rows name series that arrived and are not yet stable; QIDO reads them beside the
  lookup rows, so what ingest archived is queryable at once.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shared.index import keys, tables
from shared.index.records import (
    INSTANCE_FIELDS,
    META_IN_BLOB,
    ChangeEntry,
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
    from_entity,
    to_entity,
    unpack_meta,
)
from shared.index.sequence import time_of_seq
from shared.ports import Row, RowChanged, RowExists, TableOp, TableStore

BATCH = 100  # Table transactions: at most 100 operations, one partition
#: The columns QIDO needs of an instance row (never the metadata chunks).
INDEX_COLUMNS = ["PartitionKey", "RowKey", *INSTANCE_FIELDS, "patient_name_tokens"]
#: The one pool for the reads the index makes side by side (a UID's lookup shards, an hour's feed shards,
#: QIDO's pending read beside its lookup, change-feed metadata): its threads are made once per process,
#: not per request. A task on it never waits on it in turn, so it cannot starve itself.
READS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="index-reads")


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Stored:
    """An instance row as read, with the ETag a conditional replace needs."""

    record: InstanceRecord
    etag: str
    meta: bytes | None = None
    meta_in_blob: bool = False


@dataclass(slots=True)
class StudyPartition:
    """Everything the instances table holds for one study."""

    instances: list[InstanceRecord] = field(default_factory=list)
    meta: dict[str, bytes | None] = field(default_factory=dict)  # by SOP Instance UID
    meta_in_blob: set[str] = field(default_factory=set)
    changes: list[ChangeEntry] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FeedEntry:
    seq: int
    study: str
    series: str
    sop: str
    action: str
    state: str
    timestamp: str
    #: The region whose write the entry records (a region of a pair lists what it indexed from its
    #: peer's replicated archive too; a follower skips entries of its own origin). "": one region.
    origin: str = ""

    def to_entity(self) -> dict[str, Any]:
        pk, rk = feed_keys(self.seq, self.study)
        entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "seq": self.seq, "study": self.study,
                                  "series": self.series, "sop": self.sop, "action": self.action,
                                  "state": self.state, "timestamp": self.timestamp}
        if self.origin:
            entity["origin"] = self.origin
        return entity

    @classmethod
    def from_entity(cls, e: Mapping[str, Any]) -> FeedEntry:
        return cls(int(e["seq"]), str(e["study"]), str(e["series"]), str(e["sop"]), str(e["action"]),
                   str(e.get("state", "current")), str(e["timestamp"]), str(e.get("origin", "")))


def feed_keys(seq: int, study: str) -> tuple[str, str]:
    """A feed entry's keys: its hour bucket is the time its sequence encodes."""
    return keys.feed_keys(dt.datetime.fromtimestamp(time_of_seq(seq), dt.UTC), seq, study)


def _lookup_table(pk: str) -> str:
    """UID lookups (point reads only) live apart from the lookups QIDO queries by range."""
    return tables.UID_LOOKUP if keys.is_uid_lookup(pk) else tables.LOOKUP


def _batches(ops: list[TableOp]) -> Iterator[list[TableOp]]:
    for i in range(0, len(ops), BATCH):
        yield ops[i:i + BATCH]


class IndexStore:
    """The index tables of one storage account."""

    def __init__(self, tables_: TableStore) -> None:
        self.t = tables_
        self._feed_head_known = False

    def ensure_tables(self) -> None:
        self.t.ensure_tables(tables.TABLES)

    # -- instances -------------------------------------------------------------
    def get_instance(self, study: str, series: str, sop: str) -> Stored | None:
        row = self.t.get(tables.INSTANCES, *keys.instance_keys(study, series, sop))
        if row is None:
            return None
        return Stored(from_entity(InstanceRecord, row), row.etag, unpack_meta(row), bool(row.get(META_IN_BLOB)))

    def write_instance(self, rec: InstanceRecord, meta: Mapping[str, Any] | None, change: ChangeEntry, *,
                       expect: Stored | None) -> None:
        """The instance row and its change entry in ONE transaction.

        ``expect=None`` creates (raises :class:`~shared.ports.RowExists` if the row exists);
        otherwise the replace is conditional on the ETag read (raises ``RowChanged``)."""
        pk, rk = keys.instance_keys(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
        entity = to_entity(rec, pk, rk, dict(meta) if meta else {META_IN_BLOB: True})
        row_op = TableOp("insert", entity) if expect is None else TableOp("replace", entity, expect.etag)
        cpk, crk = keys.change_keys(change.study, change.seq)
        self.t.transact(tables.INSTANCES, [row_op, TableOp("insert", change.to_entity(cpk, crk))])

    def rewrite_instance(self, rec: InstanceRecord, meta: Mapping[str, Any] | None, *, etag: str) -> None:
        """Replace an instance row as read (conditional on ``etag``), without a change entry: the
        same version rewritten (``reindex --rebuild``), nothing to announce."""
        pk, rk = keys.instance_keys(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
        self.t.replace(tables.INSTANCES, to_entity(rec, pk, rk, dict(meta) if meta else {META_IN_BLOB: True}),
                       etag=etag)

    def remove_instances(self, study: str, rows: Sequence[tuple[str, str]], changes: Sequence[ChangeEntry]) -> None:
        """Delete instance rows and record their delete changes, one transaction per 100."""
        ops = [TableOp("delete", {"PartitionKey": study, "RowKey": keys.instance_keys(study, se, sop)[1]})
               for se, sop in rows]
        ops += [TableOp("insert", c.to_entity(*keys.change_keys(study, c.seq))) for c in changes]
        for batch in _batches(ops):
            self.t.transact(tables.INSTANCES, batch)

    def study_partition(self, study: str) -> StudyPartition:
        """Every instance row (with metadata) and change entry of a study: one partition query."""
        out = StudyPartition()
        for row in self.t.query(tables.INSTANCES, pk=study):
            if row["RowKey"].startswith(keys.CHANGE_PREFIX):
                out.changes.append(ChangeEntry.from_entity(row))
                continue
            rec = from_entity(InstanceRecord, row)
            out.instances.append(rec)
            out.meta[rec.sop_instance_uid] = unpack_meta(row)
            if row.get(META_IN_BLOB):
                out.meta_in_blob.add(rec.sop_instance_uid)
        return out

    def list_study_instances(self, study: str) -> list[InstanceRecord]:
        return [from_entity(InstanceRecord, r) for r in
                self.t.query(tables.INSTANCES, pk=study, rk_range=keys.INSTANCE_ROWS, select=INDEX_COLUMNS)]

    def list_series_instances(self, study: str, series: str) -> list[InstanceRecord]:
        return [from_entity(InstanceRecord, r) for r in
                self.t.query(tables.INSTANCES, pk=study, rk_range=keys.series_row_range(series),
                             select=INDEX_COLUMNS)]

    def series_rows_with_meta(self, study: str, series: str) -> list[tuple[InstanceRecord, bytes | None, bool]]:
        """A series' instance rows with their DICOM JSON (and whether it lives in a sidecar)."""
        return [(from_entity(InstanceRecord, r), unpack_meta(r), bool(r.get(META_IN_BLOB)))
                for r in self.t.query(tables.INSTANCES, pk=study, rk_range=keys.series_row_range(series))]

    def instance_rows(self, study: str) -> list[Row]:
        """A study's instance rows whole (metadata included), with their ETags (for conditional merges)."""
        return list(self.t.query(tables.INSTANCES, pk=study, rk_range=keys.INSTANCE_ROWS))

    def merge_instance_fields(self, study: str, updates: Sequence[tuple[str, Mapping[str, Any], str]]) -> list[str]:
        """Merge ``(row key, properties, etag)`` into instance rows, each only if unchanged since it was read:
        one transaction per 100; the row keys that changed meanwhile (not merged) are returned."""
        lost: list[str] = []
        ops = [TableOp("merge", {"PartitionKey": study, "RowKey": rk, **props}, etag) for rk, props, etag in updates]
        for batch in _batches(ops):
            try:
                self.t.transact(tables.INSTANCES, batch)
            except RowChanged:  # one of them changed: one by one, so the others still land
                for op in batch:
                    try:
                        self.t.transact(tables.INSTANCES, [op])
                    except RowChanged:
                        lost.append(str(op.entity["RowKey"]))
        return lost

    def study_uids(self, start: str | None = None, page_size: int | None = 1000) -> Iterator[str]:
        """Every study with a study row, in UID (string) order, from ``start`` on (inclusive)."""
        for r in self.t.query(tables.STUDIES, pk_range=keys.studies_from(start),
                              equals={"RowKey": keys.study_keys("")[1]}, select=["PartitionKey"],
                              page_size=page_size):
            yield str(r["PartitionKey"])

    def changes(self, study: str) -> list[ChangeEntry]:
        return [ChangeEntry.from_entity(r) for r in self.t.query(tables.INSTANCES, pk=study, rk_range=keys.CHANGE_ROWS)]

    def mark_published(self, study: str, changes: Sequence[ChangeEntry]) -> None:
        ops = [TableOp("merge", {"PartitionKey": study, "RowKey": keys.change_keys(study, c.seq)[1],
                                 "published": True, "feed_seq": c.feed_seq}) for c in changes]
        for batch in _batches(ops):
            self.t.transact(tables.INSTANCES, batch)

    def scan_instances(self, page_size: int | None = None) -> Iterator[InstanceRecord]:
        for r in self.t.query(tables.INSTANCES, select=INDEX_COLUMNS, page_size=page_size):
            if not r["RowKey"].startswith(keys.CHANGE_PREFIX):
                yield from_entity(InstanceRecord, r)

    # -- aggregates ------------------------------------------------------------
    def get_study_row(self, study: str) -> Row | None:
        return self.t.get(tables.STUDIES, *keys.study_keys(study))

    def get_study(self, study: str) -> StudyRecord | None:
        row = self.get_study_row(study)
        return from_entity(StudyRecord, row) if row is not None else None

    def put_study(self, rec: StudyRecord, extra: Mapping[str, Any], *, etag: str | None) -> None:
        """Conditional on ``etag`` (the row as the caller read it; None: it did not exist), so a
        settle run that read an older partition never overwrites a newer run's result."""
        entity = to_entity(rec, *keys.study_keys(rec.study_instance_uid), dict(extra))
        if etag:
            self.t.replace(tables.STUDIES, entity, etag=etag)
        else:
            self.t.transact(tables.STUDIES, [TableOp("insert", entity)])

    def delete_study_row(self, study: str) -> None:
        self.t.delete(tables.STUDIES, *keys.study_keys(study))

    def get_series(self, study: str, series: str) -> SeriesRecord | None:
        row = self.t.get(tables.SERIES, *keys.series_keys(study, series))
        return from_entity(SeriesRecord, row) if row is not None else None

    def list_series(self, study: str) -> list[SeriesRecord]:
        return [from_entity(SeriesRecord, r) for r in self.t.query(tables.SERIES, pk=study)]

    def put_series(self, study: str, records: Iterable[SeriesRecord]) -> None:
        ops = [TableOp("upsert", to_entity(r, *keys.series_keys(study, r.series_instance_uid))) for r in records]
        for batch in _batches(ops):
            self.t.transact(tables.SERIES, batch)

    def delete_series_rows(self, study: str, series_uids: Iterable[str]) -> None:
        ops = [TableOp("delete", {"PartitionKey": study, "RowKey": keys.series_keys(study, uid)[1]})
               for uid in series_uids]
        for batch in _batches(ops):
            try:
                self.t.transact(tables.SERIES, batch)
            except RowChanged:  # one of them is already gone: delete one by one
                for op in batch:
                    self.t.delete(tables.SERIES, op.entity["PartitionKey"], op.entity["RowKey"])

    def scan_studies(self, page_size: int | None = None) -> Iterator[StudyRecord]:
        for r in self.t.query(tables.STUDIES, equals={"RowKey": keys.study_keys("")[1]}, page_size=page_size):
            yield from_entity(StudyRecord, r)

    # -- settle leases -----------------------------------------------------------------
    def acquire_settle_lease(self, study: str, seconds: float) -> tuple[str | None, float]:
        """Take the study's settle lease for ``seconds``: (its ETag, 0) when taken, else (None,
        seconds until the holder's lease runs out). One run at a time per study, so events and
        feed entries are announced once; a crashed holder's lease simply expires."""
        pk, rk = keys.settle_lease_keys(study)
        now = time.time()
        entity = {"PartitionKey": pk, "RowKey": rk, "until": now + seconds}
        try:
            return self.t.insert(tables.STUDIES, entity), 0.0
        except RowExists:
            pass
        row = self.t.get(tables.STUDIES, pk, rk)
        if row is None:
            return self.acquire_settle_lease(study, seconds)
        until = float(row.get("until", 0))
        if until > now:
            return None, until - now
        try:
            return self.t.replace(tables.STUDIES, entity, etag=row.etag), 0.0
        except RowChanged:
            return None, seconds

    def release_settle_lease(self, study: str, etag: str) -> None:
        try:
            self.t.delete(tables.STUDIES, *keys.settle_lease_keys(study), etag=etag)
        except RowChanged:
            pass  # it ran out and someone else holds it now

    def scan_series(self, page_size: int | None = None) -> Iterator[SeriesRecord]:
        for r in self.t.query(tables.SERIES, page_size=page_size):
            yield from_entity(SeriesRecord, r)

    # -- lookup rows -------------------------------------------------------------
    def put_lookups(self, rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Upsert lookup rows, one transaction per partition (and per 100). UID lookups go to
        their own table (:func:`_lookup_table`)."""
        by_pk: dict[str, list[TableOp]] = {}
        for pk, rk, props in rows:
            by_pk.setdefault(pk, []).append(TableOp("upsert", {"PartitionKey": pk, "RowKey": rk, **props}))
        for pk, ops in by_pk.items():
            for batch in _batches(ops):
                self.t.transact(_lookup_table(pk), batch)

    def delete_lookups(self, rows: Iterable[tuple[str, str]]) -> None:
        for pk, rk in rows:
            self.t.delete(_lookup_table(pk), pk, rk)

    def lookup(self, *, pk: str | None = None, pk_range: tuple[str, str] | None = None,
               rk_range: tuple[str, str] | None = None) -> Iterator[Row]:
        return self.t.query(tables.LOOKUP, pk=pk, pk_range=pk_range, rk_range=rk_range)

    def find_by_uid(self, kind: str, uid: str) -> list[Row]:
        """Series or SOP lookups of one UID: a point read in every shard, concurrently."""
        parts = keys.uid_lookup_partitions(kind)
        found = READS.map(lambda pk: self.t.get(tables.UID_LOOKUP, pk, uid), parts)
        return [r for r in found if r is not None]

    # -- pending series ------------------------------------------------------------
    def put_pending(self, rec: SeriesRecord, arrival: float) -> None:
        pk, rk = keys.pending_keys(rec.study_instance_uid, rec.series_instance_uid)
        self.t.upsert(tables.PENDING, to_entity(rec, pk, rk, {"arrival": arrival}))

    def list_pending(self, equals: Mapping[str, Any] | None = None) -> list[SeriesRecord]:
        """Series not yet stable (a small table: what arrived in the last quiet period), optionally only
        those with these field values (filtered by the service, so only matches travel)."""
        return [from_entity(SeriesRecord, r) for r in self.t.query(tables.PENDING, equals=equals)]

    def pending_of(self, study: str) -> list[Row]:
        return list(self.t.query(tables.PENDING, pk=study))

    def pending_series(self, study: str) -> list[SeriesRecord]:
        return [from_entity(SeriesRecord, r) for r in self.pending_of(study)]

    def delete_pending(self, study: str, rows: Sequence[Row]) -> None:
        """Remove pending rows as they were read (a row rewritten since stays)."""
        for row in rows:
            try:
                self.t.delete(tables.PENDING, study, row["RowKey"], etag=row.etag or None)
            except RowChanged:
                continue

    # -- sync rows (the follower's cursor and waiting entries, reindex progress) -------------------
    def get_sync(self, keys_: tuple[str, str]) -> Row | None:
        return self.t.get(tables.SYNC, *keys_)

    def put_sync(self, keys_: tuple[str, str], values: Mapping[str, Any]) -> None:
        self.t.upsert(tables.SYNC, {"PartitionKey": keys_[0], "RowKey": keys_[1], **values})

    def delete_sync(self, keys_: tuple[str, str]) -> None:
        self.t.delete(tables.SYNC, *keys_)

    def sync_rows(self, pk: str) -> list[Row]:
        return list(self.t.query(tables.SYNC, pk=pk))

    # -- change feed -----------------------------------------------------------------
    def append_feed(self, entries: Sequence[FeedEntry]) -> None:
        if entries and not self._feed_head_known:
            when = dt.datetime.fromtimestamp(time_of_seq(min(e.seq for e in entries)), dt.UTC)
            try:
                self.t.insert(tables.CHANGEFEED, {"PartitionKey": keys.FEED_HEAD[0], "RowKey": keys.FEED_HEAD[1],
                                                  "bucket": keys.feed_bucket(when)})
            except RowExists:
                pass
            self._feed_head_known = True
        by_pk: dict[str, list[TableOp]] = {}
        for e in entries:
            entity = e.to_entity()
            by_pk.setdefault(entity["PartitionKey"], []).append(TableOp("upsert", entity))
        for ops in by_pk.values():
            for batch in _batches(ops):
                self.t.transact(tables.CHANGEFEED, batch)

    def set_feed_states(self, study: str, states: Sequence[tuple[int, str]]) -> None:
        """Mark published feed entries (by sequence) ``replaced`` or ``deleted``."""
        for seq, state in states:
            pk, rk = feed_keys(seq, study)
            self.t.merge(tables.CHANGEFEED, {"PartitionKey": pk, "RowKey": rk, "state": state})

    def feed_head(self) -> dt.datetime | None:
        """The hour bucket of the feed's first entry, or None for an empty feed."""
        row = self.t.get(tables.CHANGEFEED, *keys.FEED_HEAD)
        if row is None:
            return None
        return dt.datetime.strptime(str(row["bucket"]), "%Y%m%d%H").replace(tzinfo=dt.UTC)

    def feed_bucket(self, bucket: str, low_seq: int, high_seq: int) -> list[FeedEntry]:
        """Feed entries of one hour bucket with low <= seq < high, in sequence order."""
        rng = keys.feed_row_range(low_seq, high_seq)
        parts = keys.feed_partitions(bucket)
        rows = READS.map(lambda pk: list(self.t.query(tables.CHANGEFEED, pk=pk, rk_range=rng)), parts)
        entries = [FeedEntry.from_entity(r) for part in rows for r in part]
        return sorted(entries, key=lambda e: e.seq)
