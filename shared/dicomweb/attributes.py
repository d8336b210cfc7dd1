"""The attributes QIDO-RS can match and return, per level (PS3.18 Table 10.6.1-5, 10.6.3-3..5).

One table, :data:`ATTRIBUTES`, names each attribute once: its keyword, tag, VR, the
query level it belongs to, whether it can be a matching key, and the snake_case field
name under which the index records (``shared.index.records``) carry it. Everything
else in :mod:`shared.dicomweb` looks attributes up here.

A query at one level may match on attributes of the levels above it (relational
query, PS3.4 C.4.1.2.3): ``/instances?PatientID=X`` is allowed.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Final


class Level(enum.StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


_RANK: Final = {Level.STUDY: 0, Level.SERIES: 1, Level.INSTANCE: 2}


def level_rank(level: Level) -> int:
    return _RANK[level]


@dataclass(frozen=True, slots=True)
class Attribute:
    keyword: str
    tag: str  # 8 upper-case hex digits, as in DICOM JSON
    vr: str
    level: Level
    matchable: bool = True
    default: bool = True  # returned without includefield
    #: An extended query tag (:mod:`shared.extended`): where records keep its values (the key in their
    #: ``extended`` field). Empty for the built-in attributes, which are record fields.
    key: str = ""

    @property
    def field(self) -> str:
        """The snake_case name of the record field (``PatientName`` -> ``patient_name``)."""
        return snake(self.keyword)


@functools.lru_cache(maxsize=1024)  # asked for every attribute of every QIDO result
def snake(keyword: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", keyword)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return s.lower()


S, SE, IN = Level.STUDY, Level.SERIES, Level.INSTANCE

ATTRIBUTES: Final[tuple[Attribute, ...]] = (
    # Study level (PS3.18 Table 10.6.3-3 plus the usual extras).
    Attribute("StudyDate", "00080020", "DA", S),
    Attribute("StudyTime", "00080030", "TM", S),
    Attribute("AccessionNumber", "00080050", "SH", S),
    Attribute("ModalitiesInStudy", "00080061", "CS", S),
    Attribute("ReferringPhysicianName", "00080090", "PN", S),
    Attribute("PatientName", "00100010", "PN", S),
    Attribute("PatientID", "00100020", "LO", S),
    Attribute("PatientBirthDate", "00100030", "DA", S),
    Attribute("PatientSex", "00100040", "CS", S),
    Attribute("StudyInstanceUID", "0020000D", "UI", S),
    Attribute("StudyID", "00200010", "SH", S),
    Attribute("StudyDescription", "00081030", "LO", S),
    Attribute("NumberOfStudyRelatedSeries", "00201206", "IS", S, matchable=False),
    Attribute("NumberOfStudyRelatedInstances", "00201208", "IS", S, matchable=False),
    # Series level (Table 10.6.3-4).
    Attribute("Modality", "00080060", "CS", SE),
    Attribute("SeriesInstanceUID", "0020000E", "UI", SE),
    Attribute("SeriesNumber", "00200011", "IS", SE),
    Attribute("SeriesDescription", "0008103E", "LO", SE),
    Attribute("SeriesDate", "00080021", "DA", SE, default=False),
    Attribute("SeriesTime", "00080031", "TM", SE, default=False),
    Attribute("BodyPartExamined", "00180015", "CS", SE),
    Attribute("StationName", "00081010", "SH", SE, default=False),
    Attribute("InstitutionName", "00080080", "LO", SE, default=False),
    Attribute("PerformedProcedureStepStartDate", "00400244", "DA", SE),
    Attribute("PerformedProcedureStepStartTime", "00400245", "TM", SE),
    Attribute("NumberOfSeriesRelatedInstances", "00201209", "IS", SE, matchable=False),
    # Instance level (Table 10.6.3-5).
    Attribute("SOPClassUID", "00080016", "UI", IN),
    Attribute("SOPInstanceUID", "00080018", "UI", IN),
    Attribute("InstanceNumber", "00200013", "IS", IN),
    Attribute("Rows", "00280010", "US", IN),
    Attribute("Columns", "00280011", "US", IN),
    Attribute("BitsAllocated", "00280100", "US", IN),
    Attribute("NumberOfFrames", "00280008", "IS", IN),
    Attribute("AvailableTransferSyntaxUID", "00083002", "UI", IN, matchable=False),
)

BY_KEYWORD: Final = {a.keyword: a for a in ATTRIBUTES}
BY_TAG: Final = {a.tag: a for a in ATTRIBUTES}

SPECIFIC_CHARACTER_SET: Final = ("00080005", "CS")
RETRIEVE_URL: Final = ("00081190", "UR")
UTF8_CHARSET: Final = "ISO_IR 192"

#: The UID attribute that identifies an entity of each level.
UID_KEYWORD: Final = {S: "StudyInstanceUID", SE: "SeriesInstanceUID", IN: "SOPInstanceUID"}


def resolve(name: str) -> Attribute | None:
    """An attribute by keyword (``PatientID``) or tag (``00100020``), or None if we do not hold it."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return BY_TAG.get(name.upper())
    return BY_KEYWORD.get(name)


def is_dicom_attribute(name: str) -> bool:
    """True for any keyword or tag in the DICOM dictionary (even ones this service does not store)."""
    from pydicom.datadict import dictionary_has_tag, tag_for_keyword

    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return bool(dictionary_has_tag(int(name, 16)))
    return tag_for_keyword(name) is not None


def visible_at(level: Level, extended: tuple[Attribute, ...] = ()) -> tuple[Attribute, ...]:
    """Attributes that a query at ``level`` may match or return (its own and those above it), with the
    extended query tags among ``extended`` that are."""
    return tuple(a for a in (*ATTRIBUTES, *extended) if level_rank(a.level) <= level_rank(level))


def defaults_at(level: Level) -> tuple[Attribute, ...]:
    """Attributes returned at ``level`` without ``includefield`` (PS3.18 Tables 10.6.3-3..5).

    A study query returns study attributes; a series query series attributes (plus the
    study UID that makes the result addressable); an instance query instance attributes
    plus the study and series UIDs.
    """
    out = [a for a in ATTRIBUTES if a.level is level and a.default]
    if level is SE:
        out.insert(0, BY_KEYWORD["StudyInstanceUID"])
    if level is IN:
        out[:0] = [BY_KEYWORD["StudyInstanceUID"], BY_KEYWORD["SeriesInstanceUID"]]
    return tuple(out)
