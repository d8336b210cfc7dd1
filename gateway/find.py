"""C-FIND SCP (Patient Root and Study Root, all levels) over the one search QIDO-RS uses.

Statuses: ``0xFF00`` per match (``0xFF01`` when the identifier had matching keys we do
not support: they are ignored, as PS3.4 C.4.1.3.1 allows), ``0x0000`` at the end,
``0xFE00`` when the SCU cancels, ``0xA900`` for an identifier we cannot answer (Error
Comment says why), and ``0xA700`` with "narrow the query" once more than
``DICOMFLOW_GATEWAY_MAX_FIND_RESULTS`` matches were sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final

from pydicom.dataset import Dataset

from gateway import audit
from gateway.app import Gateway
from gateway.query import IdentifierError, parse_identifier, patients, response, response_charset, with_limit
from gateway.status import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    PENDING,
    PENDING_WARNING,
    SUCCESS,
    status,
)
from shared.audit import record as atna
from shared.audit.record import Subjects
from shared.dicomweb.search import find

log = logging.getLogger(__name__)

#: A PATIENT query groups study matches: it looks at up to this many studies per patient page.
PATIENT_STUDY_FACTOR: Final = 20


def handle_find(event: Any, gw: Gateway) -> Iterator[tuple[Any, Dataset | None]]:
    limit = gw.config.max_find_results
    model = str(event.request.AffectedSOPClassUID)
    try:
        req = parse_identifier(event.identifier, model, limit=limit)
    except IdentifierError as bad:
        log.info("C-FIND: identifier refused: %s", bad)
        audit.record(gw, event.assoc, atna.QUERY, atna.EXECUTE, outcome=atna.MINOR_FAILURE,
                     subjects=Subjects(query_class=model), description="C-FIND: 0xA900 identifier refused")
        yield status(IDENTIFIER_DOES_NOT_MATCH, str(bad)), None
        return
    query = req.query
    if req.level == "PATIENT":
        query = with_limit(query, min(limit * PATIENT_STUDY_FACTOR, 100_000))
    found = find(query, gw.fetch)
    views = list(patients(found.views)) if req.level == "PATIENT" else found.views
    more = found.more or len(views) > limit
    views = views[:limit]
    subjects = Subjects(query_keys=sorted({m.attribute.keyword for m in req.query.matches}), query_class=model)
    subjects.add_views(views, gw.settings.audit.patient_salt)
    audit.record(gw, event.assoc, atna.QUERY, atna.EXECUTE, outcome=atna.MINOR_FAILURE if more else atna.SUCCESS,
                 subjects=subjects,
                 description=f"C-FIND {req.level}: {len(views)} match(es){'; more refused' if more else ''}")
    charset = response_charset(req.charset, views)
    match = PENDING_WARNING if req.unsupported else PENDING
    log.info("C-FIND %s (%s): plan %s, %d candidates examined, %d returned%s%s", req.level,
             "patient root" if model.startswith("1.2.840.10008.5.1.4.1.2.1") else "study root", found.plan,
             found.examined, len(views), " (more: refused past the limit)" if more else "",
             f"; ignored keys {','.join(req.unsupported)}" if req.unsupported else "")
    for view in views:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield match, response(req, view, retrieve_ae=gw.config.ae_title, charset=charset)
    if more:
        yield status(OUT_OF_RESOURCES, f"Over {limit} matches; narrow the query"), None
        return
    yield SUCCESS, None

