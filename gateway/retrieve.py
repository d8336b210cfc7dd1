"""C-MOVE and C-GET SCP: the matching instances, one by one, from ``dicom-archive``.

Which instances: the identifier's keys (PatientID at PATIENT level; Study, Series and SOP
Instance UIDs below) go through the same search as C-FIND and QIDO, at the instance level.
Each instance is downloaded from the archive into a temporary file when its turn comes,
read with its large values deferred, sent, and dropped before the next one: a study of any
size costs one instance at a time. (pynetdicom's sub-operations take a decoded data set,
so the instance being sent is encoded in memory once.) Instances are sent in their stored
transfer syntax when the peer accepted it: C-MOVE proposes each SOP class with its stored
syntaxes (compressed, deflated, big endian) and with the little endian uncompressed ones; a
C-GET requester proposes its own. When the peer did not accept the stored syntax, the instance
is transcoded to one it did (:func:`shared.dicom.transcode.for_peer`); when nothing works the
sub-operation fails and the log names the SOP class, the syntaxes stored and accepted, and
what to change on the peer.

C-MOVE destinations are the peers of ``dicomflow-config/gateway/destinations.json`` (an
unknown Move Destination gets ``0xA801``). pynetdicom counts the sub-operations and sends
the pending / completed / failed / warning counts and the final status (success, ``0xB000``
with the failed SOP Instance UIDs, or failure).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Final

from azure.core.exceptions import AzureError
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.presentation import build_context

from gateway import audit
from gateway.app import Gateway
from gateway.query import IdentifierError, parse_identifier, with_limit
from gateway.status import CANCEL, IDENTIFIER_DOES_NOT_MATCH, PENDING, status
from gateway.tls import client_context
from shared.audit.record import (
    DESTINATION,
    INSTANCES_TRANSFERRED,
    MINOR_FAILURE,
    READ,
    SERIOUS_FAILURE,
    SOURCE,
    SUCCESS,
    Actor,
    Subjects,
)
from shared.dicom import transcode
from shared.dicomweb.attributes import Level
from shared.dicomweb.qido import QidoQuery
from shared.dicomweb.search import find
from shared.ports import BlobGone
from shared.storage import layout

log = logging.getLogger(__name__)

MAX_SUBOPERATIONS: Final = 65535
#: Offered beside the stored syntaxes, so any peer can be sent to (transcoding's native syntaxes).
UNCOMPRESSED: Final[list[str | UID]] = list(transcode.NATIVE)
#: Values larger than this stay in the spool file until pynetdicom encodes the data set.
DEFER_SIZE: Final = 1024 * 1024
#: RETRIEVE keys: the unique keys of each level (and PatientID for PATIENT level).
RETRIEVE_KEYS: Final = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def matching_instances(gw: Gateway, identifier: Dataset, model: str) -> list[dict[str, Any]]:
    """The instance views a retrieve identifier names (unique keys only, as PS3.4 C.4.2 / C.4.3 say)."""
    keys = Dataset()
    keys.QueryRetrieveLevel = identifier.get("QueryRetrieveLevel", "")
    for kw in RETRIEVE_KEYS:
        if kw in identifier and identifier.get(kw) not in (None, ""):
            keys[kw] = identifier[kw]
    req = parse_identifier(keys, model, limit=MAX_SUBOPERATIONS)
    if not req.query.matches:
        raise IdentifierError("A retrieve needs a unique key (PatientID, Study/Series/SOP Instance UID).")
    query = QidoQuery(Level.INSTANCE, req.query.matches)
    found = find(with_limit(query, MAX_SUBOPERATIONS), gw.fetch)
    if found.more:
        raise IdentifierError(f"Over {MAX_SUBOPERATIONS} instances; retrieve fewer at a time")
    log.info("Retrieve %s: plan %s, %d instance(s)", req.level, found.plan, len(found.views))
    return found.views


def contexts_for(views: list[dict[str, Any]]) -> list[Any]:
    """Presentation contexts to propose to a Move Destination: per SOP class, one with the stored syntaxes
    other than the two little endian uncompressed ones (compressed, deflated, big endian), one with those two."""
    by_class: dict[str, set[str]] = {}
    for v in views:
        by_class.setdefault(str(v.get("SOPClassUID") or ""), set()).add(str(v.get("AvailableTransferSyntaxUID") or ""))
    contexts = []
    for sop_class, syntaxes in sorted(by_class.items()):
        if not sop_class:
            continue
        compressed: list[str | UID] = sorted(s for s in syntaxes if s and s not in UNCOMPRESSED)
        if compressed:
            contexts.append(build_context(sop_class, compressed))
        contexts.append(build_context(sop_class, UNCOMPRESSED))
    return contexts


Accepted = Callable[[str], set[str]]


def _accepted_on(assoc: Any) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs accepted on ``assoc``."""
    if assoc is None:
        return set()
    return {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts}


