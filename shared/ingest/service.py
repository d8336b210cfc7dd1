"""Ingest one inbox blob: header → validate → archive copy → instance row (+ its change entry).

This is the service boundary: the one place where :class:`~shared.errors.BadInput` becomes a
quarantine record. Anything else (storage, network) propagates so the trigger retries.

Cost, for a new instance: one ranged read (the header; never the pixel data), one server-side
copy (conditional: only if the archive has no such instance yet), one table transaction (the
instance row with its DICOM JSON, and the change entry settle will announce). Nothing else is
written per instance: the inbox blob stays until the inbox lifecycle rule removes it (it is
also the record of what was uploaded), the series' pending row and the settle message are
written once per series / study per quiet period (:mod:`shared.ingest.schedule`), and events
go out in batches when the study settles.

Idempotent: the instance row records which inbox blob version wrote it (``source``), so a
retry after a crash recognises its own earlier work; an identical re-send is a ``duplicate``
(nothing written); new content under a known SOP Instance UID is an ``updated`` instance.

The archive copy carries a version stamp in its metadata (:mod:`shared.storage.regions`; no extra
request: it is a parameter of the copy), kept on the row too. :meth:`IngestService.index_archived`
is the same path for a file that is already in an archive container (the peer region's replica,
or ``reindex``): header, validation and row exactly as here, without the copy; the newer stamp wins.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import Header, read_header
from shared.dicom.ranged import RangedReader
from shared.dicom.validate import validate
from shared.errors import BadInput, Reason, Transient
from shared.events.payloads import ingest_failed_event
from shared.extended.registry import NewError, TagStore
from shared.extended.values import extract
from shared.index.records import (
    Action,
    ChangeEntry,
    InstanceRecord,
    SeriesRecord,
    from_dicom_json,
    pack_meta,
    series_part,
    study_part,
)
from shared.index.store import Stored, utcnow
from shared.ingest.states import IngestState, Outcome
from shared.ports import Blob, BlobGone, RowChanged, RowExists
from shared.services import Services
from shared.storage import blobs, layout
from shared.storage.regions import STAMP, stamp_of, stamp_region

log = logging.getLogger(__name__)
ATTEMPTS = 5


class ContentDigest:
    """An upload's content digest (``value``), and whether a stored row's digest describes the same file.

    Equal for identical files, different when any byte differs: the size and the upload's Content-MD5
    (of the whole file; Azure Storage keeps one for every single-request upload), else the size and
    the bytes the header read fetched (its first 64 KiB at least: a change beyond them, in a file of
    the same size uploaded without Content-MD5, goes unseen).

    Rows written before 2026-11-29 hashed the first range read even when the upload had a Content-MD5
    (``sha256(read digest, size, md5)``). :meth:`matches` accepts that form too, computed only when the
    current one differs, so a file re-sent after the upgrade stays a duplicate, not an update."""

    __slots__ = ("_header", "_md5", "value")

    def __init__(self, header: Header, md5: bytes | None) -> None:
        self._header, self._md5 = header, md5
        size = header.size_bytes.to_bytes(8, "little")
        if md5:
            self.value = hashlib.sha256(size + md5).hexdigest()
        else:
            self.value = self._with_read_digest()

    def _with_read_digest(self) -> str:
        h = hashlib.sha256(self._header.digest.encode())
        h.update(self._header.size_bytes.to_bytes(8, "little"))
        if self._md5:
            h.update(self._md5)
        return h.hexdigest()

    def matches(self, stored: str) -> bool:
        if stored == self.value:
            return True
        return bool(self._md5) and bool(stored) and stored == self._with_read_digest()


def source_of(name: str, etag: str | None) -> str:
    """The inbox blob version an instance row (and a change entry) remembers."""
    return f"{name}@{etag or ''}"


class IngestService:
    def __init__(self, services: Services) -> None:
        self.svc = services

    def ingest(self, blob: Blob) -> Outcome:
        """Ingest the inbox blob ``blob`` (the trigger's blob, behind the blob port)."""
        self.svc.ensure_ready()
        reader = RangedReader(blob)
        try:
            header = read_header(reader)
            study, series, sop, sop_class = validate(header)
        except BadInput as bad:
            return self._quarantine(blob, bad, reader)
        except BlobGone:
            return self._gone(blob.name)
        try:
            doc = to_dicom_json(header, study, series, sop)  # may read a deferred sequence (ranged)
        except BlobGone:
            return self._gone(blob.name)
        digest = ContentDigest(header, blob.content_md5)
        rec = _record(doc, header, (study, series, sop, sop_class), source_of(blob.name, blob.etag), digest.value)
        try:
            state = self._store(blob, doc, rec, digest)
        except BlobGone:
            return self._gone(blob.name)
        log.info("Ingest %s: %s sop=%s (read %d bytes in %d requests)", layout.log_name(blob.name), state, sop,
                 reader.bytes_fetched, reader.requests)
        return Outcome(blob.name, state, study, series, sop, bytes_read=reader.bytes_fetched,
                       requests=reader.requests)

    def index_archived(self, blob: Blob) -> Outcome:
        """Index an instance that is already archived: ``blob`` is in an archive container (this
        region's own, or the peer region's replica here). The same header read, validation and row as
        :meth:`ingest`, without the copy; the version's stamp comes from the blob's metadata.

        New: ``archived``. Same version or same content as the row: ``duplicate`` (nothing written).
        Older than the row's version: ``superseded``. Newer: ``updated``, and a newer file that is the
        peer's replica is also copied into this region's own archive, stamp kept (reads take this
        region's own copy first, so they serve what the row describes; the older one stays a blob
        version). Safe beside ingest: writes are conditional."""
        svc = self.svc
        svc.ensure_ready()
        reader = RangedReader(blob)
        try:
            header = read_header(reader)
            uids = validate(header)
        except BadInput as bad:
            log.warning("Index %s/%s: cannot be indexed (%s)", blob.container, blob.name, bad.reason)
            return Outcome(blob.name, IngestState.REFUSED, reason=bad.reason, message=bad.message,
                           bytes_read=reader.bytes_fetched, requests=reader.requests)
        except BlobGone:
            return self._gone(blob.name)
        s, se, i, _ = uids
        path = layout.instance_path(s, se, i)
        if path != blob.name:
            message = f"The archived file {blob.name} holds instance {i} of series {se}; it belongs at {path}."
            return Outcome(blob.name, IngestState.REFUSED, s, se, i, reason=Reason.UID_CONFLICT, message=message)
        doc = to_dicom_json(header, s, se, i)
        digest = ContentDigest(header, blob.content_md5)
        rec = _record(doc, header, uids, f"{blob.container}/{blob.name}@{blob.etag or ''}", digest.value)
        rec.stamp = stamp_of(blob.metadata, blob.last_modified, svc.topology.writer_of(blob.container))
        meta = self._meta(rec, doc)
        origin = stamp_region(rec.stamp)
        # Optimistic, as ingest: an instance new to this region is the common case (the peer's replica).
        try:
            self._write(rec, meta, expect=None, origin=origin, doc=doc)
            log.info("Index %s/%s: archived sop=%s", blob.container, blob.name, i)
            return Outcome(blob.name, IngestState.ARCHIVED, s, se, i, bytes_read=reader.bytes_fetched,
                           requests=reader.requests)
        except RowExists:
            pass
        for _ in range(ATTEMPTS):
            existing = svc.index.get_instance(s, se, i)
            if existing is not None:
                old = existing.record
                if old.stamp == rec.stamp or digest.matches(old.digest):
                    return Outcome(blob.name, IngestState.DUPLICATE, s, se, i)
                if old.stamp > rec.stamp:
                    return Outcome(blob.name, IngestState.SUPERSEDED, s, se, i)
                if blob.container != svc.topology.own(layout.ARCHIVE):
                    # The newer version into this region's own archive, stamp kept, so that reads (own
                    # copy first) serve what the row now describes; the older one stays a version.
                    svc.blobs.copy(blob, layout.ARCHIVE, path, metadata={STAMP: rec.stamp})
                rec.updated_at = utcnow()
            try:
                self._write(rec, meta, expect=existing, origin=origin, doc=doc)
            except (RowExists, RowChanged):
                continue  # ingest or another indexer wrote this SOP meanwhile: look again
            state = IngestState.UPDATED if existing is not None else IngestState.ARCHIVED
            log.info("Index %s/%s: %s sop=%s", blob.container, blob.name, state, i)
            return Outcome(blob.name, state, s, se, i, bytes_read=reader.bytes_fetched, requests=reader.requests)
        raise Transient(f"Instance {i} kept changing under concurrent writes; will retry.")

    def rewrite_row(self, blob: Blob) -> Outcome:
        """Rewrite the row of an archived instance from its file, keeping its version and history (a
        change of the row schema: ``reindex --rebuild``). Nothing is announced; the study is settled
        again with ``rederive`` so its derived rows and bundles follow."""
        svc = self.svc
        reader = RangedReader(blob)
        try:
            header = read_header(reader)
            uids = validate(header)
        except BadInput as bad:
            return Outcome(blob.name, IngestState.REFUSED, reason=bad.reason, message=bad.message)
        except BlobGone:
            return self._gone(blob.name)
        s, se, i, _ = uids
        for _ in range(ATTEMPTS):
            existing = svc.index.get_instance(s, se, i)
            if existing is None:
                return self.index_archived(blob)
            old = existing.record
            doc = to_dicom_json(header, s, se, i)
            rec = _record(doc, header, uids, old.source, old.digest)
            rec.stamp, rec.seq, rec.arrival = old.stamp, old.seq, old.arrival
            rec.ingested_at, rec.updated_at = old.ingested_at, old.updated_at
            self._record_errors(self._extended(rec, doc))
            try:
                svc.index.rewrite_instance(rec, self._meta(rec, doc), etag=existing.etag)
            except RowChanged:
                continue
            svc.scheduler.reschedule(s, svc.settings.settle_delay_seconds, rederive=True)
            return Outcome(blob.name, IngestState.DUPLICATE, s, se, i)
        raise Transient(f"Instance {i} kept changing under concurrent writes; will retry.")

    # -- steps ----------------------------------------------------------------
    def _meta(self, rec: InstanceRecord, doc: dict[str, Any]) -> dict[str, bytes] | None:
        """The DICOM JSON as row properties, or (too large for the row, e.g. long per-frame functional
        groups) written to its sidecar in this region's metadata container: None."""
        meta = pack_meta(doc)
        if meta is None:
            s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
            blobs.put_json(self.svc.blobs, layout.METADATA, layout.instance_metadata_path(s, se, i), doc)
        return meta

    def _store(self, blob: Blob, doc: dict[str, Any], rec: InstanceRecord, digest: ContentDigest) -> IngestState:
        s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
        path = layout.instance_path(s, se, i)
        meta = self._meta(rec, doc)
        rec.stamp = self.svc.topology.new_stamp()
        stamped = {STAMP: rec.stamp}
        # Optimistic: a new instance is the common case, so copy only if the archive lacks it and
        # create the row without reading it first. Anything else takes the careful path.
        if self.svc.blobs.copy(blob, layout.ARCHIVE, path, if_absent=True, metadata=stamped):
            try:
                self._write(rec, meta, expect=None, doc=doc)
                return IngestState.ARCHIVED
            except RowExists:
                pass  # the row exists though the archive did not: decide below
        for _ in range(ATTEMPTS):
            existing = self.svc.index.get_instance(s, se, i)
            if existing is not None and digest.matches(existing.record.digest):
                if existing.record.source == rec.source:  # our own earlier attempt wrote it
                    self.svc.scheduler.after_write(s)
                    return IngestState.UPDATED if existing.record.updated_at else IngestState.ARCHIVED
                return IngestState.DUPLICATE
            # New content for this SOP Instance UID (or a row lost in a crash): the archive copy
            # first, so a row never names content the archive does not hold.
            self.svc.blobs.copy(blob, layout.ARCHIVE, path, metadata=stamped)
            if existing is not None:
                rec.updated_at = utcnow()
            try:
                self._write(rec, meta, expect=existing, doc=doc)
            except (RowExists, RowChanged):
                continue  # another writer of this SOP won the race: look again
            return IngestState.UPDATED if existing is not None else IngestState.ARCHIVED
        raise Transient(f"Instance {i} kept changing under concurrent writes; will retry.")

    def _write(self, rec: InstanceRecord, meta: dict[str, bytes] | None, *, expect: Stored | None,
               origin: str | None = None, doc: dict[str, Any] | None = None) -> None:
        s, se, i = rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid
        if doc is not None:
            self._record_errors(self._extended(rec, doc))
        self.svc.scheduler.before_write(SeriesRecord(**study_part(rec), **series_part(rec)))
        rec.arrival = self.svc.scheduler.clock()  # the quiet-period clock (settle compares with it)
        rec.seq = self.svc.sequencer.next()
        change = ChangeEntry(s, se, i, Action.UPDATE if expect is not None else Action.CREATE, rec.seq, utcnow(),
                             source=rec.source, digest=rec.digest,
                             origin=self.svc.topology.region if origin is None else origin)
        self.svc.index.write_instance(rec, meta, change, expect=expect)
        self.svc.scheduler.after_write(s)

    def _extended(self, rec: InstanceRecord, doc: dict[str, Any]) -> list[NewError]:
        """The instance's values of the extended query tags (into ``rec``, so they go in the row's own
        transaction), with the list this process holds (no request); the values that fail their tag's VR."""
        tags = self.svc.extended_tags.indexed()
        if not tags:
            rec.extended = {}
            return []
        rec.extended, errors = extract(doc, tags)
        return [NewError(e.tag.path, rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid,
                         e.message) for e in errors]

    def _record_errors(self, errors: list[NewError]) -> None:
        """Values that failed their tag's VR: their error rows (requests only for such instances), written
        before the instance row, so a retry after a crash in between writes them again."""
        if errors:
            TagStore(self.svc.tables).record_errors(errors)
            log.warning("Ingest: %d extended query tag value(s) do not fit their VR; see the tags' errors",
                        len(errors))

    def _quarantine(self, blob: Blob, bad: BadInput, reader: RangedReader) -> Outcome:
        svc = self.svc
        path = layout.quarantine_path(blob.name, blob.etag or "")
        try:
            svc.blobs.copy(blob, layout.QUARANTINE, path,
                           metadata={"reason": bad.reason, "message": blobs.ascii_metadata(bad.message)})
        except BlobGone:
            return self._gone(blob.name)
        svc.publisher.publish([ingest_failed_event(
            blob=blob.name, reason=bad.reason, message=bad.message, service_host=svc.settings.service_host_name,
            partition=svc.settings.partition_name,
            quarantine_folder=f"{layout.QUARANTINE}/{layout.quarantine_folder(blob.etag or '')}/",
            sequence=blob.etag or "",
        )])
        log.warning("Ingest %s: quarantined (%s)", layout.log_name(blob.name), bad.reason)
        return Outcome(blob.name, IngestState.QUARANTINED, reason=bad.reason, message=bad.message,
                       bytes_read=reader.bytes_fetched, requests=reader.requests)

    def _gone(self, name: str) -> Outcome:
        """The inbox blob vanished or changed while we read it: a newer upload replaced it (its
        own event comes) or it was removed. Nothing of it was recorded."""
        log.info("Ingest %s: inbox blob gone or replaced while it was read", layout.log_name(name))
        return Outcome(name, IngestState.GONE)


def _record(doc: dict[str, Any], header: Header, uids: tuple[str, str, str, str], source: str,
            digest: str) -> InstanceRecord:
    """The instance row's record: its index fields from the instance's DICOM JSON ``doc`` (so QIDO
    answers with what WADO-RS metadata says), the rest from the parsed, validated header."""
    rec = from_dicom_json(
        doc, transfer_syntax_uid=header.transfer_syntax_uid, size_bytes=header.size_bytes,
        digest=digest, source=source,
        pixel_data_offset=header.pixel_data_offset, pixel_data_length=header.pixel_data_length,
        warnings=[str(w) for w in header.warnings], ingested_at=utcnow(),
    )
    rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid, rec.sop_class_uid = uids
    return rec
