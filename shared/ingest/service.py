"""Ingest one inbox blob: header → validate → archive → sidecar → index → settle → event → log.

This is the service boundary: the one place where :class:`~shared.errors.BadInput`
becomes a quarantine record. Anything else (storage, network) propagates so the
trigger retries; every step is idempotent, and the instance row records which inbox
blob version wrote it, so a retry after a crash finishes the job instead of calling
its own earlier work a duplicate.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import read_header
from shared.dicom.ranged import BlobRangeSource, RangedReader
from shared.dicom.validate import validate
from shared.errors import BadInput
from shared.events.payloads import image_event, ingest_failed_event
from shared.events.types import EventType
from shared.index.records import InstanceRecord, from_header
from shared.index.store import IngestLogEntry, RowChanged, Stored, utcnow
from shared.ingest.context import Context
from shared.ingest.settle import enqueue_settle
from shared.ingest.states import IngestState
from shared.storage import blobs, layout

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    blob: str
    state: IngestState
    study: str | None = None
    series: str | None = None
    sop: str | None = None
    reason: str | None = None
    message: str | None = None
    bytes_read: int = 0
    requests: int = 0


def _content_digest(header_digest: str, size: int, md5: bytes | None) -> str:
    h = hashlib.sha256(header_digest.encode())
    h.update(size.to_bytes(8, "little"))
    if md5:
        h.update(md5)
    return h.hexdigest()


class IngestService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def ingest(self, blob: Any) -> Outcome:
        """Ingest the inbox blob behind ``blob`` (an ``azure.storage.blob.BlobClient``)."""
        ctx = self.ctx
        ctx.ensure_ready()
        name = blob.blob_name
        source = BlobRangeSource(blob)
        reader = RangedReader(source)
        try:
            header = read_header(reader)
            study, series, sop, _ = validate(header)
        except BadInput as bad:
            return self._quarantine(blob, source.etag or "", bad, reader)
        except (ResourceNotFoundError, ResourceModifiedError):
            return self._gone(name)

        etag = source.etag or ""
        rec = from_header(
            header.dataset,
            transfer_syntax_uid=header.transfer_syntax_uid,
            size_bytes=header.size_bytes,
            digest=_content_digest(header.digest, header.size_bytes, source.content_md5),
            source=f"{name}@{etag}",
            pixel_data_offset=header.pixel_data_offset,
            pixel_data_length=header.pixel_data_length,
            warnings=list(header.warnings),
            ingested_at=utcnow(),
        )
        rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid = study, series, sop
        rec.sop_class_uid = header.sop_class_uid or rec.sop_class_uid

        kind: EventType | None = None
        for _attempt in range(5):
            existing = ctx.index.get_instance(study, series, sop)
            if existing is not None and existing.record.digest == rec.digest:
                if existing.record.source != rec.source:
                    return self._finish(blob, etag, IngestState.DUPLICATE, rec, reader, event=None)
                # Our own earlier attempt wrote the row. If it also recorded its outcome, only the
                # inbox clean-up can be missing; otherwise finish its remaining steps.
                logged = ctx.index.get_log(name)
                if logged is not None and logged.etag == etag and logged.state in (IngestState.ARCHIVED,
                    IngestState.UPDATED):
                    if not ctx.settings.keep_inbox:
                        blobs.delete_if_unchanged(blob, etag)
                    return Outcome(name, logged.state, study, series, sop, bytes_read=reader.bytes_fetched,
                                   requests=reader.requests)
                kind = EventType.IMAGE_CREATED if existing.record.updated_at is None else EventType.IMAGE_UPDATED
                rec = existing.record
                # The crashed attempt may not have asked for a settle: ask unconditionally.
                enqueue_settle(ctx, study, ctx.settings.settle_delay_seconds, force=True)
                break
            self._archive(blob, header, rec)
            try:
                arrival = self._write_row(rec, existing)
            except RowChanged:
                continue  # someone else wrote it meanwhile: look again
            kind = EventType.IMAGE_CREATED if existing is None else EventType.IMAGE_UPDATED
            # The message names this arrival: only the one matching the study marker's last arrival
            # settles, the others (a burst's earlier or concurrent instances) are dropped.
            enqueue_settle(ctx, study, ctx.settings.settle_delay_seconds, arrival=arrival)
            break
        else:  # pragma: no cover - five lost races in a row
            from shared.errors import Transient

            raise Transient(f"Instance {sop} kept changing under concurrent writes; will retry.")

        state = IngestState.ARCHIVED if kind is EventType.IMAGE_CREATED else IngestState.UPDATED
        return self._finish(blob, etag, state, rec, reader, event=kind)

    # -- steps ----------------------------------------------------------------
    def _archive(self, blob: Any, header: Any, rec: InstanceRecord) -> None:
        s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
        blobs.server_copy(self.ctx.clients.blob, blob, layout.ARCHIVE, layout.instance_path(s, se, i))
        blobs.put_json(self.ctx.clients.blob, layout.METADATA, layout.instance_metadata_path(s, se, i),
                       to_dicom_json(header, s, se, i))

    def _write_row(self, rec: InstanceRecord, existing: Stored | None) -> float:
        """The instance row and the study marker's last arrival, in one transaction."""
        if existing is not None:
            rec.updated_at = utcnow()
        arrival = time.time()
        self.ctx.index.put_instance(rec, expect=existing, arrival=arrival)
        return arrival

    def _finish(self, blob: Any, etag: str, state: IngestState, rec: InstanceRecord, reader: RangedReader,
                event: EventType | None) -> Outcome:
        ctx = self.ctx
        s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
        if event is not None:
            ctx.publisher.publish([image_event(
                event, rec, service_host=ctx.settings.service_host_name, partition=ctx.settings.partition_name,
                archive_path=f"{layout.ARCHIVE}/{layout.instance_path(s, se, i)}", sequence=int(time.time() * 1000),
            )])
        ctx.index.put_log(IngestLogEntry(blob=blob.blob_name, state=state, etag=etag, study=s, series=se, sop=i))
        if not ctx.settings.keep_inbox:
            blobs.delete_if_unchanged(blob, etag)
        log.info("Ingest %s: %s sop=%s (read %d bytes in %d requests)", blob.blob_name, state, i,
                 reader.bytes_fetched, reader.requests)
        return Outcome(blob.blob_name, state, s, se, i, bytes_read=reader.bytes_fetched, requests=reader.requests)

    def _quarantine(self, blob: Any, etag: str, bad: BadInput, reader: RangedReader) -> Outcome:
        ctx = self.ctx
        name = blob.blob_name
        path = layout.quarantine_path(name, etag)
        try:
            blobs.server_copy(ctx.clients.blob, blob, layout.QUARANTINE, path, metadata={
                "reason": bad.reason, "message": blobs.ascii_metadata(bad.message),
            })
        except (ResourceNotFoundError, ResourceModifiedError):
            return self._gone(name)
        ctx.index.put_log(IngestLogEntry(blob=name, state=IngestState.QUARANTINED, etag=etag, reason=bad.reason,
                                         message=bad.message))
        ctx.publisher.publish([ingest_failed_event(
            blob=name, reason=bad.reason, message=bad.message, service_host=ctx.settings.service_host_name,
            partition=ctx.settings.partition_name, quarantine_path=f"{layout.QUARANTINE}/{path}",
            sequence=etag,
        )])
        if not ctx.settings.keep_inbox:
            blobs.delete_if_unchanged(blob, etag)
        log.warning("Ingest %s: quarantined (%s)", name, bad.reason)
        return Outcome(name, IngestState.QUARANTINED, reason=bad.reason, message=bad.message,
                       bytes_read=reader.bytes_fetched, requests=reader.requests)

    def _gone(self, name: str) -> Outcome:
        """The inbox blob vanished or changed while we read it: an earlier delivery finished
        it, or a newer upload replaced it (its own event will come)."""
        entry = self.ctx.index.get_log(name)
        log.info("Ingest %s: inbox blob gone or replaced; outcome on record: %s", name,
                 entry.state if entry else "none")
        if entry is None:
            return Outcome(name, IngestState.GONE)
        return Outcome(name, entry.state, entry.study, entry.series, entry.sop, entry.reason, entry.message)
