"""QIDO-RS query parameters (PS3.18 8.3.4) parsed into a typed :class:`QidoQuery`.

Accepted parameters: matching keys by keyword (``PatientID``) or tag (``00100020``),
``includefield`` (comma-separated list, repeatable, or ``all``), ``limit``,
``offset`` and ``fuzzymatching``. Anything else is a 400 that names the parameter.
Values are checked against the attribute's VR here, so matching never sees a
malformed date or UID.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.dicomweb.attributes import Attribute, Level, is_dicom_attribute, visible_at
from shared.dicomweb.attributes import resolve as _resolve
from shared.dicomweb.errors import BadRequest

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_OFFSET: Final = 100_000
MAX_VALUE_CHARS: Final = 256
MAX_UIDS_PER_QUERY: Final = 200

#: VRs whose values may hold ``*``/``?`` wildcards (PS3.4 C.2.2.2.4).
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS: Final = frozenset({"DA", "TM", "DT"})
NUMERIC_VRS: Final = frozenset({"IS", "US", "UL", "SS", "SL"})
#: Decimal VRs (extended query tags): a number, matched by value (``1.50`` matches ``1.5``).
DECIMAL_VRS: Final = frozenset({"DS", "FL", "FD"})
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

#: As tolerant as ingest (shared.dicom.validate): digits and dots, no empty component. Leading zeros,
#: which PS3.5 forbids but real files carry, are accepted so every archived instance is addressable.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DA = re.compile(r"\d{8}")
_TM = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")
_DT = re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?")


class MatchKind(enum.StrEnum):
    UNIVERSAL = "universal"  # empty value or "*": matches everything, asks for the attribute back
    EMPTY = "empty"  # '""': matches entities whose value is empty or absent
    SINGLE = "single"
    LIST = "list"  # UID list, or multiple values (any may match)
    WILDCARD = "wildcard"
    RANGE = "range"


@dataclass(frozen=True, slots=True)
class Match:
    attribute: Attribute
    kind: MatchKind
    values: tuple[str, ...] = ()
    low: str | None = None  # RANGE: inclusive lower bound (None = open)
    high: str | None = None  # RANGE: inclusive upper bound (None = open)


@dataclass(frozen=True, slots=True)
class QidoQuery:
    level: Level
    matches: tuple[Match, ...] = ()
    include: tuple[Attribute, ...] = ()
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    fuzzy: bool = False
    scope: dict[str, str] = field(default_factory=dict)  # UIDs from the path (StudyInstanceUID, ...)
    #: The extended query tags this query could use (:mod:`shared.extended`), whether or not it does.
    extended: tuple[Attribute, ...] = ()

    def match_for(self, keyword: str) -> Match | None:
        return next((m for m in self.matches if m.attribute.keyword == keyword), None)


def check_path_uid(value: str, name: str) -> str:
    """A UID from a URL path segment: digits and dots, at most 64 characters, else 400."""
    if not value or len(value) > 64 or not _UID.fullmatch(value):
        raise BadRequest(
            f"Path segment {name} must be a DICOM UID (digits and dots, at most 64 characters); "
            f"got {len(value)} characters that are not one."
        )
    return value


def parse_query(
    params: Iterable[tuple[str, str]], level: Level, *, scope: dict[str, str] | None = None,
    extended: Iterable[Attribute] = (),
) -> QidoQuery:
    """Parse QIDO-RS query parameters for a search at ``level``.

    ``params`` is the list of (name, value) pairs as sent (repeats kept). ``scope`` holds
    the UIDs fixed by the URL path (``/studies/{s}/series`` fixes StudyInstanceUID). ``extended`` are the
    extended query tags QIDO may use (Ready and Enabled): matched and returned by keyword or tag like the rest.
    """
    scope = dict(scope or {})
    extra = tuple(extended)
    by_name = {**{a.keyword: a for a in extra}, **{a.tag: a for a in extra}}

    def resolve(name: str) -> Attribute | None:
        return _resolve(name) or by_name.get(name) or by_name.get(name.upper())

    visible = {a.keyword for a in visible_at(level, extra)}
    raw: dict[str, list[str]] = {}
    order: list[Attribute] = []
    include: list[Attribute] = []
    include_all = False
    limit, offset, fuzzy = DEFAULT_LIMIT, 0, False
    for name, value in params:
        key = name.strip()
        low = key.lower()
        if low == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if not item:
                    continue
                if item.lower() == "all":
                    include_all = True
                    continue
                attr = resolve(item)
                if attr is None:
                    if is_dicom_attribute(item):
                        continue  # a real attribute this service does not store: "return if available"
                    raise BadRequest(
                        f"includefield names {item!r}, which is not a DICOM keyword or 8-digit tag; "
                        "use e.g. includefield=PatientBirthDate or includefield=00100030 or includefield=all."
                    )
                if attr not in include:
                    include.append(attr)
            continue
        if low == "limit":
            limit = _int_param("limit", value, 1, MAX_LIMIT)
            continue
        if low == "offset":
            offset = _int_param("offset", value, 0, MAX_OFFSET)
            continue
        if low == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadRequest(f"fuzzymatching must be true or false, got {value[:20]!r}.")
            fuzzy = value.lower() == "true"
            continue
        attr = resolve(key)
        if attr is None:
            if is_dicom_attribute(key):
                raise BadRequest(
                    f"Query parameter {key} is a DICOM attribute this service does not match on at the "
                    f"{level} level (an extended query tag can add it); supported: {', '.join(sorted(visible))}."
                )
            raise BadRequest(
                f"Unknown query parameter {key!r}: expected a DICOM keyword or tag, includefield, limit, "
                "offset or fuzzymatching."
            )
        if attr.keyword not in visible or not attr.matchable:
            raise BadRequest(
                f"Query parameter {attr.keyword} cannot be matched at the {level} level; "
                f"supported: {', '.join(sorted(k for k in visible if resolve(k) and resolve(k).matchable))}."  # type: ignore[union-attr]
            )
        if attr.keyword in scope:
            raise BadRequest(
                f"Query parameter {attr.keyword} is already fixed by the URL path; remove it from the query."
            )
        if attr.keyword not in raw:
            order.append(attr)
            raw[attr.keyword] = []
        raw[attr.keyword].append(value)

    matches: list[Match] = []
    for attr in order:
        values = raw[attr.keyword]
        if len(values) > 1:
            if attr.vr != "UI":
                raise BadRequest(
                    f"Query parameter {attr.keyword} is given {len(values)} times; give it once "
                    r"(several values may be separated by a backslash '\')."
                )
            matches.append(parse_value(attr, ",".join(values)))
        else:
            matches.append(parse_value(attr, values[0]))
    for keyword, uid in scope.items():
        attr = resolve(keyword)
        assert attr is not None, keyword
        matches.append(Match(attr, MatchKind.SINGLE, (uid,)))
    return QidoQuery(level, tuple(matches), tuple(include), include_all, limit, offset, fuzzy, scope,
                     tuple(a for a in extra if a.keyword in visible))


def _int_param(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d{1,9}", value.strip()):
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {value[:20]!r}.")
    n = int(value)
    if not low <= n <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {n}.")
    return n


def parse_value(attr: Attribute, value: str) -> Match:
    """One matching key's value, checked against its VR."""
    name = attr.keyword
    limit = MAX_UIDS_PER_QUERY * 65 if attr.vr == "UI" else MAX_VALUE_CHARS
    if len(value) > limit:
        raise BadRequest(f"Value of {name} is longer than {limit} characters.")
    if value == "" or value == "*":
        return Match(attr, MatchKind.UNIVERSAL)
    if value == '""':
        return Match(attr, MatchKind.EMPTY)
    vr = attr.vr
    if vr == "UI":
        uids = tuple(u.strip() for u in re.split(r"[,\\]", value))
        for u in uids:
            if not u or len(u) > 64 or not _UID.fullmatch(u):
                raise BadRequest(
                    f"{name} must be a UID or a list of UIDs separated by ',' or '\\' "
                    "(digits and dots, at most 64 characters each)."
                )
        return Match(attr, MatchKind.SINGLE if len(uids) == 1 else MatchKind.LIST, uids)
    if vr in RANGE_VRS:
        if value.count("-") > (3 if vr == "DT" else 1):
            raise BadRequest(f"{name} range has exactly one '-' between its bounds, as in {name}=A-B, A- or -B.")
        pattern = {"DA": _DA, "TM": _TM, "DT": _DT}[vr]
        expected = {"DA": "YYYYMMDD", "TM": "HHMMSS[.FFFFFF]", "DT": "YYYYMMDDHHMMSS[.FFFFFF][&ZZXX]"}[vr]
        if vr == "TM":
            value = value.replace(":", "")
        if "-" in value and not (vr == "DT" and re.fullmatch(r"[^-]+[-+]\d{4}", value)):
            low, _, high = _split_range(value, vr, name)
            for part in (low, high):
                if part and not pattern.fullmatch(part):
                    raise BadRequest(f"{name} range bounds must be {expected}, as in {name}=A-B, A- or -B.")
            if not low and not high:
                return Match(attr, MatchKind.UNIVERSAL)
            return Match(attr, MatchKind.RANGE, low=low or None, high=high or None)
        if not pattern.fullmatch(value):
            raise BadRequest(f"{name} must be {expected} or a range A-B (open ends allowed).")
        return Match(attr, MatchKind.SINGLE, (value,))
    if vr in DECIMAL_VRS:
        parts = value.split("\\")
        for p in parts:
            if not _DECIMAL.fullmatch(p.strip()) or len(p.strip()) > 32:
                raise BadRequest(f"{name} must be a decimal number such as 1.25.")
        return Match(attr, MatchKind.SINGLE if len(parts) == 1 else MatchKind.LIST, tuple(p.strip() for p in parts))
    if vr in NUMERIC_VRS:
        parts = value.split("\\")
        for p in parts:
            if not re.fullmatch(r"[+-]?\d{1,12}", p.strip()):
                raise BadRequest(f"{name} must be a whole number.")
        return Match(attr, MatchKind.SINGLE if len(parts) == 1 else MatchKind.LIST, tuple(p.strip() for p in parts))
    # Text VRs.
    if any(ord(c) < 0x20 and c not in "\t" for c in value):
        raise BadRequest(f"Value of {name} contains control characters.")
    parts = value.split("\\")
    if len(parts) > 1:
        return Match(attr, MatchKind.LIST, tuple(parts))
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        if set(value) <= {"*"}:
            return Match(attr, MatchKind.UNIVERSAL)
        return Match(attr, MatchKind.WILDCARD, (value,))
    return Match(attr, MatchKind.SINGLE, (value,))


def _split_range(value: str, vr: str, name: str) -> tuple[str, str, str]:
    if vr != "DT":
        return value.partition("-")
    # DT may carry a UTC offset "-0500" inside a bound: split on the '-' that is not an offset.
    m = re.fullmatch(r"([0-9.]*(?:[+-]\d{4})?)-([0-9.]*(?:[+-]\d{4})?)", value)
    if not m:
        raise BadRequest(f"{name}: a DT range is A-B with A and B as YYYYMMDDHHMMSS[.FFFFFF][&ZZXX].")
    return m.group(1), "-", m.group(2)
