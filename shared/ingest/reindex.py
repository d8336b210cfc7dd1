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
* Parallel: ``workers`` files at a time (threads waiting on storage), results taken in listing order so
  the saved position is always one below which everything is done.

**Since a time** (``since``): only the instances written (in the region that wrote them, by their
version stamp) at or after that time, found through the arrival marks of the hours since then
(:mod:`shared.ingest.arrivals`): the marked studies are listed, not the whole containers, so the work is
in proportion to the window, not to the archive. The marks replicate with the files, so ``reindex
--since T`` on a secondary indexes what replicated from a primary that is lost, without it: the
catch-up of the failover runbook (:func:`shared.ingest.follow.since_for_reindex` gives the ``T`` that
covers everything the follower had not indexed). Such a run is short and is not resumed: run it again
(what it did is ``current``). A file whose mark did not replicate (see :mod:`shared.ingest.arrivals`)
is found only by a run without ``since``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from shared.index import keys
from shared.index.store import utcnow
from shared.ingest import arrivals, follow
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.ports import BlobItem
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import STAMP, physical_store, stamp_of, stamp_time

log = logging.getLogger(__name__)

SAVE_EVERY: Final = 100
#: Files indexed at once (each waits on a blob read and a table write, not on this process's CPU).
WORKERS: Final = 16
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
        n += sum(1 for item in store.list(physical)
                 if item.name > after and not item.name.startswith(layout.ARRIVALS_PREFIX))
    return n


def _position(svc: Services, physical: str) -> str:
    row = svc.index.get_sync(keys.reindex_keys(physical))
    return str(row["after"]) if row is not None else ""


def changed_since(svc: Services, containers: Iterable[str], since: dt.datetime,
                  listed: Callable[[int], None] | None = None) -> dict[str, list[BlobItem]]:
    """The files of each container written (in the region that wrote them) at or after ``since``, found
    through the arrival marks of the hours since then (:mod:`shared.ingest.arrivals`): the marked studies
    are listed, and of their files those stamped since ``since`` (or, without a stamp, modified here since)
    are kept. ``listed(n)`` is told how many names each listing brought (for a progress display)."""
    store = physical_store(svc.blobs)
    t = since.timestamp()
    out: dict[str, list[BlobItem]] = {}
    for physical in containers:
        found = out[physical] = []
        studies = arrivals.studies_since(store, physical, t)
        if listed is not None and studies:
            listed(len(studies))
        for study in studies:
            n = 0
            for item in store.list(physical, layout.study_prefix(study), metadata=True):
                n += 1
                written = stamp_time(item.metadata.get(STAMP, ""))
                if written is not None:
                    if written >= t - follow.CLOCK_SKEW_SECONDS:
                        found.append(item)
                elif item.last_modified is None or item.last_modified >= since:
                    found.append(item)
            if listed is not None:
                listed(n)
    return out


