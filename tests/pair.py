"""Two regions of fakes side by side (``a`` and ``b``), for the tests of the peer follower, reindex and
the failback gate. Object replication between the fake accounts is :func:`tests.fakes.replicate` (one
pass = what Azure does asynchronously); each region's follower reads the peer's fake tables as it reads
the peer's table endpoint in Azure."""

from __future__ import annotations

import time

import orjson

from shared.dicomweb.attributes import Level
from shared.dicomweb.planner import fetch_for
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import search as qido_search
from shared.index.store import IndexStore
from shared.ingest.follow import Follower
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState
from shared.storage import layout
from tests.fakes import Fakes, memory_services, replicate

A_ARCHIVE, B_ARCHIVE = "dicom-archive-a", "dicom-archive-b"


class Pair:
    """Regions ``a`` and ``b``; ``b`` follows ``a``'s change feed and ``a`` follows ``b``'s."""

    def __init__(self, **env: str) -> None:
        self.a = memory_services(DICOMFLOW_REGION="a", DICOMFLOW_PEER_REGION="b", **env)
        self.b = memory_services(DICOMFLOW_REGION="b", DICOMFLOW_PEER_REGION="a", **env)
        for f in (self.a, self.b):  # running regions: once-per-process reads (the extended tag list) done
            f.services.ensure_ready()
        #: One follower per region, as the timer keeps one per process; their clock runs ``offset`` ahead.
        self.followers: dict[str, Follower] = {}
        self.offset = 0.0

    def later(self, seconds: float) -> None:
        """The followers' clock moves on (entries waiting for their file become due)."""
        self.offset += seconds

    def follower(self, name: str) -> Follower:
        if name not in self.followers:
            peer = self.region("b" if name == "a" else "a")
            self.followers[name] = Follower(self.region(name).services, IndexStore(peer.tables),
                                            clock=lambda: time.time() + self.offset)
        return self.followers[name]

    def region(self, name: str) -> Fakes:
        return self.a if name == "a" else self.b

    def ingest(self, name: str, data: bytes, blob: str) -> IngestState:
        f = self.region(name)
        f.blobs.put(layout.INBOX, blob, data)
        return IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, blob)).state

    def replicate(self, src: str) -> int:
        """Object replication of region ``src``'s regional containers to the other region."""
        other = "b" if src == "a" else "a"
        names = [layout.regional(c, src) for c in layout.REGIONAL]
        return replicate(self.region(src).blobs, self.region(other).blobs, names)

    def follow(self, name: str) -> dict[str, int]:
        result = self.follower(name).run()
        assert result is not None and result.error is None
        return dict(result.counts)

    def settle(self, name: str, study: str) -> None:
        SettleService(self.region(name).services).settle(SettleRequest(study))


def sops_found(f: Fakes, study: str) -> set[str]:
    query = parse_query([], Level.INSTANCE, scope={"StudyInstanceUID": study})
    found = orjson.loads(qido_search(query, fetch_for(f.services.index), "http://x").body)
    return {o["00080018"]["Value"][0] for o in found}
