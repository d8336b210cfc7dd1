"""Part 10 framing for files archived without it: what goes before their bytes when they are retrieved.

Ingest is tolerant (as pydicom is): a data set written without the 128-byte preamble, the ``DICM``
prefix or the File Meta Information is archived as it came. A retrieved ``application/dicom`` object
must be a Part 10 file (PS3.18 8.7.3.5.1; dicomweb-client refuses it otherwise: "missing DICOM File
Meta Information header"), so WADO-RS sends :func:`missing_prefix` of the stored file's first bytes
before them: nothing for a Part 10 file, preamble + ``DICM`` for a file that has its meta but no
preamble, and preamble + ``DICM`` + a generated File Meta Information for a bare data set. The data
set's bytes are sent unchanged, streamed as stored.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Final

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from shared.dicom import facts
from shared.errors import BadInput, Reason

PREAMBLE: Final = b"\0" * 128 + b"DICM"
IMPLEMENTATION_VERSION_NAME: Final = "DICOMFLOW_1"


def _starts_with_meta(head: bytes) -> bool:
    """The first element is in group 0002 (File Meta Information, always explicit VR little endian)."""
    return len(head) >= 4 and struct.unpack("<H", head[:2])[0] == 0x0002


def missing_prefix(head: bytes) -> bytes:
    """What must precede a stored file for it to be Part 10, from its first bytes (the header must be in them).

    Raises :class:`~shared.errors.BadInput` if a bare data set lacks the UIDs the meta needs.
    """
    if head[128:132] == b"DICM":
        return b""
    if _starts_with_meta(head):
        return PREAMBLE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(head), force=True, stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID"])
    sop_class, sop = str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    if not sop_class or not sop:
        raise BadInput(Reason.MISSING_SOP_CLASS if not sop_class else Reason.MISSING_SOP_UID)
    implicit, little = ds.original_encoding if ds.original_encoding[0] is not None else (False, True)
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop)
    meta.TransferSyntaxUID = facts.syntax_for(bool(implicit), bool(little))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    out = DicomBytesIO()
    write_file_meta_info(out, meta, enforce_standard=True)  # computes the group length
    return PREAMBLE + out.getvalue()
