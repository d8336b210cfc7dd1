"""The extended query tag resources and the operation status, under the DICOMweb root (Azure DICOM service shape).

| Request | Role | Answer |
| --- | --- | --- |
| ``POST extendedquerytags`` (JSON array) | admin | 202 ``{"id", "href"}`` of the reindex operation; 400 / 409 |
| ``GET extendedquerytags[?limit=&offset=]`` | reader | 200, the tags |
| ``GET extendedquerytags/{path}`` | reader | 200, the tag; 400 bad path; 404 |
| ``PATCH extendedquerytags/{path}`` ``{"queryStatus": "Enabled"}`` | admin | 200, the tag |
| ``DELETE extendedquerytags/{path}`` | admin | 204 |
| ``GET extendedquerytags/{path}/errors[?limit=&offset=]`` | reader | 200, the errors |

``{path}`` is 8 hex digits or a keyword. A deleted tag stops being matched at once (in this process; in the
others within the tag list's TTL); its values stay in the rows under its old generation and are never read.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

import orjson

from shared.audit import scope as audit_scope
from shared.dicomweb.errors import BadRequest, Conflict, NotFoundProblem
from shared.dicomweb.reply import Reply
from shared.extended.registry import TagStore, reindex_delay
from shared.extended.tags import DISABLED, ENABLED, ExtendedTag, parse_add, resolve_path
from shared.ops import runner
from shared.ops.kinds import REINDEX
from shared.ports import RowChanged, RowExists

if TYPE_CHECKING:
    from shared.dicomweb.service import Call
    from shared.services import Services

log = logging.getLogger(__name__)
JSON: Final = "application/json"
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 200


def _svc(call: Call) -> Services:
    from shared.dicomweb.service import services

    return services(call)


def _param(call: Call, name: str, default: int, low: int, high: int) -> int:
    values = [v for k, v in call.params if k.lower() == name]
    if not values:
        return default
    raw = values[-1].strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def _only(call: Call, *allowed: str) -> None:
    for name, _ in call.params:
        if name.lower() not in allowed:
            raise BadRequest(f"Query parameter {name!r} is not supported here"
                             f"{'; use ' + ', '.join(allowed) if allowed else ''}.")


def _tag(svc: Services, call: Call) -> tuple[ExtendedTag, str]:
    path = resolve_path(call.path.get("tag", ""), "The tag path")
    got = TagStore(svc.tables).get(path)
    if got is None:
        raise NotFoundProblem(f"{path} is not an extended query tag; GET extendedquerytags lists them.")
    return got


def add(call: Call) -> Reply:
    svc = _svc(call)
    _only(call)
    store = TagStore(svc.tables)
    wanted = parse_add(call.body, store.all())
    settings = svc.settings
    delay = reindex_delay(settings.extended_tags_ttl_seconds, settings.extended_tags_grace_seconds)
    op = runner.start(svc, REINDEX, params={"tags": [t.path for t in wanted]},
                      resources=[f"extendedquerytags/{t.path}" for t in wanted], delay=delay)
    gen = int(time.time() * 1000)
    try:
        store.add([ExtendedTag(t.path, t.vr, t.level, t.private_creator, operation=op.id, gen=gen) for t in wanted])
    except RowExists:  # added by someone else meanwhile; the operation finds no tags of its own and ends
        raise Conflict("One of these tags was added meanwhile by another request; GET extendedquerytags shows "
                       "them.") from None
    svc.extended_tags.invalidate()
    for t in wanted:
        audit_scope.note_resource(f"extendedquerytags/{t.path}")
    log.info("Extended query tags %s added; reindex operation %s starts in %.0f s",
             ",".join(t.path for t in wanted), op.id, delay)
    return Reply.json(op.reference(call.base_url), status=202, media_type=JSON)


def list_tags(call: Call) -> Reply:
    svc = _svc(call)
    _only(call, "limit", "offset")
    limit = _param(call, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _param(call, "offset", 0, 0, 100_000)
    store = TagStore(svc.tables)
    tags = sorted(store.all(), key=lambda t: t.path)[offset:offset + limit]
    body = [t.to_json(call.base_url, error_count=store.error_count(t.path) if t.has_errors else 0) for t in tags]
    return Reply.json(body, media_type=JSON)


def get_tag(call: Call) -> Reply:
    svc = _svc(call)
    _only(call)
    tag, _ = _tag(svc, call)
    count = TagStore(svc.tables).error_count(tag.path) if tag.has_errors else 0
    return Reply.json(tag.to_json(call.base_url, error_count=count), media_type=JSON)


def delete_tag(call: Call) -> Reply:
    svc = _svc(call)
    _only(call)
    tag, _ = _tag(svc, call)
    TagStore(svc.tables).delete(tag.path)
    svc.extended_tags.invalidate()
    audit_scope.note_resource(f"extendedquerytags/{tag.path}")
    log.info("Extended query tag %s deleted", tag.path)
    return Reply(204)


def patch_tag(call: Call) -> Reply:
    svc = _svc(call)
    _only(call)
    try:
        doc = orjson.loads(call.body or b"null")
    except orjson.JSONDecodeError:
        doc = None
    fields = {str(k).lower(): v for k, v in doc.items()} if isinstance(doc, dict) else {}
    wanted = str(fields.get("querystatus", "")).strip().capitalize()
    if set(fields) != {"querystatus"} or wanted not in (ENABLED, DISABLED):
        raise BadRequest('The body must be {"queryStatus": "Enabled"} or {"queryStatus": "Disabled"}.')
    store = TagStore(svc.tables)
    for _ in range(5):
        tag, etag = _tag(svc, call)
        changed = ExtendedTag(tag.path, tag.vr, tag.level, tag.private_creator, tag.status, wanted, tag.operation,
                              tag.gen, tag.has_errors)
        try:
            store.replace(changed, etag)
        except RowChanged:
            continue
        svc.extended_tags.invalidate()
        audit_scope.note_resource(f"extendedquerytags/{tag.path}")
        count = store.error_count(tag.path) if tag.has_errors else 0
        return Reply.json(changed.to_json(call.base_url, error_count=count), media_type=JSON)
    raise Conflict("The tag kept changing while it was updated; try again.")


def tag_errors(call: Call) -> Reply:
    svc = _svc(call)
    _only(call, "limit", "offset")
    limit = _param(call, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _param(call, "offset", 0, 0, 100_000)
    tag, _ = _tag(svc, call)
    rows = TagStore(svc.tables).errors(tag.path)[offset:offset + limit]
    return Reply.json([r.to_json() for r in rows], media_type=JSON)
