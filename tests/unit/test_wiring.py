"""Pins the real app's functions and bindings (``function_app.app.get_functions()``).

When you add or change a function, extend :data:`EXPECTED` in the same commit: the test is the
reviewable list of what the app exposes. Each entry is (trigger type, the binding fields that
matter: route + methods + authLevel for HTTP, path + connection + source for blobs, queueName +
connection for queues).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from devhost.routes import Route, join_prefix
from devhost.subscriptions import load as load_events
from tests.appfunctions import app_functions

ROOT = Path(__file__).resolve().parents[2]
F = "FUNCTION"
A = "ANONYMOUS"  # the app checks bearer tokens itself (functions/access.py)


def http(route: str, methods: list[str], auth: str = F) -> tuple[str, dict[str, Any]]:
    return ("httpTrigger", {"route": route, "methods": methods, "authLevel": auth})


EXPECTED: dict[str, tuple[str, dict[str, Any]]] = {
    "health": http("health", ["GET"], "ANONYMOUS"),
    "health_deep": http("health/deep", ["GET"], "ANONYMOUS"),
    "ingest": ("blobTrigger", {"path": "dicom-inbox/{name}", "connection": "DicomStorage", "source": "EventGrid"}),
    "settle": ("queueTrigger", {"queueName": "dicom-settle", "connection": "DicomStorage"}),
    "ingest_batch": ("queueTrigger", {"queueName": "dicom-ingest-batch", "connection": "DicomStorage"}),
    "follow_peer": ("timerTrigger", {"schedule": "*/10 * * * * *", "runOnStartup": False}),
    "redrive": ("timerTrigger", {"schedule": "0 */5 * * * *", "runOnStartup": False}),
    "inbox_retention": ("timerTrigger", {"schedule": "0 17 * * * *", "runOnStartup": False}),
    "ingest_status": http("ingest/status", ["GET"], A),
    "rejected": http("rejected", ["GET"], A),
    "rejection_retention": ("timerTrigger", {"schedule": "0 17 * * * *", "runOnStartup": False}),
    "cors_preflight": http("{*path}", ["OPTIONS"], A),
    "inference": ("eventGridTrigger", {}),
    "routing": ("eventGridTrigger", {}),
    "dicomweb_search_studies": http("dicomweb/studies", ["GET"], A),
    "dicomweb_search_series": http("dicomweb/series", ["GET"], A),
    "dicomweb_search_instances": http("dicomweb/instances", ["GET"], A),
    "dicomweb_search_study_series": http("dicomweb/studies/{study}/series", ["GET"], A),
    "dicomweb_search_study_instances": http("dicomweb/studies/{study}/instances", ["GET"], A),
    "dicomweb_search_series_instances": http("dicomweb/studies/{study}/series/{series}/instances", ["GET"], A),
    "dicomweb_changefeed": http("dicomweb/changefeed", ["GET"], A),
    "dicomweb_changefeed_latest": http("dicomweb/changefeed/latest", ["GET"], A),
    "dicomweb_store": http("dicomweb/studies", ["POST"], A),
    "dicomweb_bulk_update": http("dicomweb/studies/$bulkUpdate", ["POST"], A),
    "dicomweb_patient_merge": http("dicomweb/patients/$merge", ["POST"], A),
    "dicomweb_study": http("dicomweb/studies/{study}", ["GET", "POST", "DELETE"], A),
    "dicomweb_series": http("dicomweb/studies/{study}/series/{series}", ["GET", "DELETE"], A),
    "dicomweb_instance": http("dicomweb/studies/{study}/series/{series}/instances/{sop}", ["GET", "DELETE"], A),
    "dicomweb_study_metadata": http("dicomweb/studies/{study}/metadata", ["GET"], A),
    "dicomweb_series_metadata": http("dicomweb/studies/{study}/series/{series}/metadata", ["GET"], A),
    "dicomweb_instance_metadata": http("dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata", ["GET"], A),
    "dicomweb_frames": http("dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", ["GET"], A),
    "dicomweb_bulkdata": http("dicomweb/studies/{study}/series/{series}/instances/{sop}/bulkdata/{*locator}",
                              ["GET"], A),
    **{f"dicomweb_{level}_{kind}": http(f"dicomweb/{path}/{kind}", ["GET"], A)
       for level, path in (("study", "studies/{study}"), ("series", "studies/{study}/series/{series}"),
                           ("instance", "studies/{study}/series/{series}/instances/{sop}"),
                           ("frame", "studies/{study}/series/{series}/instances/{sop}/frames/{frames}"))
       for kind in ("rendered", "thumbnail")},
    "extended_tags": http("dicomweb/extendedquerytags", ["GET", "POST"], A),
    "extended_tag": http("dicomweb/extendedquerytags/{tag}", ["GET", "PATCH", "DELETE"], A),
    "extended_tag_errors": http("dicomweb/extendedquerytags/{tag}/errors", ["GET"], A),
    "operations": ("queueTrigger", {"queueName": "dicom-operations", "connection": "DicomStorage"}),
    "operation_status": http("dicomweb/operations/{operation}", ["GET"], A),
    "audit": http("audit", ["GET"], A),
}


def _app_functions_once() -> tuple[Any, ...]:
    return app_functions()


@functools.cache
def _functions() -> dict[str, dict[str, Any]]:
    out = {}
    for fn in _app_functions_once():
        bindings = json.loads(fn.get_function_json())["bindings"]
        out[fn.get_function_name()] = next(b for b in bindings if b["type"].endswith("Trigger"))
    return out


def test_function_names_are_pinned() -> None:
    assert sorted(_functions()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trigger_bindings(name: str) -> None:
    trigger = _functions().get(name)
    assert trigger is not None, f"{name} is not in function_app.app"
    kind, fields = EXPECTED[name]
    assert trigger["type"] == kind
    assert {k: trigger.get(k) for k in fields} == fields


def test_http_routes_parse_and_do_not_collide() -> None:
    seen: dict[tuple[str, str], str] = {}
    for name, trigger in _functions().items():
        if trigger["type"] != "httpTrigger":
            continue
        route = Route.parse(join_prefix("api", trigger.get("route") or name))
        shape = "/".join("{}" if s.literal is None else s.literal for s in route.segments)
        for method in trigger.get("methods") or ["*"]:
            other = seen.setdefault((shape, method), name)
            assert other == name, f"{name} and {other} both serve {method} {shape}"


def test_event_subscriptions_name_functions_of_the_right_kind() -> None:
    functions = _functions()
    for sub in load_events(ROOT / "infra" / "events.json").subscriptions:
        assert sub.function in functions, f"subscription {sub.name} names a missing function"
        assert functions[sub.function]["type"] == sub.endpoint


def test_http_functions_agree_on_the_request_type() -> None:
    """Once the app imports azurefunctions-extensions-http-fastapi, the Azure Python worker passes EVERY HTTP
    function a FastAPI Request (see devhost.host.http_v2_enabled): none may be written for func.HttpRequest."""
    from devhost.host import HostConfig, classic_http_functions, discover, http_v2_enabled

    specs = discover(_app_functions_once(), HostConfig())
    if http_v2_enabled({}):
        assert classic_http_functions(specs) == []


def test_every_http_function_but_health_and_preflight_checks_the_caller() -> None:
    """ANONYMOUS at the host means the app must guard it (functions/access.py ``guarded``)."""
    open_by_design = {"health", "cors_preflight"}
    for fn in _app_functions_once():
        name = fn.get_function_name()
        if _functions()[name]["type"] != "httpTrigger" or name in open_by_design:
            continue
        assert getattr(fn.get_user_function(), "guarded_route", None), f"{name} is not wrapped by guarded()"
