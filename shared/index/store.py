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
import itertools
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
    #: The settle state row (None before the study's first run since 2026-12).
    state: Row | None = None


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

    def write_instances(self, items: Sequence[tuple[InstanceRecord, Mapping[str, Any] | None, ChangeEntry]]) -> None:
        """New instance rows of ONE study with their change entries, created in one transaction (at most 50
        instances: two operations each). Raises :class:`~shared.ports.RowExists` if any row exists (then
        nothing was written)."""
        ops: list[TableOp] = []
        studies = set()
        for rec, meta, change in items:
            pk, rk = keys.instance_keys(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
            studies.add(pk)
            ops.append(TableOp("insert", to_entity(rec, pk, rk, dict(meta) if meta else {META_IN_BLOB: True})))
            ops.append(TableOp("insert", change.to_entity(*keys.change_keys(change.study, change.seq))))
        if len(studies) > 1 or len(ops) > BATCH:
            raise ValueError("write_instances takes at most 50 instances of one study")
        if ops:
            self.t.transact(tables.INSTANCES, ops)

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
            if row["RowKey"].startswith("~"):
                if row["RowKey"].startswith(keys.CHANGE_PREFIX):
                    out.changes.append(ChangeEntry.from_entity(row))
                elif row["RowKey"] == keys.SETTLE_STATE:
                    out.state = row
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

    def series_rows_with_meta(self, study: str, series: str, *, limit: int | None = None
                              ) -> list[tuple[InstanceRecord, bytes | None, bool]]:
        """A series' instance rows with their DICOM JSON (and whether it lives in a sidecar); with ``limit``, the
        first ``limit`` of them only (one request)."""
        rows = self.t.query(tables.INSTANCES, pk=study, rk_range=keys.series_row_range(series), page_size=limit)
        return [(from_entity(InstanceRecord, r), unpack_meta(r), bool(r.get(META_IN_BLOB)))
                for r in (itertools.islice(rows, limit) if limit is not None else rows)]

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
            if not r["RowKey"].startswith("~"):  # change entries and the settle state sort after instance rows
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

    def upsert_study(self, rec: StudyRecord) -> None:
        """The study's aggregate row (what QIDO's study key and scans read), as settle derived it."""
        self.t.upsert(tables.STUDIES, to_entity(rec, *keys.study_keys(rec.study_instance_uid)))

    # -- settle state (and the run that holds the study) -------------------------------------------------
    def get_settle_state(self, study: str) -> Row | None:
        return self.t.get(tables.INSTANCES, *keys.settle_state_keys(study))

    def hold_settle_state(self, study: str, state: Row | None, seconds: float) -> tuple[str | None, float]:
        """Hold the study for one settle run, given its state row as the partition read returned it: (the
        ETag to commit with, 0), or (None, seconds until the holder's hold runs out). One run at a time per
        study, so what a run announces is announced once; a crashed holder's hold simply expires."""
        now = time.time()
        pk, rk = keys.settle_state_keys(study)
        if state is None:
            try:
                entity = {"PartitionKey": pk, "RowKey": rk, "held_until": now + seconds}
                return self.t.insert(tables.INSTANCES, entity), 0.0
            except RowExists:
                return None, min(seconds, 2.0)  # another run just made it: look again shortly
        until = float(state.get("held_until") or 0)
        if until > now:
            return None, until - now
        try:
            return self.t.replace(tables.INSTANCES, {**state, "PartitionKey": pk, "RowKey": rk,
                                                     "held_until": now + seconds}, etag=state.etag), 0.0
        except RowChanged:
            return None, min(seconds, 2.0)

    @staticmethod
    def held_for(state: Row | None) -> float:
        """Seconds until the hold on this settle state (as read) runs out; 0 when no run holds it."""
        until = float(state.get("held_until") or 0) if state is not None else 0.0
        return max(0.0, until - time.time())

    def release_settle_state(self, study: str, state: Mapping[str, Any], etag: str) -> None:
        """Give the study back without a result (a run that failed): the next run need not wait."""
        pk, rk = keys.settle_state_keys(study)
        try:
            self.t.replace(tables.INSTANCES, {**state, "PartitionKey": pk, "RowKey": rk, "held_until": 0.0}, etag=etag)
        except RowChanged:
            pass  # it ran out and someone else holds it now

    def commit_settle_state(self, study: str, state: Mapping[str, Any], *, etag: str | None,
                            published: Sequence[ChangeEntry] = ()) -> None:
        """A run's result: the new state (the hold given back) and the changes it announced marked published,
        in one transaction (the marks of more than 99 changes go first, in their own batches). Conditional on
        ``etag`` (the state as held or read; None: there was none): raises RowChanged/RowExists when another
        run wrote it meanwhile."""
        pk, rk = keys.settle_state_keys(study)
        entity = {**state, "PartitionKey": pk, "RowKey": rk, "held_until": 0.0}
        marks = [TableOp("merge", {"PartitionKey": study, "RowKey": keys.change_keys(study, c.seq)[1],
                                   "published": True, "feed_seq": c.feed_seq}) for c in published]
        head, last = marks[:-(BATCH - 1)] if len(marks) > BATCH - 1 else [], marks[-(BATCH - 1):]
        for batch in _batches(head):
            self.t.transact(tables.INSTANCES, batch)
        op = TableOp("replace", entity, etag) if etag else TableOp("insert", entity)
        self.t.transact(tables.INSTANCES, [*last, op])

    def delete_settle_state(self, study: str) -> None:
        self.t.delete(tables.INSTANCES, *keys.settle_state_keys(study))

    def scan_series(self, page_size: int | None = None) -> Iterator[SeriesRecord]:
        for r in self.t.query(tables.SERIES, page_size=page_size):
            yield from_entity(SeriesRecord, r)

    # -- lookup rows -------------------------------------------------------------
    def put_lookups(self, rows: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
        """Upsert lookup rows, one transaction per partition (and per 100), the partitions side by side. UID
        lookups go to their own table (:func:`_lookup_table`)."""
        by_pk: dict[str, list[TableOp]] = {}
        for pk, rk, props in rows:
            by_pk.setdefault(pk, []).append(TableOp("upsert", {"PartitionKey": pk, "RowKey": rk, **props}))
        batches = [(pk, batch) for pk, ops in by_pk.items() for batch in _batches(ops)]
        if len(batches) > 1:
            list(READS.map(lambda b: self.t.transact(_lookup_table(b[0]), b[1]), batches))
        elif batches:
            self.t.transact(_lookup_table(batches[0][0]), batches[0][1])

    def delete_lookups(self, rows: Iterable[tuple[str, str]]) -> None:
        for pk, rk in rows:
            self.t.delete(_lookup_table(pk), pk, rk)

    def lookup(self, *, pk: str | None = None, pk_range: tuple[str, str] | None = None,
               rk_range: tuple[str, str] | None = None) -> Iterator[Row]:
        return self.t.query(tables.LOOKUP, pk=pk, pk_range=pk_range, rk_range=rk_range)

    def find_by_uid(self, kind: str, uid: str) -> list[Row]:
        """Series or SOP lookups of one UID: a point read in every shard, concurrently."""
        found = READS.map(lambda point: self.t.get(tables.UID_LOOKUP, *point), keys.uid_lookup_points(kind, uid))
        return [r for r in found if r is not None]

    # -- pending series ------------------------------------------------------------
    def put_pending(self, rec: SeriesRecord, arrival: float) -> None:
        pk, rk = keys.pending_keys(rec.study_instance_uid, rec.series_instance_uid)
        self.t.upsert(tables.PENDING, to_entity(rec, pk, rk, {"arrival": arrival}))

    def put_pending_many(self, records: Sequence[SeriesRecord], arrival: float) -> dict[str, str]:
        """Pending rows of several series of ONE study, in one batch (the batched ingest path); their ETags
        by series (so the settle run that ends them needs not read them first)."""
        ops = [TableOp("upsert", to_entity(r, *keys.pending_keys(r.study_instance_uid, r.series_instance_uid),
                                           {"arrival": arrival})) for r in records]
        return self._pending_etags(ops)

    def _pending_etags(self, ops: list[TableOp]) -> dict[str, str]:
        """Write pending rows of one study (batches of 100); the ETags they were written with, by series."""
        etags: dict[str, str] = {}
        for batch in _batches(ops):
            for op, etag in zip(batch, self.t.transact(tables.PENDING, batch), strict=True):
                etags[str(op.entity["RowKey"])] = etag
        return etags

    def delete_pending_known(self, study: str, etags: Mapping[str, str]) -> None:
        """Remove pending rows as they were written (their ETags known): one batch. A row rewritten or gone
        since fails the batch; then the study's rows are read and removed one by one, as written."""
        ops = [TableOp("delete", {"PartitionKey": pk, "RowKey": rk}, etag)
               for pk, rk, etag in ((*keys.pending_keys(study, series), e) for series, e in sorted(etags.items()))]
        try:
            for batch in _batches(ops):
                self.t.transact(tables.PENDING, batch)
        except (RowChanged, RowExists):
            self.delete_pending(study, self.pending_of(study))

    def delete_pending_series(self, study: str, series_uids: Sequence[str], *, older_than: float) -> None:
        """Remove the pending rows of these series of a study (whatever wrote them last): one batch. When one of
        them is gone already the batch fails; then the study's rows are read, and those of these series, and
        any written before ``older_than`` (a series whose instance never came: its writer died between the
        two writes), removed as read."""
        ops = [TableOp("delete", {"PartitionKey": pk, "RowKey": rk})
               for pk, rk in (keys.pending_keys(study, series) for series in series_uids)]
        try:
            for batch in _batches(ops):
                self.t.transact(tables.PENDING, batch)
        except (RowChanged, RowExists):
            wanted = set(series_uids)
            self.delete_pending(study, [r for r in self.pending_of(study)
                                        if r["RowKey"] in wanted or float(r.get("arrival") or 0) < older_than])

    def list_pending(self, equals: Mapping[str, Any] | None = None) -> list[SeriesRecord]:
        """Series not yet stable (a small table: what arrived in the last quiet period), optionally only
        those with these field values (filtered by the service, so only matches travel)."""
        return [from_entity(SeriesRecord, r) for r in self.t.query(tables.PENDING, equals=equals)]

    def stale_pending(self, before: float) -> dict[str, list[Row]]:
        """Pending rows written before ``before`` (the scheduler's clock) that no sweep has taken yet, by study:
        a read of the whole (small) pending table."""
        out: dict[str, list[Row]] = {}
        for row in self.t.query(tables.PENDING, select=["PartitionKey", "RowKey", "arrival", "swept"]):
            if not row.get("swept") and float(row.get("arrival") or 0.0) < before:
                out.setdefault(str(row["PartitionKey"]), []).append(row)
        return out

    def mark_swept(self, study: str, rows: Sequence[Row]) -> dict[str, str] | None:
        """Mark a study's pending rows as taken by a sweep, each as it was read (one batch): their new ETags by
        series, or None when one was rewritten meanwhile (its writer is alive: nothing to sweep)."""
        ops = [TableOp("merge", {"PartitionKey": study, "RowKey": row["RowKey"], "swept": True}, row.etag or None)
               for row in rows]
        try:
            return self._pending_etags(ops)
        except (RowChanged, RowExists):
            return None

    def pending_of(self, study: str) -> list[Row]:
        return list(self.t.query(tables.PENDING, pk=study))

    def pending_series(self, study: str) -> list[SeriesRecord]:
        return [from_entity(SeriesRecord, r) for r in self.pending_of(study)]

    def delete_pending(self, study: str, rows: Sequence[Row]) -> None:
        """Remove pending rows as they were read (a row rewritten since stays): one batch, or one by one
        when a row changed meanwhile."""
        if len(rows) > 1:
            try:
                self.t.transact(tables.PENDING, [TableOp("delete", {"PartitionKey": study, "RowKey": row["RowKey"]},
                                                         row.etag or None) for row in rows[:BATCH]])
                rows = rows[BATCH:]
            except (RowChanged, RowExists):
                pass
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

    def first_feed_bucket(self, first: str, last: str) -> str | None:
        """The earliest hour bucket from ``first`` to ``last`` (inclusive) that holds an entry, in one query
        (a partition range read for one row), so empty hours are skipped, not read one by one."""
        rows = self.t.query(tables.CHANGEFEED, pk_range=keys.feed_buckets_range(first, last),
                            select=["PartitionKey"], page_size=1)
        row = next(iter(rows), None)
        return keys.bucket_of_partition(str(row["PartitionKey"])) if row is not None else None

    def feed_bucket(self, bucket: str, low_seq: int, high_seq: int, *, limit: int | None = None) -> list[FeedEntry]:
        """Feed entries of one hour bucket with low <= seq < high, in sequence order; with ``limit``, the
        first ``limit`` of them (each shard is read only that far: its rows come in sequence order)."""
        rng = keys.feed_row_range(low_seq, high_seq)
        parts = keys.feed_partitions(bucket)

        def shard(pk: str) -> list[Row]:
            rows = self.t.query(tables.CHANGEFEED, pk=pk, rk_range=rng, page_size=limit)
            return list(itertools.islice(rows, limit)) if limit is not None else list(rows)

        rows = READS.map(shard, parts)
        entries = sorted((FeedEntry.from_entity(r) for part in rows for r in part), key=lambda e: e.seq)
        return entries[:limit] if limit is not None else entries
