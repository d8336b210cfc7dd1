"""The error hierarchy: bad input is quarantined, transient failures are retried.

Exactly one place (the service boundary, :func:`shared.ingest.service.ingest_blob`
and its siblings) turns :class:`BadInput` into a quarantine record; everything
else that can fail transiently simply propagates so the trigger retries it.
"""

from __future__ import annotations


class DicomflowError(Exception):
    """Base class for errors raised by dicomflow's domain library."""


class BadInput(DicomflowError):
    """The input itself is wrong; retrying will not help.

    ``reason`` is a stable, machine-readable code (see
    :class:`shared.dicom.validate.Reason`); the message is a human sentence that
    says what was expected. Neither may contain patient data.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Transient(DicomflowError):
    """A dependency failed in a way a retry may fix (throttling, timeouts)."""


class NotFound(DicomflowError):
    """A requested study, series, instance or blob does not exist."""
