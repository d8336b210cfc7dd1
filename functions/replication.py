"""Follow the peer region's change feed (a timer) → shared.ingest.follow.

Every 10 seconds, a region of a pair indexes what object replication brought from its peer (Azure
raises no blob event for replicated blobs). One region on its own follows nothing: the run returns at
once, without a request. One follower per process: it remembers which entries of the feed's re-read
tail it has handled.
"""

from __future__ import annotations

import functools

import azure.functions as func

from shared.ingest.follow import Follower
from shared.services import get_services

bp = func.Blueprint()


@functools.cache
def _follower() -> Follower:
    return Follower(get_services())


@bp.function_name("follow_peer")
@bp.timer_trigger(arg_name="timer", schedule="*/10 * * * * *", run_on_startup=False, use_monitor=False)
def follow_peer(timer: func.TimerRequest) -> None:
    _follower().run()
