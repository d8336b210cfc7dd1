"""Extended query tags under ``/api/dicomweb/extendedquerytags`` (Azure DICOM service shape) ->
shared.extended.service. Reading needs the reader role; adding, changing and deleting need admin."""

from __future__ import annotations

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.dicomweb import route, run
from shared.auth.roles import Role
from shared.extended import service

bp = func.Blueprint()
TAGS = "extendedquerytags"


def _need(method: str) -> set[Role]:
    return {Role.READER} if method.upper() in ("GET", "HEAD") else {Role.ADMIN}


@route(bp, "extended_tags", TAGS, ["GET", "POST"], _need)
async def tags(req: Request) -> Response:
    return await run(req, service.add if req.method == "POST" else service.list_tags)


@route(bp, "extended_tag", f"{TAGS}/{{tag}}", ["GET", "PATCH", "DELETE"], _need)
async def tag(req: Request) -> Response:
    call = {"GET": service.get_tag, "PATCH": service.patch_tag, "DELETE": service.delete_tag}[req.method]
    return await run(req, call)


@route(bp, "extended_tag_errors", f"{TAGS}/{{tag}}/errors", ["GET"], _need)
async def tag_errors(req: Request) -> Response:
    return await run(req, service.tag_errors)
