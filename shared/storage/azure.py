"""The Azure adapters of the blob and queue ports (:mod:`shared.ports`), and request counting.

Connection strings are accepted only for Azurite; in Azure the clients use the app's
managed identity (``DicomStorage__clientId``). Every SDK client the composition root builds
carries a :class:`RequestCounter`, so tests can pin how many storage requests a step costs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline import PipelineRequest
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient, ContentSettings
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64EncodePolicy

from shared.errors import Transient
from shared.ports import Blob, BlobGone, BlobItem, BlobRange, QueueMessage, SentMessage

log = logging.getLogger(__name__)
COPY_WAIT_SECONDS = 60.0
#: Put Block From URL copies at most this much per block (service limit 4000 MiB).
FROM_URL_BLOCK = 4000 * 1024 * 1024
#: Where ranges are streamed through the client instead (Azurite implements no Put Block From URL):
#: bytes per staged block, and so the most a compose holds in memory.
STREAM_BLOCK = 8 * 1024 * 1024
#: A composed blob of only this many bytes (all in memory already) is written in one request.
SINGLE_PUT = 4 * 1024 * 1024
_STORAGE_SCOPE = "https://storage.azure.com/.default"


def credential(client_id: str | None) -> Any:  # Any: azure-identity credentials share no base class we need
    """The managed identity (user-assigned when a client id is given), else the developer's login."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


class RequestCounter:
    """Counts every HTTP request (retries included) by ``<service> <METHOD>``; thread-safe.
    ``hook(service)`` is installed as an SDK client's ``raw_request_hook``, which the SDK runs
    once per attempt."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def hook(self, service: str) -> Callable[[PipelineRequest[Any]], None]:
        def count(request: PipelineRequest[Any]) -> None:
            with self._lock:
                self.counts[f"{service} {request.http_request.method}"] += 1

        return count

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


class AzureBlob:
    """A :class:`shared.ports.Blob` over an SDK ``BlobClient``. The first response carries the
    blob's size, ETag, Content-MD5 and Last-Modified, so no separate properties request is made."""

    def __init__(self, client: BlobClient, *, etag: str | None = None) -> None:
        self.client = client
        self.container, self.name, self.url = str(client.container_name), str(client.blob_name), str(client.url)
        self.etag = etag
        self.content_md5: bytes | None = None
        self.last_modified: dt.datetime | None = None
        self.metadata: Mapping[str, str] = {}

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        kwargs: dict[str, Any] = {"offset": offset, "length": length}
        if self.etag:
            kwargs["etag"] = self.etag
            kwargs["match_condition"] = MatchConditions.IfNotModified
        try:
            downloader = self.client.download_blob(**kwargs)
        except ResourceNotFoundError:
            raise BlobGone(self.name) from None
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise BlobGone(self.name) from None
            # An empty blob has no byte 0: the service answers 416 InvalidRange.
            if exc.status_code == 416 and offset == 0:
                props = self.client.get_blob_properties()
                if int(props.size) == 0:
                    self.etag = self.etag or props.etag
                    return b"", 0
            raise
        data = downloader.read()
        props = downloader.properties
        if self.last_modified is None:
            self.etag = self.etag or props.etag
            settings = getattr(props, "content_settings", None)
            self.content_md5 = getattr(settings, "content_md5", None) if settings else None
            self.last_modified = props.last_modified
            self.metadata = dict(getattr(props, "metadata", None) or {})
        return data, _total_size(props, len(data), offset)


def _total_size(props: Any, got: int, offset: int) -> int:  # Any: the SDK's BlobProperties
    """The blob's total size: ``Content-Range: bytes a-b/TOTAL`` (``size`` is the range's)."""
    content_range = getattr(props, "content_range", None)
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        if total.isdigit():
            return int(total)
    return offset + got if got else int(props.size)


