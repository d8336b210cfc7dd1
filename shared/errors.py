"""The error vocabulary: every reason code, and the two exceptions that carry outcomes.

* :class:`BadInput` — the input itself is wrong (a file, an event, a config document);
  retrying cannot help. It always carries a :class:`Reason`. Each trigger turns it into
  an outcome in exactly one place (its service boundary: ``IngestService.ingest`` →
  quarantine, ``inference.service.handle_event`` / ``routing.service.handle_event`` →
  a logged, dropped event, the STOW-RS part loop → a failure status).
* :class:`Transient` — a dependency failed in a way a retry may fix. It, and every storage
  or network error, propagates so the trigger retries.

Reason codes are stable strings: they appear in blob metadata, the status API, events,
STOW-RS failures and the README. Messages name what was expected and what to do next, and
never carry patient data.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why an input was refused (or tolerated with a defect). The one list of reason codes."""

    # -- files (ingest, STOW-RS, the DIMSE gateway) ------------------------------------------
    EMPTY = "empty-file"
    NOT_DICOM = "not-dicom"
    TRUNCATED = "truncated-header"
    #: Tolerated defect (kept as a warning on the index row): the pixel data is shorter than declared.
    TRUNCATED_PIXEL_DATA = "truncated-pixel-data"
    UNDECODABLE = "undecodable-header"
    #: The header needs more than one parse may spend (bytes, elements and items, inflation, nesting).
    HEADER_TOO_LARGE = "header-too-large"
    UNSUPPORTED = "unsupported-object"
    MISSING_STUDY_UID = "missing-study-uid"
    MISSING_SERIES_UID = "missing-series-uid"
    MISSING_SOP_UID = "missing-sop-instance-uid"
    MISSING_SOP_CLASS = "missing-sop-class-uid"
    INVALID_UID = "invalid-uid"
    UID_CONFLICT = "uid-conflict"
    STUDY_MISMATCH = "study-mismatch"
    #: The frames of an archived instance cannot be located (WADO-RS frames of that instance fail).
    NO_FRAMES = "frame-index"
    # -- inference ----------------------------------------------------------------------------
    INFERENCE_BAD_EVENT = "inference-bad-event"
    INFERENCE_TOO_LARGE = "inference-too-large"
    INFERENCE_NO_PIXELS = "inference-no-pixels"
    INFERENCE_NO_GEOMETRY = "inference-no-geometry"
    INFERENCE_INCONSISTENT = "inference-inconsistent-series"
    INFERENCE_BAD_REGISTRY = "inference-bad-registry"
    INFERENCE_BAD_MODEL = "inference-bad-model"
    DERIVED_INPUT = "derived-input"
    NO_MODEL_ACCEPTS = "no-model-accepts"
    NO_FINDING = "no-finding"
    # -- routing ------------------------------------------------------------------------------
    ROUTING_BAD_EVENT = "routing-bad-event"
    ROUTING_BAD_RULES = "routing-bad-rules"
    EXPORT_BURNED_IN = "export-burned-in-annotation"
    # -- configuration documents ----------------------------------------------------------------
    BAD_CONFIG = "bad-config"


#: A human sentence per reason: what was expected and what to do next.
ADVICE: dict[Reason, str] = {
    Reason.EMPTY: "The file is empty (0 bytes). Upload the file again.",
    Reason.NOT_DICOM: "The file is not DICOM (no DICM prefix and no readable data set). "
                      "Upload DICOM Part 10 files only.",
    Reason.TRUNCATED: "The DICOM header ends before it is complete; the file was probably cut short. "
                      "Upload the complete file again.",
    Reason.TRUNCATED_PIXEL_DATA: "The pixel data is shorter than its declared length; the file was probably cut "
                                 "short. It was archived as received; upload the complete file to replace it.",
    Reason.UNDECODABLE: "The DICOM header could not be decoded. Check the file with dciodvfy or dcmdump.",
    Reason.HEADER_TOO_LARGE: "The DICOM header is larger than one parse may read here (see Limits in the README; the "
                             "message names the limit). If the file is genuine, an operator can raise that "
                             "DICOMFLOW_HEADER_* setting.",
    Reason.UNSUPPORTED: "The object is not a storable instance (for example a DICOMDIR). "
                        "Upload the instances it refers to instead.",
    Reason.MISSING_STUDY_UID: "Study Instance UID (0020,000D) is missing or empty. It is required to index the file.",
    Reason.MISSING_SERIES_UID: "Series Instance UID (0020,000E) is missing or empty. It is required to index the file.",
    Reason.MISSING_SOP_UID: "SOP Instance UID (0008,0018) is missing or empty. It is required to index the file.",
    Reason.MISSING_SOP_CLASS: "SOP Class UID (0008,0016) is missing or empty. It is required to index the file.",
    Reason.INVALID_UID: "A UID is not valid (only digits and dots, at most 64 characters, no empty components). "
                        "Fix the sending system's UID generation.",
    Reason.UID_CONFLICT: "The same UID is used at two levels (study, series, instance). "
                         "Fix the sending system's UID generation.",
    Reason.STUDY_MISMATCH: "The instance's Study Instance UID differs from the study in the request URL.",
    Reason.NO_FRAMES: "The frames of this instance cannot be located; retrieve the whole instance instead.",
    Reason.INFERENCE_BAD_EVENT: "The event lacks the study/series UIDs inference needs.",
    Reason.INFERENCE_TOO_LARGE: "The series is larger than inference takes in one run.",
    Reason.INFERENCE_NO_PIXELS: "The series has no instances with pixel data to analyse.",
    Reason.INFERENCE_NO_GEOMETRY: "The images lack the geometry (spacing, orientation, position) measurements need.",
    Reason.INFERENCE_INCONSISTENT: "The series mixes images the model cannot read as one volume.",
    Reason.INFERENCE_BAD_REGISTRY: "The model registry document is invalid; fix it with 'python -m tools config'.",
    Reason.INFERENCE_BAD_MODEL: "A model file could not be loaded or does not have the expected inputs.",
    Reason.DERIVED_INPUT: "The series holds derived results (SEG, SR, ...); models never run on them.",
    Reason.NO_MODEL_ACCEPTS: "No enabled model accepts this series.",
    Reason.NO_FINDING: "The models ran and found nothing to report.",
    Reason.ROUTING_BAD_EVENT: "The event lacks the UIDs routing needs.",
    Reason.ROUTING_BAD_RULES: "The routing rules document is invalid; the last good rules stay in force. "
                              "Fix it with 'python -m tools config'.",
    Reason.EXPORT_BURNED_IN: "Burned In Annotation is YES: pixel data would need redaction; not exported.",
    Reason.BAD_CONFIG: "A configuration document is invalid; 'python -m tools config validate' says where.",
}


class DicomflowError(Exception):
    """Base class for errors raised by dicomflow's domain library."""


class BadInput(DicomflowError):
    """The input itself is wrong; retrying will not help.

    ``reason`` is a :class:`Reason` (a plain string is coerced, and must be one of its
    values); ``message`` a human sentence that says what was expected (the reason's
    :data:`ADVICE` when omitted). Neither may contain patient data.
    """

    def __init__(self, reason: Reason | str, message: str | None = None) -> None:
        self.reason = Reason(reason)
        self.message = message or ADVICE[self.reason]
        super().__init__(self.message)


class Transient(DicomflowError):
    """A dependency failed in a way a retry may fix (throttling, timeouts, a lost race)."""
