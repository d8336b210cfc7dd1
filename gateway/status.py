"""DIMSE status codes the gateway answers with (PS3.7 Annex C, PS3.4 C.4), and the one way a
failure carries its reason (Error Comment, at most 64 characters). pynetdicom's own
:class:`pynetdicom.status.Status` names the general ones; the service-specific ones are here."""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset
from pynetdicom.status import Status

SUCCESS: Final = int(Status.SUCCESS)
PENDING: Final = int(Status.PENDING)
CANCEL: Final = int(Status.CANCEL)
#: C-FIND: a match, but keys of the identifier were not supported (ignored, PS3.4 C.4.1.3.1).
PENDING_WARNING: Final = 0xFF01
OUT_OF_RESOURCES: Final = 0xA700
IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000


def status(code: int, comment: str | None = None) -> Dataset:
    """A status data set, with an Error Comment when there is one."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds
