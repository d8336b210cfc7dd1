"""IOCM rejections: the admin's list (``GET /api/rejected``) and the hourly retention purge → shared.rejection."""

from __future__ import annotations

import asyncio

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from functions.access import guarded
from shared.auth.roles import Role
from shared.dicom.validate import is_valid_uid
from shared.rejection import service as rejection
from shared.services import get_services

bp = func.Blueprint()


def _problem(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


@bp.function_name("rejected")
@bp.route(route="rejected", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@guarded("rejected", lambda method: {Role.ADMIN})
async def rejected(req: Request) -> Response:
    study = req.query_params.get("study")
    limit = req.query_params.get("limit", "1000")
    if study is not None and not is_valid_uid(study):
        return _problem(400, "study must be a Study Instance UID (digits and dots, at most 64 characters).")
    if not limit.isdigit() or not 1 <= int(limit) <= rejection.MAX_LISTED:
        return _problem(400, f"limit must be a whole number from 1 to {rejection.MAX_LISTED}.")
    body = await asyncio.to_thread(rejection.listing, get_services(), study, int(limit))
    return Response(orjson.dumps(body), media_type="application/json")


@bp.function_name("rejection_retention")
@bp.timer_trigger(arg_name="timer", schedule="0 17 * * * *", run_on_startup=False, use_monitor=False)
def rejection_retention(timer: func.TimerRequest) -> None:
    rejection.purge(get_services())
