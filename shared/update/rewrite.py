"""A new version of an archived instance with changed attributes, written without moving its pixel data.

The file is split at a point after the last attribute that changes: the bytes before it (the *head*:
preamble, File Meta Information and the first elements of the data set) are parsed with pydicom,
changed and written again; the bytes from it to the end (the *tail*: the remaining elements and the
pixel data, megabytes to gigabytes) are never parsed, only copied, server-side where the storage
service can (``BlobStore.compose``: Put Block From URL in Azure; streamed in 8 MiB blocks on Azurite).

Where the file is split:

* the first top-level element of a group after the last group that changes (change datasets touch
  groups 0008, 0010 and 0040 only), so the head is usually a few hundred bytes and an encapsulated
  document or a large private element after it is copied as it is;
* if a new value cannot be written in the instance's Specific Character Set, the head becomes
  everything before the pixel data: every text value in it is decoded and written again in UTF-8
  (``ISO_IR 192``), since a new character set applies to the whole data set.

Group Length elements of changed groups are dropped (they are optional, and their old values would be
wrong); the File Meta Information group length is recomputed by pydicom. The head is held in memory,
so it is bounded (:data:`HEAD_LIMIT`); deflated files (the whole data set is one zlib stream) and files
whose header is incomplete are refused with a message, never rewritten by guesswork.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Final

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue

from shared.dicom import facts
from shared.dicom.bounds import LONG_VRS
from shared.dicom.header import Header
from shared.dicom.ranged import RangedReader
from shared.errors import Reason
from shared.ports import Blob, BlobRange
from shared.update.changes import ChangeSet

#: The most bytes of an instance held in memory to rewrite its head.
HEAD_LIMIT: Final = 16 * 1024 * 1024
_TEXT_VRS: Final = {"SH", "LO", "ST", "LT", "UT", "UC", "PN"}
UTF8: Final = "ISO_IR 192"
#: File Meta Information: Implementation Version Name of files this service rewrote.
IMPLEMENTATION_VERSION: Final = "DICOMFLOW"


class CannotRewrite(Exception):
    """This instance cannot be given a new version in place; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class NewVersion:
    """The new version: ``head`` replaces bytes ``[0, split)`` of the source, the rest is kept."""

    head: bytes
    split: int
    size: int
    recoded: bool  # the character set changed to UTF-8

    def parts(self, source: Blob, cached: bytes = b"") -> list[bytes | BlobRange]:
        """What the new file is made of: the head, then the source's tail, which is sent from ``cached``
        (the source's bytes from offset 0 already read, e.g. by the header parse) when it holds it all,
        else copied from the source."""
        tail = self.size - self.split
        if not tail:
            return [self.head]
        if self.size <= len(cached):
            return [self.head + cached[self.split:self.size]]
        return [self.head, BlobRange(source, self.split, tail)]

    @property
    def new_size(self) -> int:
        return len(self.head) + self.size - self.split

    def known(self, cached: bytes) -> bytes:
        """The new file's first bytes that are in hand: the head, then what of the source's tail ``cached``
        (the source's bytes from offset 0) holds."""
        return self.head + cached[self.split:]


def _element_start(raw: Any, implicit: bool) -> int:
    tell = int(raw.value_tell)
    if implicit:
        return tell - 8
    return tell - (12 if str(raw.VR).encode("ascii", "replace") in LONG_VRS else 8)


def split_point(header: Header, changes: ChangeSet, *, recode: bool) -> int:
    """Where the unchanged tail starts (see the module docstring)."""
    if recode:
        return header.header_end
    last_group = max(int(e.tag) >> 16 for e in changes.dataset)
    for tag in sorted(header.dataset._dict):
        if (int(tag) >> 16) <= last_group:
            continue
        raw = header.dataset._dict[tag]
        if getattr(raw, "value_tell", None) is None:
            break  # converted element (no offset known): split where the parse ended
        return _element_start(raw, header.is_implicit_vr)
    return header.header_end


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue | list | tuple) else [] if value is None else [value]