class AzureBlobStore:
    """A :class:`shared.ports.BlobStore` over an SDK ``BlobServiceClient``."""

    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service
        #: Whether the service implements Put Block From URL (learnt on first use; Azurite does not).
        self.from_url = True

    def open(self, container: str, path: str) -> AzureBlob:
        return AzureBlob(self.service.get_blob_client(container, path))

    def open_version(self, container: str, path: str, etag: str) -> AzureBlob:
        return AzureBlob(self.service.get_blob_client(container, path), etag=etag)

    def read(self, container: str, path: str) -> bytes | None:
        try:
            return bytes(self.service.get_blob_client(container, path).download_blob().read())
        except ResourceNotFoundError:
            return None

    def write(self, container: str, path: str, data: bytes | IO[bytes], *, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None) -> str:
        md5 = hashlib.md5(data).digest() if isinstance(data, bytes) else None  # noqa: S324 - Content-MD5
        settings = (ContentSettings(content_type=content_type, content_md5=bytearray(md5) if md5 else None)
                    if (content_type or md5) else None)
        streamed: dict[str, Any] = {}
        if not isinstance(data, bytes) and hasattr(data, "fileno"):  # a file: its length, blocks in parallel
            streamed = {"length": os.fstat(data.fileno()).st_size - data.tell(), "max_concurrency": 4}
        result = self.service.get_blob_client(container, path).upload_blob(
            data, overwrite=True, content_settings=settings, metadata=dict(metadata) if metadata else None,
            **streamed)
        return str(result.get("etag", ""))

    def create(self, container: str, path: str, data: bytes | IO[bytes], *, content_md5: bytes,
               content_type: str | None = None, metadata: Mapping[str, str] | None = None) -> str | None:
        settings = ContentSettings(content_type=content_type, content_md5=bytearray(content_md5))
        streamed: dict[str, Any] = {}
        if not isinstance(data, bytes) and hasattr(data, "fileno"):
            streamed = {"length": os.fstat(data.fileno()).st_size - data.tell(), "max_concurrency": 4}
        try:
            result = self.service.get_blob_client(container, path).upload_blob(
                data, overwrite=False, content_settings=settings, metadata=dict(metadata) if metadata else None,
                **streamed)
        except ResourceExistsError:
            return None
        return str(result.get("etag", ""))

    def copy(self, source: Blob, container: str, path: str, *, metadata: Mapping[str, str] | None = None,
             if_absent: bool = False) -> bool:
        """Copy within the account and wait (bounded) until it is done. ``source`` is a blob of this
        store (its URL is what the service copies from)."""
        dest = self.service.get_blob_client(container, path)
        conditions: dict[str, Any] = {}
        if getattr(source, "etag", None):  # copy the version that was read, or fail (412) if it changed
            conditions = {"source_etag": source.etag, "source_match_condition": MatchConditions.IfNotModified}
        if if_absent:
            conditions["match_condition"] = MatchConditions.IfMissing  # If-None-Match: *
        try:
            props = dest.start_copy_from_url(source.url, metadata=dict(metadata) if metadata else None,
                                             **conditions)
        except ResourceNotFoundError:
            raise BlobGone(source.name) from None
        except HttpResponseError as exc:
            code = str(getattr(exc, "error_code", "") or "")
            if if_absent and (exc.status_code == 409 or code in ("ConditionNotMet", "TargetConditionNotMet")):
                return False  # the target exists
            if exc.status_code == 412:  # SourceConditionNotMet: the source changed since it was read
                raise BlobGone(source.name) from None
            raise
        status = props.get("copy_status")
        deadline = time.monotonic() + COPY_WAIT_SECONDS
        delay = 0.05
        while status == "pending":
            if time.monotonic() > deadline:
                raise Transient(f"Copy to {container}/{path} still pending after {COPY_WAIT_SECONDS:.0f} s; "
                                "will retry.")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            status = dest.get_blob_properties().copy.status
        if status not in ("success", None):
            raise Transient(f"Copy to {container}/{path} ended with status {status}; will retry.")
        return True

    def delete(self, container: str, path: str, *, etag: str | None = None) -> bool:
        client = self.service.get_blob_client(container, path)
        try:
            if etag:
                client.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
            else:
                client.delete_blob()
        except ResourceNotFoundError:
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:  # replaced since it was read: not ours to delete
                return False
            raise
        return True

    def compose(self, container: str, path: str, parts: Sequence[bytes | BlobRange], *,
                content_type: str | None = None, metadata: Mapping[str, str] | None = None,
                if_match: str | None = None) -> str:
        """Stage each part as blocks, then commit them in one request (conditional on ``if_match``).
        Ranges are staged with Put Block From URL (the service copies them; nothing passes through
        this process); where the service does not implement it (Azurite), they are read in
        :data:`STREAM_BLOCK` chunks, pinned to the source's version, and staged from here."""
        dest = self.service.get_blob_client(container, path)
        conditions: dict[str, Any] = {}
        if if_match:
            conditions = {"etag": if_match, "match_condition": MatchConditions.IfNotModified}
        settings = ContentSettings(content_type=content_type) if content_type else None
        inline = [bytes(p) for p in parts if isinstance(p, bytes | bytearray)]
        if len(inline) == len(parts) and sum(len(p) for p in inline) <= SINGLE_PUT:
            data = b"".join(inline)  # small: one Put Blob (with its Content-MD5)
            settings = ContentSettings(content_type=content_type, content_md5=bytearray(
                hashlib.md5(data).digest()))  # noqa: S324 - Content-MD5, not security
            try:
                result = dest.upload_blob(data, overwrite=True, content_settings=settings,
                                          metadata=dict(metadata) if metadata else None, **conditions)
            except (ResourceNotFoundError, ResourceModifiedError):
                raise BlobGone(path) from None
            return str(result.get("etag", ""))
        ids: list[str] = []

        def next_id() -> str:  # every id of a blob has the same length
            return base64.b64encode(f"dicomflow-{len(ids):08d}".encode()).decode()

        for part in parts:
            if isinstance(part, bytes | bytearray):
                if part:
                    dest.stage_block(next_id(), bytes(part))
                    ids.append(next_id())
                continue
            offset, end = part.offset, part.offset + part.length
            while offset < end:
                n = min(FROM_URL_BLOCK, end - offset)
                if self.from_url and self._stage_from_url(dest, next_id(), part.source, offset, n):
                    ids.append(next_id())
                    offset += n
                    continue
                for at in range(offset, offset + n, STREAM_BLOCK):
                    data, _ = part.source.read_range(at, min(STREAM_BLOCK, offset + n - at))
                    if not data:
                        raise BlobGone(part.source.name)
                    dest.stage_block(next_id(), data)
                    ids.append(next_id())
                offset += n
        try:
            result = dest.commit_block_list([BlobBlock(i) for i in ids], content_settings=settings,
                                            metadata=dict(metadata) if metadata else None, **conditions)
        except ResourceNotFoundError:
            raise BlobGone(path) from None
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise BlobGone(path) from None
            raise
        return str(result.get("etag", ""))

    def _stage_from_url(self, dest: BlobClient, block: str, source: Blob, offset: int, length: int) -> bool:
        kwargs: dict[str, Any] = {}
        credential: Any = getattr(self.service, "credential", None)
        if credential is not None and hasattr(credential, "get_token"):  # Entra ID: authorize the source read too
            kwargs["source_authorization"] = f"Bearer {credential.get_token(_STORAGE_SCOPE).token}"
        try:
            dest.stage_block_from_url(block, source.url, source_offset=offset, source_length=length, **kwargs)
        except HttpResponseError as exc:
            if str(getattr(exc, "error_code", "") or "") == "APINotImplemented" or exc.status_code == 501:
                self.from_url = False
                log.info("Put Block From URL is not implemented by this storage service; ranges are streamed")
                return False
            if exc.status_code in (404, 412):
                raise BlobGone(source.name) from None
            raise
        return True

    def list(self, container: str, prefix: str = "", *, metadata: bool = False) -> Iterator[BlobItem]:
        include = ["metadata"] if metadata else None
        for b in self.service.get_container_client(container).list_blobs(name_starts_with=prefix or None,
                                                                        include=include):
            settings = getattr(b, "content_settings", None)
            yield BlobItem(b.name, int(b.size), str(b.etag or ""), b.last_modified,
                           getattr(settings, "content_md5", None) if settings else None, dict(b.metadata or {}))

    def properties(self, container: str, path: str) -> BlobItem | None:
        try:
            p = self.service.get_blob_client(container, path).get_blob_properties()
        except ResourceNotFoundError:
            return None
        settings = getattr(p, "content_settings", None)
        return BlobItem(path, int(p.size), str(p.etag or ""), p.last_modified,
                        getattr(settings, "content_md5", None) if settings else None, dict(p.metadata or {}))

    def download_to(self, container: str, path: str, out: IO[bytes]) -> None:
        self.service.get_blob_client(container, path).download_blob(max_concurrency=4).readinto(out)

    def ensure_containers(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                self.service.create_container(name)
            except ResourceExistsError:
                pass


class AzureQueues:
    """The :class:`shared.ports.Queues` port over an SDK ``QueueServiceClient``. Messages are
    base64 (the Functions queue trigger's default); queue clients do not inherit the service
    client's encode policy, so each gets it explicitly."""

    def __init__(self, service: QueueServiceClient) -> None:
        self.service = service
        self._clients: dict[str, Any] = {}

    def _client(self, queue: str) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:
            client = self.service.get_queue_client(queue, message_encode_policy=TextBase64EncodePolicy())
            self._clients[queue] = client
        return client

    def send(self, queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
        sent = self._client(queue).send_message(text, visibility_timeout=max(0, round(delay_seconds)))
        return SentMessage(str(sent.id), str(sent.pop_receipt)) if sent.id and sent.pop_receipt else None

    def update(self, queue: str, message: SentMessage, text: str, *, delay_seconds: float) -> SentMessage | None:
        try:
            got = self._client(queue).update_message(message.id, message.pop_receipt, content=text,
                                                     visibility_timeout=max(0, round(delay_seconds)))
        except ResourceNotFoundError:
            return None  # received meanwhile (a new pop receipt) or already deleted
        except HttpResponseError as exc:
            if exc.status_code in (400, 404):  # PopReceiptMismatch: someone received it meanwhile
                return None
            raise
        return SentMessage(message.id, str(got.pop_receipt)) if got.pop_receipt else None

    def create(self, queue: str) -> None:
        try:
            self.service.create_queue(queue)
        except ResourceExistsError:
            pass

    def ensure_queues(self, names: Sequence[str]) -> None:
        for name in names:
            self.create(name)

    def receive(self, queue: str, *, max_messages: int, visibility_timeout: float) -> list[QueueMessage]:
        import base64
        import binascii

        # Read raw: messages the Functions host writes are base64 text, others may not be.
        client = self.service.get_queue_client(queue)
        try:
            got = list(client.receive_messages(max_messages=max_messages,
                                               visibility_timeout=max(1, round(visibility_timeout))))
        except ResourceNotFoundError:
            return []
        out = []
        for m in got:
            raw = str(m.content or "")
            try:
                text = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                text = raw
            out.append(QueueMessage(str(m.id), str(m.pop_receipt), text, int(m.dequeue_count or 1), m.inserted_on))
        return out

    def delete(self, queue: str, message: QueueMessage) -> None:
        try:
            self.service.get_queue_client(queue).delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:
            pass  # already gone (another run deleted it)
