"""WADO-RS over the archive: instances, metadata, frames and bulk data (PS3.18 10.4).

* Instances (study/series/instance) are streamed as ``multipart/related;
  type="application/dicom"`` from the archive blobs in :data:`CHUNK`-sized ranged
  reads: memory per request is one chunk, whatever the file size. The list of
  instances comes from the archive itself (what we stream is what exists). A file
  archived without preamble or File Meta Information goes out as a Part 10 file:
  the missing framing is generated before its unchanged bytes (:mod:`shared.dicom.part10`).
* Metadata: the instance's DICOM JSON from its index row; for a series the bundle the
  settle step wrote (ONE blob read), or, while the series has instances not settled yet,
  its rows (one partition query); for a study, each of its series. Relative BulkDataURIs
  are made absolute with the request's base URL.
* Frames: ranged reads at the offsets of the frame index
  (:mod:`shared.dicom.frames`), built on first use and stored next to the sidecar, in this region's
  own metadata container (never replicated). It is keyed on the archived version's stamp, which is
  the same in every region (object replication copies blob metadata), not on an ETag, which each
  account assigns; a file archived before stamps existed falls back to its ETag here.
* Bulk data: ``bulkdata/<offset>-<length>`` is that byte range of the archived file
  (encapsulated pixel data, of undefined length, is sent frame by frame);
  ``bulkdata/tag/<tag>`` is a top-level element's value.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import numpy as np
import orjson

from shared.dicom import facts, part10, transcode
from shared.dicom import frames as frame_index
from shared.dicom.header import Header, read_header
from shared.dicom.ranged import RangedReader
from shared.dicomweb import media, transcoded
from shared.dicomweb.errors import BadRequest, HttpProblem, NotAcceptable, NotFoundProblem
from shared.dicomweb.multipart import new_boundary, related_content_type, stream_parts
from shared.dicomweb.reply import Reply
from shared.errors import BadInput
from shared.index.store import IndexStore
from shared.ports import Blob, BlobGone, BlobStore
from shared.storage import layout
from shared.storage.regions import STAMP

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Bytes per ranged read while streaming (and the most a request holds in memory).
CHUNK: Final = 4 * 1024 * 1024
MAX_FRAMES_PER_REQUEST: Final = 10_000
#: Instances of a series being transcoded while the one before them is sent (decoding overlaps the reads and
#: the sending; each holds at most its prefetched part, :data:`shared.dicomweb.transcoded.PREFETCH_BYTES`).
TRANSCODE_AHEAD: Final = 2
_BULK_URI = re.compile(rb'("BulkDataURI"\s*:\s*")(studies/)')


@dataclass(frozen=True, slots=True)
class ArchivedInstance:
    study: str
    series: str
    sop: str
    size: int
    #: Serve the first version kept by a bulk update (``msdicom-request-original: true``).
    original: bool = False

    @property
    def path(self) -> str:
        if self.original:
            return layout.original_path(self.study, self.series, self.sop)
        return layout.instance_path(self.study, self.series, self.sop)


class Wado:
    """WADO-RS reads of one storage account."""

    def __init__(self, blobs: BlobStore, index: IndexStore) -> None:
        self.blobs = blobs
        self.index = index

    def stored_syntaxes(self, study: str, series: str | None, sop: str | None) -> list[str]:
        """The stored transfer syntaxes (from the index): consulted only when a client insists on one."""
        if sop and series:
            got = self.index.get_instance(study, series, sop)
            return [got.record.transfer_syntax_uid] if got else []
        recs = self.index.list_series_instances(study, series) if series else self.index.list_study_instances(study)
        return [r.transfer_syntax_uid for r in recs]

    # -- listing -----------------------------------------------------------------------
    def list_instances(self, study: str, series: str | None = None) -> list[ArchivedInstance]:
        prefix = layout.series_prefix(study, series) if series else layout.study_prefix(study)
        out = []
        for item in self.blobs.list(layout.ARCHIVE, prefix):
            parts = item.name.split("/")
            if len(parts) != 3 or not parts[2].endswith(".dcm"):
                continue
            out.append(ArchivedInstance(parts[0], parts[1], parts[2][: -len(".dcm")], int(item.size)))
        return out

    def originals(self, study: str, series: str | None = None) -> set[tuple[str, str]]:
        """(series, sop) of the instances of a study or series whose first version a bulk update kept."""
        out = set()
        for item in self.blobs.list(layout.ARCHIVE, layout.originals_prefix(study, series)):
            parts = item.name.split("/")
            if len(parts) == 4 and parts[3].endswith(".dcm"):
                out.add((parts[2], parts[3][: -len(".dcm")]))
        return out

    # -- instances ---------------------------------------------------------------------
    def retrieve(self, accept: str | None, study: str, series: str | None = None, sop: str | None = None, *,
                 original: bool = False) -> Reply:
        """Study, series or instance retrieve, streamed; as stored unless the client names another syntax;
        ``original``: the first versions of updated instances (the others as they are)."""
        wanted = media.instance_syntaxes(accept)
        if sop is not None:
            assert series is not None
            first = self._open(layout.original_path(study, series, sop)) if original else None
            first = first or self._open(layout.instance_path(study, series, sop))
            if first is None:
                self.gone(study, series, sop)
                raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} is not in the archive.")
            items: list[Any] = [first]
        else:
            listed = self.list_instances(study, series)
            if original and listed:
                kept = self.originals(study, series)
                listed = [dataclasses.replace(a, original=(a.series, a.sop) in kept) for a in listed]
            if not listed:
                what = f"Series {series} of study {study}" if series else f"Study {study}"
                raise NotFoundProblem(f"{what} has no instances in the archive.")
            items = listed
        target = self._target_syntax(wanted, study, series, sop)
        boundary = new_boundary()
        if target is None:
            parts: Iterable[tuple[str, Iterable[bytes]]] = ((media.DICOM, self._chunks_of(item)) for item in items)
            return Reply(200, {"Content-Type": related_content_type(media.DICOM, boundary)},
                         stream=stream_parts(parts, boundary))
        parts = _lookahead(lambda item: self._transcoded_part(item, target), items, TRANSCODE_AHEAD)
        return Reply(200, {"Content-Type": related_content_type(media.DICOM, boundary, target)},
                     stream=stream_parts(parts, boundary))

    def _target_syntax(self, wanted: list[str | None], study: str, series: str | None, sop: str | None) -> str | None:
        """The syntax to send (None: as stored): the client's first that is "as stored", one we can produce, or
        the one every instance is stored in (asked of the index only then)."""
        stored: list[str] | None = None
        for ts in wanted:
            if ts is None or ts in transcode.OFFERED:
                return ts
            if stored is None:
                stored = self.stored_syntaxes(study, series, sop)
            if stored and all(s == ts for s in stored):
                return None
        raise media.not_acceptable_syntax(wanted, stored or [])

    def _transcoded_part(self, item: ArchivedInstance | tuple[Blob, bytes, int],
                         target: str) -> tuple[str, Iterable[bytes]]:
        """One instance in ``target`` (as stored if it is stored so), or an error part saying why it is not."""
        if isinstance(item, ArchivedInstance):
            opened = self._open(item.path)
            if opened is None:
                raise BlobGone(f"{item.path} disappeared during the response")
            item = opened
        src, first, total = item
        sop = src.name.rsplit("/", 1)[-1].removesuffix(".dcm")
        ctype = f"{media.DICOM}; transfer-syntax={target}"
        if len(first) >= total:  # the whole file came with the first read (most single-frame images): in memory
            try:
                return ctype, [transcoded.whole_in(first, target)]
            except transcode.TranscodeError as exc:
                log.warning("Instance %s cannot be transcoded to %s: %s", sop, target, exc)
                return transcoded.error_part(f"Instance {sop} cannot be sent as {target}: {exc}")
        try:
            header = read_header(RangedReader(src))
        except BadInput as exc:
            return transcoded.error_part(f"Instance {sop} cannot be read to transcode it: {exc.message}")
        if header.transfer_syntax_uid == target:
            return ctype, self._chunks_of((src, first, total))
        try:
            chunks = transcoded.prefetched(self._transcoded_chunks(src, header, target))
        except transcode.TranscodeError as exc:
            log.warning("Instance %s cannot be transcoded to %s: %s", sop, target, exc)
            return transcoded.error_part(f"Instance {sop} cannot be sent as {target}: {exc}")
        return ctype, chunks

    def _transcoded_chunks(self, src: Blob, header: Header, target: str) -> Iterator[bytes]:
        parts = src.name.split("/")
        source = None
        native = None
        if header.pixel_data_offset is not None and not facts.is_deflated(header.transfer_syntax_uid):
            study, series, sop = parts[-3], parts[-2], parts[-1].removesuffix(".dcm")
            source, pinned, index = self.frame_source(study, series, sop, header)
            if header.pixel_data_length is not None:
                offset, length, swap = header.pixel_data_offset, header.pixel_data_length, index.byte_swap

                def native_pixels() -> Iterator[bytes]:
                    return _swapped(_ranges(pinned, offset, length), swap)

                native = native_pixels
        yield from transcoded.instance_in(src, header, source, target, native)

    def frame_source(self, study: str, series: str, sop: str, header: Header | None = None,
                     opened: tuple[frame_index.FrameIndex, Blob] | None = None,
                     ) -> tuple[transcoded.FrameSource, Blob, frame_index.FrameIndex]:
        """The frames of an archived instance for transcoding or rendering (``header``/``opened``: if the
        caller has them already)."""
        index, src = opened or self.frame_index(study, series, sop)
        if header is None:
            header = self.header(study, series, sop, src)
        try:
            pm = transcode.PixelModule.of(header.dataset)
        except transcode.TranscodeError as exc:
            raise HttpProblem(f"The frames of instance {sop} cannot be transcoded: {exc}", status=406) from None
        syntax = facts.EXPLICIT_VR_LITTLE_ENDIAN if facts.has_native_pixels(index.transfer_syntax_uid) \
            else index.transfer_syntax_uid

        def read(number: int) -> bytes:
            return b"".join(_frame_bytes(src, index, number))

        return transcoded.FrameSource(study, series, sop, index.etag, pm, syntax, read), src, index

    def _open(self, path: str) -> tuple[Blob, bytes, int] | None:
        """The first chunk of a blob (or None if it does not exist): 404 is decided before streaming."""
        src = self.blobs.open(layout.ARCHIVE, path)
        try:
            data, total = src.read_range(0, CHUNK)
        except BlobGone:
            return None
        return src, data, total

    def _chunks_of(self, item: ArchivedInstance | tuple[Blob, bytes, int]) -> Iterator[bytes]:
        if isinstance(item, ArchivedInstance):
            opened = self._open(item.path)
            if opened is None:  # deleted while we streamed the ones before it
                raise BlobGone(f"{item.path} disappeared during the response")
            item = opened
        src, first, total = item
        try:
            prefix = part10.missing_prefix(first)
        except BadInput as exc:  # archived before validation required the UIDs; send it as stored
            log.warning("Instance blob %s cannot be framed as Part 10 (%s); sent as stored",
                        src.name, exc.reason)
            prefix = b""
        if prefix:
            yield prefix
        yield first
        yield from _ranges(src, len(first), total - len(first))

    # -- metadata ----------------------------------------------------------------------
    def gone(self, study: str, series: str, sop: str) -> None:
        """410 Gone when an IOCM rejection note withdrew the instance (its file is kept for a while)."""
        item = self.blobs.properties(layout.ARCHIVE, layout.rejected_path(study, series, sop))
        if item is not None:
            code = item.metadata.get("rejection_code", "")
            raise HttpProblem(f"Instance {sop} was rejected by an IOCM rejection note ({code} "
                              f"{item.metadata.get('rejection_meaning', '')}) and is no longer served.", status=410)

    def _original_json(self, study: str, series: str, sop: str) -> bytes | None:
        """The DICOM JSON of the first version a bulk update kept (read from its header), or None."""
        from shared.dicom.dicomjson import to_dicom_json

        src = self.blobs.open(layout.ARCHIVE, layout.original_path(study, series, sop))
        try:
            header = read_header(RangedReader(src))
        except (BlobGone, BadInput):
            return None
        return orjson.dumps(to_dicom_json(header, study, series, sop))

    def instance_metadata(self, accept: str | None, base: str, study: str, series: str, sop: str, *,
                          original: bool = False) -> Reply:
        ctype = media.negotiate_json(accept)
        if original and (kept := self._original_json(study, series, sop)) is not None:
            return Reply(200, {"Content-Type": ctype}, b"[" + _absolute(kept, base) + b"]")
        got = self.index.get_instance(study, series, sop)
        raw = None
        if got is not None:
            raw = got.meta if not got.meta_in_blob else self._read(
                layout.METADATA, layout.instance_metadata_path(study, series, sop))
        if raw is None:
            self.gone(study, series, sop)
            raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} has no metadata.")
        return Reply(200, {"Content-Type": ctype}, b"[" + _absolute(raw, base) + b"]")

    def series_metadata(self, accept: str | None, base: str, study: str, series: str, *,
                        original: bool = False) -> Reply:
        ctype = media.negotiate_json(accept)
        body = self._original_array(study, series) if original else None
        body = body or self._series_array(study, series)
        if body is None:
            raise NotFoundProblem(f"Series {series} of study {study} has no metadata.")
        return Reply(200, {"Content-Type": ctype}, b"[" + _absolute(body, base) + b"]")

    def study_metadata(self, accept: str | None, base: str, study: str, *, original: bool = False) -> Reply:
        ctype = media.negotiate_json(accept)
        pending = {str(r["RowKey"]) for r in self.index.pending_of(study)}
        series_uids = sorted({s.series_instance_uid for s in self.index.list_series(study)} | pending)
        kept = {se for se, _ in self.originals(study)} if original else set()
        bodies = [b for b in ((self._original_array(study, s) if s in kept else None)
                              or self._series_array(study, s, unsettled=s in pending) for s in series_uids) if b]
        if not bodies:
            raise NotFoundProblem(f"Study {study} has no metadata.")
        return Reply(200, {"Content-Type": ctype}, b"[" + _absolute(b",".join(bodies), base) + b"]")

    def _series_array(self, study: str, series: str, *, unsettled: bool | None = None) -> bytes | None:
        """The inside of a series' metadata array (objects joined by commas), or None: a small series' rows
        (it has no bundle: ``layout.BUNDLE_MIN_INSTANCES``), else the settled bundle, or while the series has
        unsettled instances, its rows."""
        small = layout.BUNDLE_MIN_INSTANCES
        rows = self.index.series_rows_with_meta(study, series, limit=small)
        if len(rows) >= small:  # a large series: its bundle, unless instances arrived since it was written
            if unsettled is None:
                unsettled = any(str(r["RowKey"]) == series for r in self.index.pending_of(study))
            if not unsettled:
                bundle = self._read(layout.METADATA, layout.series_metadata_path(study, series))
                if bundle is not None:
                    inner = bundle.strip()
                    if inner.startswith(b"[") and inner.endswith(b"]"):
                        return inner[1:-1].strip() or None
            rows = self.index.series_rows_with_meta(study, series)
        rows = sorted(rows, key=lambda r: (r[0].instance_number if r[0].instance_number is not None else 1 << 30,
                                           r[0].sop_instance_uid))
        objs = []
        for rec, meta, in_blob in rows:
            raw = meta if not in_blob else self._read(layout.METADATA, layout.instance_metadata_path(
                study, series, rec.sop_instance_uid))
            if raw:
                objs.append(raw.strip())
        return b",".join(objs) or None

    def _original_array(self, study: str, series: str) -> bytes | None:
        """A series' metadata with the first versions of updated instances (None: nothing was updated)."""
        kept = {sop for _, sop in self.originals(study, series)}
        if not kept:
            return None
        rows = sorted(self.index.series_rows_with_meta(study, series),
                      key=lambda r: (r[0].instance_number if r[0].instance_number is not None else 1 << 30,
                                     r[0].sop_instance_uid))
        objs = []
        for rec, meta, in_blob in rows:
            sop = rec.sop_instance_uid
            raw = self._original_json(study, series, sop) if sop in kept else (
                meta if not in_blob else self._read(layout.METADATA, layout.instance_metadata_path(study, series, sop)))
            if raw:
                objs.append(raw.strip())
        return b",".join(objs) or None

    def _read(self, container: str, path: str) -> bytes | None:
        return self.blobs.read(container, path)

    # -- frames ------------------------------------------------------------------------
    def remembered_index(self, study: str, series: str, sop: str) -> tuple[frame_index.FrameIndex, Blob] | None:
        """The frame index this process checked last for the instance, with a source that reads on the condition
        of the version it was checked against (a read fails with :class:`BlobGone` if the instance was replaced
        or deleted since: then :meth:`forget_index` and take :meth:`frame_index`); None if not remembered."""
        remembered = _INDEXES.get(self._index_key(study, series, sop))
        if remembered is None:
            return None
        return remembered[0], self.blobs.open_version(layout.ARCHIVE, layout.instance_path(study, series, sop),
                                                      remembered[1])

    def forget_index(self, study: str, series: str, sop: str) -> None:
        _INDEXES.forget(self._index_key(study, series, sop))

    def whole_instance(self, study: str, series: str, sop: str,
                       limit: int) -> tuple[frame_index.FrameIndex, Header, Blob] | None:
        """A small archived instance in one request: its first ``limit`` bytes, if they are all of it, with the
        frame index and header made from them and a source that reads them (no further request); None if the
        instance is larger. The index is remembered as :meth:`frame_index` remembers it, but not stored: it costs
        nothing to rebuild from a file read whole. 404 if not archived, 400 if it has no frames."""
        src = self.blobs.open(layout.ARCHIVE, layout.instance_path(study, series, sop))
        try:
            data, total = src.read_range(0, limit)
        except BlobGone:
            raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} is not archived.") from None
        if total > len(data):
            return None
        held = _Held(src, data)
        index, header = self._build_index(study, series, sop, held)
        if src.etag:
            _INDEXES.put(self._index_key(study, series, sop), (index, src.etag))
        return index, header, held

    def _build_index(self, study: str, series: str, sop: str, src: Blob) -> tuple[frame_index.FrameIndex, Header]:
        """The frame index of the archived file ``src`` (its header parsed on the way), stamped with the file's
        version; 400 if its frames cannot be served."""
        header = self.header(study, series, sop, src)
        try:
            built = frame_index.build(header, src)
        except BadInput as exc:
            raise HttpProblem(f"The frames of instance {sop} cannot be served: {exc.message}", status=400) from None
        return dataclasses.replace(built, etag=_version(src.metadata, src.etag)), header

    def frames(self, accept: str | None, study: str, series: str, sop: str, frame_list: str) -> Reply:
        """Frames as stored or transcoded. A frame index this process used before is trusted without asking the
        archive for its version first (a viewer asks a slide's tiles by the hundred): the first read is
        conditional on the version it was built from, and answers before the response starts, so an instance
        replaced or deleted since (by an update in another process) is caught there and served as checked."""
        numbers = parse_frame_list(frame_list)
        remembered = _INDEXES.get(self._index_key(study, series, sop))
        if remembered is not None:
            try:
                return self._frames(accept, study, series, sop, numbers, remembered)
            except BlobGone:
                _INDEXES.forget(self._index_key(study, series, sop))
        return self._frames(accept, study, series, sop, numbers, None)

    def _frames(self, accept: str | None, study: str, series: str, sop: str, numbers: list[int],
                trusted: tuple[frame_index.FrameIndex, str] | None) -> Reply:
        if trusted is not None:
            index, src = trusted[0], self.blobs.open_version(layout.ARCHIVE, layout.instance_path(study, series, sop),
                                                             trusted[1])
        else:
            index, src = self.frame_index(study, series, sop)
        # Big-endian native frames go out little-endian (octet-stream's default), swapped on the fly.
        ts = facts.EXPLICIT_VR_LITTLE_ENDIAN if index.byte_swap else index.transfer_syntax_uid
        part_type, target = media.negotiate_frames(accept, ts)
        for n in numbers:
            if n > index.number_of_frames:
                raise NotFoundProblem(f"Frame {n} does not exist: the instance has {index.number_of_frames} frame(s).")
        boundary = new_boundary()
        if target is not None and not (facts.has_native_pixels(ts) and target in transcode.NATIVE):
            if trusted is not None:  # transcoding reads later, inside the response: the version is checked first
                return self._frames(accept, study, series, sop, numbers, None)
            source, _, _ = self.frame_source(study, series, sop, opened=(index, src))
            cache = transcoded.FrameCache(self.blobs)
            return Reply(200, {"Content-Type": related_content_type(part_type, boundary, target)},
                         stream=stream_parts(transcoded.frame_parts(source, numbers, target, part_type, cache),
                                             boundary))
        ts = target or ts
        ctype = part_type if part_type == media.OCTET else f"{part_type}; transfer-syntax={ts}"
        parts: Iterator[tuple[str, Iterable[bytes]]] = ((ctype, _frame_bytes(src, index, n)) for n in numbers)
        if trusted is not None:  # the first read now: a version that changed fails here (BlobGone), not mid-response
            first = _frame_bytes(src, index, numbers[0])
            head = next(first, b"")
            parts = itertools.chain([(ctype, itertools.chain([head], first))],
                                    ((ctype, _frame_bytes(src, index, n)) for n in numbers[1:]))
        return Reply(200, {"Content-Type": related_content_type(part_type, boundary, ts if part_type != media.OCTET
                                                                else None)},
                     stream=stream_parts(parts, boundary))

    def frame_index(self, study: str, series: str, sop: str) -> tuple[frame_index.FrameIndex, Blob]:
        """The stored frame index, or build and store it (one header read + item-header walk).

        The index records the archived blob's ETag; if the instance was replaced since (an
        updated file), the index is rebuilt. Reads through the returned source are
        conditional on that ETag, so a file replaced mid-response fails instead of mixing.
        """
        archived = layout.instance_path(study, series, sop)
        path = layout.frame_index_path(study, series, sop)
        key = self._index_key(study, series, sop)
        remembered = _INDEXES.get(key)
        if remembered is not None:  # parsed before in this process: only its version is checked
            props = self.blobs.properties(layout.ARCHIVE, archived)
            if props is None:
                raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} is not archived.")
            if remembered[0].etag == _version(props.metadata, props.etag):
                _INDEXES.put(key, (remembered[0], props.etag))
                return remembered[0], self.blobs.open_version(layout.ARCHIVE, archived, props.etag)
        raw = self._read(layout.METADATA, path)
        if raw is not None:
            try:
                index = frame_index.FrameIndex.from_json(orjson.loads(raw))
            except (ValueError, KeyError, TypeError):
                log.warning("Frame index %s is unreadable; rebuilding it", path)
            else:
                props = self.blobs.properties(layout.ARCHIVE, archived)
                if props is None:
                    raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} is not archived.")
                if index.etag == _version(props.metadata, props.etag):
                    _INDEXES.put(key, (index, props.etag))
                    return index, self.blobs.open_version(layout.ARCHIVE, archived, props.etag)
                log.info("Frame index of %s predates the archived file; rebuilding it", sop)
        src = self.blobs.open(layout.ARCHIVE, archived)
        index, _ = self._build_index(study, series, sop, src)
        self.blobs.write(layout.METADATA, path, orjson.dumps(index.to_json()), content_type="application/json")
        log.info("Built frame index for %s (%d frames)", sop, index.number_of_frames)
        if src.etag:
            _INDEXES.put(key, (index, src.etag))
        return index, src

    def _index_key(self, study: str, series: str, sop: str) -> str:
        """Where this store's frame index of an instance is remembered in the process (:data:`_INDEXES`)."""
        return f"{id(self.blobs)}|{layout.frame_index_path(study, series, sop)}"

    def header(self, study: str, series: str, sop: str, src: Blob) -> Header:
        try:
            return read_header(RangedReader(src))
        except BlobGone:
            raise NotFoundProblem(f"Instance {sop} of series {series} in study {study} is not archived.") from None
        except BadInput as bad:  # archived under other limits, or damaged since: the whole instance still serves
            raise HttpProblem(f"The header of instance {sop} cannot be read here: {bad.message}", status=400) from None

    # -- bulk data ---------------------------------------------------------------------
    def bulk(self, accept: str | None, study: str, series: str, sop: str, locator: str) -> Reply:
        m = re.fullmatch(r"([0-9]{1,15})-([0-9]{1,15})", locator)
        t = re.fullmatch(r"tag/([0-9A-Fa-f]{8})", locator)
        if not m and not t:
            raise BadRequest("Bulk data is addressed as bulkdata/<offset>-<length> or bulkdata/tag/<8 hex digits>.")
        src: Blob = self.blobs.open(layout.ARCHIVE, layout.instance_path(study, series, sop))
        if m:
            offset, length = int(m.group(1)), int(m.group(2))
            if length == 0xFFFFFFFF:  # encapsulated pixel data: its frames
                index, src = self.frame_index(study, series, sop)
                part, target = media.negotiate_frames(accept, index.transfer_syntax_uid)
                if target is not None:
                    raise NotAcceptable("Bulk data is sent as stored; ask for frames (…/frames/1,2) in another "
                                        "transfer syntax.")
                boundary = new_boundary()
                parts = ((part, _frame_chunks(src, r)) for r in index.frames)
                return Reply(200, {"Content-Type": related_content_type(part, boundary)},
                             stream=stream_parts(parts, boundary))
            media.negotiate_bulk(accept)
            try:
                _, size = src.read_range(0, 1)
            except BlobGone:
                raise NotFoundProblem(f"Instance {sop} is not in the archive.") from None
            if offset + length > size:
                raise NotFoundProblem(f"Bytes {offset}-{offset + length} lie beyond the end of instance {sop}.")
            ranges: tuple[tuple[int, int], ...] = ((offset, length),)
        else:
            media.negotiate_bulk(accept)
            header = self.header(study, series, sop, src)
            assert t is not None
            tag = int(t.group(1), 16)
            elem: Any = header.dataset.get_item(tag)
            if elem is not None and getattr(elem, "value_tell", None) is not None and elem.length != 0xFFFFFFFF:
                ranges = ((int(elem.value_tell), int(elem.length)),)
            else:
                # Inside a sequence: the header parse holds its value (rule BULK_TAG_FIRST_MATCH).
                value = _nested_value(header.dataset, tag)
                if value is None:
                    raise NotFoundProblem(f"Instance {sop} has no binary element ({t.group(1).upper()}) to serve.")
                boundary = new_boundary()
                return Reply(200, {"Content-Type": related_content_type(media.OCTET, boundary)},
                             stream=stream_parts([(media.OCTET, [value])], boundary))
        boundary = new_boundary()
        return Reply(200, {"Content-Type": related_content_type(media.OCTET, boundary)},
                     stream=stream_parts([(media.OCTET, _frame_chunks(src, ranges))], boundary))


