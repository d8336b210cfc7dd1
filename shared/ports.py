"""The ports: what the services need from storage and the event topic, as small Protocols.

Two backends implement them: the Azure adapters (:mod:`shared.storage.azure`,
:mod:`shared.index.azure`, :mod:`shared.events.publisher`), built once per process by the
composition root :mod:`shared.services`, and in-memory fakes (``tests/fakes.py``) that unit
tests run the same services on. Names and keys never appear here: callers pass container,
table and queue names from :mod:`shared.storage.layout` / :mod:`shared.index.tables` and
keys from :mod:`shared.index.keys`.

Errors: "absent" is a return value (``None``/``False``); a lost optimistic race is
:class:`RowExists` / :class:`RowChanged`; everything else (throttling, outages) propagates as
the backend's own exception so the trigger retries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Literal, Protocol

from shared.events.payloads import DicomEvent


class RowExists(Exception):
    """An insert found the row already there."""


class RowChanged(Exception):
    """A conditional write found the row changed or gone since it was read."""


class BlobGone(Exception):
    """The blob being read is gone, or was replaced since the first read of it."""


# -- blobs --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlobItem:
    name: str
    size: int
    etag: str = ""
    last_modified: dt.datetime | None = None
    content_md5: bytes | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class Blob(Protocol):
    """One blob, read in ranges; every read after the first is pinned to the version the first
    read saw (a blob replaced mid-read fails instead of mixing versions). ``etag``, ``content_md5``,
    ``last_modified`` and ``metadata`` are those of that version (known after the first read)."""

    container: str
    name: str
    url: str
    etag: str | None
    content_md5: bytes | None
    last_modified: dt.datetime | None
    #: The blob's metadata (it comes with the first response).
    metadata: Mapping[str, str]

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        """Up to ``length`` bytes at ``offset`` and the blob's total size; :class:`BlobGone` if
        the blob is absent or changed since the first read."""
        ...


@dataclass(frozen=True, slots=True)
class BlobRange:
    """Bytes ``[offset, offset + length)`` of ``source``, at the version its first read saw."""

    source: Blob
    offset: int
    length: int


class BlobStore(Protocol):
    def open(self, container: str, path: str) -> Blob:
        """A handle; no request is made until it is read."""
        ...

    def open_version(self, container: str, path: str, etag: str) -> Blob:
        """A handle pinned to version ``etag`` from the first read on."""
        ...

    def read(self, container: str, path: str) -> bytes | None:
        """A small blob whole (JSON documents, never DICOM instances), or None if absent."""
        ...

    def write(self, container: str, path: str, data: bytes | IO[bytes], *, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None) -> str:
        """Create or replace; returns the new ETag. ``bytes`` are stored with their Content-MD5."""
        ...

    def create(self, container: str, path: str, data: bytes | IO[bytes], *, content_md5: bytes,
               content_type: str | None = None, metadata: Mapping[str, str] | None = None) -> str | None:
        """Create only if absent (If-None-Match: *), stored with ``content_md5``; the new ETag, or None when a
        blob exists there (nothing written)."""
        ...

    def copy(self, source: Blob, container: str, path: str, *, metadata: Mapping[str, str] | None = None,
             if_absent: bool = False) -> bool:
        """Server-side copy of ``source`` (the version it was read at, else :class:`BlobGone`),
        complete on return. With ``if_absent``, nothing is copied (False) when the target exists."""
        ...

    def delete(self, container: str, path: str, *, etag: str | None = None) -> bool:
        """False if the blob is absent (or, with ``etag``, was replaced meanwhile)."""
        ...

    def compose(self, container: str, path: str, parts: Sequence[bytes | BlobRange], *,
                content_type: str | None = None, metadata: Mapping[str, str] | None = None,
                if_match: str | None = None) -> str:
        """Create or replace a blob made of ``parts`` in order: ``bytes`` are uploaded, a
        :class:`BlobRange` is copied from its source server-side where the service can (else streamed
        through in bounded chunks, never held whole). With ``if_match``, only if the target is still at
        that ETag (else :class:`BlobGone`). Returns the new ETag."""
        ...

    def list(self, container: str, prefix: str = "", *, metadata: bool = False) -> Iterator[BlobItem]: ...

    def properties(self, container: str, path: str) -> BlobItem | None: ...

    def download_to(self, container: str, path: str, out: IO[bytes]) -> None: ...

    def ensure_containers(self, names: Sequence[str]) -> None: ...


# -- tables -------------------------------------------------------------------------------------

class Row(dict[str, Any]):
    """An entity as read: its properties (plain Python values), ``PartitionKey``, ``RowKey``,
    and the ETag a conditional write needs."""

    etag: str = ""

    @classmethod
    def of(cls, values: Mapping[str, Any], etag: str) -> Row:
        row = cls(values)
        row.etag = etag
        return row


OpKind = Literal["insert", "upsert", "merge", "replace", "delete"]


@dataclass(frozen=True, slots=True)
class TableOp:
    """One operation of a transaction. ``replace``/``delete`` with an etag are conditional; so is
    ``merge`` with an etag (then it merges into the row as read, and never creates one)."""

    kind: OpKind
    entity: Mapping[str, Any]
    etag: str | None = None


class TableStore(Protocol):
    def get(self, table: str, pk: str, rk: str) -> Row | None: ...

    def insert(self, table: str, entity: Mapping[str, Any]) -> str:
        """Create; raises :class:`RowExists`. Returns the new ETag."""
        ...

    def upsert(self, table: str, entity: Mapping[str, Any], *, merge: bool = False) -> None: ...

    def merge(self, table: str, entity: Mapping[str, Any]) -> bool:
        """Merge properties into an existing row; False if there is none (nothing is created)."""
        ...

    def replace(self, table: str, entity: Mapping[str, Any], *, etag: str) -> str:
        """Conditional replace; raises :class:`RowChanged`. Returns the new ETag."""
        ...

    def delete(self, table: str, pk: str, rk: str, *, etag: str | None = None) -> None:
        """Delete if present (absent is fine); with ``etag``, :class:`RowChanged` if it changed."""
        ...

    def query(self, table: str, *, pk: str | None = None, pk_range: tuple[str, str] | None = None,
              rk_range: tuple[str, str] | None = None, equals: Mapping[str, Any] | None = None,
              select: Sequence[str] | None = None, page_size: int | None = None) -> Iterator[Row]:
        """Rows of one partition (``pk``) or a partition range [lo, hi), optionally a RowKey range
        [lo, hi) and property equalities; with neither ``pk`` nor ``pk_range``, a scan. Rows come
        lazily, ``page_size`` per request (None: the service's 1,000)."""
        ...

    def transact(self, table: str, ops: Sequence[TableOp]) -> list[str]:
        """Up to 100 operations on ONE partition, all or nothing (raises RowExists/RowChanged); the new
        ETag of each operation's row ("" for a delete)."""
        ...

    def ensure_tables(self, names: Sequence[str]) -> None: ...


# -- queues and events ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A received message: its text (base64 decoded when it was base64) and what deleting it needs."""

    id: str
    pop_receipt: str
    text: str
    dequeue_count: int = 1
    inserted_on: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message this process put, as long as nobody has received it: what :meth:`Queues.update` needs."""

    id: str
    pop_receipt: str


class Queues(Protocol):
    def send(self, queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
        """Put a message (base64 on the wire, as Functions queue triggers expect); its handle for
        :meth:`update` (None from a port that cannot update)."""
        ...

    def update(self, queue: str, message: SentMessage, text: str, *, delay_seconds: float) -> SentMessage | None:
        """Replace the text of a message this process sent, keeping it hidden ``delay_seconds`` more: its new
        handle, or None when it has been received (or deleted) meanwhile, so the caller sends a new one. One
        request, as a send; the message's receiver then deletes one message, not two."""
        ...

    def ensure_queues(self, names: Sequence[str]) -> None: ...

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[QueueMessage]:
        """Up to ``max_messages`` visible messages, hidden for ``visibility_timeout`` seconds (none when the
        queue does not exist: poison queues are created on first use)."""
        ...

    def delete(self, queue: str, message: QueueMessage) -> None: ...


class Publisher(Protocol):
    def publish(self, events: Sequence[DicomEvent]) -> None:
        """Send events in as few requests as the topic allows; raise on failure (at least once)."""
        ...
