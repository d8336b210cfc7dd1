"""The blob watcher: Azurite emits no Event Grid events, so poll the containers that system-topic
subscriptions refer to and announce changes as ``Microsoft.Storage.BlobCreated`` /
``BlobDeleted`` in Event Grid schema, with the shape Azure's storage system topic uses.

Only the watched containers are listed, comparing name + eTag: every 0.3 s while blobs arrive, backing
off to every 1.2 s while nothing changes. A listing costs time in the number of blobs, and an app that keeps
its uploads (as an inbox with a lifecycle rule does) makes the container grow, so two things keep the
watcher from stealing the app's time, which in Azure it would not (Event Grid's system topic runs
elsewhere):

* the listing reads the four fields it needs straight from the list response's XML
  (``list_blob_names().by_page()`` keeps each page's parsed XML) instead of building a
  ``BlobProperties`` per blob: 2,000 blobs cost 22 ms of host CPU instead of 380 ms (measured
  against Azurite); if a future SDK stops keeping the page, :meth:`BlobWatcher._list` falls back to
  ``list_blobs``;
* the listing goes in pages of ``PAGE`` blobs with a pause after each page of ``PACE`` times what the
  page took, so Azurite, which serves nothing else while it builds a page (about 50 ms for 1,000
  blobs), is never held for long and listing stays about a tenth of its time; a request that arrives
  meanwhile waits for one page at most.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devhost.state import read_json, write_json

log = logging.getLogger("devhost.watcher")
#: While nothing changes, the pace slows to this many times the interval.
IDLE_FACTOR = 4
#: Blobs per listing page, and the pause after a page in multiples of the time the page took.
PAGE = 200
PACE = 9

LOCAL_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost/providers/"
               "Microsoft.Storage/storageAccounts/{account}")


def blob_event(kind: str, account: str, account_url: str, container: str, name: str,
               props: dict[str, Any] | None) -> dict[str, Any]:
    """One storage event in Event Grid schema (``kind`` is ``BlobCreated`` or ``BlobDeleted``)."""
    props = props or {}
    data: dict[str, Any] = {
        "api": "PutBlob" if kind == "BlobCreated" else "DeleteBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
        "contentType": props.get("contentType") or "application/octet-stream",
        "blobType": props.get("blobType") or "BlockBlob",
        "url": f"{account_url.rstrip('/')}/{container}/{quote(name)}",
        "sequencer": f"{uuid.uuid4().int:032x}"[:32].upper(),
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    if kind == "BlobCreated":
        data["eTag"] = props.get("eTag", "")
        data["contentLength"] = props.get("contentLength", 0)
    return {
        "topic": LOCAL_TOPIC.format(account=account),
        "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
        "eventType": f"Microsoft.Storage.{kind}",
        "id": str(uuid.uuid4()),
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
        "eventTime": dt.datetime.now(dt.UTC).isoformat(),
    }


class BlobWatcher:
    def __init__(self, blob_service: Any, containers: list[str], state_file: Path,
                 publish: Callable[[list[dict[str, Any]]], None], *, interval: float = 0.3,
                 from_now: bool = False) -> None:
        self.service = blob_service
        self.containers = containers
        self.state_file = state_file
        self.publish = publish
        self.interval = interval
        self.account = getattr(blob_service, "account_name", None) or "devstoreaccount1"
        self.account_url = str(blob_service.url).rstrip("/")
        known = read_json(state_file)
        self.first_run = not isinstance(known, dict)
        self.known: dict[str, dict[str, dict[str, Any]]] = known if isinstance(known, dict) else {}
        self.from_now = from_now
        self.announced = 0

    def prepare(self) -> None:
        """Create the watched containers (uploads need them) and, with ``from_now``, adopt what exists."""
        from azure.core.exceptions import ResourceExistsError

        for c in self.containers:
            try:
                self.service.create_container(c)
            except ResourceExistsError:
                pass
        if self.from_now and self.first_run:
            for c in self.containers:
                self.known[c] = self._list(c)
            write_json(self.state_file, self.known)

    def _list(self, container: str) -> dict[str, dict[str, Any]]:
        """Name -> the properties a storage event carries, for every blob in ``container``."""
        from azure.core.exceptions import ResourceNotFoundError

        client = self.service.get_container_client(container)
        try:
            return _list_from_xml(client)
        except ResourceNotFoundError:
            return {}
        except _NoPageXml:
            pass
        out: dict[str, dict[str, Any]] = {}
        try:
            for b in client.list_blobs():
                out[b.name] = {
                    "eTag": str(b.etag or "").strip('"'),
                    "contentLength": int(b.size or 0),
                    "contentType": b.content_settings.content_type if b.content_settings else None,
                    "blobType": str(getattr(b.blob_type, "value", b.blob_type) or "BlockBlob"),
                }
        except ResourceNotFoundError:
            pass
        return out

    async def run(self, to_thread: Callable[[Callable[[], Any]], Any], stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set (call :meth:`prepare` first)."""
        wait = self.interval
        while not stopping.is_set():
            try:
                listing = await to_thread(self._list_all)
                before = self.announced
                self._emit(listing)
                # Back off while nothing changes; back to the fast pace as soon as something does.
                wait = self.interval if self.announced != before else min(wait * 1.5, self.interval * IDLE_FACTOR)
            except Exception as exc:  # noqa: BLE001 - the emulator may blink; keep watching
                log.warning("Blob watcher: listing failed (%s); retrying", type(exc).__name__)
            try:
                await asyncio.wait_for(stopping.wait(), wait)
            except TimeoutError:
                pass

    # Listing runs on a worker thread; publishing must run on the event loop (it schedules tasks).
    def _list_all(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {c: self._list(c) for c in self.containers}

    def _emit(self, listing: dict[str, dict[str, dict[str, Any]]]) -> None:
        events: list[dict[str, Any]] = []
        for c, now in listing.items():
            before = self.known.get(c, {})
            for name, props in now.items():
                if before.get(name, {}).get("eTag") != props["eTag"]:
                    events.append(blob_event("BlobCreated", self.account, self.account_url, c, name, props))
            for name, props in before.items():
                if name not in now:
                    events.append(blob_event("BlobDeleted", self.account, self.account_url, c, name, props))
        if not events:
            return
        self.publish(events)
        self.announced += len(events)
        self.known.update(listing)
        write_json(self.state_file, self.known)


class _NoPageXml(Exception):
    """The SDK's name-only pager no longer keeps the page's XML (``list_blobs`` is used instead)."""


def _list_from_xml(client: Any) -> dict[str, dict[str, Any]]:
    """Every blob's name, eTag, length, content type and blob type, read from the List Blobs XML.

    ``list_blob_names`` asks the service for the same listing as ``list_blobs`` but skips building
    model objects; its page iterator keeps each page's parsed XML element (``_response``), from which
    the four properties an event needs are read directly.
    """
    out: dict[str, dict[str, Any]] = {}
    pages = client.list_blob_names(results_per_page=PAGE).by_page()
    while True:
        started = time.monotonic()
        if next(pages, None) is None:
            break
        took = time.monotonic() - started
        root = getattr(pages, "_response", None)
        if root is None or not hasattr(root, "iter"):
            raise _NoPageXml
        for blob in root.iter("Blob"):
            props = blob.find("Properties")
            name = blob.findtext("Name")
            if name is None or props is None:
                raise _NoPageXml
            out[name] = {
                "eTag": (props.findtext("Etag") or "").strip('"'),
                "contentLength": int(props.findtext("Content-Length") or 0),
                "contentType": props.findtext("Content-Type") or None,
                "blobType": props.findtext("BlobType") or "BlockBlob",
            }
        if getattr(pages, "continuation_token", None):
            time.sleep(PACE * took)  # more pages follow: let the emulator serve others first
    return out
