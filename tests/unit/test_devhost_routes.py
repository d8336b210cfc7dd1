"""Route template matching (pure logic): literals, parameters, optional, catch-all, constraints."""

from __future__ import annotations

import pytest

from devhost.routes import Route, RouteError, join_prefix


@pytest.mark.parametrize(("template", "path", "expected"), [
    ("api/health", "/api/health", {}),
    ("api/health", "/API/Health/", {}),
    ("api/health", "/api/health/x", None),
    ("api/hello/{name}", "/api/hello/World", {"name": "World"}),
    ("api/hello/{name}", "/api/hello", None),
    ("api/hello/{name}", "/api/hello/a%2Fb", {"name": "a/b"}),
    ("api/items/{id:int}/{label?}", "/api/items/42", {"id": "42"}),
    ("api/items/{id:int}/{label?}", "/api/items/42/x", {"id": "42", "label": "x"}),
    ("api/items/{id:int}/{label?}", "/api/items/x", None),
    ("api/items/{id:int}/{label?}", "/api/items/-3", {"id": "-3"}),
    ("api/files/{*rest}", "/api/files/a/b/c.txt", {"rest": "a/b/c.txt"}),
    ("api/files/{*rest}", "/api/files", {}),
    ("api/studies/{study}/series/{series}", "/api/studies/1.2/series/3.4", {"study": "1.2", "series": "3.4"}),
    ("api/studies/{study}/series/{series}", "/api/studies/1.2/instances/3.4", None),
    ("api/v/{g:guid}", "/api/v/0f8fad5b-d9cb-469f-a165-70867728950e", {"g": "0f8fad5b-d9cb-469f-a165-70867728950e"}),
    ("api/v/{g:guid}", "/api/v/nope", None),
    ("api/a/{s:alpha:minlength(2)}", "/api/a/ab", {"s": "ab"}),
    ("api/a/{s:alpha:minlength(2)}", "/api/a/a", None),
    ("api/a/{s:alpha:minlength(2)}", "/api/a/a1", None),
    ("api/b/{flag:bool}", "/api/b/True", {"flag": "True"}),
])
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert Route.parse(template).match(path) == expected


def test_regex_constraint() -> None:
    assert Route.parse("api/r/{code:regex(^[A-Z]+$)}").match("/api/r/ABC") == {"code": "ABC"}
    assert Route.parse("api/r/{code:regex(^[A-Z]+$)}").match("/api/r/abc1") is None


def test_literals_win_over_parameters() -> None:
    routes = sorted([Route.parse("api/studies/{study}"), Route.parse("api/studies/latest")],
                    key=lambda r: r.specificity)
    assert routes[0].template == "api/studies/latest"
    catch = sorted([Route.parse("api/{*rest}"), Route.parse("api/{one}")], key=lambda r: r.specificity)
    assert catch[0].template == "api/{one}"


@pytest.mark.parametrize("template", ["api/{id:nosuch}", "api/{*rest}/x", "api/a{b}", "api/{opt?}/x"])
def test_bad_templates_are_errors(template: str) -> None:
    with pytest.raises(RouteError):
        Route.parse(template)


def test_join_prefix() -> None:
    assert join_prefix("api", "/health") == "api/health"
    assert join_prefix("", "health") == "health"
