"""The buffered audit writer: a record costs a request nothing; a background thread appends batches to blobs.

:meth:`AuditWriter.emit` writes the record's JSON line to a local spool file and to the log (Application
Insights -> Log Analytics in Azure; the container's console log for the gateway) and returns: no storage request
on the request's path. A daemon thread appends what waits, every ``DICOMFLOW_AUDIT_FLUSH_SECONDS`` (1 s) or as
soon as ``DICOMFLOW_AUDIT_BATCH`` (500) records wait, as one append block per hour blob
(``dicom-audit/YYYY/MM/DD/HH/<writer>.jsonl``, an append blob per writer and hour, so no two processes ever
append to one blob). A process that stops normally flushes at exit (``atexit``), retrying a failed append.

What a hard kill loses: nothing that reached the spool file, once a process on the same machine starts again
(the next writer appends every spool file whose owner is gone: owners hold an exclusive ``flock`` on their
files). Records are written to the spool before ``emit`` returns, so the bound is the machine itself: on a
lost machine (or a Functions instance that is recycled with its disk) the records of the last flush interval
(at most 1 s, or one batch) are missing from the blob trail; they are still in the log stream, which was
written at once. Records carry an ``id``: a batch appended twice after a crash is read back once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import orjson

from shared.audit.record import AuditRecord
from shared.storage import layout

log = logging.getLogger(__name__)
#: One JSON line per record (the log copy): Application Insights / Log Analytics in Azure.
records_log = logging.getLogger("dicomflow.audit")
#: Azure allows up to 4 MiB per append block (100 MiB with newer service versions; 4 MiB is safe everywhere).
MAX_BLOCK: Final = 4 * 1024 * 1024
CLOSE_ATTEMPTS: Final = 3
#: A spool file's name while it is created and locked (recovery looks only for ``*.jsonl``).
OPENING: Final = ".opening"


class Sink(Protocol):
    def append(self, path: str, data: bytes) -> None:
        """Append ``data`` to the append blob ``path`` of the audit container (created if absent; never
        replaced). Raises on failure."""
        ...


def hour_of(at: str) -> str:
    """``YYYY/MM/DD/HH`` of an ISO time (``2026-11-29T10:15:00.000Z`` -> ``2026/11/29/10``)."""
    return f"{at[0:4]}/{at[5:7]}/{at[8:10]}/{at[11:13]}"


@dataclass
class _Segment:
    """A spool file this writer owns (locked) and the lines written to it; ``path`` None and ``fd`` -1 when
    there is no spool file (records in memory only)."""

    path: Path | None
    fd: int
    lines: list[tuple[str, bytes]]

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class AuditWriter:
    def __init__(self, sink: Sink, *, name: str, spool_dir: Path | None, flush_seconds: float = 1.0,
                 batch: int = 500, start: bool = True) -> None:
        self.sink = sink
        self.name = name
        self.spool_dir = spool_dir
        self.flush_seconds = flush_seconds
        self.batch = batch
        self._lock = threading.Condition()
        self._flushing = threading.Lock()
        self._segment: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._count = 0
        self._closed = False
        self._wake = False
        self._thread: threading.Thread | None = None
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        if start:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    # -- the request path: no storage request ----------------------------------------------------------
    def emit(self, record: AuditRecord) -> None:
        line = record.line()
        records_log.info("audit %s", line[:-1].decode())
        hour = hour_of(record.at)
        with self._lock:
            segment = self._open_segment()
            if segment.fd >= 0:
                try:
                    os.write(segment.fd, line)
                except OSError as exc:  # a full or read-only disk: the record still goes out in memory
                    log.warning("Audit spool write failed (%s); record kept in memory only", exc.strerror)
            segment.lines.append((hour, line))
            if len(segment.lines) >= self.batch:
                self._wake = True
                self._lock.notify()
            closed = self._closed
        if closed:  # emitted after close (another exit handler): nobody flushes later, so now
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - at exit: the record stays spooled for the next process here
                log.warning("Audit: a record emitted at exit could not be appended; it stays spooled")

    def _open_segment(self) -> _Segment:
        if self._segment is None:
            self._count += 1
            fd, path = -1, None
            if self.spool_dir is not None:
                path = self.spool_dir / f"{self.name}-{self._count:06d}.jsonl"
                opening = path.with_suffix(OPENING)
                try:
                    # Locked before it has the name recovery looks for: no other writer can take a live file.
                    fd = os.open(opening, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.rename(opening, path)
                except OSError as exc:
                    log.warning("Audit spool file cannot be opened (%s); records kept in memory only", exc.strerror)
                    with contextlib.suppress(OSError):
                        if fd >= 0:
                            os.close(fd)
                        opening.unlink()
                    fd, path = -1, None
            self._segment = _Segment(path, fd, [])
        return self._segment

    # -- the background: appends -------------------------------------------------------------------------
    def _run(self) -> None:
        self.recover()
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or self._wake, self.flush_seconds)
                self._wake = False
                if self._closed:
                    return
            try:
                self.flush()
            except Exception:  # the flusher must outlive any storage failure: what failed stays and is retried
                log.warning("Audit flush failed; retrying in %.0f s", self.flush_seconds, exc_info=True)

    def flush(self) -> int:
        """Append every record emitted so far; returns how many were appended. A failed append leaves its
        records (and their spool file) for the next flush, and raises."""
        with self._flushing:
            with self._lock:
                if self._segment is not None and self._segment.lines:
                    self._sealed.append(self._segment)
                    self._segment = None
                sealed = list(self._sealed)
            done = 0
            for segment in sealed:
                for path, data in _blocks(self.name, segment.lines):
                    self.sink.append(path, data)
                segment.discard()
                with self._lock:
                    self._sealed.remove(segment)
                done += len(segment.lines)
            return done

    def close(self) -> None:
        """Stop the thread and append what waits (retried a few times; what still fails stays spooled for the
        next process on this machine)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_seconds + 5)
        for attempt in range(CLOSE_ATTEMPTS):
            try:
                self.flush()
                break
            except Exception:  # noqa: BLE001 - at exit: try again, then leave the records spooled
                if attempt == CLOSE_ATTEMPTS - 1:
                    waiting = sum(len(s.lines) for s in self._sealed)
                    log.error("Audit: %d record(s) not appended at exit; they stay in %s for the next start",
                              waiting, self.spool_dir)
                    return
                time.sleep(0.5 * (attempt + 1))
        if self._segment is not None and not self._segment.lines:
            self._segment.discard()
            self._segment = None

    # -- what a killed writer left --------------------------------------------------------------------------
    def recover(self) -> int:
        """Append the spool files of writers that are gone (their lock is free), then remove them."""
        if self.spool_dir is None:
            return 0
        recovered = 0
        for stale in self.spool_dir.glob(f"*{OPENING}"):  # a writer killed between creating and naming one
            with contextlib.suppress(OSError):
                fd = os.open(stale, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    stale.unlink()  # nothing was written to it before it was named
                finally:
                    os.close(fd)
        for path in sorted(self.spool_dir.glob("*.jsonl")):
            if path.name.startswith(f"{self.name}-"):
                continue  # this writer's own
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue  # its writer is alive
                raise
            lines = list(_read_lines(path))
            segment = _Segment(path, fd, lines)
            try:
                for blob, data in _blocks(self.name, lines):
                    self.sink.append(blob, data)
            except Exception:  # storage trouble: leave the file for the next try (its lock goes with the fd)
                log.warning("Audit: recovering %s failed; will retry", path.name, exc_info=True)
                os.close(fd)
                continue
            segment.discard()
            recovered += len(lines)
        if recovered:
            log.info("Audit: %d record(s) recovered from the spool of a stopped process", recovered)
        return recovered


def _read_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """(hour, line) of each complete record in a spool file (a line cut short by a crash is skipped)."""
    with path.open("rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue
            try:
                at = orjson.loads(raw)["EventIdentification"]["EventDateTime"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            yield hour_of(str(at)), raw


def _blocks(name: str, lines: list[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    """The blob (per hour) and append blocks (at most :data:`MAX_BLOCK`) of a batch of lines."""
    by_hour: dict[str, list[bytes]] = {}
    for hour, line in lines:
        by_hour.setdefault(hour, []).append(line)
    for hour, items in sorted(by_hour.items()):
        path = layout.audit_path(hour, name)
        block: list[bytes] = []
        size = 0
        for line in items:
            if block and size + len(line) > MAX_BLOCK:
                yield path, b"".join(block)
                block, size = [], 0
            block.append(line)
            size += len(line)
        if block:
            yield path, b"".join(block)


def writer_name(host: str) -> str:
    """A name no other process uses: host, pid and a random part (blob names per writer never collide)."""
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
