"""The DICOMweb service boundary: one function per HTTP resource, called by ``functions/dicomweb.py``.

Each takes a :class:`Call` (the request's parts, already split by the adapter) and
returns a :class:`~shared.dicomweb.reply.Reply`, or raises
:class:`~shared.dicomweb.errors.HttpProblem`. Storage errors other than "not found"
propagate (the host answers 500 and logs them once).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.audit import scope as audit_scope
from shared.config import Settings
from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import HttpProblem
from shared.dicomweb.qido import parse_query
from shared.dicomweb.rendered import Renderer
from shared.dicomweb.rendered import parse_params as parse_render_params
from shared.dicomweb.reply import Reply
from shared.dicomweb.search import Fetch
from shared.dicomweb.wado import Wado, parse_frame_list
from shared.services import Services, get_services


@dataclass
class Call:
    settings: Settings
    method: str = "GET"
    base_url: str = ""
    accept: str | None = None
    content_type: str | None = None
    params: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | bytearray = b""
    path: dict[str, str] = field(default_factory=dict)
    study: str | None = None
    series: str | None = None
    sop: str | None = None
    #: ``msdicom-request-original: true``: retrieve the first version of instances a bulk update changed.
    original: bool = False
    #: Who is asking (the token's subject): recorded by the actions that change data.
    actor: str = ""


def services(call: Call) -> Services:
    """The process-wide services (clients, index, publisher) for these settings."""
    svc = get_services(call.settings)
    svc.ensure_ready()  # once per process: a fresh store answers "nothing found", not 500
    return svc


def _wado(call: Call) -> Wado:
    svc = services(call)
    audit_scope.note(call.study, call.series, call.sop)  # path UIDs, validated by the adapter (check_path_uid)
    return Wado(svc.blobs, svc.index)


def _no_params(call: Call) -> None:
    if call.params:
        name = call.params[0][0]
        raise HttpProblem(f"Query parameter {name!r} is not supported on this resource; remove it.", status=400)


# -- QIDO-RS ------------------------------------------------------------------------------------
def search(call: Call, level: Level) -> Reply:
    from shared.dicomweb import search as qido
    from shared.dicomweb.media import negotiate_json

    media_type = negotiate_json(call.accept)
    _, scope = qido.level_from_path(call.study, call.series, level)
    limits = call.settings.limits
    tags = services(call).extended_tags.queryable()
    query = parse_query(call.params, level, scope=scope, extended=[t.attribute() for t in tags],
                        max_wildcards=limits.query_max_wildcards)
    reply = qido.search(query, _index_fetch(call), call.base_url, host=call.settings.service_host_name,
                        media_type=media_type, max_rows=limits.query_max_rows)
    # Azure DICOM service: a query on an extended tag whose indexing found bad values says which.
    used = {m.attribute.tag for m in query.matches if m.attribute.key}
    erroneous = sorted(t.keyword for t in tags if t.has_errors and t.path in used)
    if erroneous:
        reply.headers[ERRONEOUS_HEADER] = ",".join(erroneous)
    return reply


#: Response header naming the extended query tags of a query whose indexing found values that fail their VR.
ERRONEOUS_HEADER = "erroneous-dicom-attributes"


def _index_fetch(call: Call) -> Fetch:
    from shared.dicomweb.planner import fetch_for

    return fetch_for(services(call).index)


# -- WADO-RS ------------------------------------------------------------------------------------
def study_resource(call: Call) -> Reply:
    assert call.study
    if call.method == "POST":
        return store(call)
    if call.method == "DELETE":
        return delete(call)
    _no_params(call)
    return _wado(call).retrieve(call.accept, call.study, original=call.original)


def series_resource(call: Call) -> Reply:
    assert call.study and call.series
    if call.method == "DELETE":
        return delete(call)
    _no_params(call)
    return _wado(call).retrieve(call.accept, call.study, call.series, original=call.original)


def instance_resource(call: Call) -> Reply:
    assert call.study and call.series and call.sop
    if call.method == "DELETE":
        return delete(call)
    _no_params(call)
    return _wado(call).retrieve(call.accept, call.study, call.series, call.sop, original=call.original)


def study_metadata(call: Call) -> Reply:
    assert call.study
    return _wado(call).study_metadata(call.accept, call.base_url, call.study, original=call.original)


def series_metadata(call: Call) -> Reply:
    assert call.study and call.series
    return _wado(call).series_metadata(call.accept, call.base_url, call.study, call.series, original=call.original)


def instance_metadata(call: Call) -> Reply:
    assert call.study and call.series and call.sop
    return _wado(call).instance_metadata(call.accept, call.base_url, call.study, call.series, call.sop,
                                         original=call.original)


def frames(call: Call) -> Reply:
    assert call.study and call.series and call.sop
    return _wado(call).frames(call.accept, call.study, call.series, call.sop, call.path.get("frames", ""))


def bulkdata(call: Call) -> Reply:
    assert call.study and call.series and call.sop
    return _wado(call).bulk(call.accept, call.study, call.series, call.sop, call.path.get("locator", ""))


# -- rendered and thumbnails (PS3.18 9.5) -----------------------------------------------------------------------
def _renderer(call: Call) -> Renderer:
    return Renderer(_wado(call))


def _frame_number(call: Call) -> int:
    value = call.path.get("frames", "")
    numbers = parse_frame_list(value)
    if len(numbers) != 1:
        raise HttpProblem("A rendered frame is one frame number, as in frames/3/rendered.", status=400)
    return numbers[0]


def rendered(call: Call) -> Reply:
    """``…/rendered`` at study, series, instance (its first frame) and frame level."""
    assert call.study
    params = parse_render_params(call.params)
    if call.sop and call.series:
        frame = _frame_number(call) if "frames" in call.path else 1
        return _renderer(call).instance(call.accept, call.study, call.series, call.sop, frame, params)
    return _renderer(call).many(call.accept, call.study, call.series, params)


def thumbnail(call: Call) -> Reply:
    """``…/thumbnail`` at study, series, instance and frame level: one small image."""
    assert call.study
    params = parse_render_params(call.params, thumbnail=True)
    renderer = _renderer(call)
    if call.sop and call.series:
        frame = _frame_number(call) if "frames" in call.path else 1
        return renderer.instance(call.accept, call.study, call.series, call.sop, frame, params)
    series, sop, frame = renderer.representative(call.study, call.series)
    return renderer.instance(call.accept, call.study, series, sop, frame, params)


# -- change feed ----------------------------------------------------------------------------------
def changefeed(call: Call) -> Reply:
    from shared.dicomweb import changefeed as feed

    return feed.feed(call)


def changefeed_latest(call: Call) -> Reply:
    from shared.dicomweb import changefeed as feed

    return feed.latest(call)


# -- bulk update and operations (the Azure DICOM service's shapes) -----------------------------------
def bulk_update(call: Call) -> Reply:
    """``POST /studies/$bulkUpdate``: 202 with the operation's reference."""
    import orjson

    from shared.update import service as update

    try:
        body = orjson.loads(call.body or b"null")
    except orjson.JSONDecodeError:
        raise HttpProblem('The body must be JSON: {"studyInstanceUids": [...], "changeDataset": {...}}.',
                          status=400) from None
    try:
        studies, changes = update.parse_request(body)
        op = update.submit(services(call), studies, changes, actor=call.actor)
    except update.UpdateRefused as refused:
        raise HttpProblem(refused.message, status=refused.status) from None
    ref = op.reference(call.base_url)
    return Reply.json(ref, status=202, media_type="application/json", headers={"Location": ref["href"]})


