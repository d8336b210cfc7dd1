"""The devhost's blob watcher against Azurite: its cheap listing (List Blobs XML read directly) gives
exactly what the SDK's ``list_blobs`` gives, in one request per page, and the events it derives from
successive listings are Azure's: created, overwritten (new eTag), deleted."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient, ContentSettings

from devhost import watcher as watcher_mod
from devhost.azurite import Azurite
from devhost.watcher import PAGE, BlobWatcher


@pytest.fixture()
def counted(azurite: Azurite) -> tuple[BlobServiceClient, list[str]]:
    """A blob service client that records the query string of every request it sends."""
    seen: list[str] = []
    client = BlobServiceClient.from_connection_string(
        azurite.connection_string, raw_request_hook=lambda req: seen.append(req.http_request.url))
    return client, seen


def _sdk_listing(client: BlobServiceClient, container: str) -> dict[str, dict[str, Any]]:
    out = {}
    for b in client.get_container_client(container).list_blobs():
        out[b.name] = {"eTag": str(b.etag).strip('"'), "contentLength": b.size,
                       "contentType": b.content_settings.content_type,
                       "blobType": str(getattr(b.blob_type, "value", b.blob_type))}
    return out


def test_listing_matches_the_sdk_in_one_request_per_page(counted: tuple[BlobServiceClient, list[str]],
                                                          tmp_path: Path) -> None:
    client, seen = counted
    container = f"w{uuid.uuid4().hex[:12]}"
    cc = client.create_container(container)
    n = PAGE * 2 + 37
    for i in range(n):
        cc.upload_blob(f"study/{i:05d}.dcm", b"x" * (i % 7), content_settings=ContentSettings(
            content_type="application/dicom" if i % 2 else "application/octet-stream"))
    cc.get_blob_client("log/append.txt").create_append_blob()
    w = BlobWatcher(client, [container], tmp_path / "watcher.json", lambda events: None)

    seen.clear()
    listing = w._list(container)
    lists = [u for u in seen if "comp=list" in u]
    assert len(lists) == len(seen) == math.ceil((n + 1) / PAGE)  # one request per page, nothing else
    assert listing == _sdk_listing(client, container)
    assert listing["log/append.txt"]["blobType"] == "AppendBlob"
    assert listing["study/00003.dcm"]["contentType"] == "application/dicom"
    assert listing["study/00003.dcm"]["contentLength"] == 3


def test_events_follow_creates_overwrites_and_deletes(azurite: Azurite, tmp_path: Path) -> None:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = f"w{uuid.uuid4().hex[:12]}"
    cc = client.create_container(container)
    published: list[dict[str, Any]] = []
    w = BlobWatcher(client, [container], tmp_path / "watcher.json", published.extend)
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        cc.upload_blob(name, name.encode())

    w._emit(w._list_all())
    assert sorted(e["subject"].rsplit("/", 1)[1] for e in published) == ["a.dcm", "b.dcm", "c.dcm"]
    assert {e["eventType"] for e in published} == {"Microsoft.Storage.BlobCreated"}
    assert all(e["data"]["eTag"].startswith("0x") for e in published)

    published.clear()
    w._emit(w._list_all())
    assert published == []  # nothing changed, nothing announced

    cc.upload_blob("b.dcm", b"changed content", overwrite=True)
    cc.delete_blob("c.dcm")
    w._emit(w._list_all())
    kinds = sorted((e["eventType"].rsplit(".", 1)[1], e["subject"].rsplit("/", 1)[1]) for e in published)
    assert kinds == [("BlobCreated", "b.dcm"), ("BlobDeleted", "c.dcm")]
    created = next(e for e in published if e["eventType"].endswith("BlobCreated"))
    assert created["data"]["contentLength"] == len(b"changed content")


def test_falls_back_to_list_blobs_when_the_pager_keeps_no_xml(tmp_path: Path) -> None:
    """If a future SDK stops keeping each page's XML, the watcher lists with ``list_blobs`` instead of
    announcing nothing."""

    class Pager:
        continuation_token = None

        def __iter__(self) -> Pager:
            return self

        def __next__(self) -> list[str]:
            if getattr(self, "done", False):
                raise StopIteration
            self.done = True
            return ["x.dcm"]

    blob = SimpleNamespace(name="x.dcm", etag='"0x1"', size=5, blob_type="BlockBlob",
                           content_settings=SimpleNamespace(content_type="application/dicom"))
    container = SimpleNamespace(list_blob_names=lambda **_: SimpleNamespace(by_page=Pager),
                                list_blobs=lambda: [blob])
    service = SimpleNamespace(get_container_client=lambda name: container, url="http://127.0.0.1:1/acct",
                              account_name="acct")
    w = BlobWatcher(service, ["inbox"], tmp_path / "watcher.json", lambda events: None)
    assert w._list("inbox") == {"x.dcm": {"eTag": "0x1", "contentLength": 5, "contentType": "application/dicom",
                                          "blobType": "BlockBlob"}}
    with pytest.raises(watcher_mod._NoPageXml):
        watcher_mod._list_from_xml(container)
