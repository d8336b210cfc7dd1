"""Rebuild a region's index from the archive it holds (``python -m tools reindex``).

What a region's index describes is derived from its archive: this region's own archive container and,
in a region of a pair, the peer region's replica here. ``reindex`` walks those containers and indexes
every instance the way ingest does, without the copy
(:meth:`shared.ingest.service.IngestService.index_archived`). Uses: a secondary region whose index
lags what replication brought (the follower of the peer's change feed missed something, or the
region was deployed after the archive was filled), a restore of the index tables, a schema change
of the rows (``rebuild=True`` rewrites every row from its file).

* Resumable: the position in each container (blobs are listed in name order) is saved every
  :data:`SAVE_EVERY` files in the sync table; an interrupted run resumes after it (``restart=True``
  starts over). A finished container clears its position.
* Idempotent and cheap when nothing changed: an instance whose row already describes the archived
  version (the same version stamp) costs one table read; otherwise one header read and one table
  transaction, as ingest.
* Safe while ingest runs: every write is conditional, and an older archived version never replaces
  a newer row (the newer version stamp wins); the studies it touched are settled as after ingest.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.index import keys
from shared.index.store import utcnow
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.ports import BlobItem
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import physical_store, stamp_of

log = logging.getLogger(__name__)

SAVE_EVERY: Final = 100
#: The outcome of a file whose row already describes it (no header read, nothing written).
CURRENT: Final = "current"
#: Not an archived instance (a name that is not ``<study>/<series>/<sop>.dcm``).
SKIPPED: Final = "skipped"

Progress = Callable[[str, str], None]


@dataclass(slots=True)
class ReindexResult:
    """Outcomes per container (``archived``, ``updated``, ``current``, ``duplicate``, ``superseded``,
    ``refused``, ``gone``, ``skipped``) and whether each resumed an earlier run."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    resumed: dict[str, str] = field(default_factory=dict)

    def total(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for c in self.counts.values():
            out.update(c)
        return out


def archive_containers(svc: Services) -> tuple[str, ...]:
    """The archive containers this region's account holds: its own, then its peers' replicas."""
    return svc.topology.candidates(layout.ARCHIVE)


def pending_files(svc: Services, containers: Iterable[str], *, restart: bool = False) -> int:
    """How many files a run would look at (for a progress bar): one listing request per 5,000."""
    store = physical_store(svc.blobs)
    n = 0
    for physical in containers:
        after = "" if restart else _position(svc, physical)
        n += sum(1 for item in store.list(physical) if item.name > after)
    return n


def _position(svc: Services, physical: str) -> str:
    row = svc.index.get_sync(keys.reindex_keys(physical))
    return str(row["after"]) if row is not None else ""


def reindex(svc: Services, containers: Iterable[str] | None = None, *, restart: bool = False,
            rebuild: bool = False, progress: Progress | None = None) -> ReindexResult:
    """Index every archived instance of ``containers`` (default: :func:`archive_containers`).

    ``rebuild``: rewrite rows even where they describe the archived version already (after a change
    of the row schema); the instances keep their version, nothing is announced as changed."""
    svc.ensure_ready()
    store = physical_store(svc.blobs)
    ingest = IngestService(svc)
    result = ReindexResult()
    for physical in containers if containers is not None else archive_containers(svc):
        counts: Counter[str] = Counter()
        result.counts[physical] = counts
        pos = keys.reindex_keys(physical)
        after = "" if restart else _position(svc, physical)
        if after:
            result.resumed[physical] = after
            log.info("Reindex %s: resuming after %s", physical, after)
        done = 0
        for item in store.list(physical, metadata=True):
            if item.name <= after:
                continue
            outcome = _one(svc, ingest, physical, item, rebuild=rebuild)
            counts[outcome] += 1
            if progress is not None:
                progress(physical, outcome)
            done += 1
            if done % SAVE_EVERY == 0:
                svc.index.put_sync(pos, {"after": item.name, "at": utcnow()})
        svc.index.delete_sync(pos)
        log.info("Reindex %s: %s", physical, ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "empty")
    return result


def _one(svc: Services, ingest: IngestService, physical: str, item: BlobItem, *, rebuild: bool) -> str:
    parts = item.name.split("/")
    if len(parts) != 3 or not parts[2].endswith(".dcm"):
        return SKIPPED
    study, series, sop = parts[0], parts[1], parts[2][: -len(".dcm")]
    version = stamp_of(item.metadata, item.last_modified, svc.topology.writer_of(physical))
    got = svc.index.get_instance(study, series, sop)
    if got is not None and got.record.stamp >= version and not rebuild:
        return CURRENT if got.record.stamp == version else str(IngestState.SUPERSEDED)
    blob = physical_store(svc.blobs).open_version(physical, item.name, item.etag)
    if rebuild and got is not None and got.record.stamp == version:
        return str(ingest.rewrite_row(blob).state)
    return str(ingest.index_archived(blob).state)
