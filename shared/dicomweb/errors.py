"""DICOMweb failures as HTTP answers: a status code and a sentence that says what to do.

``functions/dicomweb.py`` turns :class:`HttpProblem` into a response with that status;
messages name the parameter or path segment at fault and never carry patient data
(a rejected PatientID value is not echoed back, only the parameter name).
"""

from __future__ import annotations


class HttpProblem(Exception):
    status = 400

    def __init__(self, message: str, *, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(HttpProblem):
    status = 400


class NotFoundProblem(HttpProblem):
    status = 404


class Conflict(HttpProblem):
    status = 409


class NotAcceptable(HttpProblem):
    status = 406


class PayloadTooLarge(HttpProblem):
    status = 413


class UnsupportedMediaType(HttpProblem):
    status = 415
