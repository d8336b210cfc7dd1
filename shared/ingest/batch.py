"""The batched ingest path, for backfills: many instances per invocation, indexed without being read again.

**When it is used.** For instances that come in bulk from an archive, never from a modality: the DIMSE
gateway's C-STORE sub-operations of a C-MOVE that ``tools migrate`` asked a PACS for (the Move Originator
is the gateway's own AE title, or one of ``DICOMFLOW_GATEWAY_BATCH_ORIGINATORS``), and what ``tools
migrate --retrieve get`` retrieves. Everything else (uploads, STOW-RS, a modality's or a PACS user's
C-STORE, AI results) keeps the per-file path: one ``BlobCreated`` event, one ingest
(:mod:`shared.ingest.service`).

**Writing** (:class:`BatchWriter`, in the gateway or the migrate command). The writer has the file and has
parsed and checked its header already (the gateway does so to answer the C-STORE), so it writes a good
instance straight to its archive path (``dicom-archive/<study>/<series>/<sop>.dcm``, only if absent, with
its Content-MD5 and version stamp) and keeps what its index row will be: the record and DICOM JSON that
ingest would derive from the same header, with the same code. Rows go to a *chunk*: for
``DICOMFLOW_BATCH_WINDOW_SECONDS`` (5) or :data:`CHUNK_SIZE` instances, then its manifest
(``dicom-inbox/batch/<source>/<chunk>/manifest.json``) is written. A file ingest must judge one by one (it
fails validation, to be quarantined with its reason; the archive holds that instance already: duplicate or
update; an IOCM rejection note, applied by the per-file steps) goes into the same chunk folder as an inbox file
instead. The chunk's queue message
(``dicom-ingest-batch``) is sent *before* anything of the chunk is written, due once the chunk must have
closed (the safety net for a writer that dies); when the chunk closes (full, its window over, or the move
that filled it ended) its manifest is written and a second message has it ingested at once.

**Ingest** (:class:`BatchIngest`, the ``ingest_batch`` function): list the chunk (one request), take the
inbox files through the per-file steps side by side (header read, validation or quarantine, conditional
copy), and write the manifest's rows: per study, the pending rows in one batch and the instance rows with
their change entries 50 to a transaction; then a ``done`` marker goes in the chunk's folder (the chunk's
other message finds nothing to redo). Every study of the chunk gets ONE settle message, due when it
will have been quiet for the stable age: one settle run per study
(:meth:`~shared.ingest.settle.SettleService.settle_group`) announces images and stability together and
shares its writes with the chunk's other studies. A row that exists already takes the careful path
(:meth:`~shared.ingest.service.IngestService.index_archived`: duplicate, update or superseded), so a chunk
handled twice is idempotent.

**What it costs** (counted: ``tests/integration/test_request_budget.py``): per instance, the writer's one
upload (to the archive instead of the inbox) and a 50th of a table transaction; no header read, no copy.
Per chunk: its message, listing and manifest. Images are announced up to the stable age after they arrive,
not the settle delay; QIDO finds them at once (pending rows), as on the per-file path.

**If the writer dies** between archiving a file and writing its chunk's manifest, that file is archived
but not indexed: the gateway has answered its C-STORE, and ``tools migrate`` (the only party that asks for
this path) does not find it in the index, moves it again, and the gateway, finding it archived, hands it to
the careful path, which indexes it. (``tools reindex`` indexes any archived file as well.)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import Header, read_header_bytes, read_header_file
from shared.dicom.validate import is_valid_uid, validate
from shared.errors import BadInput
from shared.index import keys
from shared.index.records import (
    Action,
    ChangeEntry,
    InstanceRecord,
    SeriesRecord,
    from_entity,
    pack_meta,
    series_part,
    study_part,
    to_entity,
    unpack_meta,
)
from shared.index.store import utcnow
from shared.ingest.schedule import EARLY_DELIVERY
from shared.ingest.service import ContentDigest, IngestService, Prepared, _record
from shared.ingest.states import IngestState, Outcome
from shared.ports import BlobGone, RowChanged, RowExists
from shared.rejection.notes import rejection_note
from shared.services import Services
from shared.storage import blobs, layout
from shared.storage.regions import STAMP

log = logging.getLogger(__name__)

#: Instances per chunk, and per table transaction (two operations each, 100 at most).
CHUNK_SIZE: Final = 50
MANIFEST: Final = "manifest.json"
#: Written in a chunk's folder once ingest has handled it.
DONE: Final = "done"
DICOM: Final = "application/dicom"
#: Header reads and copies of a chunk's inbox files side by side (each one storage request, mostly waiting).
POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="batch-ingest")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """The ``dicom-ingest-batch`` message: a chunk (its folder in the inbox's batch area), or single files."""

    prefix: str = ""
    blobs: tuple[str, ...] = ()

    def to_message(self) -> str:
        return orjson.dumps({"prefix": self.prefix} if self.prefix else {"blobs": list(self.blobs)}).decode()

    @classmethod
    def from_message(cls, body: bytes | str) -> BatchRequest:
        """Parse a queue message; one that is not ours raises ``ValueError`` (poison after the retries)."""
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("prefix"), str) and doc["prefix"].startswith(
                layout.BATCH_PREFIX):
            return cls(prefix=doc["prefix"])
        names = doc.get("blobs") if isinstance(doc, dict) else None
        if isinstance(names, list) and names and all(isinstance(n, str) and n.startswith(layout.BATCH_PREFIX)
                                                     for n in names):
            return cls(blobs=tuple(names))
        raise ValueError("A batch message is a JSON object with a 'prefix' or 'blobs' in the inbox's batch area.")


