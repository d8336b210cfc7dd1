"""Two regions that serve each other's archive: which physical container a logical one is, version
stamps, and the blob store view that routes every call accordingly.

A region of a pair (``DICOMFLOW_REGION``, :class:`shared.config.RegionSettings`) writes the regional
containers (:data:`shared.storage.layout.REGIONAL`: archive, quarantine, configuration) under its own
name, ``dicom-archive-<key>``; Azure object replication copies them to the peer region, where they are
read-only (a write there fails with 409). Nothing the app writes ever goes to a replica, so the app
never needs the replication policy removed to keep working when the other region is lost.

The services keep using logical names (``layout.ARCHIVE``); :class:`RegionalBlobStore` maps them:

* writes and copies go to this region's own container, with a version :func:`stamp` in the blob's
  metadata unless the caller gave one (object replication copies metadata, so the stamp is the same
  in every region: a region-independent version id, unlike the ETag, which each account assigns);
* reads try this region's own container first, then the peers' replicas. When the same SOP Instance
  has been written in both regions, the newer stamp wins: the region that indexes the newer version
  copies it into its own container (:meth:`shared.ingest.service.IngestService.index_archived`), so
  "own first" always serves what the index describes;
* configuration documents are read by newest stamp among all copies (an administrator may write in
  either region; both then read the same document);
* listings merge own and replica containers (own wins on a name); deletes remove every copy this
  account holds (deleting from a replication destination is allowed).

With no region key (one region on its own) nothing is mapped and nothing is stamped beyond what the
services pass: :class:`RegionalBlobStore` is not used at all.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Final

from shared.ports import Blob, BlobGone, BlobItem, BlobRange, BlobStore
from shared.storage import layout

#: Blob metadata key of the version stamp (metadata names are C# identifiers: letters, digits, ``_``).
STAMP: Final = "dicomflow_stamp"
#: Blob metadata key naming the bulk update operation that wrote an archived version (routing's
#: ``resendUpdates`` sends such a version again).
OPERATION_META: Final = "dicomflow_operation"
_REMEMBER: Final = 10_000


def stamp(region: str, at: float | None = None) -> str:
    """A version stamp: ``<epoch milliseconds, 13 digits>-<region key>``. Stamps sort by time, then
    by region (a deterministic tie-break), as plain strings."""
    ms = round((time.time() if at is None else at) * 1000)
    return f"{ms:013d}-{region}"


def stamp_time(value: str) -> float | None:
    """When the version stamped ``value`` was written (epoch seconds), or None if it is no stamp."""
    ms = value.split("-", 1)[0]
    return int(ms) / 1000.0 if ms.isdigit() else None


def stamp_region(value: str) -> str:
    """The region that wrote the version stamped ``value`` ("" if unknown or one region)."""
    return value.split("-", 1)[1] if "-" in value else ""


def stamp_of(metadata: Mapping[str, str], modified: dt.datetime | None, region: str) -> str:
    """The stamp in a blob's metadata, or one made from its Last-Modified (blobs archived before
    stamps existed; ``region`` is the region whose container holds it)."""
    got = metadata.get(STAMP)
    if got:
        return got
    return stamp(region, modified.timestamp() if modified else 0.0)


@dataclass(frozen=True, slots=True)
class Topology:
    """This region's key and its peers' (empty key: one region, no mapping)."""

    region: str = ""
    peers: tuple[str, ...] = ()

    @property
    def paired(self) -> bool:
        return bool(self.region and self.peers)

    def own(self, container: str) -> str:
        """Where this region writes ``container`` (its logical name if not regional)."""
        return layout.regional(container, self.region) if container in layout.REGIONAL else container

    def replicas(self, container: str) -> tuple[str, ...]:
        """The peers' copies of ``container`` held in this account (read-only replication destinations)."""
        if container not in layout.REGIONAL or not self.region:
            return ()
        return tuple(layout.regional(container, p) for p in self.peers)

    def candidates(self, container: str) -> tuple[str, ...]:
        return (self.own(container), *self.replicas(container))

    def writer_of(self, physical: str) -> str:
        """The region whose regional container ``physical`` is ("" for a local container)."""
        for region in (self.region, *self.peers):
            if region and any(physical == layout.regional(c, region) for c in layout.REGIONAL):
                return region
        return ""

    def new_stamp(self, at: float | None = None) -> str:
        return stamp(self.region, at)

    def containers(self) -> tuple[str, ...]:
        """What :meth:`BlobStore.ensure_containers` creates for this region (replicas are infra's)."""
        if not self.region:
            return layout.CONTAINERS
        return (*layout.LOCAL, *(self.own(c) for c in layout.REGIONAL))


