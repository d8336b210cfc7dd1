"""A seekable, read-ahead, read-only file object over ranged reads.

pydicom parses from any object with ``read``/``seek``/``tell``. :class:`RangedReader`
gives it one whose bytes come from ranged downloads, fetched on demand in growing
chunks, so ``dcmread(stop_before_pixels=True, defer_size=...)`` fetches only what it
parses and seeks past large values without downloading them. It never asks for the
whole blob. It counts the bytes and requests it made, which tests assert on.

The reader owns nothing it was given: closing it does not close the source.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.dicom.bounds import Meter


class RangeSource(Protocol):
    """Where bytes come from: one ranged read per call."""

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        """Return up to ``length`` bytes at ``offset`` and the total size of the object."""
        ...


@dataclass
class BytesRangeSource:
    """An in-memory source (STOW-RS parts, unit tests)."""

    data: bytes | bytearray | memoryview

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        return bytes(self.data[offset:offset + length]), len(self.data)


@dataclass
class FileRangeSource:
    """A local file (the DIMSE gateway's received C-STORE data sets): reads only what the parse asks for."""

    path: str

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
            return data, os.fstat(f.fileno()).st_size


class SeekableReader(io.RawIOBase):
    """The file-object side of a read-only, seekable reader (this module's and :class:`shared.dicom.bounds.
    InflatingReader`): position, ``seek``/``tell``, ``readinto``. Subclasses set ``_pos`` and implement
    ``read`` and :meth:`_end` (the size, for ``SEEK_END``)."""

    _pos: int

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._end() + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, got {whence}")
        if pos < 0:
            raise OSError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b: Any) -> int:  # Any: io.RawIOBase types it as a writable buffer of any kind
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _end(self) -> int:
        raise NotImplementedError


class RangedReader(SeekableReader):
    """Seekable reader with a read-ahead window over a :class:`RangeSource`.

    Sequential reads extend the window with chunks that double in size (from
    ``first_chunk`` up to ``max_chunk``); a seek beyond the window starts a new
    window, so skipped values are never downloaded.
    """

    def __init__(self, source: RangeSource, *, first_chunk: int = 64 * 1024, max_chunk: int = 4 * 1024 * 1024,
                 size: int | None = None) -> None:
        super().__init__()
        self.source = source
        self.first_chunk = first_chunk
        self.max_chunk = max_chunk
        self._size = size
        self._pos = 0
        self._win_start = 0
        self._win: bytes | bytearray = b""
        self._first: bytes | None = None  # the first range as fetched (prefix() hands it out uncopied)
        self._next_chunk = first_chunk
        self.bytes_fetched = 0
        self.requests = 0
        self.high_water = 0  # furthest byte offset handed to the caller
        self._digest = hashlib.sha256()
        self._unhashed: tuple[int, bytes] | None = None  # the last range fetched (see digest_so_far)
        #: Charged with every read before it happens, while a header parse holds it (shared.dicom.bounds).
        self.meter: Meter | None = None
        #: The source's own failure (storage, network), kept so a parse that wraps it is not taken for bad input.
        self.source_error: BaseException | None = None

    # -- io API -------------------------------------------------------------
    @property
    def size(self) -> int:
        if self._size is None:
            self._fill(self._pos, self._pos + 1)  # the first range also tells the size
        assert self._size is not None
        return self._size

    def prefix(self) -> bytes:
        """The first range fetched from offset 0, without a new request (b"" if the reader's
        first read started elsewhere)."""
        if self._size is None:
            self._fill(0, 1)
        return self._first or b""

    def _end(self) -> int:
        return self.size

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = max(0, self.size - self._pos)
        if self.meter is not None:
            self.meter.read(n)
        if n == 0:
            return b""
        start, end = self._pos, self._pos + n
        win_end = self._win_start + len(self._win)
        if not (self._win_start <= start and end <= win_end):
            self._fill(start, end)
            win_end = self._win_start + len(self._win)
        lo = start - self._win_start
        hi = min(end, win_end) - self._win_start
        out = bytes(self._win[lo:hi]) if hi > lo else b""
        self._pos += len(out)
        self.high_water = max(self.high_water, self._pos)
        return out

    # -- window management --------------------------------------------------
    def _fill(self, start: int, end: int) -> None:
        win_end = self._win_start + len(self._win)
        if self._size is not None and start >= self._size:
            return
        if self._win and self._win_start <= start <= win_end:
            # Sequential: extend the window from its end.
            need = end - win_end
            chunk = max(need, self._next_chunk)
            self._next_chunk = min(self._next_chunk * 2, self.max_chunk)
            data = self._fetch(win_end, chunk)
            if not isinstance(self._win, bytearray):
                self._win = bytearray(self._win)
            self._win += data
            # Drop what lies well behind the reader to bound memory.
            drop = start - self._win_start - self.max_chunk
            if drop > 0:
                del self._win[:drop]
                self._win_start += drop
        else:
            # A jump (seek past deferred values) or the first read: new window.
            self._next_chunk = self.first_chunk
            chunk = max(end - start, self._next_chunk)
            self._next_chunk = min(self._next_chunk * 2, self.max_chunk)
            data = self._fetch(start, chunk)
            if start == 0 and self._first is None:
                self._first = data
            self._win = data  # bytes until the window is extended (no copy for the common single read)
            self._win_start = start

    def _fetch(self, offset: int, length: int) -> bytes:
        if self._size is not None:
            length = min(length, self._size - offset)
            if length <= 0:
                return b""
        try:
            data, total = self.source.read_range(offset, length)
        except Exception as exc:  # whatever the source raises is the source's (recorded, then re-raised)
            self.source_error = exc
            raise
        self._size = total
        self.requests += 1
        self.bytes_fetched += len(data)
        if self._unhashed is not None:
            _update(self._digest, self._unhashed)
        self._unhashed = (offset, data)
        return data

    def digest(self) -> str:
        """SHA-256 over every range fetched (with its offset): equal for identical content."""
        return self.digest_so_far().hexdigest()

    def digest_so_far(self) -> ReadDigest:
        """The digest of the ranges fetched until now, computed when first asked for."""
        return ReadDigest(self._digest.copy(), self._unhashed)


def _update(h: Any, fetched: tuple[int, bytes]) -> None:
    h.update(fetched[0].to_bytes(8, "little"))
    h.update(fetched[1])


class ReadDigest:
    """SHA-256 over the ranges a reader fetched up to one point, each with its offset. The last
    range is hashed only when the digest is asked for: most headers are one range, and a caller
    that holds the whole file's Content-MD5 never asks (hashing the 64 KiB first range costs
    about a fifth of a header parse)."""

    __slots__ = ("_hash", "_last", "_value")

    def __init__(self, hashed: Any, last: tuple[int, bytes] | None) -> None:  # Any: hashlib's HASH
        self._hash, self._last = hashed, last
        self._value: str | None = None

    def hexdigest(self) -> str:
        if self._value is None:
            if self._last is not None:
                _update(self._hash, self._last)
                self._last = None  # the bytes are not kept once hashed
            self._value = self._hash.hexdigest()
        return self._value
