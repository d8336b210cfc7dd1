"""Which audit event an HTTP request is, and its record (``functions/access.py`` calls :func:`record_for`).

| Request | EventID | Action |
| --- | --- | --- |
| QIDO-RS search | Query (110112) | E |
| change feed | Query, type change-feed | E |
| WADO-RS study/series/instance | DICOM Instances Transferred (110104) | R |
| WADO-RS metadata, frames, bulk data | DICOM Instances Accessed (110103), type metadata | R |
| STOW-RS | DICOM Instances Transferred | C |
| DELETE study | DICOM Study Deleted (110105) | D |
| DELETE series / instance | DICOM Instances Accessed | D |
| bulk update (``$bulkUpdate``) | DICOM Instances Accessed, type update | U |
| extended query tag add / change / delete | Security Alert (110113), type Software Configuration | E |
| ``GET /api/audit`` | Audit Log Used (110101) | R |

Reading extended query tags, operations and ingest status touches no patient data: no record. A refused
request (401, 403) is recorded too, with its outcome and without any value from the request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.audit import new_record
from shared.audit.record import (
    AUDIT_LOG_USED,
    CHANGE_FEED,
    CREATE,
    DELETE,
    DESTINATION,
    EXECUTE,
    INSTANCES_ACCESSED,
    INSTANCES_TRANSFERRED,
    METADATA,
    QUERY,
    READ,
    SECURITY_ALERT,
    SOFTWARE_CONFIGURATION,
    SOURCE,
    STUDY_DELETED,
    UPDATE,
    UPDATE_ACTION,
    Actor,
    AuditRecord,
    Code,
    Subjects,
    outcome_of_status,
)
from shared.config import Settings


@dataclass(frozen=True, slots=True)
class HttpEvent:
    event: Code
    action: str
    types: tuple[Code, ...] = ()


def event_for(route: str, method: str) -> HttpEvent | None:
    """The audit event of a request to ``route`` (the function's route template), or None (no patient data)."""
    m = method.upper()
    if route == "audit":
        return HttpEvent(AUDIT_LOG_USED, READ)
    if not route.startswith("dicomweb/"):
        return None
    rest = route[len("dicomweb/"):]
    if rest.startswith("extendedquerytags"):
        return None if m in ("GET", "HEAD") else HttpEvent(SECURITY_ALERT, EXECUTE, (SOFTWARE_CONFIGURATION,))
    if rest.startswith("operations"):
        return None
    if rest.startswith("changefeed"):
        return HttpEvent(QUERY, EXECUTE, (CHANGE_FEED,))
    if rest.endswith("$bulkUpdate"):
        return HttpEvent(INSTANCES_ACCESSED, UPDATE_ACTION, (UPDATE,))
    last = rest.rsplit("/", 1)[-1]
    if m in ("GET", "HEAD"):
        if last in ("studies", "series", "instances"):
            return HttpEvent(QUERY, EXECUTE)
        if any(part in rest for part in ("/metadata", "/frames/", "/bulkdata/")):
            return HttpEvent(INSTANCES_ACCESSED, READ, (METADATA,))
        return HttpEvent(INSTANCES_TRANSFERRED, READ)
    if m == "POST":
        return HttpEvent(INSTANCES_TRANSFERRED, CREATE)
    if m == "DELETE":
        return HttpEvent(STUDY_DELETED if rest == "studies/{study}" else INSTANCES_ACCESSED, DELETE)
    return HttpEvent(INSTANCES_ACCESSED, EXECUTE)


def client_address(headers: Mapping[str, str], peer: str | None) -> str | None:
    """The caller's IP address: Front Door's ``X-Azure-ClientIP``, else the first ``X-Forwarded-For`` hop, else
    the socket's peer. Only a value that parses as an IP address is kept (never an arbitrary header value)."""
    forwarded = (headers.get("x-forwarded-for") or "").split(",")[0]
    for raw in (headers.get("x-azure-clientip"), forwarded, peer):
        text = (raw or "").strip()
        if text.startswith("[") and "]" in text:
            text = text[1:text.index("]")]
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def record_for(settings: Settings, route: str, method: str, status: int, *, user: str | None, kind: str | None,
               roles: Iterable[str], address: str | None, subjects: Subjects) -> AuditRecord | None:
    """The record of one HTTP request (None for routes that touch no patient data)."""
    ev = event_for(route, method)
    if ev is None:
        return None
    requestor = Actor(user_id=user or "anonymous", roles=tuple(sorted(str(r) for r in roles)), address=address,
                      alternative=kind, role_codes=_requestor_role(ev))
    return new_record(settings, ev.event, ev.action, outcome=outcome_of_status(status), requestor=requestor,
                      subjects=subjects, types=ev.types, description=f"{method.upper()} {route}: HTTP {status}")


def _requestor_role(ev: HttpEvent) -> tuple[Code, ...]:
    if ev.event is INSTANCES_TRANSFERRED:
        return (DESTINATION,) if ev.action == READ else (SOURCE,)
    return ()
