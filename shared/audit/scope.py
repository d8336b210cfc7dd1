"""What one HTTP request touched, noted by the services as they work and read by the audit record at its end.

``functions/access.py`` opens a scope per request (:func:`begin`); the DICOMweb services call :func:`note`
and :func:`note_views` with values they have validated (path UIDs after ``check_path_uid``, stored instances'
UIDs, search results). Outside a request (the gateway, tests of the services) there is no scope and these are
no-ops. The scope is a context variable: ``asyncio.to_thread`` carries it to the worker thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from typing import Any

from shared.audit.record import Subjects

_current: ContextVar[tuple[Subjects, str] | None] = ContextVar("dicomflow_audit_scope", default=None)


def begin(salt: str = "") -> tuple[Subjects, Token[tuple[Subjects, str] | None]]:
    """A new scope for this request: its subjects, and the token that ends it (:func:`end`)."""
    subjects = Subjects()
    return subjects, _current.set((subjects, salt))


def end(token: Token[tuple[Subjects, str] | None]) -> None:
    _current.reset(token)


def current() -> Subjects | None:
    got = _current.get()
    return got[0] if got else None


def note(study: str | None, series: str | None = None, sop: str | None = None, *, sop_class: str | None = None,
         patient_id: str | None = None) -> None:
    got = _current.get()
    if got is None:
        return
    subjects, salt = got
    subjects.add(study, series, sop, sop_class)
    if patient_id:
        subjects.add_patient(patient_id, salt)


def note_views(views: Iterable[Mapping[str, Any]]) -> None:
    got = _current.get()
    if got is not None:
        got[0].add_views(views, got[1])


def note_query(keys: Iterable[str], sop_class: str | None = None) -> None:
    """A search's matching keys, by name (their values may be patient data: never recorded)."""
    got = _current.get()
    if got is not None:
        got[0].query_keys = sorted(set(keys))
        got[0].query_class = sop_class


def note_resource(uri: str) -> None:
    got = _current.get()
    if got is not None:
        got[0].resources.append(uri)