class _Held:
    """A blob read whole (:meth:`Wado.whole_instance`): the properties its read came with, and its bytes (reads
    cost nothing)."""

    def __init__(self, blob: Blob, data: bytes) -> None:
        self.container, self.name, self.url = blob.container, blob.name, blob.url
        self.etag, self.content_md5, self.last_modified = blob.etag, blob.content_md5, blob.last_modified
        self.metadata: Mapping[str, str] = dict(blob.metadata)
        self.data = data

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        return self.data[offset:offset + length], len(self.data)


class Recent(Generic[T]):
    """What this process used last, within a budget (each item has a size: bytes, or 1 to count items); an item
    larger than ``largest`` is not kept. The frame indexes of :class:`Wado` (a slide's tiles are asked thousands
    of times: its index of 16,384 frames is parsed once, not per request), and the headers and decoded frames of
    :mod:`shared.dicomweb.rendered`."""

    def __init__(self, budget: int, largest: int | None = None) -> None:
        self.budget, self.largest = budget, budget if largest is None else largest
        self.items: OrderedDict[str, tuple[T, int]] = OrderedDict()
        self.used = 0
        self.lock = threading.Lock()

    def get(self, key: str) -> T | None:
        with self.lock:
            found = self.items.get(key)
            if found is None:
                return None
            self.items.move_to_end(key)
            return found[0]

    def put(self, key: str, value: T, size: int = 1) -> None:
        if size > self.largest:
            return
        with self.lock:
            old = self.items.pop(key, None)
            self.used += size - (old[1] if old else 0)
            self.items[key] = (value, size)
            while self.used > self.budget:
                self.used -= self.items.popitem(last=False)[1][1]

    def forget(self, key: str) -> None:
        with self.lock:
            old = self.items.pop(key, None)
            self.used -= old[1] if old else 0

    def clear(self) -> None:
        with self.lock:
            self.items.clear()
            self.used = 0


