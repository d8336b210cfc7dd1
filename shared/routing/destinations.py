"""Where routed instances go: C-STORE, STOW-RS, a worklist queue, an export container.

Each destination opens a *session* per (study, rule): ``send(item)`` delivers one
instance, ``send_study(summary)`` delivers a study-level message (worklists),
``close()`` releases what the session holds. Failures raise :class:`DeliveryError`
with a message safe to store in the ledger (status codes and UIDs, never values).

* ``dicom``: pynetdicom, one association per study. Presentation contexts are
  proposed per SOP class: the files' own syntaxes (compressed, deflated, big endian)
  in one context and the little endian uncompressed ones in another, so the peer
  chooses; a file whose syntax the peer refused is transcoded
  (:func:`shared.dicom.transcode.for_peer`) to one it accepted, and a failure names the
  SOP class, the syntaxes offered and accepted, and what to change on the peer.
  ``"tls": true``: DICOM TLS (BCP 195), the peer's certificate checked, our client
  certificate shown if it asks (:mod:`shared.routing.tls`).
* ``dicomweb``: STOW-RS (PS3.18 10.5) with ``requests``: ``POST {url}/studies``,
  ``multipart/related; type="application/dicom"``, one instance per request so the
  ledger's unit and the response's status agree. https only (plain http only to this
  machine, for local development), with the same TLS material.
* ``worklist``: a JSON message on the Storage queue ``worklist-<group>``.
* ``export``: a copy in a container of the data account, optionally de-identified
  (:mod:`shared.routing.deid`), at ``<prefix>/<study>/<series>/<sop>.dcm``; never one of the
  app's own containers (archive, inbox, config..., any region's).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID
from pynetdicom import _config

from shared.dicom import transcode
from shared.errors import BadInput
from shared.ports import BlobStore, Queues
from shared.routing.rules import Destination, insecure_url
from shared.routing.tls import RoutingTls
from shared.storage import layout

log = logging.getLogger(__name__)

CALLING_AE = "DICOMFLOW"
#: Offered beside the stored syntaxes, so any peer can be sent to (transcoding's native syntaxes).
UNCOMPRESSED = list(transcode.NATIVE)
#: C-STORE statuses that mean "stored" (success and the PS3.4 B.2.3 warnings).
STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """A delivery failed. ``permanent``: retrying cannot help (the ledger dead-letters at once)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Item:
    """One archived instance in scope: what the rules matched and how to fetch it.

    ``download`` writes the instance into a binary file object; destinations use
    :func:`spooled` so a multi-gigabyte instance goes through a temporary file, never
    through memory as a whole (except where it must be decoded: de-identification, or a
    C-STORE peer that refuses the stored transfer syntax)."""

    study: str
    series: str
    sop: str
    sop_class_uid: str
    transfer_syntax_uid: str
    download: Callable[[IO[bytes]], None]
    #: The bulk update operation that wrote this version ("" for a version as it was stored).
    updated_by: str = ""


@contextlib.contextmanager
def spooled(item: Item) -> Iterator[Path]:
    """The instance in a temporary file for the duration of the block."""
    with tempfile.NamedTemporaryFile(prefix="dicomflow-route-", suffix=".dcm") as f:
        item.download(f)
        f.flush()
        yield Path(f.name)


