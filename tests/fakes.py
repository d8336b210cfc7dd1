"""In-memory backends of the ports (:mod:`shared.ports`), for fast unit tests of the services.

They keep the semantics the services rely on: ETags change on every write, conditional writes
fail with RowChanged/RowExists, transactions are all-or-nothing on one partition, reads of a
blob after the first are pinned to the version first read, and a copy can be made conditional
on the target being absent. Every call counts as one request (``requests``), as it would be one
HTTP request against Azure Storage (listings: one per 5,000 results, queries one per 1,000).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from shared.config import Settings
from shared.events.payloads import DicomEvent
from shared.ports import BlobGone, BlobItem, BlobRange, QueueMessage, Row, RowChanged, RowExists, SentMessage, TableOp
from shared.services import Services

_etags = itertools.count(1)


def _etag() -> str:
    return f'"0x{next(_etags):08X}"'


@dataclass
class _Stored:
    data: bytes
    etag: str
    modified: dt.datetime
    md5: bytes | None
    metadata: dict[str, str] = field(default_factory=dict)


class MemoryBlob:
    def __init__(self, store: MemoryBlobStore, container: str, name: str, etag: str | None = None) -> None:
        self.store, self.container, self.name = store, container, name
        self.url = f"memory://{container}/{name}"
        self.etag = etag
        self.content_md5: bytes | None = None
        self.last_modified: dt.datetime | None = None
        self.metadata: Mapping[str, str] = {}

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        self.store.count("blob GET range")
        got = self.store.blobs.get((self.container, self.name))
        if got is None or (self.etag is not None and got.etag != self.etag):
            raise BlobGone(self.name)
        self.etag, self.content_md5, self.last_modified = got.etag, got.md5, got.modified
        self.metadata = dict(got.metadata)
        self.store.bytes_read += min(length, max(0, len(got.data) - offset))
        return got.data[offset:offset + length], len(got.data)


class MemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], _Stored] = {}
        self.containers: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.bytes_read = 0
        self._lock = threading.Lock()

    def count(self, kind: str) -> None:
        with self._lock:
            self.requests[kind] += 1

    def put(self, container: str, path: str, data: bytes, *, md5: bool = True) -> str:
        """Test helper: an upload (not counted as a pipeline request)."""
        etag = _etag()
        self.blobs[(container, path)] = _Stored(bytes(data), etag, dt.datetime.now(dt.UTC),
                                                hashlib.md5(data).digest() if md5 else None)
        return etag

    def open(self, container: str, path: str) -> MemoryBlob:
        return MemoryBlob(self, container, path)

    def open_version(self, container: str, path: str, etag: str) -> MemoryBlob:
        return MemoryBlob(self, container, path, etag)

    def read(self, container: str, path: str) -> bytes | None:
        self.count("blob GET")
        got = self.blobs.get((container, path))
        return got.data if got else None

    def write(self, container: str, path: str, data: bytes | IO[bytes], *, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None) -> str:
        self.count("blob PUT")
        raw = data if isinstance(data, bytes) else data.read()
        etag = _etag()
        md5 = hashlib.md5(raw).digest() if isinstance(data, bytes) else None
        self.blobs[(container, path)] = _Stored(raw, etag, dt.datetime.now(dt.UTC), md5, dict(metadata or {}))
        return etag

    def create(self, container: str, path: str, data: bytes | IO[bytes], *, content_md5: bytes,
               content_type: str | None = None, metadata: Mapping[str, str] | None = None) -> str | None:
        self.count("blob PUT")
        raw = data if isinstance(data, bytes) else data.read()
        with self._lock:
            if (container, path) in self.blobs:
                return None
            etag = _etag()
            self.blobs[(container, path)] = _Stored(raw, etag, dt.datetime.now(dt.UTC), content_md5,
                                                    dict(metadata or {}))
        return etag

    def copy(self, source: Any, container: str, path: str, *, metadata: Mapping[str, str] | None = None,
             if_absent: bool = False) -> bool:
        self.count("blob PUT copy")
        got = self.blobs.get((source.container, source.name))
        if got is None or (source.etag is not None and got.etag != source.etag):
            raise BlobGone(source.name)
        if if_absent and (container, path) in self.blobs:
            return False
        # As Copy Blob: the given metadata replaces the source's; none given, the source's is copied.
        self.blobs[(container, path)] = _Stored(got.data, _etag(), dt.datetime.now(dt.UTC), got.md5,
                                                dict(got.metadata if metadata is None else metadata))
        return True

    def compose(self, container: str, path: str, parts: Sequence[bytes | BlobRange], *,
                content_type: str | None = None, metadata: Mapping[str, str] | None = None,
                if_match: str | None = None) -> str:
        """As the Azure adapter: one request when every part is small bytes; else one per staged part (ranges
        copied by the service) and one commit."""
        out = bytearray()
        single = all(isinstance(p, bytes | bytearray) for p in parts) and sum(len(p) for p in parts) <= 4 << 20
        for part in parts:
            if not single:
                self.count("blob PUT block")
            if isinstance(part, bytes | bytearray):
                out += part
                continue
            got = self.blobs.get((part.source.container, part.source.name))
            if got is None or (part.source.etag is not None and got.etag != part.source.etag):
                raise BlobGone(part.source.name)
            out += got.data[part.offset:part.offset + part.length]
        self.count("blob PUT" if single else "blob PUT blocklist")
        current = self.blobs.get((container, path))
        if if_match is not None and (current is None or current.etag != if_match):
            raise BlobGone(path)
        etag = _etag()
        self.blobs[(container, path)] = _Stored(bytes(out), etag, dt.datetime.now(dt.UTC), None, dict(metadata or {}))
        return etag

    def delete(self, container: str, path: str, *, etag: str | None = None) -> bool:
        self.count("blob DELETE")
        got = self.blobs.get((container, path))
        if got is None or (etag is not None and got.etag != etag):
            return False
        del self.blobs[(container, path)]
        return True

    def list(self, container: str, prefix: str = "", *, metadata: bool = False) -> Iterator[BlobItem]:
        names = sorted(n for c, n in self.blobs if c == container and n.startswith(prefix))
        for _ in range(max(1, -(-len(names) // 5000))):
            self.count("blob GET list")
        for n in names:
            b = self.blobs.get((container, n))
            if b is not None:
                yield BlobItem(n, len(b.data), b.etag, b.modified, b.md5, dict(b.metadata) if metadata else {})

    def properties(self, container: str, path: str) -> BlobItem | None:
        self.count("blob HEAD")
        b = self.blobs.get((container, path))
        return BlobItem(path, len(b.data), b.etag, b.modified, b.md5, dict(b.metadata)) if b else None

    def download_to(self, container: str, path: str, out: IO[bytes]) -> None:
        self.count("blob GET")
        b = self.blobs.get((container, path))
        if b is None:
            raise BlobGone(path)
        out.write(b.data)

    def ensure_containers(self, names: Sequence[str]) -> None:
        self.containers.update(names)

    def names(self, container: str) -> list[str]:
        return sorted(n for c, n in self.blobs if c == container)


def _plain(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (bytes(v) if isinstance(v, bytearray) else v) for k, v in entity.items()}


class MemoryTableStore:
    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple[str, str], tuple[dict[str, Any], str]]] = {}
        self.requests: Counter[str] = Counter()
        self._lock = threading.RLock()

    def _t(self, table: str) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
        return self.tables.setdefault(table, {})

    def count(self, kind: str) -> None:
        self.requests[kind] += 1

    def get(self, table: str, pk: str, rk: str) -> Row | None:
        with self._lock:
            self.count(f"table GET {table}")
            got = self._t(table).get((pk, rk))
            return Row.of(dict(got[0]), got[1]) if got else None

    def insert(self, table: str, entity: Mapping[str, Any]) -> str:
        with self._lock:
            self.count(f"table POST {table}")
            return self._apply(table, TableOp("insert", entity))

    def upsert(self, table: str, entity: Mapping[str, Any], *, merge: bool = False) -> None:
        with self._lock:
            self.count(f"table PUT {table}")
            self._apply(table, TableOp("merge" if merge else "upsert", entity))

    def merge(self, table: str, entity: Mapping[str, Any]) -> bool:
        with self._lock:
            self.count(f"table MERGE {table}")
            key = (entity["PartitionKey"], entity["RowKey"])
            if key not in self._t(table):
                return False
            self._apply(table, TableOp("merge", entity))
            return True

    def replace(self, table: str, entity: Mapping[str, Any], *, etag: str) -> str:
        with self._lock:
            self.count(f"table PUT {table}")
            return self._apply(table, TableOp("replace", entity, etag))

    def delete(self, table: str, pk: str, rk: str, *, etag: str | None = None) -> None:
        with self._lock:
            self.count(f"table DELETE {table}")
            got = self._t(table).get((pk, rk))
            if got is None:
                return
            if etag and etag != "*" and got[1] != etag:
                raise RowChanged("412")
            del self._t(table)[(pk, rk)]

    def query(self, table: str, *, pk: str | None = None, pk_range: tuple[str, str] | None = None,
              rk_range: tuple[str, str] | None = None, equals: Mapping[str, Any] | None = None,
              select: Sequence[str] | None = None, page_size: int | None = None) -> Iterator[Row]:
        with self._lock:
            rows = []
            for (p, r), (values, etag) in sorted(self._t(table).items()):
                if pk is not None and p != pk:
                    continue
                if pk_range is not None and not pk_range[0] <= p < pk_range[1]:
                    continue
                if rk_range is not None and not rk_range[0] <= r < rk_range[1]:
                    continue
                if equals and any(values.get(k) != v for k, v in equals.items()):
                    continue
                shown = {k: v for k, v in values.items() if k in select} if select else dict(values)
                rows.append(Row.of(shown, etag))
        page = page_size or 1000
        self.count(f"table GET query {table}")  # a page is a request, counted when it is reached
        for i, row in enumerate(rows):
            if i and i % page == 0:
                self.count(f"table GET query {table}")
            yield row

    def transact(self, table: str, ops: Sequence[TableOp]) -> list[str]:
        assert 0 < len(ops) <= 100, "a transaction holds 1 to 100 operations"
        assert len({op.entity["PartitionKey"] for op in ops}) == 1, "a transaction is on one partition"
        with self._lock:
            self.count(f"table POST batch {table}")
            saved = dict(self._t(table))
            try:
                return [self._apply(table, op) for op in ops]
            except (RowExists, RowChanged):
                self.tables[table] = saved
                raise

    def _apply(self, table: str, op: TableOp) -> str:
        rows = self._t(table)
        key = (str(op.entity["PartitionKey"]), str(op.entity["RowKey"]))
        got = rows.get(key)
        if op.kind == "insert":
            if got is not None:
                raise RowExists(str(key))
            values = _plain(op.entity)
        elif op.kind == "upsert":
            values = _plain(op.entity)
        elif op.kind == "merge":
            if op.etag and (got is None or (op.etag != "*" and got[1] != op.etag)):
                raise RowChanged(str(key))
            values = {**(got[0] if got else {}), **_plain(op.entity)}
        elif op.kind == "replace":
            if got is None or (op.etag and op.etag != "*" and got[1] != op.etag):
                raise RowChanged(str(key))
            values = _plain(op.entity)
        else:  # delete
            if got is None or (op.etag and op.etag != "*" and got[1] != op.etag):
                raise RowChanged(str(key))
            del rows[key]
            return ""
        etag = _etag()
        rows[key] = (values, etag)
        return etag

    def ensure_tables(self, names: Sequence[str]) -> None:
        for n in names:
            self._t(n)


class MemoryQueues:
    def __init__(self) -> None:
        self.messages: dict[str, list[tuple[str, float]]] = {}
        self.requests: Counter[str] = Counter()
        #: Messages still updatable (sent, not drained or received): id -> (queue, the message as listed).
        self._sent: dict[str, tuple[str, tuple[str, float]]] = {}
        self._ids = 0

    def send(self, queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
        self.requests[f"queue POST {queue}"] += 1
        item = (text, delay_seconds)
        self.messages.setdefault(queue, []).append(item)
        self._ids += 1
        self._sent[str(self._ids)] = (queue, item)
        return SentMessage(str(self._ids), "sent")

    def update(self, queue: str, message: SentMessage, text: str, *, delay_seconds: float) -> SentMessage | None:
        """Like Azure's Update Message: only a message still in the queue and not yet received."""
        self.requests[f"queue PUT {queue}"] += 1
        known = self._sent.get(message.id)
        box = self.messages.get(queue, [])
        if known is None or known[0] != queue or not any(m is known[1] for m in box):
            return None
        item = (text, delay_seconds)
        box[next(i for i, m in enumerate(box) if m is known[1])] = item
        self._sent[message.id] = (queue, item)
        return message

    def ensure_queues(self, names: Sequence[str]) -> None:
        for n in names:
            self.messages.setdefault(n, [])

    def drain(self, queue: str) -> list[tuple[str, float]]:
        out = self.messages.get(queue, [])
        self.messages[queue] = []
        return out

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[QueueMessage]:
        """Visible messages (those sent without delay), oldest first; receiving hides none (tests delete)."""
        visible = [(n, text) for n, (text, delay) in enumerate(self.messages.get(queue, [])) if delay <= 0]
        return [QueueMessage(f"{queue}:{n}:{text}", "receipt", text) for n, text in visible[:max_messages]]

    def delete(self, queue: str, message: QueueMessage) -> None:
        text = message.id.split(":", 2)[2]
        box = self.messages.get(queue, [])
        for i, (t, delay) in enumerate(box):
            if t == text and delay <= 0:
                del box[i]
                return