# -- writing ------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Chunk:
    prefix: str
    opened: float
    count: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Written:
    """Where :meth:`BatchWriter.write` put an instance, what it read of it, and why ingest will refuse it."""

    name: str
    header: Header | None
    uids: tuple[str, str, str, str] | None
    refused: BadInput | None = None


def _md5(data: bytes | Path) -> bytes:
    if isinstance(data, bytes):
        return hashlib.md5(data).digest()  # noqa: S324 - Content-MD5, what the storage service checks
    h = hashlib.md5()  # noqa: S324 - as above
    with open(data, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.digest()


class BatchWriter:
    """Writes one source's instances for the batched path (thread-safe: the gateway's associations with one
    source share a writer, so a chunk can hold several small studies moved side by side)."""

    def __init__(self, services: Services, source: str, *, window: float, size: int = CHUNK_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.svc, self.source = services, source
        self.window = max(0.0, window)
        self.size = size
        #: When a chunk's message comes due: once the chunk has closed and its manifest is written.
        self.delay = max(2.0, 2 * self.window + 1.0)
        self._clock = clock
        self._chunk: _Chunk | None = None
        self._lock = threading.Lock()

    def write(self, data: bytes | Path, *, sop_hint: str = "") -> Written:
        """Store one instance durably, in the archive (its row in the chunk's manifest) or, when ingest must
        judge it (refused, archived already, an IOCM rejection note), in the chunk's inbox folder: where it went,
        its header and UIDs when it has them, and for a file ingest will quarantine, why (the gateway answers the
        C-STORE with it)."""
        header: Header | None = None
        try:
            limits = self.svc.settings.limits.header
            header = (read_header_file(data, limits=limits) if isinstance(data, Path)
                      else read_header_bytes(data, limits=limits))
            uids = validate(header)
        except BadInput as bad:
            name = self._inbox(data, sop_hint if is_valid_uid(sop_hint) else f"unnamed-{secrets.token_hex(4)}")
            return Written(name, header, None, bad)
        if rejection_note(header, *uids[:3]) is not None:  # an IOCM rejection note: ingest applies it, per file
            return Written(self._inbox(data, uids[2]), header, uids)
        return Written(self._archive(data, header, uids), header, uids)

    def _archive(self, data: bytes | Path, header: Header, uids: tuple[str, str, str, str]) -> str:
        svc = self.svc
        s, se, i, _ = uids
        doc = to_dicom_json(header, s, se, i)
        md5 = _md5(data)
        stamp = svc.topology.new_stamp()
        path = layout.instance_path(s, se, i)
        with open(data, "rb") if isinstance(data, Path) else contextlib.nullcontext(data) as f:
            etag = svc.blobs.create(layout.ARCHIVE, path, f, content_md5=md5, content_type=DICOM,
                                    metadata={STAMP: stamp})
        if etag is None:  # the archive holds this instance: ingest decides (duplicate, update) from the inbox
            return self._inbox(data, i)
        rec = _record(doc, header, uids, f"{svc.topology.own(layout.ARCHIVE)}/{path}@{etag}",
                      ContentDigest(header, md5).value)
        rec.stamp = stamp
        meta = pack_meta(doc)
        if meta is None:  # too large for the row (long per-frame groups): its sidecar, as ingest writes it
            blobs.put_json(svc.blobs, layout.METADATA, layout.instance_metadata_path(s, se, i), doc)
        row = {"rec": to_entity(rec, *keys.instance_keys(s, se, i)),
               "meta": {k: base64.b64encode(v).decode() for k, v in meta.items()} if meta else None}
        flush: _Chunk | None = None
        with self._lock:
            chunk = self._current()
            chunk.rows.append(row)
            chunk.count += 1
            if chunk.count >= self.size:
                flush = self._close(chunk)
        if flush is not None:
            self._write_manifest(flush)
        return path

    def _inbox(self, data: bytes | Path, sop: str) -> str:
        with self._lock:
            chunk = self._current()
            chunk.count += 1
        name = f"{chunk.prefix}{sop}.dcm"
        with open(data, "rb") if isinstance(data, Path) else contextlib.nullcontext(data) as f:
            self.svc.blobs.write(layout.INBOX, name, f, content_type=DICOM)
        if self._clock() - chunk.opened > self.delay - 1.0:  # its chunk may have been ingested already
            self.svc.queues.send(layout.BATCH_QUEUE, BatchRequest(blobs=(name,)).to_message())
        return name

    def _current(self) -> _Chunk:
        """The open chunk (under the lock); a new one (its message sent first) when there is none."""
        chunk = self._chunk
        now = self._clock()
        if chunk is None or chunk.closed or chunk.count >= self.size or now - chunk.opened >= self.window:
            if chunk is not None and not chunk.closed:
                closed = self._close(chunk)
                threading.Thread(target=self._write_manifest, args=(closed,), daemon=True).start()
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            prefix = layout.batch_chunk_prefix(self.source, f"{stamp}-{secrets.token_hex(4)}")
            self.svc.queues.send(layout.BATCH_QUEUE, BatchRequest(prefix=prefix).to_message(),
                                 delay_seconds=self.delay)
            chunk = self._chunk = _Chunk(prefix, now)
            timer = threading.Timer(self.window, self._expire, args=(chunk,))
            timer.daemon = True
            timer.start()
        return chunk

    def _close(self, chunk: _Chunk) -> _Chunk:
        chunk.closed = True
        if self._chunk is chunk:
            self._chunk = None
        return chunk

    def _expire(self, chunk: _Chunk) -> None:
        with self._lock:
            if chunk.closed:
                return
            self._close(chunk)
        self._write_manifest(chunk)

    def close(self) -> None:
        """Close the open chunk now (a move or association ended, the gateway stops): its manifest is
        written and it is ingested at once, not when its message comes due."""
        with self._lock:
            chunk = self._chunk
            if chunk is None or chunk.closed:
                return
            self._close(chunk)
        self._write_manifest(chunk)

    def _write_manifest(self, chunk: _Chunk) -> None:
        """The closed chunk's manifest, and a message to ingest it now (the chunk's first message, due
        later, stays as the safety net for a writer that dies: it finds the chunk done, or what is left)."""
        if chunk.rows:
            body = orjson.dumps({"source": self.source, "rows": chunk.rows})
            self.svc.blobs.write(layout.INBOX, chunk.prefix + MANIFEST, body, content_type="application/json")
        if chunk.count:
            self.svc.queues.send(layout.BATCH_QUEUE, BatchRequest(prefix=chunk.prefix).to_message())
        log.info("Batch chunk %s closed: %d file(s), %d archived with their rows in its manifest", chunk.prefix,
                 chunk.count, len(chunk.rows))


# -- ingest ------------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Row:
    """A new instance row to write: from an inbox file just copied, or from a chunk's manifest."""

    name: str
    rec: InstanceRecord
    meta: dict[str, bytes] | None
    #: The careful path for this instance, when its row exists already.
    fallback: Callable[[], Outcome]
    #: The ingest log line's read cost (0 for a manifest row: nothing was read).
    bytes_read: int = 0
    reads: int = 0
    #: Its DICOM JSON when at hand (else read from ``meta`` for the extended query tags).
    doc: dict[str, Any] | None = None


class BatchIngest:
    def __init__(self, services: Services) -> None:
        self.svc = services
        self.ingest = IngestService(services)

    def run(self, request: BatchRequest) -> list[Outcome]:
        """Ingest what a batch message names: a chunk (its inbox files and its manifest), or single files."""
        svc = self.svc
        svc.ensure_ready()
        names = ([item.name for item in svc.blobs.list(layout.INBOX, request.prefix)] if request.prefix
                 else list(request.blobs))
        if request.prefix and request.prefix + DONE in names:  # its other message ran already
            log.info("Ingest batch %s: done already", request.prefix)
            return []
        files = [n for n in names if n.endswith(".dcm")]
        manifests = [n for n in names if n.endswith("/" + MANIFEST)]
        outcomes, rows = self._files(files)
        for name in manifests:
            raw = svc.blobs.read(layout.INBOX, name)
            if raw is not None:
                rows += self._manifest_rows(name, orjson.loads(raw))
        written, pending = self._write(rows)
        outcomes += written
        self._settle_later(written, pending)
        if request.prefix:  # the chunk's other message (its safety net, or a redelivery) finds nothing to redo
            svc.blobs.write(layout.INBOX, request.prefix + DONE, b"", content_type="text/plain")
        states: dict[str, int] = {}
        for o in outcomes:
            states[str(o.state)] = states.get(str(o.state), 0) + 1
        log.info("Ingest batch %s: %d file(s), %d manifest row(s): %s", request.prefix or "(late files)", len(files),
                 len(rows), ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "nothing")
        return outcomes

    def ingest_many(self, blobs_: Sequence[Any]) -> list[Outcome]:
        """Inbox blobs through the per-file steps, their rows written together (tests and benchmarks)."""
        outcomes, rows = self._files_of(list(blobs_))
        written, pending = self._write(rows)
        self._settle_later(written, pending)
        return outcomes + written

    def _settle_later(self, written: Sequence[Outcome], pending: Mapping[str, Mapping[str, str]]) -> None:
        """One settle message for every study of the chunk, due when they will have been quiet for the stable
        age (one run each, images and stability together), with their pending rows' ETags."""
        studies = sorted({o.study for o in written if o.study and o.state is IngestState.ARCHIVED})
        if studies:
            self.svc.scheduler.schedule_group(studies, self.svc.settings.stable_age_seconds + EARLY_DELIVERY + 1.0,
                                              pending={s: pending[s] for s in studies if s in pending})

    def _files(self, names: Sequence[str]) -> tuple[list[Outcome], list[_Row]]:
        return self._files_of([self.svc.blobs.open(layout.INBOX, n) for n in names])

    def _files_of(self, files: Sequence[Any]) -> tuple[list[Outcome], list[_Row]]:
        """Inbox files: header reads and conditional copies side by side; the new ones' rows to write."""
        ing = self.ingest
        prepared = list(POOL.map(ing.prepare, files))
        done = [p for p in prepared if isinstance(p, Outcome)]
        todo = [p for p in prepared if isinstance(p, Prepared)]
        rows: list[_Row] = []
        notes = [p for p in todo if p.note is not None]  # rejection notes: the per-file steps, which apply them
        done += [ing.store(p) for p in notes]
        todo = [p for p in todo if p.note is None]
        for p, (state, meta) in zip(todo, POOL.map(self._copy, todo), strict=True):
            if state == "new":
                rows.append(_Row(p.blob.name, p.rec, meta, lambda p=p: ing.store(p),  # type: ignore[misc]
                                 p.reader.bytes_fetched, p.reader.requests, p.doc))
            elif state == "gone":
                done.append(ing._gone(p.blob.name))
            else:  # the archive holds this instance already: the careful path decides
                done.append(ing.store(p))
        return done, rows

    def _copy(self, p: Prepared) -> tuple[str, dict[str, bytes] | None]:
        """The conditional server-side copy to the archive: ``new``, ``exists`` or ``gone``."""
        rec = p.rec
        rec.stamp = self.svc.topology.new_stamp()
        path = layout.instance_path(rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
        try:
            if not self.svc.blobs.copy(p.blob, layout.ARCHIVE, path, if_absent=True, metadata={STAMP: rec.stamp}):
                return "exists", None
            return "new", self.ingest._meta(rec, p.doc)
        except BlobGone:
            return "gone", None

    def _manifest_rows(self, name: str, doc: Any) -> list[_Row]:
        """The rows a writer prepared; one that does not describe a well-formed archived instance is skipped
        (logged: its file, if archived, is found by ``tools reindex`` or moved again by ``tools migrate``)."""
        out: list[_Row] = []
        for k, item in enumerate(doc.get("rows", []) if isinstance(doc, dict) else []):
            try:
                rec = from_entity(InstanceRecord, item["rec"])
                uids = (rec.study_instance_uid, rec.series_instance_uid, rec.sop_instance_uid)
                if not all(is_valid_uid(u) for u in uids) or not rec.sop_class_uid:
                    raise ValueError("UIDs")
                meta = {key: base64.b64decode(v) for key, v in item["meta"].items()} if item.get("meta") else None
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("Batch manifest %s: row %d skipped (%s)", name, k, type(exc).__name__)
                continue
            path = layout.instance_path(*uids)
            archived = self.svc.blobs.open(layout.ARCHIVE, path)
            out.append(_Row(path, rec, meta,
                            lambda blob=archived: self.ingest.index_archived(blob)))  # type: ignore[misc]
        return out

    def _extended(self, r: _Row) -> None:
        """The row's extended query tag values, as ingest takes them (in the row: no request; its VR errors
        recorded). From the DICOM JSON at hand, or the one packed in the row (or its sidecar)."""
        if not self.svc.extended_tags.indexed():
            r.rec.extended = {}
            return
        doc = r.doc
        if doc is None:
            raw = unpack_meta(r.meta) if r.meta else self.svc.blobs.read(layout.METADATA, layout.instance_metadata_path(
                r.rec.study_instance_uid, r.rec.series_instance_uid, r.rec.sop_instance_uid))
            doc = orjson.loads(raw) if raw else {}
        self.ingest._record_errors(self.ingest._extended(r.rec, doc))

    def _write(self, rows: Iterable[_Row]) -> tuple[list[Outcome], dict[str, dict[str, str]]]:
        """Rows, study by study; their outcomes and the ETags of the pending rows written (study -> series)."""
        by_study: dict[str, list[_Row]] = {}
        for row in rows:
            by_study.setdefault(row.rec.study_instance_uid, []).append(row)
        out: list[Outcome] = []
        pending: dict[str, dict[str, str]] = {}
        for study, items in by_study.items():
            written, pending[study] = self._write_study(study, items)
            out += written
        return out, pending

    def _write_study(self, study: str, items: list[_Row]) -> tuple[list[Outcome], dict[str, str]]:
        """One study's new instances: its pending rows, then their rows and change entries, 50 a transaction."""
        svc = self.svc
        series: dict[str, SeriesRecord] = {}
        for r in items:
            series.setdefault(r.rec.series_instance_uid, SeriesRecord(**study_part(r.rec), **series_part(r.rec)))
        now = svc.scheduler.clock()
        # Before the rows, so QIDO finds them at once (a series this process marked pending just now, e.g. by
        # the study's previous chunk, needs no second write).
        needed = svc.scheduler.pending_needed(list(series.values()))
        pending = svc.index.put_pending_many(needed, now) if needed else {}
        done: list[Outcome] = []
        for k in range(0, len(items), CHUNK_SIZE):
            part = items[k:k + CHUNK_SIZE]
            writes = []
            for r in part:
                rec = r.rec
                self._extended(r)
                rec.arrival = now
                rec.seq = svc.sequencer.next()
                writes.append((rec, r.meta, ChangeEntry(study, rec.series_instance_uid, rec.sop_instance_uid,
                                                        Action.CREATE, rec.seq, utcnow(), source=rec.source,
                                                        digest=rec.digest, origin=svc.topology.region)))
            try:
                svc.index.write_instances(writes)
            except (RowExists, RowChanged):  # some row exists already (a chunk handled twice): one by one
                done += [r.fallback() for r in part]
                continue
            for r in part:
                # An inbox name as logs show inbox names (a digest); a manifest row's archive path is UIDs only.
                shown = layout.log_name(r.name) if r.name.startswith(layout.BATCH_PREFIX) else r.name
                log.info("Ingest %s: %s sop=%s (read %d bytes in %d requests)", shown, IngestState.ARCHIVED,
                         r.rec.sop_instance_uid, r.bytes_read, r.reads)
                done.append(Outcome(r.name, IngestState.ARCHIVED, study, r.rec.series_instance_uid,
                                    r.rec.sop_instance_uid, bytes_read=r.bytes_read, requests=r.reads))
        return done, pending