def _file_chunks(path: Path, size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


@dataclass(frozen=True, slots=True)
class StudySummary:
    """What a worklist message says: UIDs and technical fields only, never patient data."""

    study: str
    rule: str
    trigger: str
    modalities: list[str]
    instance_count: int
    priority: bool
    series: list[str] = field(default_factory=list)


class Session(Protocol):
    def send(self, item: Item) -> None: ...

    def send_study(self, summary: StudySummary) -> None: ...

    def close(self) -> None: ...


def _read(path: Path) -> Dataset:
    return dcmread(path)


def _write(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


class DicomSession:
    """C-STORE SCU: one association for the study, opened on the first send."""

    def __init__(self, options: dict[str, Any], items: Iterable[Item], tls: RoutingTls | None = None) -> None:
        self.options = options
        self.tls = tls or RoutingTls()
        self.contexts: dict[str, set[str]] = {}
        for item in items:
            self.contexts.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
        self.assoc: Any = None
        self.failure: str | None = None

    def _associate(self) -> Any:
        if self.assoc is not None and self.assoc.is_established:
            return self.assoc
        if self.failure:
            raise DeliveryError(self.failure)
        from pynetdicom import AE

        ae = AE(ae_title=self.options.get("callingAeTitle", CALLING_AE))
        timeout = float(self.options.get("timeoutSeconds", 30))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for sop_class, syntaxes in sorted(self.contexts.items()):
            # The stored syntaxes other than the two little endian uncompressed ones (compressed, deflated,
            # big endian) in one context, those two in another: the peer picks, we convert if it must be.
            stored = sorted(s for s in syntaxes if s and s not in UNCOMPRESSED)
            if stored:
                ae.add_requested_context(sop_class, stored)
            ae.add_requested_context(sop_class, UNCOMPRESSED)
        if len(ae.requested_contexts) > 128:
            raise DeliveryError("The study needs more than 128 presentation contexts.", permanent=True)
        tls_args = (self.tls.context(), str(self.options["host"])) if self.options.get("tls") else None
        assoc = ae.associate(self.options["host"], int(self.options["port"]), ae_title=self.options["aeTitle"],
                             tls_args=tls_args)
        if not assoc.is_established:
            where = f"{self.options['aeTitle']}@{self.options['host']}:{self.options['port']}"
            self.failure = f"Association with {where} was {'rejected' if assoc.is_rejected else 'not established'}."
            raise DeliveryError(self.failure)
        self.assoc = assoc
        return assoc

    def send(self, item: Item) -> None:
        with spooled(item) as path:
            self._send_file(item, path)

    def _send_file(self, item: Item, path: Path) -> None:
        assoc = self._associate()
        accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class_uid}
        where = f"{self.options['aeTitle']}@{self.options['host']}:{self.options['port']}"
        if not accepted:
            raise DeliveryError(
                f"C-STORE of {item.sop} to {where}: the peer accepted no presentation context for SOP class "
                f"{transcode.name(item.sop_class_uid)} (proposed with "
                f"{', '.join(transcode.name(t) for t in self._proposed(item.sop_class_uid))}); configure the peer "
                "to accept that SOP class.")
        meta = dcmread(path, stop_before_pixels=True).file_meta
        ts = UID(meta.get("TransferSyntaxUID", item.transfer_syntax_uid))
        what: Any
        if ts in accepted and all(k in meta for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")):
            # Stream from the file in chunks (pynetdicom reads it as it sends: flat memory).
            _config.STORE_SEND_CHUNKED_DATASET = True
            what = path
        else:
            try:  # decoded in memory: a conversion the peer needs (big endian, deflate, a compression it lacks)
                what = transcode.for_peer(_read(path), accepted)
            except transcode.TranscodeError as exc:
                raise DeliveryError(f"C-STORE of {item.sop} (SOP class {transcode.name(item.sop_class_uid)}) to "
                                    f"{where} is impossible: {exc}.") from None
        try:
            status = assoc.send_c_store(what)
        except (ValueError, RuntimeError) as exc:
            raise DeliveryError(
                f"C-STORE of {item.sop} (SOP class {transcode.name(item.sop_class_uid)}, stored as "
                f"{transcode.name(ts)}) to {where} could not be sent: {str(exc)[:200]}; the peer accepted "
                f"{', '.join(transcode.name(a) for a in sorted(accepted))}.") from None
        code = getattr(status, "Status", None)
        if code is None:
            self.assoc = None  # aborted or timed out: reassociate for the next instance
            raise DeliveryError(f"C-STORE of {item.sop}: no response (association aborted or timed out).")
        if int(code) not in STORED:
            raise DeliveryError(f"C-STORE of {item.sop} failed with status 0x{int(code):04X}.")

    def _proposed(self, sop_class: str) -> list[str]:
        return [*sorted(s for s in self.contexts.get(sop_class, set()) if s not in UNCOMPRESSED), *UNCOMPRESSED]

    def send_study(self, summary: StudySummary) -> None:
        raise DeliveryError("A DICOM destination takes instances, not study summaries.", permanent=True)

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self.assoc = None


class DicomwebSession:
    """STOW-RS client with ``requests`` (a single part per request)."""

    def __init__(self, options: dict[str, Any], tls: RoutingTls | None = None) -> None:
        import requests

        #: Why this destination is refused (rules validation refuses it first; last-good rules of an earlier
        #: version may not have been): each send fails for good, so the ledger dead-letters it.
        self.refused = ("STOW-RS destinations must be https:// (plain http only to this machine)."
                        if insecure_url(str(options["url"])) else None)
        self.url = str(options["url"]).rstrip("/") + "/studies"
        self.timeout = float(options.get("timeoutSeconds", 60))
        self.http = requests.Session()
        for key, value in (tls or RoutingTls()).requests_options().items():
            setattr(self.http, key, value)

    def send(self, item: Item) -> None:
        if self.refused:
            raise DeliveryError(self.refused, permanent=True)
        with spooled(item) as path:
            self._send_file(item, path)

    def _send_file(self, item: Item, path: Path) -> None:
        import requests

        boundary = uuid.uuid4().hex

        def body() -> Iterator[bytes]:  # streamed: the instance is never held whole
            yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            yield from _file_chunks(path)
            yield f"\r\n--{boundary}--\r\n".encode()

        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        try:
            response = self.http.post(self.url, data=body(), headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise DeliveryError(f"STOW-RS to {self.url} failed: {type(exc).__name__}.") from None
        if response.status_code != 200:
            raise DeliveryError(
                f"STOW-RS of {item.sop} answered HTTP {response.status_code}.",
                permanent=response.status_code in (400, 401, 403, 404, 413, 415),
            )

    def send_study(self, summary: StudySummary) -> None:
        raise DeliveryError("A DICOMweb destination takes instances, not study summaries.", permanent=True)

    def close(self) -> None:
        self.http.close()


def worklist_queue_name(group: str) -> str:
    return f"worklist-{group}"


class WorklistSession:
    """A message per study on the reading group's queue (created on first use)."""

    def __init__(self, options: dict[str, Any], queues: Queues) -> None:
        self.queues = queues
        self.queue = worklist_queue_name(options["group"])

    def send(self, item: Item) -> None:
        raise DeliveryError("A worklist takes study summaries, not instances.", permanent=True)

    def send_study(self, summary: StudySummary) -> None:
        self.queues.ensure_queues([self.queue])
        message = {
            "studyInstanceUid": summary.study,
            "rule": summary.rule,
            "trigger": summary.trigger,
            "modalities": summary.modalities,
            "seriesInstanceUids": summary.series,
            "numberOfInstances": summary.instance_count,
            "priority": summary.priority,
        }
        self.queues.send(self.queue, orjson.dumps(message).decode())

    def close(self) -> None:
        return None


class ExportSession:
    """Copies to a container, de-identified when the destination asks for it."""

    def __init__(self, options: dict[str, Any], blobs: BlobStore, *, rule: str, study: str) -> None:
        self.blobs = blobs
        self.container = str(options["container"])
        self.refused = (f"Export container {self.container} is one of the app's own; choose another."
                        if layout.is_app_container(self.container) else None)
        if not self.refused:
            blobs.ensure_containers([self.container])
        self.prefix = str(options.get("prefix", "")).strip("/")
        self.anonymizer = None
        if options.get("deidentify"):
            from shared.routing.deid import anonymizer_for

            self.anonymizer = anonymizer_for(study, str(options.get("seed") or f"dicomflow|{rule}"))

    def send(self, item: Item) -> None:
        if self.refused:
            raise DeliveryError(self.refused, permanent=True)
        with spooled(item) as path:
            self._send_file(item, path)

    def _send_file(self, item: Item, path: Path) -> None:
        study, series, sop = item.study, item.series, item.sop
        if self.anonymizer is None:
            name = f"{study}/{series}/{sop}.dcm"
            with path.open("rb") as f:  # streamed upload from the spooled file
                self.blobs.write(self.container, f"{self.prefix}/{name}" if self.prefix else name, f,
                                 content_type="application/dicom")
            return
        from shared.routing.deid import deidentify

        ds = _read(path)  # de-identification needs the decoded data set
        try:
            deidentify(ds, self.anonymizer)
        except BadInput as exc:
            raise DeliveryError(f"{exc.reason}: {exc.message}", permanent=True) from None
        data = _write(ds)
        study, series, sop = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        name = f"{study}/{series}/{sop}.dcm"
        self.blobs.write(self.container, f"{self.prefix}/{name}" if self.prefix else name, data,
                         content_type="application/dicom")

    def send_study(self, summary: StudySummary) -> None:
        raise DeliveryError("An export takes instances, not study summaries.", permanent=True)

    def close(self) -> None:
        return None


def open_session(destination: Destination, *, items: list[Item], blobs: BlobStore, queues: Queues, rule: str,
                 study: str, tls: RoutingTls | None = None) -> Session:
    """A session for one (rule, destination, study)."""
    options = dict(destination.options)
    if destination.type == "dicom":
        return DicomSession(options, items, tls)
    if destination.type == "dicomweb":
        return DicomwebSession(options, tls)
    if destination.type == "worklist":
        return WorklistSession(options, queues)
    return ExportSession(options, blobs, rule=rule, study=study)
