"""Index rows as dataclasses (plain Python types), and entity <-> dataclass mapping.

Levels nest: a series row carries its study's attributes, an instance row carries
both, so a relational query at any level matches on one row (PS3.4 C.4.1.2.3).
Field names are the snake_case of DICOM keywords (``PatientName`` → ``patient_name``),
which is how ``shared.dicomweb.attributes`` finds them. Person names are the
decoded Unicode DICOM string (``Family^Given=Ideographic=Phonetic``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from azure.data.tables import EdmType, EntityProperty
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from shared.dicom.facts import is_derived
from shared.index import keys

T = TypeVar("T", bound="StudyRecord")
_LIST_SEP = "\\"


@dataclass(slots=True)
class StudyRecord:
    study_instance_uid: str
    study_date: str | None = None
    study_time: str | None = None
    accession_number: str | None = None
    referring_physician_name: str | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    # Aggregates (settled): exact, recomputed from the study's instance partition.
    modalities_in_study: list[str] = field(default_factory=list)
    sop_classes_in_study: list[str] = field(default_factory=list)
    number_of_study_related_series: int | None = None
    number_of_study_related_instances: int | None = None
    updated_at: str | None = None


@dataclass(slots=True)
class SeriesRecord(StudyRecord):
    series_instance_uid: str = ""
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    series_date: str | None = None
    series_time: str | None = None
    body_part_examined: str | None = None
    station_name: str | None = None
    institution_name: str | None = None
    manufacturer: str | None = None
    performed_procedure_step_start_date: str | None = None
    performed_procedure_step_start_time: str | None = None
    number_of_series_related_instances: int | None = None
    derived: bool = False
    stable_at: str | None = None


@dataclass(slots=True)
class InstanceRecord(SeriesRecord):
    sop_instance_uid: str = ""
    sop_class_uid: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    number_of_frames: int | None = None
    content_date: str | None = None
    content_time: str | None = None
    image_type: list[str] = field(default_factory=list)
    specific_character_set: str | None = None
    transfer_syntax_uid: str = ""
    # Operational (not DICOM attributes).
    size_bytes: int = 0
    digest: str = ""
    source: str = ""
    pixel_data_offset: int | None = None
    pixel_data_length: int | None = None
    warnings: list[str] = field(default_factory=list)
    ingested_at: str | None = None


STUDY_FIELDS = tuple(f.name for f in fields(StudyRecord))
SERIES_FIELDS = tuple(f.name for f in fields(SeriesRecord))
INSTANCE_FIELDS = tuple(f.name for f in fields(InstanceRecord))
_STUDY_OWN = STUDY_FIELDS
_SERIES_OWN = tuple(n for n in SERIES_FIELDS if n not in STUDY_FIELDS)
_LIST_FIELDS = {"modalities_in_study", "sop_classes_in_study", "image_type", "warnings"}

# DICOM keyword for each attribute field read from a header (snake_case → CamelCase).
_KEYWORD = {
    "study_instance_uid": "StudyInstanceUID", "study_date": "StudyDate", "study_time": "StudyTime",
    "accession_number": "AccessionNumber", "referring_physician_name": "ReferringPhysicianName",
    "patient_name": "PatientName", "patient_id": "PatientID", "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex", "study_id": "StudyID", "study_description": "StudyDescription",
    "series_instance_uid": "SeriesInstanceUID", "modality": "Modality", "series_number": "SeriesNumber",
    "series_description": "SeriesDescription", "series_date": "SeriesDate", "series_time": "SeriesTime",
    "body_part_examined": "BodyPartExamined", "station_name": "StationName", "institution_name": "InstitutionName",
    "manufacturer": "Manufacturer", "performed_procedure_step_start_date": "PerformedProcedureStepStartDate",
    "performed_procedure_step_start_time": "PerformedProcedureStepStartTime",
    "sop_instance_uid": "SOPInstanceUID", "sop_class_uid": "SOPClassUID", "instance_number": "InstanceNumber",
    "rows": "Rows", "columns": "Columns", "bits_allocated": "BitsAllocated", "number_of_frames": "NumberOfFrames",
    "content_date": "ContentDate", "content_time": "ContentTime", "image_type": "ImageType",
    "specific_character_set": "SpecificCharacterSet",
}
_INT_FIELDS = {"series_number", "instance_number", "rows", "columns", "bits_allocated", "number_of_frames"}

def _plain(value: Any) -> Any:
    """pydicom values → plain types azure-data-tables can serialise."""
    if value is None:
        return None
    if isinstance(value, PersonName):
        return str(value).strip() or None
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, bytes):
        return None
    text = str(value).strip("\0 ")
    return text or None


def from_header(ds: Dataset, **operational: Any) -> InstanceRecord:
    """Build an instance row from a parsed header (only the tags the index needs)."""
    values: dict[str, Any] = {}
    for name, keyword in _KEYWORD.items():
        try:
            raw = ds.get(keyword)
        except Exception:  # noqa: BLE001 - tolerant reading: an undecodable value is left out
            continue
        value = _plain(raw)
        if value is None:
            continue
        if name in _INT_FIELDS:
            try:
                value = int(float(value[0] if isinstance(value, list) else value))
            except (TypeError, ValueError):
                continue
        elif name in _LIST_FIELDS:
            value = value if isinstance(value, list) else [value]
        elif isinstance(value, list):
            value = _LIST_SEP.join(value)
        values[name] = value
    rec = InstanceRecord(**{**values, **operational})
    rec.derived = rec.derived or is_derived(rec.sop_class_uid, rec.modality)
    return rec


# -- entity mapping -----------------------------------------------------------------

def to_entity(rec: StudyRecord, partition: str, row: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row}
    for f in fields(rec):
        value = getattr(rec, f.name)
        if value is None or value == [] or value == "":
            continue
        if f.name in _LIST_FIELDS:
            value = _LIST_SEP.join(value)
        elif isinstance(value, int) and not isinstance(value, bool) and not -(2**31) <= value < 2**31:
            # Instances over 2 GiB: sizes and offsets need Edm.Int64 (the SDK only infers Int32).
            value = EntityProperty(value, EdmType.INT64)
        entity[f.name] = value
    if rec.patient_name:
        entity["patient_name_tokens"] = " ".join(sorted(keys.name_tokens(rec.patient_name)))
    if extra:
        entity.update(extra)
    return entity


def from_entity(cls: type[T], entity: dict[str, Any]) -> T:
    known = {f.name for f in fields(cls)}
    values: dict[str, Any] = {}
    for name, value in entity.items():
        if name not in known:
            continue
        if name in _LIST_FIELDS:
            value = [v for v in str(value).split(_LIST_SEP) if v] if value else []
        elif isinstance(value, int | float | bool | str) or value is None:
            pass
        else:  # EntityProperty / typed wrappers
            value = getattr(value, "value", value)
        values[name] = value
    return cls(**values)


def study_part(rec: StudyRecord) -> dict[str, Any]:
    """The study-level fields of any record."""
    return {n: getattr(rec, n) for n in _STUDY_OWN}


def series_part(rec: SeriesRecord) -> dict[str, Any]:
    return {n: getattr(rec, n) for n in _SERIES_OWN}


def replace(rec: T, **changes: Any) -> T:
    return dataclasses.replace(rec, **changes)
