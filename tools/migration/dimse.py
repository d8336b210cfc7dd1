"""The legacy PACS and our gateway as DIMSE peers of the migration (pynetdicom, Study Root).

:class:`SourceSession` is one association with the source PACS, used for C-FIND (studies of the window,
a study's instances), C-MOVE (to our gateway's AE title) and C-GET (the instances come back on the
same association; the caller forwards them). It is reopened after the peer aborted it, and every way
it can fail ends in :class:`DimseError` with a sentence that says what happened and what to do,
never a traceback: a refused association, a refused or failed request (its status and Error
Comment), no answer within the timeout.

:func:`commit` asks our gateway for Storage Commitment (N-ACTION) of a study's instances and waits
for its N-EVENT-REPORT on the same association: the DICOM way of "you hold these, durably".

No patient data is logged or put in an error: identifiers carry UIDs and dates only (the window),
and pynetdicom's identifier dumps are off.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, generate_uid
from pynetdicom import AE, StoragePresentationContexts, _config, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

log = logging.getLogger(__name__)

FIND: Final = StudyRootQueryRetrieveInformationModelFind
MOVE: Final = StudyRootQueryRetrieveInformationModelMove
GET: Final = StudyRootQueryRetrieveInformationModelGet
STORAGE_COMMITMENT: Final = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE: Final = "1.2.840.10008.1.20.1.1"
#: UIDs per C-FIND with a UID list (a long list is sent in pieces).
UIDS_PER_FIND: Final = 100
_AE = re.compile(r"^[^\\\x00-\x1f]{1,16}$")

#: Status codes worth a sentence of their own (PS3.4 C.4).
_ADVICE: Final = {
    0xA801: "the source does not know the move destination {dest}: add it to the source's DICOM peers "
            "(Orthanc: DicomModalities, e.g. \"dicomflow\": [\"{dest}\", \"<gateway host>\", <port>])",
    0xA700: "the source is out of resources", 0xA701: "the source is out of resources (sub-operations)",
    0xA702: "the source is out of resources (sub-operations)",
    0xA900: "the source says the identifier does not match the SOP class",
    0x0122: "the source does not support this service (refused SOP class)",
    0x0124: "the source refused: not authorised", 0xFE00: "cancelled by the source",
}


class DimseError(RuntimeError):
    """A DIMSE peer refused, failed or did not answer; the message says which and what to do."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A DIMSE peer: its AE title, host and port (``AE@HOST:PORT``)."""

    ae: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, option: str) -> Peer:
        m = re.fullmatch(r"(?P<ae>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})", text.strip())
        if not m or not _AE.match(m["ae"]) or not 0 < int(m["port"]) < 65536:
            raise ValueError(f"{option} {text!r}: give AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242 (AE title 1-16 "
                             f"characters, no backslash)")
        return cls(m["ae"].strip(), m["host"].strip("[]"), int(m["port"]))

    def __str__(self) -> str:
        return f"{self.ae}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Window:
    """Which studies of the source: a StudyDate range (either end open), accession numbers, study
    UIDs; nothing given: every study."""

    since: str | None = None
    until: str | None = None
    accessions: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.studies:
            return f"{len(self.studies)} study UID(s)"
        if self.accessions:
            return f"{len(self.accessions)} accession number(s)"
        if self.since or self.until:
            return f"StudyDate {self.since or '…'}-{self.until or '…'}"
        return "every study"


@dataclass(frozen=True, slots=True)
class SourceStudy:
    uid: str
    #: NumberOfStudyRelatedInstances as the source answered (None: it did not say).
    count: int | None
    date: str = ""


@dataclass(frozen=True, slots=True)
class SourceInstance:
    sop: str
    sop_class: str
    series: str


@dataclass(slots=True)
class Retrieved:
    """The outcome of one C-MOVE or C-GET: its final status and sub-operation counts."""

    status: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    comment: str = ""
    failed_sops: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (0x0000, 0xB000) and self.failed == 0


