"""DICOMweb (PS3.18) over HTTP: QIDO-RS, WADO-RS, STOW-RS and DELETE under ``/api/dicomweb``.

Thin adapter: read the request, call one service in ``shared.dicomweb``, map its
:class:`~shared.dicomweb.reply.Reply` (or :class:`~shared.dicomweb.errors.HttpProblem`)
to a response. Every route is guarded by :func:`functions.access.guarded`: a bearer token with the
role its method needs (GET reader, POST writer, DELETE admin), CORS headers, the access line and the
audit record; the routes are ``auth_level=ANONYMOUS`` because the app, not the Functions host, checks
the caller.
The functions use ``azurefunctions-extensions-http-fastapi`` request and
response types so retrieve bodies are streamed chunk by chunk (HTTP streams); the
blocking storage calls run off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from functions.access import guarded
from shared.auth import roles
from shared.config import get_settings
from shared.dicomweb import service
from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import HttpProblem, PayloadTooLarge
from shared.dicomweb.qido import check_path_uid
from shared.dicomweb.reply import Reply

log = logging.getLogger(__name__)
bp = func.Blueprint()
BASE = "dicomweb"
#: The Azure DICOM service's header for retrieving the first version of an updated instance.
ORIGINAL_HEADER = "msdicom-request-original"
S, SE, IN = "{study}", "{series}", "{sop}"


def _to_response(reply: Reply) -> Response:
    if reply.stream is not None:
        return StreamingResponse(reply.stream, status_code=reply.status, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


async def run(req: Request, call: Callable[[service.Call], Reply]) -> Response:
    """Run ``call`` on a worker thread with the request's parts; HttpProblem -> its status."""
    try:
        uids = {k: check_path_uid(v, k) for k, v in req.path_params.items() if k in ("study", "series", "sop")}
        base = _base_url(req)
        settings = get_settings()
        body = await _read_body(req, settings.stow_max_bytes) if req.method in ("POST", "PATCH") else bytearray()
        principal = getattr(req.state, "principal", None)  # functions.access.guarded keeps it there
        ctx = service.Call(
            settings=settings, method=req.method, base_url=base, accept=req.headers.get("accept"),
            content_type=req.headers.get("content-type"), params=list(req.query_params.multi_items()),
            body=body, path=dict(req.path_params), study=uids.get("study"), series=uids.get("series"),
            sop=uids.get("sop"), original=(req.headers.get(ORIGINAL_HEADER) or "").strip().lower() == "true",
            actor=principal.subject if principal is not None else "",
        )
        reply = await asyncio.to_thread(call, ctx)
    except HttpProblem as problem:
        reply = Reply.problem(problem.status, problem.message, problem.headers)
    return _to_response(reply)


def _base_url(req: Request) -> str:
    """``scheme://host[:port]/api/dicomweb`` as the client addressed us (for RetrieveURL, BulkDataURI).

    Some clients (dicomweb-client) send ``Host`` without the port of a non-default-port
    server; when the host names the very address we listen on, the listening port is added.
    """
    url = req.url
    host = req.headers.get("x-forwarded-host") or req.headers.get("host") or url.netloc
    server = req.scope.get("server")
    if ":" not in host and server and server[0] == host and server[1] not in (80, 443):
        host = f"{host}:{server[1]}"
    scheme = req.headers.get("x-forwarded-proto") or url.scheme
    path = url.path
    cut = path.find("/" + BASE)
    prefix = path[: cut + len(BASE) + 1] if cut >= 0 else path
    return f"{scheme}://{host}{prefix}"


async def _read_body(req: Request, limit: int) -> bytearray:
    """The request body in one buffer (chunks appended as they come, never a list joined at the end:
    one copy of the body), refused with 413 as soon as it exceeds ``limit`` (never buffered past it)."""
    declared = req.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(service.too_large_message(int(declared), limit))
    body = bytearray()
    async for chunk in req.stream():
        if len(body) + len(chunk) > limit:
            raise PayloadTooLarge(service.too_large_message(len(body) + len(chunk), limit))
        body += chunk
    return body


def _need(method: str) -> set[roles.Role]:
    return {roles.for_dicomweb(method)}


def route(blueprint: func.Blueprint, name: str, route: str, methods: list[str],
          need: Callable[[str], set[roles.Role]] = _need) -> Any:
    """Register an HTTP function at ``{BASE}/{route}``, guarded (roles from ``need(method)``, CORS, audit)."""
    def wrap(fn: Any) -> Any:
        path = f"{BASE}/{route}"
        return blueprint.function_name(name)(blueprint.route(route=path, methods=methods,
                                                             auth_level=func.AuthLevel.ANONYMOUS)(
            guarded(path, need)(fn)))
    return wrap


def _route(name: str, path: str, methods: list[str]) -> Any:
    return route(bp, name, path, methods)


def _admin(method: str) -> set[roles.Role]:
    return {roles.Role.ADMIN}


# -- QIDO-RS ----------------------------------------------------------------------------------
@_route("dicomweb_search_studies", "studies", ["GET"])
async def search_studies(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.STUDY))


@_route("dicomweb_search_series", "series", ["GET"])
async def search_series(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.SERIES))


