"""Reading and writing the index tables. Keys come only from :mod:`shared.index.keys`.

Filters are always built with ``parameters`` (the SDK quotes values), never by
pasting user values into OData strings.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.index import keys, tables
from shared.index.records import (
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
    from_entity,
    to_entity,
)
from shared.ingest.states import IngestState

log = logging.getLogger(__name__)
BATCH = 100  # Table transactions: at most 100 operations, one partition


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RowChanged(Exception):
    """The row changed (or appeared) since it was read: read it again and decide again."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A row as read, with the ETag needed for a conditional update."""

    record: InstanceRecord
    etag: str


@dataclass(frozen=True, slots=True)
class IngestLogEntry:
    blob: str
    state: IngestState
    etag: str = ""
    reason: str | None = None
    message: str | None = None
    study: str | None = None
    series: str | None = None
    sop: str | None = None
    at: str = ""


class IndexStore:
    """The index tables of one storage account."""

    def __init__(self, service: TableServiceClient) -> None:
        self.service = service
        self.instances: TableClient = service.get_table_client(tables.INSTANCES)
        self.series: TableClient = service.get_table_client(tables.SERIES)
        self.studies: TableClient = service.get_table_client(tables.STUDIES)
        self.lookup: TableClient = service.get_table_client(tables.LOOKUP)
        self.ingest_log: TableClient = service.get_table_client(tables.INGEST_LOG)

    def ensure_tables(self) -> None:
        for name in tables.TABLES:
            try:
                self.service.create_table(name)
            except ResourceExistsError:
                pass

    # -- instances -------------------------------------------------------------
    def get_instance(self, study: str, series: str, sop: str) -> Stored | None:
        pk, rk = keys.instance_keys(study, series, sop)
        try:
            entity = self.instances.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        return Stored(from_entity(InstanceRecord, entity), str(entity.metadata["etag"]))

    def put_instance(self, rec: InstanceRecord, *, expect: Stored | None, arrival: float) -> None:
        """Write an instance row and bump the study's arrival marker in ONE transaction.

        ``expect=None`` creates (fails with :class:`RowChanged` if the row exists);
        otherwise the update is conditional on the ETag that was read."""
        pk, rk = keys.instance_keys(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
        entity = to_entity(rec, pk, rk)
        marker = {"PartitionKey": pk, "RowKey": keys.SETTLE_MARKER_ROW, "last_arrival": arrival}
        ops: list[Any]
        if expect is None:
            ops = [("create", entity)]
        else:
            ops = [("update", entity, {"mode": UpdateMode.REPLACE, "etag": expect.etag,
                                        "match_condition": MatchConditions.IfNotModified})]
        ops.append(("upsert", marker, {"mode": UpdateMode.MERGE}))
        try:
            self.instances.submit_transaction(ops)
        except TableTransactionError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if code in ("EntityAlreadyExists", "UpdateConditionNotSatisfied", "ResourceNotFound"):
                raise RowChanged(code) from None
            raise

    def study_partition(self, study: str) -> tuple[list[InstanceRecord], dict[str, Any] | None]:
        """Every instance row of a study, and its settle marker (one partition query)."""
        rows: list[InstanceRecord] = []
        marker = None
        for entity in self.instances.query_entities("PartitionKey eq @pk", parameters={"pk": study}):
            if entity["RowKey"] == keys.SETTLE_MARKER_ROW:
                marker = dict(entity)
            else:
                rows.append(from_entity(InstanceRecord, entity))
        return rows, marker

    def list_study_instances(self, study: str) -> list[InstanceRecord]:
        return self.study_partition(study)[0]

    def list_series_instances(self, study: str, series: str) -> list[InstanceRecord]:
        lo, hi = keys.series_row_range(series)
        flt = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi"
        return [from_entity(InstanceRecord, e) for e in
                self.instances.query_entities(flt, parameters={"pk": study, "lo": lo, "hi": hi})]

    def delete_instance(self, study: str, series: str, sop: str) -> None:
        pk, rk = keys.instance_keys(study, series, sop)
        self.instances.delete_entity(pk, rk)

    def get_marker(self, study: str) -> dict[str, Any] | None:
        """The study's settle marker (last arrival, current settle token), if any."""
        try:
            return dict(self.instances.get_entity(study, keys.SETTLE_MARKER_ROW))
        except ResourceNotFoundError:
            return None

    def set_settle_token(self, study: str, token: str) -> None:
        """Mark the one re-scheduled settle message that still counts for this study."""
        self.instances.upsert_entity({"PartitionKey": study, "RowKey": keys.SETTLE_MARKER_ROW,
                                      "settle_token": token}, mode=UpdateMode.MERGE)

    def delete_marker(self, study: str, etag: str | None = None) -> None:
        try:
            if etag:
                self.instances.delete_entity(study, keys.SETTLE_MARKER_ROW, etag=etag,
                                             match_condition=MatchConditions.IfNotModified)
            else:
                self.instances.delete_entity(study, keys.SETTLE_MARKER_ROW)
        except (ResourceNotFoundError, HttpResponseError):
            pass

    # -- aggregates ------------------------------------------------------------
    def get_study(self, study: str) -> StudyRecord | None:
        pk, rk = keys.study_keys(study)
        try:
            return from_entity(StudyRecord, self.studies.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def get_study_entity(self, study: str) -> dict[str, Any] | None:
        pk, rk = keys.study_keys(study)
        try:
            return dict(self.studies.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def get_series(self, study: str, series: str) -> SeriesRecord | None:
        pk, rk = keys.series_keys(study, series)
        try:
            return from_entity(SeriesRecord, self.series.get_entity(pk, rk))
        except ResourceNotFoundError:
            return None

    def list_series(self, study: str) -> list[SeriesRecord]:
        return [from_entity(SeriesRecord, e)
                for e in self.series.query_entities("PartitionKey eq @pk", parameters={"pk": study})]

    def list_series_entities(self, study: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.series.query_entities("PartitionKey eq @pk", parameters={"pk": study})]

    def put_series(self, study: str, records: Iterable[tuple[SeriesRecord, dict[str, Any]]]) -> None:
        ops: list[Any] = []
        for rec, extra in records:
            pk, rk = keys.series_keys(study, rec.series_instance_uid)
            ops.append(("upsert", to_entity(rec, pk, rk, extra), {"mode": UpdateMode.REPLACE}))
        for i in range(0, len(ops), BATCH):
            self.series.submit_transaction(ops[i:i + BATCH])

    def delete_series_rows(self, study: str, series_uids: Iterable[str]) -> None:
        for uid in series_uids:
            try:
                self.series.delete_entity(*keys.series_keys(study, uid))
            except ResourceNotFoundError:
                pass

    def put_study(self, rec: StudyRecord, extra: dict[str, Any]) -> None:
        pk, rk = keys.study_keys(rec.study_instance_uid)
        self.studies.upsert_entity(to_entity(rec, pk, rk, extra), mode=UpdateMode.REPLACE)

    def delete_study_row(self, study: str) -> None:
        try:
            self.studies.delete_entity(*keys.study_keys(study))
        except ResourceNotFoundError:
            pass

    def scan_studies(self, select: list[str] | None = None) -> Iterator[StudyRecord]:
        """Every study row (the "no filter" QIDO class: bounded by limit/offset upstream)."""
        for e in self.studies.list_entities(select=select):
            yield from_entity(StudyRecord, e)

    # -- lookup rows -------------------------------------------------------------
    def put_lookups(self, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
        """Upsert lookup rows, batched per partition. Returns the number of requests made."""
        by_pk: dict[str, list[Any]] = {}
        for pk, rk, props in rows:
            by_pk.setdefault(pk, []).append(
                ("upsert", {"PartitionKey": pk, "RowKey": rk, **props}, {"mode": UpdateMode.REPLACE}))
        requests = 0
        for ops in by_pk.values():
            for i in range(0, len(ops), BATCH):
                self.lookup.submit_transaction(ops[i:i + BATCH])
                requests += 1
        return requests

    def delete_lookups(self, rows: Iterable[tuple[str, str]]) -> None:
        for pk, rk in rows:
            try:
                self.lookup.delete_entity(pk, rk)
            except ResourceNotFoundError:
                pass

    def query_lookup(self, flt: str, parameters: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for e in self.lookup.query_entities(flt, parameters=parameters):
            yield dict(e)

    # -- ingest log ------------------------------------------------------------------
    def put_log(self, entry: IngestLogEntry) -> None:
        pk, rk = keys.ingest_log_keys(entry.blob)
        entity = {"PartitionKey": pk, "RowKey": rk, "blob": entry.blob, "state": entry.state,
                  "etag": entry.etag, "at": entry.at or utcnow()}
        for name in ("reason", "message", "study", "series", "sop"):
            value = getattr(entry, name)
            if value:
                entity[name] = value
        self.ingest_log.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def get_log(self, blob: str) -> IngestLogEntry | None:
        pk, rk = keys.ingest_log_keys(blob)
        try:
            e = self.ingest_log.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        return _log_entry(e)

    def scan_log(self) -> Iterator[IngestLogEntry]:
        """Every ingest-log row (status summary; the table holds one small row per upload)."""
        for e in self.ingest_log.list_entities(select=["blob", "state", "etag", "reason", "message", "at"]):
            yield _log_entry(e)


def _log_entry(e: Any) -> IngestLogEntry:
    return IngestLogEntry(
        blob=e.get("blob", ""), state=IngestState(e.get("state") or IngestState.UNKNOWN),
        etag=e.get("etag", ""),
        reason=e.get("reason"), message=e.get("message"), study=e.get("study"), series=e.get("series"),
        sop=e.get("sop"),
        at=e.get("at", ""),
    )
