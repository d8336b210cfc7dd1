"""Storage Commitment Push Model SCP (PS3.4 Annex J), answered from the index.

An N-ACTION (Request Storage Commitment) is acknowledged at once; a worker then looks up
each referenced instance with the same search as QIDO (SOP Instance UID key) and sends
the N-EVENT-REPORT: event type 1 when all are committed, 2 with a Failed SOP Sequence
otherwise (``0x0112`` no such object instance, ``0x0119`` the SOP class differs from the
stored one). An instance is committed once it is in the index: ingest writes the index row
only after its archive copy exists. Instances still being ingested are waited for, up to
``DICOMFLOW_GATEWAY_COMMITMENT_WAIT_SECONDS``.

Where the report goes (PS3.4 J.3.3 allows either): on the requesting association if the
requester kept it open, else on a new association to the requester's AE title as listed in
``dicomflow-config/gateway/destinations.json`` (we take the SCP role for it). A requester
that closes the association and is not listed gets no report (logged, with the transaction UID).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role

from gateway import audit
from gateway.app import Gateway
from gateway.tls import client_context
from shared.audit import record as atna
from shared.audit.record import Subjects
from shared.dicomweb.attributes import BY_KEYWORD, Level
from shared.dicomweb.qido import Match, MatchKind, QidoQuery
from shared.dicomweb.search import find

log = logging.getLogger(__name__)

STORAGE_COMMITMENT: Final = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_INSTANCE: Final = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT: Final = 1
ALL_COMMITTED, SOME_FAILED = 1, 2
NO_SUCH_OBJECT_INSTANCE: Final = 0x0112
CLASS_INSTANCE_CONFLICT: Final = 0x0119
NO_SUCH_ACTION: Final = 0x0123
INVALID_ARGUMENT: Final = 0x0115
UIDS_PER_QUERY: Final = 200


@dataclass(frozen=True, slots=True)
class Verdict:
    committed: list[tuple[str, str]]
    failed: list[tuple[str, str, int]]
    #: Where each committed instance is: SOP Instance UID -> (study, series).
    located: dict[str, tuple[str, str]] = field(default_factory=dict)


def check(gw: Gateway, refs: list[tuple[str, str]], *, wait: float) -> Verdict:
    """Which referenced (class, instance) pairs the index holds; waits (bounded) for missing ones."""
    stored: dict[str, tuple[str, str, str]] = {}
    deadline = time.monotonic() + wait
    delay = 0.2
    while True:
        missing = [sop for _, sop in refs if sop not in stored]
        for i in range(0, len(missing), UIDS_PER_QUERY):
            stored.update(_lookup(gw, missing[i:i + UIDS_PER_QUERY]))
        if all(sop in stored for _, sop in refs) or time.monotonic() >= deadline:
            break
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 2.0)
    committed, failed = [], []
    located: dict[str, tuple[str, str]] = {}
    for sop_class, sop in refs:
        if sop not in stored:
            failed.append((sop_class, sop, NO_SUCH_OBJECT_INSTANCE))
        elif stored[sop][0] and stored[sop][0] != sop_class:
            failed.append((sop_class, sop, CLASS_INSTANCE_CONFLICT))
        else:
            committed.append((sop_class, sop))
            located[sop] = stored[sop][1:]
    return Verdict(committed, failed, located)


def _lookup(gw: Gateway, sops: Iterable[str]) -> dict[str, tuple[str, str, str]]:
    """SOP Instance UID -> (its stored SOP class, study, series), for those the index holds."""
    uids = tuple(dict.fromkeys(sops))
    if not uids:
        return {}
    match = Match(BY_KEYWORD["SOPInstanceUID"], MatchKind.LIST if len(uids) > 1 else MatchKind.SINGLE, uids)
    found = find(QidoQuery(Level.INSTANCE, (match,), limit=len(uids)), gw.fetch)
    return {str(v["SOPInstanceUID"]): (str(v.get("SOPClassUID") or ""), str(v.get("StudyInstanceUID") or ""),
                                       str(v.get("SeriesInstanceUID") or "")) for v in found.views}


def report(transaction: str, verdict: Verdict) -> tuple[Dataset, int]:
    ds = Dataset()
    ds.TransactionUID = transaction
    if verdict.committed:
        ds.ReferencedSOPSequence = [_item(c, s) for c, s in verdict.committed]
    if verdict.failed:
        items = []
        for c, s, reason in verdict.failed:
            item = _item(c, s)
            item.FailureReason = reason
            items.append(item)
        ds.FailedSOPSequence = items
    return ds, (SOME_FAILED if verdict.failed else ALL_COMMITTED)


def _item(sop_class: str, sop: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop
    return item


class Commitment:
    """The N-ACTION handler and the workers that send the reports."""

    def __init__(self, gw: Gateway, *, workers: int = 2) -> None:
        self.gw = gw
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="commitment")
        self.done = threading.Event()

    def handle_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        req = event.request
        if str(req.RequestedSOPClassUID) != STORAGE_COMMITMENT or req.ActionTypeID != REQUEST_COMMITMENT:
            return NO_SUCH_ACTION, None
        info = event.action_information
        try:
            transaction = str(info.TransactionUID)
            refs = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                    for i in info.ReferencedSOPSequence]
        except (AttributeError, TypeError):
            return INVALID_ARGUMENT, None
        calling = str(event.assoc.requestor.ae_title).strip()
        log.info("Storage commitment %s from %s: %d instance(s) asked", transaction, calling, len(refs))
        self.pool.submit(self._answer, event.assoc, calling, transaction, refs)
        return 0x0000, None

    def _answer(self, assoc: Any, calling: str, transaction: str, refs: list[tuple[str, str]]) -> None:
        try:
            verdict = check(self.gw, refs, wait=self.gw.config.commitment_wait_seconds)
            ds, event_type = report(transaction, verdict)
            how = self._send(assoc, calling, ds, event_type)
            log.info("Storage commitment %s: %d committed, %d failed; report %s", transaction,
                     len(verdict.committed), len(verdict.failed), how)
            subjects = Subjects()
            for sop_class, sop in verdict.committed:
                study, series = verdict.located.get(sop, ("", ""))
                subjects.add(study, series, sop, sop_class)
            audit.record(self.gw, assoc, atna.INSTANCES_ACCESSED, atna.READ,
                         outcome=atna.MINOR_FAILURE if verdict.failed else atna.SUCCESS, subjects=subjects,
                         types=(atna.STORAGE_COMMITMENT,),
                         description=f"Storage commitment: {len(verdict.committed)} committed, "
                                     f"{len(verdict.failed)} failed; report {how.split(' (')[0]}")
        except Exception:  # the worker's one boundary: a lost report is logged, never silent
            log.exception("Storage commitment %s: report not delivered", transaction)

    def _send(self, assoc: Any, calling: str, ds: Dataset, event_type: int) -> str:
        if assoc.is_established:
            status = assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
            if getattr(status, "Status", None) is not None:
                return f"sent on the request's association (status 0x{int(status.Status):04X})"
        peer = self.gw.destinations.find(calling)
        if peer is None:
            return f"NOT sent: the association closed and {calling!r} is not in gateway/destinations.json"
        ae = AE(ae_title=self.gw.config.ae_title)
        cfg = self.gw.config
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_seconds
        ae.add_requested_context(STORAGE_COMMITMENT)
        kwargs: dict[str, Any] = {"ae_title": peer.ae, "ext_neg": [build_role(STORAGE_COMMITMENT, scp_role=True)]}
        if peer.tls:
            kwargs["tls_args"] = (client_context(cfg), peer.host)
        report_assoc = ae.associate(peer.host, peer.port, **kwargs)
        if not report_assoc.is_established:
            return f"NOT sent: association with {peer.ae}@{peer.host}:{peer.port} failed"
        try:
            status = report_assoc.send_n_event_report(ds, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE)
        finally:
            report_assoc.release()
        code = getattr(status, "Status", None)
        return f"sent to {peer.ae}@{peer.host}:{peer.port} (status {'none' if code is None else hex(int(code))})"

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=False)
