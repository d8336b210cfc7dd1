"""Follow the peer region's change feed: index what object replication brought here.

Azure raises no ``BlobCreated`` event for a blob that object replication writes: Event Grid's blob
events come from clients' calls of the Blob REST API (PutBlob, PutBlockList, CopyBlob), and
replication is the storage service's own doing (docs/deploy.md cites the sources). So a region
learns of the peer's instances from the peer's change feed (:mod:`shared.index.changefeed`), read
straight from the peer's table endpoint with this region's identity (Storage Table Data Reader on
the peer's account: no HTTP call through Front Door, no token, no key). A timer runs
:meth:`Follower.run` every few seconds:

1. entries whose file had not been replicated yet (replication is asynchronous, with no SLA) are
   tried again; after :data:`GIVE_UP_SECONDS` they are dropped with a warning (``reindex`` is the
   safety net: it indexes whatever the archive holds);
2. the entries after the cursor, at most ``DICOMFLOW_FOLLOW_BATCH`` per run: a create or update
   indexes the replica here (:meth:`shared.ingest.service.IngestService.index_archived`: the ingest
   path without the copy; the newer version stamp wins); a file not here yet is remembered (1.); a
   delete is applied here unless this region holds a newer version;
3. the cursor (the last sequence handled) is saved.

Entries of this region's own origin are skipped: the peer's feed lists what it indexed from our
archive too. Each replicated instance costs this region one header read and one table transaction
(plus its study's settle run), and the peer's ingest nothing. An unreachable peer (the region is
lost) ends the run with a warning; the next run resumes at the cursor.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from shared.index import changefeed, keys
from shared.index.records import Action, ChangeEntry
from shared.index.sequence import time_of_seq
from shared.index.store import FeedEntry, IndexStore, utcnow
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState, Outcome
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import physical_store, stamp

log = logging.getLogger(__name__)

#: A peer entry whose file has not arrived after this long is dropped (reindex finds the file later).
GIVE_UP_SECONDS: Final = 24 * 3600.0


@dataclass(slots=True)
class FollowResult:
    """What one run did, by outcome (``archived``, ``updated``, ``duplicate``, ``superseded``, ``waiting``,
    ``deleted``, ``skipped``, ``refused``, ``dropped``), and where the cursor stands."""

    peer: str
    counts: Counter[str] = field(default_factory=Counter)
    cursor: int = 0
    error: str | None = None

    @property
    def indexed(self) -> int:
        return self.counts["archived"] + self.counts["updated"]


class Follower:
    def __init__(self, services: Services, peer_index: IndexStore | None = None) -> None:
        self.svc = services
        self.peer_index = peer_index if peer_index is not None else services.peer_index
        self.peer = services.settings.region.peer
        self.ingest = IngestService(services)

    def run(self) -> FollowResult | None:
        """One pass (the timer's body). None when this region follows no peer."""
        if self.peer_index is None or not self.peer:
            return None
        from azure.core.exceptions import AzureError  # an unreachable peer region surfaces as this

        svc = self.svc
        svc.ensure_ready()
        result = FollowResult(self.peer)
        try:
            self._retry_waiting(result)
            self._follow(result)
        except AzureError as exc:
            result.error = type(exc).__name__
            log.warning("Follow %s: the peer region's change feed cannot be read (%s); the next run resumes",
                        self.peer, result.error)
        if result.counts:
            log.info("Follow %s: %s (cursor %d)", self.peer,
                     ", ".join(f"{n} {k}" for k, n in sorted(result.counts.items())), result.cursor)
        return result

    # -- steps -------------------------------------------------------------------------------------
    def _follow(self, result: FollowResult) -> None:
        assert self.peer_index is not None
        svc = self.svc
        cursor_keys = keys.follow_cursor_keys(self.peer)
        row = svc.index.get_sync(cursor_keys)
        last = int(row["seq"]) if row is not None else 0
        result.cursor = last
        start = dt.datetime.fromtimestamp(time_of_seq(last), dt.UTC) if last else None
        handled = 0
        for entry in changefeed.entries(self.peer_index, start, None,
                                        horizon=svc.settings.changefeed_horizon_seconds):
            if entry.seq <= last:
                continue
            if handled >= svc.settings.region.follow_batch:
                break
            result.counts[self._handle(entry)] += 1
            handled += 1
            last = entry.seq
            if handled % 100 == 0:  # a long catch-up keeps its place even if the run is cut short
                svc.index.put_sync(cursor_keys, {"seq": last, "at": utcnow()})
        if last != result.cursor:
            svc.index.put_sync(cursor_keys, {"seq": last, "at": utcnow()})
            result.cursor = last

    def _handle(self, entry: FeedEntry) -> str:
        origin = entry.origin or self.peer
        if origin == self.svc.topology.region:
            return "skipped"  # the peer indexed it from our archive: ours already
        if entry.action == str(Action.DELETE):
            return self._delete(entry, origin)
        if entry.state in ("replaced", "deleted"):
            return "skipped"  # a later entry of the same instance follows (its update, or its delete)
        outcome = self._index(entry.study, entry.series, entry.sop, origin)
        if outcome.state is IngestState.GONE:
            self.svc.index.put_sync(keys.follow_wait_keys(self.peer, entry.seq), {
                "study": entry.study, "series": entry.series, "sop": entry.sop, "origin": origin,
                "since": time.time()})
            return "waiting"
        return str(outcome.state)

    def _index(self, study: str, series: str, sop: str, origin: str) -> Outcome:
        """Index the replica of the peer's file (that container specifically: this region's own copy
        of the same SOP, if any, is not the file the entry announces)."""
        physical = layout.regional(layout.ARCHIVE, origin)
        blob = physical_store(self.svc.blobs).open(physical, layout.instance_path(study, series, sop))
        return self.ingest.index_archived(blob)

    def _retry_waiting(self, result: FollowResult) -> None:
        svc = self.svc
        now = time.time()
        for row in svc.index.sync_rows(keys.follow_wait_partition(self.peer)):
            wait_keys = (str(row["PartitionKey"]), str(row["RowKey"]))
            outcome = self._index(str(row["study"]), str(row["series"]), str(row["sop"]),
                                  str(row.get("origin") or self.peer))
            if outcome.state is IngestState.GONE:
                if now - float(row.get("since", now)) < GIVE_UP_SECONDS:
                    result.counts["waiting"] += 1
                    continue
                log.warning("Follow %s: instance %s never arrived by replication; dropped (reindex indexes it "
                            "if it arrives later)", self.peer, row["sop"])
                result.counts["dropped"] += 1
            else:
                result.counts[str(outcome.state)] += 1
            svc.index.delete_sync(wait_keys)

    def _delete(self, entry: FeedEntry, origin: str) -> str:
        """The peer deleted an instance: remove it here too, unless this region holds a newer version."""
        svc = self.svc
        s, se, i = entry.study, entry.series, entry.sop
        got = svc.index.get_instance(s, se, i)
        if got is not None and got.record.stamp > stamp(origin, time_of_seq(entry.seq)):
            return "skipped"  # written here after the peer's delete: the newer write wins
        svc.blobs.delete(layout.ARCHIVE, layout.instance_path(s, se, i))  # this account's copies
        svc.blobs.delete(layout.METADATA, layout.frame_index_path(s, se, i))
        svc.blobs.delete(layout.METADATA, layout.instance_metadata_path(s, se, i))
        if got is None:
            return "skipped"
        svc.blobs.delete(layout.METADATA, layout.series_metadata_path(s, se))  # rows serve it until settle
        change = ChangeEntry(s, se, i, Action.DELETE, svc.sequencer.next(), utcnow(), origin=origin)
        svc.index.remove_instances(s, [(se, i)], [change])
        svc.scheduler.after_write(s)
        return "deleted"