def needs_recode(header: Header, changes: ChangeSet) -> bool:
    """Whether a new text value cannot be written in the instance's Specific Character Set."""
    texts = [str(v) for e in changes.dataset if e.VR in _TEXT_VRS for v in _values(e.value)]
    if all(t.isascii() for t in texts):
        return False
    charsets = [str(c).strip() for c in _values(header.dataset.get("SpecificCharacterSet"))]
    if charsets == [UTF8]:
        return False
    if len(charsets) != 1:
        return True  # the default repertoire, or ISO 2022 code extensions: write UTF-8
    try:
        codec = convert_encodings(charsets)[0]
        for t in texts:
            t.encode(codec)
    except (UnicodeError, LookupError):
        return True
    return False


def new_version(header: Header, reader: RangedReader, changes: ChangeSet) -> NewVersion:
    """The head of the new version of the file ``reader`` reads (whose parsed header is ``header``)."""
    if facts.is_deflated(header.transfer_syntax_uid):
        raise CannotRewrite("It is stored with Deflated Explicit VR Little Endian (the whole data set is one "
                            "compressed stream); store a corrected file with STOW-RS instead.")
    if Reason.TRUNCATED in header.warnings:
        raise CannotRewrite("Its header is incomplete (the file was cut short); store the complete file again.")
    recode = needs_recode(header, changes)
    split = split_point(header, changes, recode=recode)
    if split > HEAD_LIMIT:
        raise CannotRewrite(f"The part of the file before the unchanged data is {split} bytes, over the "
                            f"{HEAD_LIMIT}-byte limit for a rewrite in place; store a corrected file instead.")
    reader.seek(0)
    head = reader.read(split)
    if len(head) != split:
        raise CannotRewrite("The archived file is shorter than its header says.")
    return NewVersion(_rewrite(head, changes, recode=recode, keep_groups_from=_group_at(reader, split, header)),
                      split, reader.size, recode)


def _group_at(reader: RangedReader, split: int, header: Header) -> int:
    """The group of the first element of the tail (Group Length elements of groups from it on stay)."""
    if split >= reader.size:
        return 0x10000
    reader.seek(split)
    first = reader.read(2)
    if len(first) < 2:
        return 0x10000
    return int(struct.unpack("<H" if header.is_little_endian else ">H", first)[0])


def _rewrite(head: bytes, changes: ChangeSet, *, recode: bool, keep_groups_from: int) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(head), force=True)
        if recode:
            ds.decode()  # every text value as Unicode, so it is written again in the new character set
            ds.SpecificCharacterSet = UTF8
        for elem in changes.dataset:
            ds[elem.tag] = DataElement(elem.tag, elem.VR, elem.value)
        changed = {int(e.tag) >> 16 for e in changes.dataset} | ({0x0008} if recode else set())
        tags = list(ds.keys())  # iterating a Dataset yields its elements, not their tags
        for tag in [t for t in tags if t.element == 0 and (t.group in changed or (
                recode and t.group < keep_groups_from))]:
            del ds[tag]
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "TransferSyntaxUID" in meta:
            meta.ImplementationVersionName = IMPLEMENTATION_VERSION
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=False)
    return out.getvalue()


@dataclass
class KnownPrefix:
    """A :class:`~shared.dicom.ranged.RangeSource` over a file whose first bytes are known (``prefix``): reads
    inside them cost nothing, others go to ``blob`` (the same file, stored). Parsing the header of a new
    version just written costs no request when it lies within the bytes already in hand."""

    prefix: bytes
    blob: Blob
    size: int

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        end = min(offset + length, self.size)
        if end <= len(self.prefix):
            return self.prefix[offset:end], self.size
        data, _ = self.blob.read_range(offset, length)
        return data, self.size