def reindex(svc: Services, containers: Iterable[str] | None = None, *, restart: bool = False,
            rebuild: bool = False, since: dt.datetime | None = None,
            items: Mapping[str, Sequence[BlobItem]] | None = None, workers: int = WORKERS,
            progress: Progress | None = None) -> ReindexResult:
    """Index every archived instance of ``containers`` (default: :func:`archive_containers`), ``workers``
    at a time.

    ``since``: only files written into their container since then (:func:`changed_since`; or give the
    listing as ``items``), without saving or using positions. ``rebuild``: rewrite rows even where they
    describe the archived version already (after a change of the row schema); the instances keep their
    version, nothing is announced as changed."""
    svc.ensure_ready()
    names = list(containers if containers is not None else archive_containers(svc))
    if since is not None and items is None:
        items = changed_since(svc, names, since)
    store = physical_store(svc.blobs)
    ingest = IngestService(svc)
    result = ReindexResult()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="reindex") as pool:
        for physical in names:
            counts: Counter[str] = Counter()
            result.counts[physical] = counts
            pos = keys.reindex_keys(physical)
            if items is not None:
                listing: Iterable[BlobItem] = items.get(physical, ())
                after = ""
            else:
                after = "" if restart else _position(svc, physical)
                if after:
                    result.resumed[physical] = after
                    log.info("Reindex %s: resuming after %s", physical, after)
                listing = (item for item in store.list(physical, metadata=True)
                           if item.name > after and not item.name.startswith(layout.ARRIVALS_PREFIX))
            known: dict[tuple[str, str], str] | None = None
            if items is not None and not rebuild:
                # A short list: one query per study says which files are indexed already (instead of a row
                # read per file; most of a --since window is, the follower having been there).
                known = _known_stamps(pool, svc, items.get(physical, ()))
            index_one = functools.partial(_one, svc, ingest, physical, rebuild=rebuild, known=known)
            done = _in_order(pool, listing, index_one, window=max(1, workers) * 4)
            for n, (item, outcome) in enumerate(done, start=1):
                counts[outcome] += 1
                if progress is not None:
                    progress(physical, outcome)
                if items is None and n % SAVE_EVERY == 0:
                    svc.index.put_sync(pos, {"after": item.name, "at": utcnow()})
            if items is None:
                svc.index.delete_sync(pos)
            log.info("Reindex %s%s: %s", physical, f" since {since.isoformat()}" if since else "",
                     ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "empty")
    return result


def _in_order(pool: ThreadPoolExecutor, items: Iterable[BlobItem], fn: Callable[[BlobItem], str], *,
              window: int) -> Iterator[tuple[BlobItem, str]]:
    """``fn`` over ``items`` on ``pool``, at most ``window`` in flight; results in the order of ``items``
    (so whatever is yielded has everything before it done). A failure propagates when its turn comes."""
    pending: deque[tuple[BlobItem, Future[str]]] = deque()
    for item in items:
        pending.append((item, pool.submit(fn, item)))
        while len(pending) >= window:
            first, fut = pending.popleft()
            yield first, fut.result()
    while pending:
        first, fut = pending.popleft()
        yield first, fut.result()


def _known_stamps(pool: ThreadPoolExecutor, svc: Services, items: Iterable[BlobItem]) -> dict[tuple[str, str], str]:
    """The version stamps this region's index holds for the studies of ``items``, by (series, SOP): one
    query per study (pages of 1,000 rows), the studies side by side."""
    studies = sorted({item.name.split("/", 1)[0] for item in items if item.name.count("/") == 2})
    out: dict[tuple[str, str], str] = {}
    for rows in pool.map(svc.index.list_study_instances, studies):
        out.update({(r.series_instance_uid, r.sop_instance_uid): r.stamp for r in rows})
    return out


def _one(svc: Services, ingest: IngestService, physical: str, item: BlobItem, *, rebuild: bool,
         known: Mapping[tuple[str, str], str] | None = None) -> str:
    """One file: its row read first (or looked up in ``known``, the stamps of its study's rows)."""
    parts = item.name.split("/")
    if len(parts) != 3 or not parts[2].endswith(".dcm"):
        return SKIPPED
    study, series, sop = parts[0], parts[1], parts[2][: -len(".dcm")]
    version = stamp_of(item.metadata, item.last_modified, svc.topology.writer_of(physical))
    if known is not None:
        have = known.get((series, sop))
        if have is not None and have >= version:
            return CURRENT if have == version else str(IngestState.SUPERSEDED)
        blob = physical_store(svc.blobs).open_version(physical, item.name, item.etag)
        return str(ingest.index_archived(blob).state)  # new here or older here: as ingest, newer stamp wins
    got = svc.index.get_instance(study, series, sop)
    if got is not None and got.record.stamp >= version and not rebuild:
        return CURRENT if got.record.stamp == version else str(IngestState.SUPERSEDED)
    blob = physical_store(svc.blobs).open_version(physical, item.name, item.etag)
    if rebuild and got is not None and got.record.stamp == version:
        return str(ingest.rewrite_row(blob).state)
    return str(ingest.index_archived(blob).state)
