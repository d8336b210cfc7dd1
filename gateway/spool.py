"""Where received C-STORE data sets wait on disk: a folder the gateway owns, a size cap, and no leftovers.

pynetdicom writes a received data set to a temporary file as it arrives
(``STORE_RECV_CHUNKED_DATASET``), with :func:`tempfile.NamedTemporaryFile` in the system
temporary folder, no size limit, and removes it only after a handler that returned normally.
A sender could fill the disk with one endless data set, and an aborted association or a handler
that raised left its file behind. :class:`Spool` takes over that file:

* it lives in the gateway's own folder (``DICOMFLOW_GATEWAY_SPOOL_DIR``, default
  ``<tmp>/dicomflow-gateway-<port>``), emptied when the gateway starts (what a crashed process
  left) and when it stops;
* it is capped at ``DICOMFLOW_GATEWAY_MAX_STORE_BYTES``: past the cap nothing more is written,
  what was written is truncated, and the association is aborted (from another thread: the
  writer is pynetdicom's reader thread, which must not stop itself), with one log line;
* it is removed on every exit path: by the C-STORE handler once it is done with it (success,
  refusal, failure, or an exception), and with every other file of its association when the
  connection closes (release, abort, network error), which covers a data set that never arrived
  whole and a handler that raised.

So the disk a gateway can use is bounded by ``MAX_ASSOCIATIONS x MAX_STORE_BYTES``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SpoolError(RuntimeError):
    """The spool folder cannot be used; the message names the setting to change."""


class CappedFile:
    """The file object pynetdicom writes one data set into (the subset of a NamedTemporaryFile it uses)."""

    def __init__(self, spool: Spool, path: Path, owner: Any) -> None:
        self.spool = spool
        self.name = str(path)
        self.file = path.open("wb")
        self.owner = owner
        self.written = 0
        self.overflowed = False

    def write(self, data: bytes) -> int:
        if self.overflowed:
            return len(data)  # already refused: drop what still arrives until the abort lands
        if self.written + len(data) > self.spool.max_bytes:
            self.overflowed = True
            with contextlib.suppress(OSError):
                self.file.truncate(0)
            self.spool.overflow(self)
            return len(data)
        self.written += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __getattr__(self, name: str) -> Any:  # seek/tell for pydicom's file-meta writer
        return getattr(self.file, name)


class Spool:
    """The gateway's folder of received data sets (see the module docstring)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._files: dict[int, list[CappedFile]] = {}  # by id(association)

    def start(self) -> None:
        """Prepare the folder and route pynetdicom's data set files here."""
        self.prepare()
        from pynetdicom import dimse_messages

        # pynetdicom calls NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm") for each C-STORE data
        # set (dimse_messages.DIMSEMessage.decode_msg); this module-level name is its only file factory.
        dimse_messages.NamedTemporaryFile = self.open  # type: ignore[assignment]

    def prepare(self) -> None:
        """Create the folder, emptied of what an earlier process left (a crash ends no handler). A folder
        that is a symbolic link or belongs to another user (the default is under the shared temporary
        folder) is refused: received data sets must not land where someone else can read or swap them."""
        if self.folder.is_symlink() or (self.folder.exists() and self.folder.stat().st_uid != os.getuid()):
            raise SpoolError(f"Spool folder {self.folder} is a link or not ours; set DICOMFLOW_GATEWAY_SPOOL_DIR to a "
                          "folder of the gateway's user.")
        if self.folder.exists():
            stale = [p for p in self.folder.iterdir() if p.is_file()]
            for p in stale:
                p.unlink(missing_ok=True)
            if stale:
                log.info("Spool %s: removed %d file(s) an earlier gateway process left", self.folder, len(stale))
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def stop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def open(self, *args: Any, **kwargs: Any) -> CappedFile:
        """A new spool file for the data set arriving on the calling thread's association."""
        fd, name = tempfile.mkstemp(prefix="cstore-", suffix=".dcm", dir=self.folder)
        os.close(fd)
        owner = getattr(threading.current_thread(), "assoc", None)  # pynetdicom's DUL thread knows it
        f = CappedFile(self, Path(name), owner)
        with self._lock:
            self._files.setdefault(id(owner), []).append(f)
        return f

    def overflow(self, f: CappedFile) -> None:
        from gateway.store import association_id

        assoc = f.owner
        log.warning("C-STORE assoc=%s: data set larger than DICOMFLOW_GATEWAY_MAX_STORE_BYTES (%d bytes); "
                    "association aborted (send larger files to the inbox by blob upload)",
                    association_id(assoc) if assoc is not None else "-", self.max_bytes)
        if assoc is not None:
            threading.Thread(target=assoc.abort, name="spool-abort", daemon=True).start()

    def discard(self, path: str | os.PathLike[str] | None) -> None:
        """Remove one data set's file (the C-STORE handler calls this on every way out)."""
        if not path:
            return
        with self._lock:
            for files in self._files.values():
                for f in [f for f in files if f.name == str(path)]:
                    files.remove(f)
                    with contextlib.suppress(OSError):
                        f.close()
        with contextlib.suppress(OSError):
            os.unlink(path)

    def release(self, assoc: Any) -> int:
        """Remove every file of an association whose connection closed; returns how many were left."""
        with self._lock:
            files = self._files.pop(id(assoc), [])
        left = 0
        for f in files:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f.name)
                left += 1
        return left

    def overflowed(self, path: str | os.PathLike[str] | None) -> bool:
        with self._lock:
            return any(f.overflowed for files in self._files.values() for f in files if f.name == str(path))

    def __len__(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.is_file()) if self.folder.exists() else 0
