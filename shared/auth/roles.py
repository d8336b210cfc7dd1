"""The app roles and what each one grants; the single list of role names.

The ``roles`` claim of a token carries app-role *values* (Entra ID: the app registration's app
roles, assigned to users, groups or service principals). A value we do not know is ignored.

* ``reader``: QIDO-RS, WADO-RS, the change feed and the ingest status.
* ``writer``: STOW-RS (and the ingest status of what it stored), not reading studies back.
* ``admin``: DELETE and configuration; an admin is the data owner and may also read and write.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


#: What holding a role lets you do, as the set of roles it satisfies.
GRANTS: Final[dict[Role, frozenset[Role]]] = {
    Role.READER: frozenset({Role.READER}),
    Role.WRITER: frozenset({Role.WRITER}),
    Role.ADMIN: frozenset({Role.READER, Role.WRITER, Role.ADMIN}),
}

#: What a machine client with an accepted Functions key may do (never admin).
FUNCTION_KEY_ROLES: Final = frozenset({Role.READER, Role.WRITER})

#: DICOMweb: the role an HTTP method needs (GET/HEAD read, POST stores, DELETE removes).
DICOMWEB_ROLE_BY_METHOD: Final[dict[str, Role]] = {
    "GET": Role.READER, "HEAD": Role.READER, "POST": Role.WRITER, "DELETE": Role.ADMIN,
}


def from_claim(values: object) -> frozenset[Role]:
    """The roles a ``roles`` claim grants (a list of strings; anything else grants nothing)."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple):
        return frozenset()
    known = {r.value: r for r in Role}
    granted: set[Role] = set()
    for v in values:
        role = known.get(str(v).strip().lower())
        if role is not None:
            granted |= GRANTS[role]
    return frozenset(granted)


def for_dicomweb(method: str) -> Role:
    """The role a DICOMweb request with this method needs (unknown methods need admin)."""
    return DICOMWEB_ROLE_BY_METHOD.get(method.upper(), Role.ADMIN)


def describe(any_of: Iterable[Role]) -> str:
    names = sorted(r.value for r in any_of)
    return names[0] if len(names) == 1 else " or ".join(names)
