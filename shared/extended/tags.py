"""The extended query tag model and the checks of a request that adds tags (Azure DICOM service shape).

An add request is a JSON array of ``{"path", "vr", "level", "privateCreator"}``:

* ``path``: 8 hex digits (``00180050``) or a standard keyword (``SliceThickness``); top-level only (a tag
  inside a sequence is refused, as the Azure DICOM service does).
* ``vr``: optional for a standard tag (its dictionary VR; a different one is refused), required for a
  private tag; one of :data:`SUPPORTED_VRS`.
* ``level``: ``Study``, ``Series`` or ``Instance`` (case-insensitive).
* ``privateCreator``: required for a private tag (odd group, element ``xx10``-``xxFF`` of a block), not
  allowed for a standard one.

Refused with 400 (the message names the entry and the field): malformed JSON or paths, unknown
keywords, unsupported or mismatched VRs, a bad level, a tag twice in one request, more than
:data:`MAX_TAGS` tags in all. Refused with 409: a tag that is already an extended query tag, or one QIDO-RS
matches on already (a built-in attribute).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword

from shared.dicomweb.attributes import BY_TAG, Attribute, Level
from shared.dicomweb.errors import BadRequest, Conflict

#: The VRs an extended query tag may have (those the Azure DICOM service supports).
SUPPORTED_VRS: Final = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "PN", "SH", "SL",
                                  "SS", "TM", "UI", "UL", "US"})
#: At most this many extended query tags (the Azure DICOM service's limit).
MAX_TAGS: Final = 128
#: Tag states (``status``) and whether QIDO may use them (``queryStatus``), as the Azure DICOM service names them.
ADDING, READY, DELETING = "Adding", "Ready", "Deleting"
ENABLED, DISABLED = "Enabled", "Disabled"
LEVEL_NAMES: Final = {Level.STUDY: "Study", Level.SERIES: "Series", Level.INSTANCE: "Instance"}
_LEVELS: Final = {name.lower(): level for level, name in LEVEL_NAMES.items()}
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")
_CREATOR = re.compile(r"[^\\\x00-\x1f]{1,64}")


@dataclass(frozen=True, slots=True)
class ExtendedTag:
    """One extended query tag as the tags table holds it."""

    path: str  # 8 upper-case hex digits
    vr: str
    level: Level
    private_creator: str | None = None
    status: str = ADDING
    query_status: str = ENABLED
    #: The reindex operation that indexes existing instances for it.
    operation: str | None = None
    #: Its generation (creation time in ms): values are kept under ``<path>.<gen>``, so a tag deleted and
    #: added again is indexed afresh.
    gen: int = 0
    #: Whether indexing found values that fail the tag's VR (they are listed under ``.../errors``).
    has_errors: bool = False

    @property
    def key(self) -> str:
        return f"{self.path}.{self.gen}"

    @property
    def private(self) -> bool:
        return is_private(self.path)

    @property
    def keyword(self) -> str:
        """The name QIDO-RS accepts besides the path: the standard keyword, or the path of a private tag."""
        return (keyword_for_tag(int(self.path, 16)) or self.path) if not self.private else self.path

    @property
    def queryable(self) -> bool:
        return self.status == READY and self.query_status == ENABLED

    def attribute(self) -> Attribute:
        """The tag as a QIDO-RS attribute (matched on, returned when asked for; never by default)."""
        return Attribute(self.keyword, self.path, self.vr, self.level, matchable=True, default=False, key=self.key)

    def to_json(self, base_url: str, *, error_count: int | None = None) -> dict[str, Any]:
        """The Azure DICOM service's ``Extended Query Tag`` object (``base_url``: the DICOMweb root)."""
        out: dict[str, Any] = {"path": self.path, "vr": self.vr, "level": LEVEL_NAMES[self.level],
                               "status": self.status, "queryStatus": self.query_status}
        if self.private_creator:
            out["privateCreator"] = self.private_creator
        if error_count:
            out["errors"] = {"count": error_count, "href": f"{base_url}/extendedquerytags/{self.path}/errors"}
        if self.operation and self.status != READY:
            out["operation"] = {"id": self.operation, "href": f"{base_url}/operations/{self.operation}"}
        return out

    def to_entity(self, pk: str, rk: str) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk, "vr": self.vr, "level": str(self.level),
                                  "status": self.status, "query_status": self.query_status, "gen": self.gen,
                                  "has_errors": self.has_errors}
        if self.private_creator:
            entity["private_creator"] = self.private_creator
        if self.operation:
            entity["operation"] = self.operation
        return entity

    @classmethod
    def from_entity(cls, e: dict[str, Any]) -> ExtendedTag:
        return cls(path=str(e["RowKey"]), vr=str(e["vr"]), level=Level(str(e["level"])),
                   private_creator=e.get("private_creator") or None, status=str(e.get("status", ADDING)),
                   query_status=str(e.get("query_status", ENABLED)), operation=e.get("operation") or None,
                   gen=int(e.get("gen", 0)), has_errors=bool(e.get("has_errors", False)))


def is_private(path: str) -> bool:
    return int(path[:4], 16) % 2 == 1


