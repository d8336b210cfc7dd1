"""Recognising an IOCM rejection note and reading what it rejects (pure: no storage calls).

A rejection note is a Key Object Selection Document (SOP Class 1.2.840.10008.5.1.4.1.1.88.59) whose
Concept Name Code Sequence (0040,A043) holds one of the rejection codes (:mod:`shared.rejection.codes`)
with coding scheme ``DCM``. The instances it rejects are listed in its Current Requested Procedure
Evidence Sequence (0040,A375): per study, per series (0008,1115), per instance (0008,1199).
Ingest looks at every stored instance with :func:`rejection_note`; for anything that is not a KOS it
is one string comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from shared.dicom.header import Header
from shared.dicom.validate import is_valid_uid
from shared.rejection.codes import SCHEME, RejectionCode

log = logging.getLogger(__name__)

KEY_OBJECT_SELECTION: Final = "1.2.840.10008.5.1.4.1.1.88.59"
#: A note naming more instances than this is read up to here (the rest is reported as not processed).
MAX_REFERENCES: Final = 100_000


@dataclass(frozen=True, slots=True)
class Reference:
    study: str
    series: str
    sop: str
    sop_class: str = ""


@dataclass(frozen=True, slots=True)
class RejectionNote:
    """A rejection note: its code, its own UIDs, the instances it names, and references it could not
    read (``problems``: sentences without patient data)."""

    code: RejectionCode
    study: str
    series: str
    sop: str
    references: tuple[Reference, ...]
    problems: tuple[str, ...] = ()


def _items(ds: Any, keyword: str) -> list[Any]:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable sequence is reported as a problem by the caller
        return []
    return list(value) if value else []


def _text(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - an undecodable value counts as absent
        return ""
    return "" if value is None else str(value).strip("\0 ")


def code_of(header: Header) -> RejectionCode | None:
    """The rejection code of a Key Object Selection document, or None (not a KOS, or another title)."""
    if header.sop_class_uid != KEY_OBJECT_SELECTION:
        return None
    for item in _items(header.dataset, "ConceptNameCodeSequence")[:1]:
        value, scheme = _text(item, "CodeValue"), _text(item, "CodingSchemeDesignator")
        if scheme == SCHEME and value in {c.value for c in RejectionCode}:
            return RejectionCode(value)
    return None


def rejection_note(header: Header, study: str, series: str, sop: str) -> RejectionNote | None:
    """The rejection note ``header`` is (its own UIDs validated by ingest), or None."""
    code = code_of(header)
    if code is None:
        return None
    refs: list[Reference] = []
    problems: list[str] = []
    for n, ref in enumerate(_references(header.dataset, problems)):
        if n >= MAX_REFERENCES:
            problems.append(f"the note names more than {MAX_REFERENCES} instances; the rest were not processed")
            break
        refs.append(ref)
    if not refs and not problems:
        problems.append("the note's Current Requested Procedure Evidence Sequence (0040,A375) names no instance")
    return RejectionNote(code, study, series, sop, tuple(dict.fromkeys(refs)), tuple(problems))


def _references(ds: Any, problems: list[str]) -> Iterator[Reference]:
    for i, study_item in enumerate(_items(ds, "CurrentRequestedProcedureEvidenceSequence")):
        study = _text(study_item, "StudyInstanceUID")
        if not is_valid_uid(study):
            problems.append(f"evidence item {i + 1} has no valid Study Instance UID")
            continue
        for j, series_item in enumerate(_items(study_item, "ReferencedSeriesSequence")):
            series = _text(series_item, "SeriesInstanceUID")
            if not is_valid_uid(series):
                problems.append(f"evidence item {i + 1}, series item {j + 1} has no valid Series Instance UID")
                continue
            for k, sop_item in enumerate(_items(series_item, "ReferencedSOPSequence")):
                sop = _text(sop_item, "ReferencedSOPInstanceUID")
                if not is_valid_uid(sop):
                    problems.append(f"evidence item {i + 1}, series item {j + 1}, instance item {k + 1} has no "
                                    "valid Referenced SOP Instance UID")
                    continue
                yield Reference(study, series, sop, _text(sop_item, "ReferencedSOPClassUID"))


def build_note(code: RejectionCode, references: list[Reference], *, series: str, sop: str,
               patient: dict[str, str] | None = None, study_fields: dict[str, str] | None = None) -> Any:
    """A rejection note (a Key Object Selection Document, TID 2010) naming ``references``, all of one study:
    what a PACS or modality sends, and what ``python -m tools rejected note`` writes. Returns a pydicom
    ``FileDataset`` ready to save. ``patient``/``study_fields``: attributes copied onto it by keyword
    (the note belongs to the rejected instances' patient and study)."""
    import datetime as dt

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian

    from shared.rejection.codes import MEANING

    studies = {r.study for r in references}
    if len(studies) != 1:
        raise ValueError("A rejection note names instances of one study.")
    (study,) = studies
    now = dt.datetime.now(dt.UTC)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(KEY_OBJECT_SELECTION)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = KEY_OBJECT_SELECTION, sop
    type2 = dict.fromkeys(("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                           "ReferringPhysicianName", "StudyID", "AccessionNumber"), "")
    for keyword, value in {**type2, **(patient or {}), **(study_fields or {})}.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "KO", 1, 1
    ds.Manufacturer = "dicomflow"
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = str(code), SCHEME, MEANING[code]
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([title])
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([template])
    by_series: dict[str, list[Reference]] = {}
    for r in references:
        by_series.setdefault(r.series, []).append(r)
    evidence = Dataset()
    evidence.StudyInstanceUID = study
    evidence.ReferencedSeriesSequence = Sequence()
    content = []
    for se, refs in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = se
        item.ReferencedSOPSequence = Sequence()
        for r in refs:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = r.sop_class, r.sop
            item.ReferencedSOPSequence.append(ref)
            image = Dataset()
            image.RelationshipType, image.ValueType = "CONTAINS", "IMAGE"
            image.ReferencedSOPSequence = Sequence([ref])
            content.append(image)
        evidence.ReferencedSeriesSequence.append(item)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.ContentSequence = Sequence(content)
    return ds
