"""De-identification for exports: the PS3.15 Basic Application Level Confidentiality Profile.

Library choice (compared for this job):

* ``dicognito`` (chosen): maintained, pure Python on pydicom 3, no heavy
  dependencies. It walks every element including sequences and replaces
  person names, IDs, UIDs, dates/times, addresses and equipment identifiers
  with *consistent* pseudonyms (a seed makes the mapping repeatable, so the
  instances of a study keep one new Study UID and relationships survive), and
  it sets PatientIdentityRemoved and DeidentificationMethod.
* ``deid`` (pydicom/deid): recipe-driven and flexible, but its default recipe
  removes Type 1/2 attributes outright (``REMOVE endswith:ID``), which makes
  objects non-conformant, and it pulls matplotlib into a Functions worker.
* pydicom / highdicom: pydicom offers the tools (``walk``,
  ``remove_private_tags``) but no profile; highdicom has none either.

dicognito replaces rather than removes, and does not touch private tags or free
text, so this module completes the profile: private tags are removed (profile
action X), free-text attributes the profile removes are removed, objects with
burned-in annotation are refused, and the coded method (DCM 113100 Basic
Application Confidentiality Profile, 113107 Retain Longitudinal Temporal
Information Modified Dates Option: dicognito shifts dates consistently) is
recorded in DeidentificationMethodCodeSequence.
"""

from __future__ import annotations

import hashlib
from importlib.metadata import version

from dicognito.anonymizer import Anonymizer
from pydicom.dataset import Dataset

from shared.errors import BadInput, Reason

#: Free text and other attributes the Basic Profile removes (action X) that dicognito leaves.
REMOVE = (
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "Allergies",
    "CurrentPatientLocation",
    "DerivationDescription",
    "EthnicGroup",
    "ImageComments",
    "MedicalAlerts",
    "Occupation",
    "PatientAge",
    "PatientComments",
    "PatientSize",
    "PatientWeight",
    "PerformedProcedureStepDescription",
    "ProtocolName",
    "ReasonForStudy",
    "RequestAttributesSequence",
    "RequestedProcedureDescription",
    "SeriesDescription",
    "StudyDescription",
    "InstitutionalDepartmentName",
    "OtherPatientIDsSequence",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "TextComments",
    "TextString",
)
METHOD_CODES = (
    ("113100", "DCM", "Basic Application Confidentiality Profile"),
    ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"),
)


def anonymizer_for(study_uid: str, secret: str) -> Anonymizer:
    """One anonymizer per (study, secret): every instance of a study maps the same way.

    The seed is a hash of a secret (the rule's ``seed``) and the study UID: without
    the secret, the mapping cannot be replayed to test guesses of the originals.
    """
    seed = hashlib.sha256(f"{secret}|{study_uid}".encode()).hexdigest()
    return Anonymizer(seed=seed)


def _remove_everywhere(ds: Dataset, keywords: tuple[str, ...]) -> None:
    for keyword in keywords:
        if keyword in ds:
            delattr(ds, keyword)
    for element in list(ds):
        if element.VR == "SQ":
            for item in element.value:
                _remove_everywhere(item, keywords)


def deidentify(ds: Dataset, anonymizer: Anonymizer) -> Dataset:
    """De-identify ``ds`` in place (and return it). Raises :class:`BadInput` for burned-in text."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise BadInput(Reason.EXPORT_BURNED_IN,
            "Burned In Annotation is YES: pixel data would need redaction; not exported.")
    ds.remove_private_tags()
    _remove_everywhere(ds, REMOVE)
    anonymizer.anonymize(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"dicomflow: dicognito {version('dicognito')}; PS3.15 Basic Profile"
    codes = []
    for value, scheme, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    return ds