def resolve_path(raw: object, where: str = "path") -> str:
    """A tag path (8 hex digits) or standard keyword as 8 upper-case hex digits; 400 otherwise."""
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest(f"{where} is required: 8 hex digits such as 00180050, or a keyword such as SliceThickness.")
    text = raw.strip()
    if "." in text:
        raise BadRequest(f"{where} {text[:40]!r} names a tag inside a sequence; only top-level tags can be "
                         "extended query tags.")
    if _HEX8.fullmatch(text):
        return text.upper()
    tag = tag_for_keyword(text) if text.isidentifier() else None
    if tag is None:
        raise BadRequest(f"{where} {text[:40]!r} is neither 8 hex digits (as in 00180050) nor a DICOM keyword "
                         "(as in SliceThickness).")
    return f"{tag:08X}"


def parse_add(body: bytes, existing: list[ExtendedTag]) -> list[ExtendedTag]:
    """The tags an add request asks for (status Adding), checked; raises BadRequest or Conflict."""
    try:
        doc = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        raise BadRequest("The body must be a JSON array of extended query tags, e.g. "
                         '[{"path": "00180050", "vr": "DS", "level": "Series"}].') from None
    if not isinstance(doc, list) or not doc:
        raise BadRequest("The body must be a non-empty JSON array of extended query tags, e.g. "
                         '[{"path": "00180050", "vr": "DS", "level": "Series"}].')
    known = {t.path for t in existing}
    out: list[ExtendedTag] = []
    for n, entry in enumerate(doc):
        where = f"Entry {n + 1}"
        if not isinstance(entry, dict):
            raise BadRequest(f"{where} must be an object with path, vr, level (and privateCreator for a private tag).")
        fields = {str(k).lower(): v for k, v in entry.items()}
        unknown = sorted(set(fields) - {"path", "vr", "level", "privatecreator"})
        if unknown:
            raise BadRequest(f"{where}: unknown field {unknown[0]!r}; expected path, vr, level, privateCreator.")
        path = resolve_path(fields.get("path"), f"{where}: path")
        level = _level(fields.get("level"), where)
        vr = _vr(path, fields.get("vr"), where)
        creator = _creator(path, fields.get("privatecreator"), where)
        if path in BY_TAG:
            raise Conflict(f"{where}: {path} ({BY_TAG[path].keyword}) is matched by QIDO-RS already; it needs no "
                           "extended query tag.")
        if path in known:
            raise Conflict(f"{where}: {path} is an extended query tag already; delete it first to change it.")
        if any(t.path == path for t in out):
            raise BadRequest(f"{where}: {path} is given twice in this request.")
        out.append(ExtendedTag(path=path, vr=vr, level=level, private_creator=creator))
    if len(existing) + len(out) > MAX_TAGS:
        raise BadRequest(f"At most {MAX_TAGS} extended query tags: {len(existing)} exist and {len(out)} more were "
                         "asked for. Delete some first.")
    return out


def _level(raw: object, where: str) -> Level:
    level = _LEVELS.get(str(raw).strip().lower()) if isinstance(raw, str) else None
    if level is None:
        raise BadRequest(f"{where}: level must be Study, Series or Instance.")
    return level


def _vr(path: str, raw: object, where: str) -> str:
    given = raw.strip().upper() if isinstance(raw, str) and raw.strip() else None
    if raw is not None and given is None:
        raise BadRequest(f"{where}: vr must be a two-letter value representation such as DS.")
    if is_private(path):
        if given is None:
            raise BadRequest(f"{where}: private tag {path} needs a vr (one of {', '.join(sorted(SUPPORTED_VRS))}).")
        vr = given
    else:
        tag = int(path, 16)
        if not dictionary_has_tag(tag):
            raise BadRequest(f"{where}: {path} is not in the DICOM dictionary (and its group is even, so it is not "
                             "private).")
        known = dictionary_VR(tag)
        if given is not None and given != known:
            raise BadRequest(f"{where}: {path} ({keyword_for_tag(tag)}) has VR {known} in the DICOM standard, not "
                             f"{given}; leave vr out or give {known}.")
        vr = known
    if vr not in SUPPORTED_VRS:
        raise BadRequest(f"{where}: VR {vr} of {path} cannot be an extended query tag; supported: "
                         f"{', '.join(sorted(SUPPORTED_VRS))}.")
    return vr


def _creator(path: str, raw: object, where: str) -> str | None:
    if not is_private(path):
        if raw not in (None, ""):
            raise BadRequest(f"{where}: privateCreator is only for private tags (odd group); {path} is standard.")
        return None
    element = int(path[4:], 16)
    if element < 0x1000:
        raise BadRequest(f"{where}: {path} is a private creator or group length element; give a private data "
                         "element (element 1000-FFFF, as in 04011001).")
    if not isinstance(raw, str) or not _CREATOR.fullmatch(raw.strip()):
        raise BadRequest(f"{where}: private tag {path} needs its privateCreator (1-64 characters, the value of its "
                         "block's creator element).")
    return raw.strip()


def creator_tag(path: str) -> str:
    """The private creator element that reserves ``path``'s block: group, ``00``, the block byte."""
    return f"{path[:4]}00{path[4:6]}"