class MemoryPublisher:
    """Records what is published (into ``sink`` when given, e.g. a test's own list)."""

    def __init__(self, sink: list[DicomEvent] | None = None) -> None:
        self.events: list[DicomEvent] = sink if sink is not None else []
        self.calls = 0

    def publish(self, events: Sequence[DicomEvent]) -> None:
        self.calls += 1
        self.events.extend(events)

    def of_type(self, kind: str) -> list[DicomEvent]:
        return [e for e in self.events if str(e.type) == kind]


@dataclass
class Fakes:
    services: Services
    blobs: MemoryBlobStore
    tables: MemoryTableStore
    queues: MemoryQueues
    publisher: MemoryPublisher

    def requests(self) -> int:
        """Storage requests so far (blob + table + queue)."""
        return (sum(self.blobs.requests.values()) + sum(self.tables.requests.values())
                + sum(self.queues.requests.values()))


class MemoryAuditSink:
    """Where the fakes' audit writer appends (:mod:`shared.audit`): the records, in memory."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def append(self, path: str, data: bytes) -> None:
        import orjson

        with self._lock:
            self.lines.extend(orjson.loads(line) for line in data.splitlines() if line.strip())


AUDIT_SINK = MemoryAuditSink()


def audit_records() -> list[dict[str, Any]]:
    """Every audit record services over the fakes have written so far (all tests of the process)."""
    from shared import audit

    writer = audit._writers.get("memory")
    if writer is not None:
        writer.flush()
    return list(AUDIT_SINK.lines)


def _memory_audit() -> None:
    """The audit writer of the fakes' account (connection "memory"): appends to :data:`AUDIT_SINK`, flushed
    when a test asks (:func:`audit_records`)."""
    from shared import audit
    from shared.audit.writer import AuditWriter

    if "memory" not in audit._writers:
        audit._writers["memory"] = AuditWriter(AUDIT_SINK, name="fakes", spool_dir=None, flush_seconds=3600,
                                               start=False)


def memory_services(**env: str) -> Fakes:
    """Services over in-memory fakes; ``env`` holds settings (defaults: stable at once, no delay)."""
    _memory_audit()
    values = {"DicomStorage": "memory", "DICOMFLOW_STABLE_AGE_SECONDS": "0", "DICOMFLOW_SETTLE_DELAY_SECONDS": "0",
              "DICOMFLOW_CHANGEFEED_HORIZON_SECONDS": "0", **env}
    blobs, tables, queues, publisher = MemoryBlobStore(), MemoryTableStore(), MemoryQueues(), MemoryPublisher()
    svc = Services(settings=Settings.from_env(values), blobs=blobs, tables=tables, queues=queues,
                   publisher_factory=lambda: publisher)
    return Fakes(svc, blobs, tables, queues, publisher)


def replicate(src: MemoryBlobStore, dst: MemoryBlobStore, containers: Sequence[str]) -> int:
    """Object replication between two fake accounts, one pass: what changed in ``src``'s ``containers``
    is copied to the same containers of ``dst`` (content, Content-MD5 and metadata; the destination
    assigns its own ETag), and what was deleted there is deleted here. Returns the number of changes."""
    changes = 0
    for container in containers:
        names = {n for c, n in src.blobs if c == container}
        for name in sorted(names):
            s = src.blobs[(container, name)]
            d = dst.blobs.get((container, name))
            if d is None or d.data != s.data or d.metadata != s.metadata:
                dst.blobs[(container, name)] = _Stored(s.data, _etag(), dt.datetime.now(dt.UTC), s.md5,
                                                       dict(s.metadata))
                changes += 1
        for c, n in list(dst.blobs):
            if c == container and n not in names:
                del dst.blobs[(c, n)]
                changes += 1
    return changes