class FallbackBlob:
    """A :class:`shared.ports.Blob` over the copies of one path in several containers: the first read
    takes the first copy that exists and pins every later read to it (its attributes are then that
    copy's)."""

    def __init__(self, candidates: Sequence[Blob], on_found: Callable[[str], None] | None = None) -> None:
        self._candidates = list(candidates)
        self._chosen: Blob | None = None
        self._on_found = on_found
        self._take(self._candidates[0])

    def _take(self, blob: Blob) -> None:
        self.container, self.name, self.url = blob.container, blob.name, blob.url
        self.etag, self.content_md5, self.last_modified = blob.etag, blob.content_md5, blob.last_modified
        self.metadata: Mapping[str, str] = blob.metadata

    def read_range(self, offset: int, length: int) -> tuple[bytes, int]:
        if self._chosen is not None:
            got = self._chosen.read_range(offset, length)
            self._take(self._chosen)
            return got
        for blob in self._candidates:
            try:
                got = blob.read_range(offset, length)
            except BlobGone:
                continue
            self._chosen = blob
            self._take(blob)
            if self._on_found is not None:
                self._on_found(blob.container)
            return got
        raise BlobGone(self._candidates[0].name)


class RegionalBlobStore:
    """A :class:`shared.ports.BlobStore` that maps logical container names to this region's physical
    ones (see the module docstring). ``inner`` is the account's store; ``topology`` says who is who."""

    def __init__(self, inner: BlobStore, topology: Topology) -> None:
        self.inner = inner
        self.topology = topology
        self._where: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    # -- where a path was last found (so the next read of it asks that container first) ------------
    def _remember(self, container: str, path: str, physical: str) -> None:
        with self._lock:
            self._where[(container, path)] = physical
            self._where.move_to_end((container, path))
            while len(self._where) > _REMEMBER:
                self._where.popitem(last=False)

    def _ordered(self, container: str, path: str) -> tuple[str, ...]:
        names = self.topology.candidates(container)
        with self._lock:
            hit = self._where.get((container, path))
        if hit in names and hit != names[0]:
            return (hit, *(n for n in names if n != hit))
        return names

    def _single(self, container: str) -> bool:
        return len(self.topology.candidates(container)) == 1

    # -- reads ----------------------------------------------------------------------------------
    def open(self, container: str, path: str) -> Blob:
        if self._single(container):
            return self.inner.open(self.topology.own(container), path)
        return FallbackBlob([self.inner.open(c, path) for c in self._ordered(container, path)],
                            lambda physical: self._remember(container, path, physical))

    def open_version(self, container: str, path: str, etag: str) -> Blob:
        if self._single(container):
            return self.inner.open_version(self.topology.own(container), path, etag)
        return FallbackBlob([self.inner.open_version(c, path, etag) for c in self._ordered(container, path)],
                            lambda physical: self._remember(container, path, physical))

    def read(self, container: str, path: str) -> bytes | None:
        if self._single(container):
            return self.inner.read(self.topology.own(container), path)
        if container == layout.CONFIG:
            found = self._newest(container, path)
            return self.inner.read(found[0], path) if found else None
        for physical in self._ordered(container, path):
            data = self.inner.read(physical, path)
            if data is not None:
                self._remember(container, path, physical)
                return data
        return None

    def properties(self, container: str, path: str) -> BlobItem | None:
        if self._single(container):
            return self.inner.properties(self.topology.own(container), path)
        if container == layout.CONFIG:
            found = self._newest(container, path)
            return found[1] if found else None
        for physical in self._ordered(container, path):
            item = self.inner.properties(physical, path)
            if item is not None:
                self._remember(container, path, physical)
                return item
        return None

    def locate(self, container: str, path: str) -> tuple[str, BlobItem] | None:
        """The physical container that serves ``path`` and its properties (own first), or None."""
        for physical in self._ordered(container, path):
            item = self.inner.properties(physical, path)
            if item is not None:
                self._remember(container, path, physical)
                return physical, item
        return None

    def _newest(self, container: str, path: str) -> tuple[str, BlobItem] | None:
        """Among every copy, the one with the newest stamp (configuration documents)."""
        best: tuple[str, str, BlobItem] | None = None
        for physical in self.topology.candidates(container):
            item = self.inner.properties(physical, path)
            if item is None:
                continue
            key = stamp_of(item.metadata, item.last_modified, self.topology.writer_of(physical))
            if best is None or key > best[0]:
                best = (key, physical, item)
        return (best[1], best[2]) if best else None

    def list(self, container: str, prefix: str = "", *, metadata: bool = False) -> Iterator[BlobItem]:
        if self._single(container):
            yield from self.inner.list(self.topology.own(container), prefix, metadata=metadata)
            return
        own, *replicas = self.topology.candidates(container)
        seen: set[str] = set()
        for item in self.inner.list(own, prefix, metadata=metadata):
            seen.add(item.name)
            yield item
        for physical in replicas:
            for item in self.inner.list(physical, prefix, metadata=metadata):
                if item.name not in seen:
                    seen.add(item.name)
                    yield item

    def download_to(self, container: str, path: str, out: IO[bytes]) -> None:
        if self._single(container):
            self.inner.download_to(self.topology.own(container), path, out)
            return
        found = self.locate(container, path)
        if found is None:
            raise BlobGone(path)
        self.inner.download_to(found[0], path, out)

    # -- writes ---------------------------------------------------------------------------------
    def _stamped(self, container: str, metadata: Mapping[str, str] | None) -> dict[str, str] | None:
        if container not in layout.REGIONAL:
            return dict(metadata) if metadata is not None else None
        out = dict(metadata or {})
        out.setdefault(STAMP, self.topology.new_stamp())
        return out

    def write(self, container: str, path: str, data: bytes | IO[bytes], *, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None) -> str:
        return self.inner.write(self.topology.own(container), path, data, content_type=content_type,
                                metadata=self._stamped(container, metadata))

    def create(self, container: str, path: str, data: bytes | IO[bytes], *, content_md5: bytes,
               content_type: str | None = None, metadata: Mapping[str, str] | None = None) -> str | None:
        etag = self.inner.create(self.topology.own(container), path, data, content_md5=content_md5,
                                 content_type=content_type, metadata=self._stamped(container, metadata))
        if etag is not None:
            self._remember(container, path, self.topology.own(container))
        return etag

    def copy(self, source: Blob, container: str, path: str, *, metadata: Mapping[str, str] | None = None,
             if_absent: bool = False) -> bool:
        done = self.inner.copy(source, self.topology.own(container), path,
                               metadata=self._stamped(container, metadata), if_absent=if_absent)
        if done:
            self._remember(container, path, self.topology.own(container))
        return done

    def compose(self, container: str, path: str, parts: Sequence[bytes | BlobRange], *,
                content_type: str | None = None, metadata: Mapping[str, str] | None = None,
                if_match: str | None = None) -> str:
        etag = self.inner.compose(self.topology.own(container), path, parts, content_type=content_type,
                                  metadata=self._stamped(container, metadata), if_match=if_match)
        self._remember(container, path, self.topology.own(container))
        return etag

    def delete(self, container: str, path: str, *, etag: str | None = None) -> bool:
        """Every copy this account holds (a replica too: deletes are allowed on replication destinations)."""
        gone = False
        for physical in self.topology.candidates(container):
            gone = self.inner.delete(physical, path, etag=etag) or gone
        return gone

    def ensure_containers(self, names: Sequence[str]) -> None:
        self.inner.ensure_containers(list(dict.fromkeys(self.topology.own(n) for n in names)))


def physical_store(store: BlobStore) -> BlobStore:
    """The account's own store under a :class:`RegionalBlobStore` (physical container names), or ``store``."""
    return store.inner if isinstance(store, RegionalBlobStore) else store