def status_text(code: int, comment: str = "", *, dest: str = "") -> str:
    """A status in words: ``0xA801 (the source does not know ...)``."""
    advice = _ADVICE.get(code)
    if advice is None and 0xC000 <= code <= 0xCFFF:
        advice = "the source was unable to process the request"
    words = (advice or "").format(dest=dest)
    parts = [p for p in (words, f"'{comment}'" if comment else "") if p]
    return f"0x{code:04X}" + (f" ({'; '.join(parts)})" if parts else "")


def _quiet() -> None:
    # A legacy PACS holds what it holds (over-long UIDs, odd values): read leniently and say nothing,
    # ingest judges each instance and the report says what it refused.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


#: Receives one instance of a C-GET (its Part 10 bytes and SOP Instance UID) and answers with a DIMSE
#: status and a comment (forwarded: the source learns what became of it).
Sink = Callable[[bytes, str], tuple[int, str]]


class SourceSession:
    """One association with the source PACS, opened on first use and again after an abort."""

    def __init__(self, source: Peer, calling: str, *, timeout: float = 60.0,
                 storage_classes: Sequence[str] | None = None) -> None:
        _quiet()
        self.source = source
        self.calling = calling
        self.timeout = timeout
        #: SOP classes this session can receive by C-GET (None: a session without C-GET).
        self.storage_classes = tuple(storage_classes) if storage_classes is not None else None
        self._assoc: Any = None
        self._sink: Sink | None = None
        self._lock = threading.Lock()

    # -- the association -------------------------------------------------------------------------
    def _ae(self) -> AE:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 15.0)
        for model in (Verification, FIND, MOVE, GET):
            ae.add_requested_context(model)
        return ae

    def _open(self) -> Any:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        ae = self._ae()
        kwargs: dict[str, Any] = {"ae_title": self.source.ae}
        if self.storage_classes is not None:
            classes = list(dict.fromkeys(self.storage_classes)) or [
                str(cx.abstract_syntax) for cx in StoragePresentationContexts]
            room = 128 - len(ae.requested_contexts)
            syntaxes = list(AllTransferSyntaxes) if len(classes) <= 8 else None
            for uid in classes[:room]:
                if syntaxes:
                    ae.add_requested_context(uid, syntaxes)
                else:
                    ae.add_requested_context(uid)
            kwargs["ext_neg"] = [build_role(uid, scp_role=True) for uid in classes[:room]]
            kwargs["evt_handlers"] = [(evt.EVT_C_STORE, self._on_store)]
        try:
            assoc = ae.associate(self.source.host, self.source.port, **kwargs)
        except (OSError, RuntimeError) as exc:
            raise DimseError(f"cannot connect to {self.source} ({exc})") from None
        if not assoc.is_established:
            why = ("rejected the association" if assoc.is_rejected else
                   "aborted the association" if assoc.is_aborted else "did not answer")
            raise DimseError(f"{self.source} {why}: check --source (host, port, AE title) and that the source "
                             f"accepts calling AE title {self.calling!r} (Orthanc: DicomModalities)")
        self._assoc = assoc
        return assoc

    def close(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()

    def _lost(self, what: str) -> DimseError:
        self.close()
        return DimseError(f"{self.source} did not answer the {what} within {self.timeout:.0f} s (or aborted the "
                          "association); it will be tried again")

    # -- services ---------------------------------------------------------------------------------
    def echo(self) -> None:
        with self._lock:
            status = self._open().send_c_echo()
            if not status:
                raise self._lost("C-ECHO")
            if int(status.Status) != 0:
                raise DimseError(f"{self.source} answered C-ECHO with {status_text(int(status.Status))}")

    def _find(self, query: Dataset) -> Iterator[Dataset]:
        assoc = self._open()
        last: Any = None
        for status, identifier in assoc.send_c_find(query, FIND):
            last = status
            if status and int(status.Status) in (0xFF00, 0xFF01) and identifier is not None:
                yield identifier
        if not last:
            raise self._lost("C-FIND")
        code = int(last.Status)
        if code != 0:
            raise DimseError(f"{self.source} refused the C-FIND: {status_text(code, _text(last.get('ErrorComment')))}")

    def find_studies(self, window: Window) -> list[SourceStudy]:
        """The studies of the window, each once, in the order the source gave them."""
        def query(**keys: str) -> Dataset:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = keys.get("uid", "")
            q.StudyDate = keys.get("date", "")
            q.NumberOfStudyRelatedInstances = ""
            if "accession" in keys:
                q.AccessionNumber = keys["accession"]
            return q

        queries: list[Dataset] = []
        if window.studies:
            uids = list(dict.fromkeys(window.studies))
            queries += [query(uid="\\".join(uids[i:i + UIDS_PER_FIND])) for i in range(0, len(uids), UIDS_PER_FIND)]
        elif window.accessions:
            queries += [query(accession=a, date=_date_range(window)) for a in dict.fromkeys(window.accessions)]
        else:
            queries.append(query(date=_date_range(window)))
        found: dict[str, SourceStudy] = {}
        with self._lock:
            for q in queries:
                for ds in self._find(q):
                    uid = _text(ds.get("StudyInstanceUID"))
                    if uid and uid not in found:
                        found[uid] = SourceStudy(uid, _int(ds.get("NumberOfStudyRelatedInstances")),
                                                 _text(ds.get("StudyDate")))
        return list(found.values())

    def study_count(self, study: str) -> int | None:
        """The source's NumberOfStudyRelatedInstances now (None: it does not say, or no such study)."""
        with self._lock:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study
            q.NumberOfStudyRelatedInstances = ""
            counts = [_int(ds.get("NumberOfStudyRelatedInstances")) for ds in self._find(q)]
        return counts[0] if counts else None

    def find_instances(self, study: str) -> list[SourceInstance]:
        """Every instance of a study (IMAGE level, Study Root, only the study's UID given)."""
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study
        q.SeriesInstanceUID = ""
        q.SOPInstanceUID = ""
        q.SOPClassUID = ""
        with self._lock:
            out = {}
            for ds in self._find(q):
                sop = _text(ds.get("SOPInstanceUID"))
                if sop:
                    out[sop] = SourceInstance(sop, _text(ds.get("SOPClassUID")), _text(ds.get("SeriesInstanceUID")))
        return list(out.values())

    def _retrieve(self, what: str, responses: Iterable[tuple[Any, Any]],
                  progress: Callable[[int], None] | None) -> Retrieved:
        last: Any = None
        done = 0
        for status, identifier in responses:
            if not status:
                last = None
                break
            last = (status, identifier)
            completed = _int(status.get("NumberOfCompletedSuboperations")) or 0
            if progress is not None and completed > done:
                progress(completed - done)
                done = completed
        if last is None:
            raise self._lost(what)
        status, identifier = last
        out = Retrieved(int(status.Status), _int(status.get("NumberOfCompletedSuboperations")) or 0,
                        _int(status.get("NumberOfFailedSuboperations")) or 0,
                        _int(status.get("NumberOfWarningSuboperations")) or 0, _text(status.get("ErrorComment")))
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            out.failed_sops = [str(v) for v in (value if isinstance(value, (list, tuple)) else
                                                str(value).split("\\")) if str(v)]
        if progress is not None and out.completed > done:
            progress(out.completed - done)
        return out

    def move(self, study: str, destination: str, progress: Callable[[int], None] | None = None) -> Retrieved:
        """C-MOVE one study to ``destination`` (an AE title the source knows)."""
        return self.move_many([study], destination, progress)

    def move_many(self, studies: Sequence[str], destination: str,
                  progress: Callable[[int], None] | None = None) -> Retrieved:
        """C-MOVE studies to ``destination`` in one request (a list of Study Instance UIDs, PS3.4 C.4.2.2.1)."""
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = "\\".join(studies)
        with self._lock:
            return self._retrieve("C-MOVE", self._open().send_c_move(q, destination, MOVE), progress)

    def get(self, study: str, sink: Sink, progress: Callable[[int], None] | None = None) -> Retrieved:
        """C-GET one study; each instance goes to ``sink`` as it arrives."""
        if self.storage_classes is None:
            raise ValueError("a C-GET needs a session made with storage_classes")
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study
        with self._lock:
            self._sink = sink
            try:
                return self._retrieve("C-GET", self._open().send_c_get(q, GET), progress)
            finally:
                self._sink = None

    def _on_store(self, event: Any) -> Dataset:
        sink = self._sink
        status = Dataset()
        if sink is None:
            status.Status = 0xA700
            return status
        sop = _text(event.request.AffectedSOPInstanceUID)
        try:
            code, comment = sink(bytes(event.encoded_dataset(include_meta=True)), sop)
        except Exception as exc:  # noqa: BLE001 - the handler's one boundary: the source must get an answer
            log.warning("C-GET sop=%s: not forwarded (%s)", sop, type(exc).__name__)
            code, comment = 0xA700, "not stored; retry later"
        status.Status = code
        if comment:
            status.ErrorComment = comment[:64]
        return status


def _date_range(window: Window) -> str:
    if not (window.since or window.until):
        return ""
    return f"{window.since or ''}-{window.until or ''}"


def echo(peer: Peer, calling: str, *, timeout: float = 15.0) -> None:
    """C-ECHO ``peer``: a clear :class:`DimseError` when it cannot be reached or refuses (a plain TCP
    connection first, so "nothing listens there" and "it refused us" are told apart)."""
    try:
        socket.create_connection((peer.host, peer.port), timeout=timeout).close()
    except OSError as exc:
        why = "connection refused: nothing listens there" if isinstance(exc, ConnectionRefusedError) else (
            "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__))
        raise DimseError(f"cannot connect to {peer} ({why}): check the host and port") from None
    session = SourceSession(peer, calling, timeout=timeout)
    try:
        session.echo()
    finally:
        session.close()


@dataclass(frozen=True, slots=True)
class Commitment:
    committed: int
    #: (SOP Instance UID, failure reason) of each instance the gateway did not commit.
    failed: list[tuple[str, int]]


def commit(gateway: Peer, calling: str, refs: Sequence[tuple[str, str]], *, timeout: float = 60.0) -> Commitment:
    """Storage Commitment (push model, PS3.4 Annex J) of ``refs`` ((SOP class, SOP instance) pairs): the
    N-ACTION, then the N-EVENT-REPORT the gateway sends on the same association while we keep it open."""
    _quiet()
    got = threading.Event()
    report: dict[str, Any] = {}

    def on_report(event: Any) -> int:
        report["type"] = int(event.request.EventTypeID)
        report["info"] = event.event_information
        got.set()
        return 0x0000

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 15.0)
    ae.add_requested_context(STORAGE_COMMITMENT)
    try:
        assoc = ae.associate(gateway.host, gateway.port, ae_title=gateway.ae,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    except (OSError, RuntimeError) as exc:
        raise DimseError(f"cannot connect to the gateway {gateway} ({exc})") from None
    if not assoc.is_established:
        raise DimseError(f"the gateway {gateway} refused the Storage Commitment association")
    try:
        info = Dataset()
        info.TransactionUID = generate_uid()
        items = []
        for sop_class, sop in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop
            items.append(item)
        info.ReferencedSOPSequence = items
        status, _ = assoc.send_n_action(info, 1, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        if not status or int(status.Status) != 0:
            code = int(status.Status) if status else -1
            raise DimseError(f"the gateway {gateway} refused the Storage Commitment request "
                             f"({'no answer' if code < 0 else f'0x{code:04X}'})")
        if not got.wait(timeout):
            raise DimseError(f"no Storage Commitment report from the gateway {gateway} within {timeout:.0f} s")
    finally:
        if assoc.is_established:
            assoc.release()
    ds = report["info"]
    committed = len(ds.get("ReferencedSOPSequence") or [])
    failed = [(str(i.ReferencedSOPInstanceUID), int(i.get("FailureReason", 0))) for i in
              ds.get("FailedSOPSequence") or []]
    return Commitment(committed, failed)