@_route("dicomweb_search_instances", "instances", ["GET"])
async def search_instances(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.INSTANCE))


@_route("dicomweb_search_study_series", f"studies/{S}/series", ["GET"])
async def search_study_series(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.SERIES))


@_route("dicomweb_search_study_instances", f"studies/{S}/instances", ["GET"])
async def search_study_instances(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.INSTANCE))


@_route("dicomweb_search_series_instances", f"studies/{S}/series/{SE}/instances", ["GET"])
async def search_series_instances(req: Request) -> Response:
    return await run(req, lambda c: service.search(c, Level.INSTANCE))


# -- change feed (Azure DICOM service v2 shape) -------------------------------------------------
@_route("dicomweb_changefeed", "changefeed", ["GET"])
async def changefeed(req: Request) -> Response:
    return await run(req, service.changefeed)


@_route("dicomweb_changefeed_latest", "changefeed/latest", ["GET"])
async def changefeed_latest(req: Request) -> Response:
    return await run(req, service.changefeed_latest)


# -- STOW-RS ----------------------------------------------------------------------------------
@_route("dicomweb_store", "studies", ["POST"])
async def store(req: Request) -> Response:
    return await run(req, service.store)


# -- bulk update and patient merge (Azure DICOM service shapes; admin: they change patient data) ------
@route(bp, "dicomweb_bulk_update", "studies/$bulkUpdate", ["POST"], need=_admin)
async def bulk_update(req: Request) -> Response:
    return await run(req, service.bulk_update)


@route(bp, "dicomweb_patient_merge", "patients/$merge", ["POST"], need=_admin)
async def patient_merge(req: Request) -> Response:
    return await run(req, service.patient_merge)


# -- WADO-RS (and DELETE on the same resources) -----------------------------------------------
@_route("dicomweb_study", f"studies/{S}", ["GET", "POST", "DELETE"])
async def study(req: Request) -> Response:
    return await run(req, service.study_resource)


@_route("dicomweb_series", f"studies/{S}/series/{SE}", ["GET", "DELETE"])
async def series(req: Request) -> Response:
    return await run(req, service.series_resource)


@_route("dicomweb_instance", f"studies/{S}/series/{SE}/instances/{IN}", ["GET", "DELETE"])
async def instance(req: Request) -> Response:
    return await run(req, service.instance_resource)


@_route("dicomweb_study_metadata", f"studies/{S}/metadata", ["GET"])
async def study_metadata(req: Request) -> Response:
    return await run(req, service.study_metadata)


@_route("dicomweb_series_metadata", f"studies/{S}/series/{SE}/metadata", ["GET"])
async def series_metadata(req: Request) -> Response:
    return await run(req, service.series_metadata)


@_route("dicomweb_instance_metadata", f"studies/{S}/series/{SE}/instances/{IN}/metadata", ["GET"])
async def instance_metadata(req: Request) -> Response:
    return await run(req, service.instance_metadata)


@_route("dicomweb_frames", f"studies/{S}/series/{SE}/instances/{IN}/frames/{{frames}}", ["GET"])
async def frames(req: Request) -> Response:
    return await run(req, service.frames)


@_route("dicomweb_bulkdata", f"studies/{S}/series/{SE}/instances/{IN}/bulkdata/{{*locator}}", ["GET"])
async def bulkdata(req: Request) -> Response:
    return await run(req, service.bulkdata)


# -- rendered resources and thumbnails (PS3.18 9.5) -------------------------------------------
@_route("dicomweb_study_rendered", f"studies/{S}/rendered", ["GET"])
async def study_rendered(req: Request) -> Response:
    return await run(req, service.rendered)


@_route("dicomweb_series_rendered", f"studies/{S}/series/{SE}/rendered", ["GET"])
async def series_rendered(req: Request) -> Response:
    return await run(req, service.rendered)


@_route("dicomweb_instance_rendered", f"studies/{S}/series/{SE}/instances/{IN}/rendered", ["GET"])
async def instance_rendered(req: Request) -> Response:
    return await run(req, service.rendered)


@_route("dicomweb_frame_rendered", f"studies/{S}/series/{SE}/instances/{IN}/frames/{{frames}}/rendered", ["GET"])
async def frame_rendered(req: Request) -> Response:
    return await run(req, service.rendered)


@_route("dicomweb_study_thumbnail", f"studies/{S}/thumbnail", ["GET"])
async def study_thumbnail(req: Request) -> Response:
    return await run(req, service.thumbnail)


@_route("dicomweb_series_thumbnail", f"studies/{S}/series/{SE}/thumbnail", ["GET"])
async def series_thumbnail(req: Request) -> Response:
    return await run(req, service.thumbnail)


@_route("dicomweb_instance_thumbnail", f"studies/{S}/series/{SE}/instances/{IN}/thumbnail", ["GET"])
async def instance_thumbnail(req: Request) -> Response:
    return await run(req, service.thumbnail)


@_route("dicomweb_frame_thumbnail", f"studies/{S}/series/{SE}/instances/{IN}/frames/{{frames}}/thumbnail", ["GET"])
async def frame_thumbnail(req: Request) -> Response:
    return await run(req, service.thumbnail)
