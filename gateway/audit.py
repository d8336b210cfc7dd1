"""Audit records of DIMSE services (shared.audit): who (calling AE title and address), what, which UIDs.

One record per C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment request, written when the request is
answered (C-MOVE / C-GET: when the last sub-operation is done). The requestor is the calling AE title (DIMSE
has no user), its network address, and the role it plays (source of a C-STORE, destination of a C-GET); a C-MOVE
names its Move Destination too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.app import Gateway
from shared import audit
from shared.audit.record import Actor, Code, Subjects


def requestor(assoc: Any, *, role: Code | None = None) -> Actor:
    return Actor(user_id=str(assoc.requestor.ae_title).strip() or "-", alternative="calling-ae",
                 address=str(assoc.requestor.address or "") or None, role_codes=(role,) if role else ())


def record(gw: Gateway, assoc: Any, event: Code, action: str, *, outcome: int, subjects: Subjects,
           role: Code | None = None, ours: Code | None = None, others: Sequence[Actor] = (),
           types: Sequence[Code] = (), description: str = "") -> None:
    settings = gw.settings
    us = Actor(user_id=gw.config.ae_title, requestor=False, alternative="dicomflow",
               role_codes=(ours,) if ours else ())
    audit.emit(settings, audit.new_record(settings, event, action, outcome=outcome,
                                          requestor=requestor(assoc, role=role), subjects=subjects, others=others,
                                          types=types, description=description, us=us))
