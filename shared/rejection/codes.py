"""The rejection codes of IHE IOCM (the ``(code, DCM)`` titles of a rejection note): the one list.

A Key Object Selection document whose Concept Name is one of these is a rejection note; the
instances it names are withdrawn from every query and retrieve (:mod:`shared.rejection.service`).
How long a withdrawn file is kept depends on its code (``DICOMFLOW_REJECTION_RETENTION_DAYS``,
:class:`shared.config.Settings`); "data retention policy expired" is removed at once.
"""

from __future__ import annotations

import enum
from typing import Final


class RejectionCode(enum.StrEnum):
    QUALITY = "113001"
    PATIENT_SAFETY = "113037"
    WRONG_WORKLIST_ENTRY = "113038"
    RETENTION_EXPIRED = "113039"


#: The code meanings (PS3.16 CID 7011), as the notes carry them.
MEANING: Final[dict[RejectionCode, str]] = {
    RejectionCode.QUALITY: "Rejected for Quality Reasons",
    RejectionCode.PATIENT_SAFETY: "Rejected for Patient Safety Reasons",
    RejectionCode.WRONG_WORKLIST_ENTRY: "Incorrect Modality Worklist Entry",
    RejectionCode.RETENTION_EXPIRED: "Data Retention Policy Expired",
}

#: The coding scheme of every rejection code.
SCHEME: Final = "DCM"

#: Days a withdrawn file is kept by default, per code. 113039 is always 0: the note itself says the
#: retention period is over, so the files go at once (the setting cannot keep them).
DEFAULT_RETENTION_DAYS: Final[dict[RejectionCode, float]] = {
    RejectionCode.QUALITY: 30.0,
    RejectionCode.PATIENT_SAFETY: 30.0,
    RejectionCode.WRONG_WORKLIST_ENTRY: 30.0,
    RejectionCode.RETENTION_EXPIRED: 0.0,
}