def _for_peer(ds: Dataset, sop_class: str, accepted: set[str], sop: str) -> Dataset:
    """``ds`` in a syntax the peer accepted, or the unsendable stand-in (a failed sub-operation)."""
    try:
        return transcode.for_peer(ds, accepted)
    except transcode.TranscodeError as exc:
        log.warning("Retrieve: sop=%s of SOP class %s cannot be sent: %s", sop, transcode.name(sop_class), exc)
        return _unsendable({"SOPInstanceUID": sop})


def _instances(gw: Gateway, views: list[dict[str, Any]], event: Any,
               accepted: Accepted) -> Iterator[tuple[int, Any]]:
    """(pending, data set) per instance, downloaded when its turn comes, in a syntax the peer accepted
    (``accepted(sop_class)``); a missing archive blob becomes a failed sub-operation naming its SOP
    Instance UID."""
    for v in views:
        if event.is_cancelled:
            yield CANCEL, None
            return
        study, series, sop = v["StudyInstanceUID"], v["SeriesInstanceUID"], v["SOPInstanceUID"]
        fd, spool = tempfile.mkstemp(prefix="dicomflow-gw-", suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as f:
                gw.blobs.download_to(layout.ARCHIVE, layout.instance_path(study, series, sop), f)
            ds: Dataset = dcmread(spool, defer_size=DEFER_SIZE)
        except (BlobGone, AzureError, OSError, ValueError) as exc:
            log.warning("Retrieve: sop=%s could not be read from the archive (%s)", sop, type(exc).__name__)
            ds = _unsendable(v)
        else:
            sop_class = str(ds.get("SOPClassUID") or v.get("SOPClassUID") or "")
            ds = _for_peer(ds, sop_class, accepted(sop_class), sop)
        try:
            yield PENDING, ds
        finally:
            with contextlib.suppress(OSError):
                os.unlink(spool)


def _unsendable(view: dict[str, Any]) -> Dataset:
    """A stand-in that pynetdicom's sub-operation fails to send (no presentation context for its
    class), so the failure is counted and its SOP Instance UID listed, as PS3.4 asks."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.0.0.0.0"  # never negotiated
    ds.SOPInstanceUID = view["SOPInstanceUID"]
    return ds


def _audited(gw: Gateway, event: Any, views: list[dict[str, Any]], what: str, accepted: Accepted,
             destination: Actor | None = None) -> Iterator[tuple[int, Any]]:
    """The sub-operations of a retrieve, and its audit record once they are done (or cut short)."""
    subjects = Subjects()
    for v in views:
        subjects.add(v.get("StudyInstanceUID"), v.get("SeriesInstanceUID"), v.get("SOPInstanceUID"),
                     v.get("SOPClassUID"))
        subjects.add_patient(v.get("PatientID"), gw.settings.audit.patient_salt)
    outcome, how = SERIOUS_FAILURE, "ended before its last sub-operation"
    try:
        for item in _instances(gw, views, event, accepted):
            if item[0] == CANCEL:
                outcome, how = MINOR_FAILURE, "cancelled"
            yield item
        if outcome != MINOR_FAILURE:
            outcome, how = SUCCESS, "sub-operations done"
    finally:
        audit.record(gw, event.assoc, INSTANCES_TRANSFERRED, READ, outcome=outcome, subjects=subjects,
                     role=None if destination else DESTINATION, ours=SOURCE,
                     others=(destination,) if destination else (),
                     description=f"{what}: {len(views)} instance(s), {how}")


def _refused(gw: Gateway, event: Any, what: str, destination: Actor | None = None) -> None:
    audit.record(gw, event.assoc, INSTANCES_TRANSFERRED, READ, outcome=MINOR_FAILURE, subjects=Subjects(),
                 others=(destination,) if destination else (), description=f"{what}: refused")


def handle_move(event: Any, gw: Gateway) -> Iterator[Any]:
    destination = str(event.move_destination or "").strip()
    model = str(event.request.AffectedSOPClassUID)
    peer = gw.destinations.find(destination)
    if peer is None:
        log.warning("C-MOVE to %r refused: not in %s/%s", destination, layout.CONFIG, layout.GATEWAY_DESTINATIONS_DOC)
        _refused(gw, event, "C-MOVE (unknown destination)",
                 Actor(user_id=destination[:16] or "-", requestor=False, alternative="move-destination"))
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    to = Actor(user_id=peer.ae, requestor=False, alternative="move-destination", address=peer.host,
               role_codes=(DESTINATION,))
    try:
        views = matching_instances(gw, event.identifier, model)
    except IdentifierError as bad:
        # pynetdicom allows no status before the destination and count yields: raising here makes it
        # answer 0xC514 (unable to process); the log says why.
        log.warning("C-MOVE refused: %s", bad)
        _refused(gw, event, "C-MOVE", to)
        raise
    sub: dict[str, Any] = {}  # the sub-association to the destination, once pynetdicom has it
    kwargs: dict[str, Any] = {
        "contexts": contexts_for(views) or [build_context("1.2.840.10008.1.1")],
        "max_pdu": gw.config.max_pdu_bytes,
        "evt_handlers": [(evt.EVT_ACCEPTED, lambda e: sub.update(assoc=e.assoc))],
    }
    if peer.tls:
        kwargs["tls_args"] = (client_context(gw.config), peer.host)
    log.info("C-MOVE assoc=%s: %d instance(s) to %s (%s:%d%s)", getattr(event.assoc, "_dicomflow_id", "-"),
             len(views), peer.ae, peer.host, peer.port, ", TLS" if peer.tls else "")
    yield peer.host, peer.port, kwargs
    yield len(views)

    def accepted(sop_class: str) -> set[str]:
        return {ts for cls, ts in _accepted_on(sub.get("assoc")) if cls == sop_class}

    yield from _audited(gw, event, views, f"C-MOVE to {peer.ae}", accepted, to)


def handle_get(event: Any, gw: Gateway) -> Iterator[Any]:
    model = str(event.request.AffectedSOPClassUID)
    try:
        views = matching_instances(gw, event.identifier, model)
    except IdentifierError as bad:
        log.warning("C-GET refused: %s", bad)
        _refused(gw, event, "C-GET")
        yield 1  # a count of 0 would end the C-GET with success before our failure status is seen
        yield status(IDENTIFIER_DOES_NOT_MATCH, str(bad)), None
        return
    log.info("C-GET assoc=%s: %d instance(s)", getattr(event.assoc, "_dicomflow_id", "-"), len(views))
    yield len(views)
    offered = _accepted_on(event.assoc)

    def accepted(sop_class: str) -> set[str]:
        return {ts for cls, ts in offered if cls == sop_class}

    yield from _audited(gw, event, views, "C-GET", accepted)