#: The frame indexes used last, each with the ETag of the archived version it was checked against. Frames as
#: stored trust an entry and read conditionally on its ETag; other uses check the version first
#: (:meth:`Wado.frames`, :meth:`Wado.frame_index`).
_INDEXES: Recent[tuple[frame_index.FrameIndex, str]] = Recent(16)


def _lookahead(fn: Callable[[Any], Any], items: Iterable[Any], depth: int) -> Iterator[Any]:
    """``fn`` of each item, in order, with up to ``depth`` items computed ahead on worker threads."""
    from concurrent.futures import Future, ThreadPoolExecutor

    pending: list[Future[Any]] = []
    pool = ThreadPoolExecutor(max_workers=depth, thread_name_prefix="transcode")
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > depth:
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)


def _version(metadata: Mapping[str, str], etag: str | None) -> str | None:
    """What a frame index is keyed on: the archived version's stamp, else (archived before stamps) its ETag."""
    return metadata.get(STAMP) or etag


def _nested_value(ds: Any, tag: int) -> bytes | None:
    """The value of the first element ``tag`` found depth-first inside sequences (bytes only)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                found = _nested_value(item, tag)
                if found is not None:
                    return found
        elif elem.tag == tag and isinstance(elem.value, bytes | bytearray):
            return bytes(elem.value)
    return None


def parse_frame_list(value: str) -> list[int]:
    """``"1,3,5"`` -> [1, 3, 5]; frame numbers start at 1 (PS3.18 10.4.1.1.4)."""
    items = [v.strip() for v in value.split(",")]
    if not items or any(not re.fullmatch(r"[0-9]{1,9}", v) for v in items):  # ASCII digits only
        raise BadRequest("Frames are a comma-separated list of frame numbers starting at 1, as in frames/1,3,5.")
    numbers = [int(v) for v in items]
    if any(n < 1 for n in numbers):
        raise BadRequest("Frame numbers start at 1.")
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"At most {MAX_FRAMES_PER_REQUEST} frames per request.")
    return numbers


def _ranges(src: Blob, offset: int, length: int) -> Iterator[bytes]:
    end = offset + length
    while offset < end:
        data, _ = src.read_range(offset, min(CHUNK, end - offset))
        if not data:
            raise BlobGone("The archived file is shorter than its frame index says")
        yield data
        offset += len(data)


def _frame_chunks(src: Blob, ranges: Iterable[tuple[int, int]]) -> Iterator[bytes]:
    for offset, length in ranges:
        yield from _ranges(src, offset, length)


def _frame_bytes(src: Blob, index: frame_index.FrameIndex, number: int) -> Iterator[bytes]:
    """Frame ``number`` as WADO-RS sends it: little-endian samples, starting on a byte boundary."""
    chunks = _frame_chunks(src, index.frame(number))
    if index.bits_per_frame:  # unaligned 1-bit frame: its covering bytes are small (rows x cols / 8)
        yield frame_index.realign_bits(b"".join(chunks), index.bit_shift(number), index.bits_per_frame)
        return
    yield from _swapped(chunks, index.byte_swap)


def _swapped(chunks: Iterable[bytes], width: int) -> Iterator[bytes]:
    """Chunks of big-endian samples of ``width`` bytes as little-endian (``width`` 0: unchanged)."""
    if not width:
        yield from chunks
        return
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = len(data) - len(data) % width
        carry = data[cut:]
        if cut:
            yield np.frombuffer(data[:cut], dtype=f">u{width}").astype(f"<u{width}").tobytes()
    if carry:
        yield carry


def _absolute(raw: bytes, base: str) -> bytes:
    """Relative BulkDataURIs (``studies/...``) -> ``{base}/studies/...``."""
    prefix = (base.rstrip("/") + "/").encode()
    return _BULK_URI.sub(lambda m: m.group(1) + prefix + m.group(2), raw)