def patient_merge(call: Call) -> Reply:
    """``POST /patients/$merge`` ``{"sourcePatientId", "targetPatientId"[, "demographics"]}``: every study of
    the source patient under the target, as bulk update operations (202 with their references)."""
    import orjson

    from shared.update import merge
    from shared.update import service as update

    try:
        body = orjson.loads(call.body or b"null")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or set(body) - {"sourcePatientId", "targetPatientId", "demographics"}:
        raise HttpProblem('The body must be {"sourcePatientId": "...", "targetPatientId": "..."} (and optionally '
                          '"demographics": {"PatientName": ..., "PatientBirthDate": ..., "PatientSex": ...}).',
                          status=400)
    demographics = body.get("demographics") or {}
    if not isinstance(demographics, dict):
        raise HttpProblem("demographics must be an object keyed by PatientName, PatientBirthDate, PatientSex.",
                          status=400)
    try:
        plan, ops = merge.merge(services(call), body.get("sourcePatientId"), body.get("targetPatientId"),
                                actor=call.actor, demographics=demographics)
    except update.UpdateRefused as refused:
        raise HttpProblem(refused.message, status=refused.status) from None
    refs = [op.reference(call.base_url) for op in ops]
    return Reply.json({"studies": len(plan.studies), "operations": refs}, status=202, media_type="application/json")


def too_large_message(size: int, limit: int) -> str:
    return (
        f"The request body ({size} bytes so far) is over the STOW-RS limit of {limit} bytes (the Functions HTTP "
        "limit is 100 MB). Upload large files to the dicom-inbox blob container instead (any blob upload, or "
        "'python -m tools upload <files>' locally): they take the same ingest path."
    )


# -- STOW-RS and DELETE -------------------------------------------------------------------------
def store(call: Call) -> Reply:
    from shared.dicomweb.stow import store as stow

    return stow(call)


def delete(call: Call) -> Reply:
    from shared.dicomweb.delete import delete as remove

    return remove(call)
