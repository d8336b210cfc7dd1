"""HTTP route templates as the Functions host reads them (ASP.NET Core routing, the subset apps use).

``items/{id:int}/{name?}``, ``files/{*rest}`` and literal segments. Literal segments match
case-insensitively (as in ASP.NET); parameters keep their case. Constraints supported:
``int``, ``long``, ``bool``, ``alpha``, ``guid``, ``double``, ``float``, ``decimal``,
``minlength(n)``, ``maxlength(n)``, ``length(n)``, ``regex(...)``; an unknown constraint is an error
at startup rather than a silent match-all. Pure logic: no aiohttp here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

_PARAM_RE = re.compile(r"^\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)((?::[^:}]+(?:\([^)]*\))?)*)(\?)?\}$")
_CONSTRAINT_RE = re.compile(r":([a-z]+)(?:\(([^)]*)\))?")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


class RouteError(ValueError):
    """A route template the host cannot serve; the message names it."""


def _check(kind: str, arg: str | None, value: str) -> bool:
    try:
        if kind in ("int", "long"):
            int(value)
            return re.fullmatch(r"-?\d+", value) is not None
        if kind in ("double", "float", "decimal"):
            float(value)
            return True
    except ValueError:
        return False
    if kind == "bool":
        return value.lower() in ("true", "false")
    if kind == "alpha":
        return value.isascii() and value.isalpha()
    if kind == "guid":
        return _GUID_RE.match(value) is not None
    if kind == "minlength":
        return len(value) >= int(arg or 0)
    if kind == "maxlength":
        return len(value) <= int(arg or 0)
    if kind == "length":
        return len(value) == int(arg or 0)
    if kind == "regex":
        return re.search(arg or "", value) is not None
    raise AssertionError(kind)


_KNOWN = {"int", "long", "double", "float", "decimal", "bool", "alpha", "guid", "minlength", "maxlength",
          "length", "regex"}


@dataclass(frozen=True)
class Segment:
    literal: str | None = None
    name: str | None = None
    optional: bool = False
    catch_all: bool = False
    constraints: tuple[tuple[str, str | None], ...] = ()

    def accepts(self, value: str) -> bool:
        return all(_check(k, a, value) for k, a in self.constraints)


@dataclass(frozen=True)
class Route:
    template: str
    segments: tuple[Segment, ...] = field(default=())

    @classmethod
    def parse(cls, template: str) -> Route:
        parts = [p for p in template.strip("/").split("/") if p != ""]
        segs: list[Segment] = []
        for i, part in enumerate(parts):
            if "{" not in part:
                segs.append(Segment(literal=part.lower()))
                continue
            m = _PARAM_RE.match(part)
            if not m:
                raise RouteError(f"Route {template!r}: segment {part!r} is not supported; use a literal or one "
                                 "{parameter} per segment")
            star, name, cons, opt = m.groups()
            constraints = tuple((k, a) for k, a in _CONSTRAINT_RE.findall(cons or ""))
            for k, _ in constraints:
                if k not in _KNOWN:
                    raise RouteError(f"Route {template!r}: constraint {k!r} is not supported; use one of "
                                     f"{', '.join(sorted(_KNOWN))}")
            constraints = tuple((k, a or None) for k, a in constraints)
            if star and i != len(parts) - 1:
                raise RouteError(f"Route {template!r}: the catch-all {{*{name}}} must be the last segment")
            segs.append(Segment(name=name, optional=bool(opt) or bool(star), catch_all=bool(star),
                                constraints=constraints))
        for i, s in enumerate(segs):
            if s.optional and not s.catch_all and any(not t.optional for t in segs[i + 1:]):
                raise RouteError(f"Route {template!r}: optional {{{s.name}?}} must come after required segments")
        return cls(template, tuple(segs))

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: more literal segments first, catch-alls last (ASP.NET's precedence, roughly)."""
        literals = sum(1 for s in self.segments if s.literal is not None)
        constrained = sum(1 for s in self.segments if s.constraints)
        catch = any(s.catch_all for s in self.segments)
        return (-literals, int(catch), -constrained)

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters when ``path`` (after the prefix, still percent-encoded) matches, else None."""
        parts = [p for p in path.strip("/").split("/") if p != ""] if path.strip("/") else []
        params: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if seg.catch_all:
                rest = "/".join(unquote(p) for p in parts[i:])
                if rest and not seg.accepts(rest):
                    return None
                if rest and seg.name:
                    params[seg.name] = rest
                return params
            if i >= len(parts):
                if seg.optional:
                    continue
                return None
            value = unquote(parts[i])
            if seg.literal is not None:
                if value.lower() != seg.literal:
                    return None
                continue
            if not seg.accepts(value):
                return None
            assert seg.name is not None
            params[seg.name] = value
        if len(parts) > len(self.segments):
            return None
        return params


def join_prefix(prefix: str, template: str) -> str:
    return "/".join(p for p in (prefix.strip("/"), template.strip("/")) if p)
