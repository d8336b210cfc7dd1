"""The change dataset of a bulk update: which attributes may change, and checking a request's values.

The updatable attributes are the Azure DICOM service's: the Patient Identification and Patient
Demographic modules and three of the General Study module, none of them sequences
(:data:`UPDATABLE`). A change dataset is DICOM JSON (PS3.18 F.2) keyed by tag. It is refused as a
whole, with every problem named, when it names a UID, an attribute outside the list, a VR other than
the attribute's, or a value that is empty (an update never removes a value) or not valid for its VR.
Messages name attributes, never the values (they may be patient data).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom import config
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.valuerep import validate_value

#: Tag -> keyword of every attribute a bulk update may change.
UPDATABLE: Final[dict[int, str]] = {
    # Patient Identification
    0x00100010: "PatientName", 0x00100020: "PatientID", 0x00100021: "IssuerOfPatientID",
    0x00100022: "TypeOfPatientID", 0x00101000: "OtherPatientIDs", 0x00101001: "OtherPatientNames",
    0x00101005: "PatientBirthName", 0x00101060: "PatientMotherBirthName", 0x00101090: "MedicalRecordLocator",
    # Patient Demographic
    0x00101010: "PatientAge", 0x00102180: "Occupation",
    0x00403001: "ConfidentialityConstraintOnPatientDataDescription", 0x00100030: "PatientBirthDate",
    0x00100032: "PatientBirthTime", 0x00100040: "PatientSex", 0x00100200: "QualityControlSubject",
    0x00101020: "PatientSize", 0x00101030: "PatientWeight", 0x00101040: "PatientAddress",
    0x00101080: "MilitaryRank", 0x00101081: "BranchOfService", 0x00102150: "CountryOfResidence",
    0x00102152: "RegionOfResidence", 0x00102154: "PatientTelephoneNumbers", 0x00102160: "EthnicGroup",
    0x001021F0: "PatientReligiousPreference", 0x00104000: "PatientComments", 0x00102297: "ResponsiblePerson",
    0x00102298: "ResponsiblePersonRole", 0x00102299: "ResponsibleOrganization",
    0x00102201: "PatientSpeciesDescription", 0x00102292: "PatientBreedDescription",
    0x00102295: "BreedRegistrationNumber",
    # General Study
    0x00080090: "ReferringPhysicianName", 0x00080050: "AccessionNumber", 0x00081030: "StudyDescription",
}

_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class ChangeRefused(ValueError):
    """The change dataset cannot be applied; ``problems`` lists each attribute at fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The change dataset was refused: " + "; ".join(problems)
                         + ". Bulk update changes only these attributes (by tag): "
                         + ", ".join(f"{kw} ({t:08X})" for t, kw in list(UPDATABLE.items())[:6])
                         + " ... (the full list is in the README).")


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """A checked change dataset: the elements to set (a pydicom data set, values decoded) and the same
    as DICOM JSON (what the operation record keeps)."""

    dataset: Dataset
    json: dict[str, Any]

    @property
    def keywords(self) -> list[str]:
        return [UPDATABLE[int(e.tag)] for e in self.dataset]


def _name(tag: int) -> str:
    return f"{keyword_for_tag(tag) or 'private or unknown attribute'} ({tag:08X})"


def parse_changes(doc: Any) -> ChangeSet:
    """Check ``doc`` (the request's ``changeDataset``) and return it parsed; :class:`ChangeRefused` naming
    every attribute at fault otherwise."""
    if not isinstance(doc, Mapping) or not doc:
        raise ChangeRefused(["changeDataset must be a non-empty DICOM JSON object keyed by tag, e.g. "
                             '{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}}'])
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for key, element in doc.items():
        if not isinstance(key, str) or not _TAG.fullmatch(key):
            problems.append(f"{str(key)[:40]!r} is not a tag (8 hexadecimal digits such as 00100010)")
            continue
        tag = int(key, 16)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = ""
        if vr == "UI":
            problems.append(f"{_name(tag)} is a UID: UIDs cannot be changed by a bulk update")
            continue
        if tag not in UPDATABLE:
            problems.append(f"{_name(tag)} is not an updatable attribute")
            continue
        if not isinstance(element, Mapping):
            problems.append(f"{_name(tag)} must be a DICOM JSON element with vr and Value")
            continue
        if element.get("vr") != vr:
            problems.append(f"{_name(tag)} has VR {vr}, not {str(element.get('vr'))[:8]!r}")
            continue
        values = element.get("Value")
        if not isinstance(values, list) or not values or any(v in (None, "", {}) for v in values):
            problems.append(f"{_name(tag)} needs a Value (an update never sets a value to empty)")
            continue
        if not all(_valid(vr, v) for v in values):
            problems.append(f"a value of {_name(tag)} is not a valid {vr}")
            continue
        clean[f"{tag:08X}"] = {"vr": vr, "Value": values}
    if problems:
        raise ChangeRefused(problems)
    try:  # values are valid by now, so pydicom has nothing to warn about (its warnings log the value)
        ds = Dataset.from_json(clean)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ChangeRefused(["the change dataset is not valid DICOM JSON (PS3.18 F.2)"]) from None
    return ChangeSet(ds, clean)


def _valid(vr: str, value: Any) -> bool:
    """One JSON value checked against its VR (pydicom's rules, in its raising mode: nothing is logged)."""
    if vr == "PN":
        if not isinstance(value, Mapping) or not set(value) <= {"Alphabetic", "Ideographic", "Phonetic"}:
            return False
        value = "=".join(str(value.get(k, "")) for k in ("Alphabetic", "Ideographic", "Phonetic")).rstrip("=")
    elif vr in ("DS", "IS") and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    elif vr in ("US", "UL", "SS", "SL", "FL", "FD"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    elif not isinstance(value, str):
        return False
    try:
        validate_value(vr, value, config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def from_json(clean: Mapping[str, Any]) -> ChangeSet:
    """A change set as stored on an operation record (checked when it was submitted)."""
    return ChangeSet(Dataset.from_json(dict(clean)), dict(clean))
