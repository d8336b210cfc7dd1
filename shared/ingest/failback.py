"""The failback gate: a region that comes back serves again only once it has caught up with its peer.

Front Door sends ``/api/*`` to the region it prefers (priority 1) as soon as that region's ``/api/health``
answers 200. After an outage that region's index lacks what the other region wrote meanwhile until its
follower (:mod:`shared.ingest.follow`) has read the peer's change feed and indexed the replicated files.
With ``DICOMFLOW_FAILBACK_MAX_LAG_SECONDS`` above 0, the health endpoint answers 503 ``catching up`` while
the follower is behind its peer by more than that (:meth:`shared.ingest.follow.FollowState.behind`: the
feed not yet read, or an entry still waiting for its file), so the region's origin returns only when
caught up. Set it on the priority-1 region; an operator who wants the region back sooner sets it to 0 (or
enables the origin in Front Door, docs/deploy.md).

Cheap: the follower saves its state after every run; the gate reads that one row at most once per
:data:`CACHE_SECONDS` per process, and no probe makes any other call for it. It gates only on evidence:

* no state yet (the follower has never run here): open;
* the follower's last run could not reach the peer (the peer region is the one that is down): open,
  nothing can be caught up from a lost region, and this one must serve;
* otherwise closed while ``behind(now)`` exceeds the setting: the lag the follower measured at its last run
  (0 when it read the peer's feed to its end, whatever the timer's phase, so a small setting does not flap),
  unless that state is older than :data:`shared.ingest.follow.STALE_SECONDS`: then the region may have been
  down, and it counts as behind since the feed was last read. So a region back from an outage longer than
  that stays out until its follower has run again and caught up; one back from a shorter outage is behind
  by at most that and is caught up by its follower's next run (10 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from shared.config import Settings
from shared.ingest.follow import FollowState, read_state
from shared.services import Services, get_services

log = logging.getLogger(__name__)

#: How long one read of the follower's state serves the health probes of a process.
CACHE_SECONDS: Final = 5.0


class FailbackGate:
    """Decides, from the follower's saved state, whether this region is still catching up."""

    def __init__(self, *, cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._state: FollowState | None = None

    def _cached_state(self, svc: Services) -> FollowState | None:
        now = self.clock()
        with self._lock:
            if now - self._read_at < self.cache_seconds:
                return self._state
        from azure.core.exceptions import AzureError

        try:
            state = read_state(svc)
        except AzureError as exc:  # the region's own tables: the health checks report that themselves
            log.warning("Failback gate: the follower's state cannot be read (%s); not gating", type(exc).__name__)
            state = None
        with self._lock:
            self._state, self._read_at = state, now
        return state

    def status(self, svc: Services) -> dict[str, Any] | None:
        """None when the region may serve; else why not (the health endpoint's 503 body)."""
        region = svc.settings.region
        limit = region.failback_max_lag_seconds
        if limit <= 0 or not region.follows_peer:
            return None
        state = self._cached_state(svc)
        if state is None or not state.reachable:
            return None
        now = self.clock()
        behind = state.behind(now)
        if behind <= limit:
            return None
        return {"status": "catching up", "peer": state.peer, "behind_seconds": round(behind, 1),
                "max_lag_seconds": limit, "last_run_seconds_ago": round(max(0.0, now - state.at), 1),
                "waiting": state.waiting}


_GATE = FailbackGate()


def catching_up(settings: Settings) -> dict[str, Any] | None:
    """The process-wide gate for ``GET /api/health``: None, or the 503 body while this region catches up."""
    if settings.region.failback_max_lag_seconds <= 0:
        return None  # off: no services built, no read
    return _GATE.status(get_services(settings))
