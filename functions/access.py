"""Access control for HTTP functions: CORS preflight, bearer tokens and roles, one audit line and one audit record.

``guarded(route, need)`` wraps an HTTP function (FastAPI-typed ``req``) so it runs only for a caller
whose token grants the role ``need(method)`` returns; the answer carries the CORS headers for the
request's Origin. The functions it wraps are ``auth_level=ANONYMOUS``: the Functions host's own key
check would refuse browser clients, which can only send ``Authorization: Bearer``. ``cors_preflight``
answers every ``OPTIONS`` under the route prefix. The logic lives in :mod:`shared.auth`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable

import azure.functions as func
import orjson
from azurefunctions.extensions.http.fastapi import Request, Response

from shared import audit
from shared.audit import scope as audit_scope
from shared.audit.http import client_address, record_for
from shared.audit.record import Subjects
from shared.auth import service as access
from shared.auth.cors import CorsPolicy
from shared.auth.roles import Role
from shared.auth.tokens import Principal
from shared.config import get_settings

bp = func.Blueprint()
Handler = Callable[[Request], Awaitable[Response]]


def _cors() -> CorsPolicy:
    return CorsPolicy(get_settings().auth.cors_origins)


def guarded(route: str, need: Callable[[str], Iterable[Role]]) -> Callable[[Handler], Handler]:
    """Wrap an HTTP function: authorize (roles from ``need(method)``), add CORS headers, audit."""
    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def inner(req: Request) -> Response:
            settings = get_settings().auth
            headers = {k.lower(): v for k, v in req.headers.items()}
            study = req.path_params.get("study")
            principal = None
            address = client_address(headers, req.client.host if req.client else None)
            try:
                principal = await asyncio.to_thread(access.authorize, settings, headers, need(req.method),
                                                    dict(req.query_params))
            except access.AccessDenied as denied:
                access.audit(None, req.method, route, study, denied.status, f"denied:{denied.reason}")
                _audit_trail(route, req.method, denied.status, denied.principal, address, Subjects())
                return _with_cors(Response(orjson.dumps({"error": denied.message}), status_code=denied.status,
                                           headers=denied.headers, media_type="application/json"),
                                  headers.get("origin"))
            subjects, token = audit_scope.begin(get_settings().audit.patient_salt)
            try:
                resp = await fn(req)
            finally:
                audit_scope.end(token)
            access.audit(principal, req.method, route, study, resp.status_code, "allowed")
            _audit_trail(route, req.method, resp.status_code, principal, address, subjects)
            return _with_cors(resp, headers.get("origin"))
        inner.guarded_route = route  # type: ignore[attr-defined]  # pinned by tests/unit/test_wiring.py
        return inner
    return wrap


def _audit_trail(route: str, method: str, status: int, principal: Principal | None, address: str | None,
                 subjects: Subjects) -> None:
    """The request's audit record (shared.audit): written to the spool and log now, appended in the background."""
    settings = get_settings()
    record = record_for(settings, route, method, status, user=principal.subject if principal else None,
                        kind=principal.kind if principal else None,
                        roles=principal.roles if principal else (), address=address, subjects=subjects)
    if record is not None:
        audit.emit(settings, record)


def _with_cors(resp: Response, origin: str | None) -> Response:
    for k, v in _cors().response_headers(origin).items():
        resp.headers[k] = v
    return resp


@bp.function_name("cors_preflight")
@bp.route(route="{*path}", methods=["OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
async def cors_preflight(req: Request) -> Response:
    status, headers = _cors().preflight({k.lower(): v for k, v in req.headers.items()})
    return Response(b"", status_code=status, headers=headers)
