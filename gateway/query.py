"""C-FIND identifiers as QIDO queries, and index views as C-FIND responses.

There is one search in dicomflow: :func:`shared.dicomweb.search.find` (the index planner
proposes candidates, PS3.4 matching decides). A C-FIND identifier is turned into the
same :class:`~shared.dicomweb.qido.QidoQuery` a QIDO-RS URL would give, value by value
through :func:`shared.dicomweb.qido.parse_value`, so ``findscu -k PatientName=mul*`` and
``/studies?PatientName=mul*`` match the same studies by construction.

Levels: STUDY, SERIES and IMAGE are QIDO's study, series and instance levels. PATIENT
(Patient Root only) is a study-level search on the patient keys, grouped by patient.

Character sets: the identifier's values arrive decoded by pydicom from the request's
Specific Character Set; the index holds Unicode. Responses are encoded in the request's
character set when every value fits it, else in UTF-8 (``ISO_IR 192``), which is then
named in the response.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from shared.dicomweb.attributes import BY_KEYWORD, UTF8_CHARSET, Level, visible_at
from shared.dicomweb.errors import BadRequest
from shared.dicomweb.qido import Match, QidoQuery, parse_value

PATIENT_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND: Final = "1.2.840.10008.5.1.4.1.2.2.1"
#: Patient Root FIND, MOVE and GET.
PATIENT_ROOT_MODELS: Final = frozenset({PATIENT_ROOT_FIND, "1.2.840.10008.5.1.4.1.2.1.2",
                                       "1.2.840.10008.5.1.4.1.2.1.3"})

LEVELS: Final = {"STUDY": Level.STUDY, "SERIES": Level.SERIES, "IMAGE": Level.INSTANCE}
PATIENT_KEYS: Final = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
PATIENT_COUNTS: Final = {
    "NumberOfPatientRelatedStudies": "studies",
    "NumberOfPatientRelatedSeries": "series",
    "NumberOfPatientRelatedInstances": "instances",
}
#: Elements of an identifier that are not matching or return keys.
_CONTROL: Final = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}


class IdentifierError(ValueError):
    """The identifier cannot be answered; the message is safe to send back as an Error Comment."""


@dataclass(slots=True)
class FindRequest:
    """A parsed C-FIND identifier."""

    level: str  # PATIENT | STUDY | SERIES | IMAGE
    query: QidoQuery
    #: Every key of the identifier, in order, as (keyword or None, tag, VR): the response carries each.
    keys: list[tuple[str | None, int, str]] = field(default_factory=list)
    #: Keys with a value we cannot match on (answered with pending status 0xFF01, as PS3.4 allows).
    unsupported: list[str] = field(default_factory=list)
    charset: list[str] = field(default_factory=list)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return ""
    return str(value).strip()


def parse_identifier(identifier: Dataset, model: str, *, limit: int) -> FindRequest:
    """The identifier of a C-FIND (or C-MOVE / C-GET) request as a search."""
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if raw_level == "PATIENT":
        if model not in PATIENT_ROOT_MODELS:
            raise IdentifierError("Query/Retrieve Level PATIENT needs the Patient Root information model.")
        level = Level.STUDY
    elif raw_level in LEVELS:
        level = LEVELS[raw_level]
    else:
        raise IdentifierError("Query/Retrieve Level (0008,0052) must be PATIENT, STUDY, SERIES or IMAGE.")
    visible = {a.keyword for a in visible_at(level)}
    allowed = set(PATIENT_KEYS) if raw_level == "PATIENT" else visible
    scs = identifier.get("SpecificCharacterSet")
    charset = [str(v) for v in (scs if isinstance(scs, MultiValue | list) else [scs] if scs else [])]
    keys: list[tuple[str | None, int, str]] = []
    matches: list[Match] = []
    unsupported: list[str] = []
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.VR == "SQ":
            continue
        keyword = keyword_for_tag(elem.tag) or None
        if keyword in _CONTROL:
            continue
        keys.append((keyword, int(elem.tag), elem.VR))
        try:
            text = _text(elem.value)
        except (ValueError, UnicodeError):
            raise IdentifierError(f"The value of {keyword or elem.tag} cannot be decoded "
                                  "with the request's Specific Character Set.") from None
        if not text or text == "*":
            continue  # a return key (or universal match: the same)
        attr = BY_KEYWORD.get(keyword or "")
        if attr is None or not attr.matchable or keyword not in allowed:
            unsupported.append(keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})")
            continue
        try:
            matches.append(parse_value(attr, text))
        except BadRequest as bad:
            raise IdentifierError(bad.message) from None
    query = QidoQuery(level, tuple(matches), limit=limit)
    return FindRequest(raw_level, query, keys, unsupported, charset)


def patients(views: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Study views grouped by patient (PatientID, then name): one view per patient with its counts."""
    groups: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
    for v in views:
        key = (str(v.get("PatientID") or ""), str(v.get("PatientName") or ""))
        g = groups.get(key)
        if g is None:
            g = {k: v.get(k) for k in PATIENT_KEYS}
            g.update({"studies": 0, "series": 0, "instances": 0})
            groups[key] = g
        g["studies"] += 1
        g["series"] += int(v.get("NumberOfStudyRelatedSeries") or 0)
        g["instances"] += int(v.get("NumberOfStudyRelatedInstances") or 0)
    for g in groups.values():
        yield {**{k: g[k] for k in PATIENT_KEYS}, **{kw: g[n] for kw, n in PATIENT_COUNTS.items()}}


def response_charset(request: list[str], views: list[dict[str, Any]]) -> list[str]:
    """The request's character set if every text value fits it, else UTF-8 (named); ASCII needs none."""
    texts = [str(v) for view in views for value in view.values() if value is not None
             for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
    if all(t.isascii() for t in texts):
        return request
    if len(request) == 1:
        codec = convert_encodings(request)[0]
        try:
            for t in texts:
                t.encode(codec)
            return request
        except (UnicodeError, LookupError):
            pass
    return [UTF8_CHARSET]


def response(req: FindRequest, view: dict[str, Any], *, retrieve_ae: str, charset: list[str]) -> Dataset:
    """One C-FIND pending response: every key of the identifier, with our value or empty."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    ds.QueryRetrieveLevel = req.level
    ds.RetrieveAETitle = retrieve_ae
    for keyword, tag, vr in req.keys:
        value = view.get(keyword) if keyword else None
        ds.add_new(tag, _vr(tag, vr), _dicom_value(value, vr))
    return ds


def _vr(tag: int, vr: str) -> str:
    if vr in ("UN", "OB or OW", "US or SS"):
        try:
            return str(dictionary_VR(tag))
        except KeyError:
            return "UN"
    return vr


def _dicom_value(value: Any, vr: str) -> Any:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    if vr in ("IS", "US", "UL", "SS", "SL") and not isinstance(value, str):
        return int(value)
    return str(value)


def with_limit(query: QidoQuery, limit: int) -> QidoQuery:
    return dataclasses.replace(query, limit=limit)
