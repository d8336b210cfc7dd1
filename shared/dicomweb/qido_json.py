"""QIDO-RS responses: ``application/dicom+json`` (PS3.18 F.2), UTF-8, one object per match.

Each object carries ``SpecificCharacterSet`` = ``ISO_IR 192`` (the body is UTF-8 JSON
whatever the stored files' character sets were: pydicom decoded them at ingest) and
``RetrieveURL`` of the entity. The attributes returned are the level's defaults
(PS3.18 Table 10.6.3-3..5), every matching key, and ``includefield`` (or all we hold).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from shared.dicomweb.attributes import (
    ATTRIBUTES,
    RETRIEVE_URL,
    SPECIFIC_CHARACTER_SET,
    UTF8_CHARSET,
    Attribute,
    Level,
    defaults_at,
    visible_at,
)
from shared.dicomweb.qido import QidoQuery

DICOM_JSON: Final = "application/dicom+json"


def returned_attributes(query: QidoQuery) -> list[Attribute]:
    """The attributes a result object carries, in tag order."""
    visible = visible_at(query.level, query.extended)
    if query.include_all:
        chosen = set(visible)
    else:
        chosen = set(defaults_at(query.level))
        chosen.update(m.attribute for m in query.matches)
        chosen.update(a for a in query.include if a in visible)
    return sorted(chosen, key=lambda a: a.tag)


def element(vr: str, raw: Any) -> dict[str, Any]:
    """One DICOM JSON element; absent or empty values give ``{"vr": vr}`` (PS3.18 F.2.5)."""
    if raw is None:
        return {"vr": vr}
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    items = [v for v in items if v is not None and v != ""]
    if not items:
        return {"vr": vr}
    if vr == "PN":
        values: list[Any] = []
        for v in items:
            groups = str(v).split("=")
            pn = {k: g for k, g in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False) if g}
            values.append(pn)
        return {"vr": vr, "Value": values}
    if vr in ("IS", "US", "UL", "SS", "SL"):
        out = []
        for v in items:
            try:
                out.append(int(str(v).strip()))
            except ValueError:
                continue
        return {"vr": vr, "Value": out} if out else {"vr": vr}
    if vr in ("DS", "FL", "FD"):
        return {"vr": vr, "Value": [float(v) for v in items]}
    return {"vr": vr, "Value": [str(v) for v in items]}


def result_object(view: Mapping[str, Any], attributes: Iterable[Attribute], retrieve_url: str | None) -> dict[str, Any]:
    obj: dict[str, Any] = {SPECIFIC_CHARACTER_SET[0]: {"vr": SPECIFIC_CHARACTER_SET[1], "Value": [UTF8_CHARSET]}}
    for a in attributes:
        obj[a.tag] = element(a.vr, view.get(a.keyword))
    if retrieve_url:
        obj[RETRIEVE_URL[0]] = {"vr": RETRIEVE_URL[1], "Value": [retrieve_url]}
    return dict(sorted(obj.items()))


def retrieve_url(base: str, level: Level, view: Mapping[str, Any]) -> str | None:
    """``{base}/studies/{s}[/series/{se}[/instances/{i}]]`` or None if a UID is missing."""
    study = view.get("StudyInstanceUID")
    if not study:
        return None
    url = f"{base}/studies/{study}"
    if level is Level.STUDY:
        return url
    series = view.get("SeriesInstanceUID")
    if not series:
        return None
    url += f"/series/{series}"
    if level is Level.SERIES:
        return url
    sop = view.get("SOPInstanceUID")
    return f"{url}/instances/{sop}" if sop else None


def render(views: Iterable[Mapping[str, Any]], query: QidoQuery, base_url: str) -> bytes:
    """The JSON body (UTF-8 bytes) for the matched views."""
    attrs = returned_attributes(query)
    return orjson.dumps([result_object(v, attrs, retrieve_url(base_url, query.level, v)) for v in views])


__all__ = ["ATTRIBUTES", "DICOM_JSON", "element", "render", "result_object", "retrieve_url", "returned_attributes"]
