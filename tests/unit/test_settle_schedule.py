"""The settle scheduler on a hand-moved clock: one message per process and window (the arrival group,
rewritten to name the studies that joined it, at most once per flush interval), and a chain of settle runs
that never breaks when the queue hands a delayed message over a little early (queue visibility is whole
seconds on the storage service's clock)."""

from __future__ import annotations

import time

from shared.index.store import IndexStore
from shared.ingest import schedule
from shared.ingest.schedule import EARLY_DELIVERY, SettleScheduler
from shared.storage import layout
from tests.fakes import MemoryQueues, MemoryTableStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def scheduler() -> tuple[SettleScheduler, MemoryQueues, Clock]:
    queues, clock = MemoryQueues(), Clock()
    s = SettleScheduler(queues, IndexStore(MemoryTableStore()), settle_delay=5.0, stable_age=60.0, clock=clock)
    s.flush_seconds = 3600.0  # the rewrites happen where a test calls flush(), not on the timer
    return s, queues, clock


def test_a_burst_sends_one_message_per_window() -> None:
    s, queues, clock = scheduler()
    for _ in range(20):  # 20 writes over 4 s
        s.after_write("1.2.3")
        clock.now += 0.2
    assert [d for _, d in queues.drain(layout.SETTLE_QUEUE)] == [5.0]


def _group(text: str) -> list[str]:
    from shared.ingest.schedule import SettleRequest

    request = SettleRequest.from_message(text)
    assert request.hold, "the per-file path's group runs hold what they announce"
    return list(request.studies)


def test_studies_written_in_one_window_share_one_message_rewritten_once_for_all() -> None:
    s, queues, clock = scheduler()
    for study in ("1.1", "1.2", "1.3"):
        s.after_write(study)
        s.after_write(study)  # its next instances: covered already
        clock.now += 0.5
    assert queues.requests == {"queue POST dicom-settle": 1}  # the joins wait for the rewrite
    s.flush()
    s.flush()  # nothing joined since: no request
    assert queues.requests == {"queue POST dicom-settle": 1, "queue PUT dicom-settle": 1}
    ((text, delay),) = queues.drain(layout.SETTLE_QUEUE)
    assert _group(text) == ["1.1", "1.2", "1.3"] and delay == 3.5  # still due when the window's first was


def test_the_timer_names_the_joined_studies_and_so_does_a_clean_stop() -> None:
    s, queues, _ = scheduler()
    s.flush_seconds = 0.05
    s.after_write("1.1")
    s.after_write("1.2")
    deadline = time.monotonic() + 10
    while queues.requests["queue PUT dicom-settle"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [_group(t) for t, _ in queues.messages[layout.SETTLE_QUEUE]] == [["1.1", "1.2"]]
    s.flush_seconds = 3600.0
    s.after_write("1.3")
    schedule._name_all_at_exit()  # what the interpreter runs at a clean exit
    assert [_group(t) for t, _ in queues.drain(layout.SETTLE_QUEUE)] == [["1.1", "1.2", "1.3"]]


def test_a_study_too_close_to_the_groups_run_opens_the_next_group() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.1")  # due in 5 s
    clock.now += 3.0  # 2 s left: a burst of 1.2 might not land before the run
    s.after_write("1.2")
    assert [(_group(t), d) for t, d in queues.drain(layout.SETTLE_QUEUE)] == [(["1.1"], 5.0), (["1.2"], 5.0)]


def test_a_study_that_joined_a_group_whose_message_was_received_gets_a_message_due_as_the_group() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.1")
    queues.drain(layout.SETTLE_QUEUE)  # the run has the message: rewriting it fails
    clock.now += 1.0
    s.after_write("1.2")
    s.flush()
    assert [(_group(t), d) for t, d in queues.messages[layout.SETTLE_QUEUE]] == [(["1.2"], 4.0)]
    s.after_write("1.3")  # joins that new message
    s.flush()
    assert [_group(t) for t, _ in queues.drain(layout.SETTLE_QUEUE)] == [["1.2", "1.3"]]


def test_follow_ups_of_a_group_run_go_in_one_message_per_spread_of_the_settle_delay() -> None:
    s, queues, clock = scheduler()
    s.reschedule_group({"1.1": 55.0, "1.2": 57.0, "1.3": 59.5, "1.4": 30.0})
    sent = [(_group(t), d) for t, d in queues.drain(layout.SETTLE_QUEUE)]
    assert sent == [(["1.4"], 30.0), (["1.1", "1.2", "1.3"], 59.5)]
    clock.now += 1.0
    s.reschedule_group({"1.1": 58.0})  # a follow-up of ours comes by then already
    assert queues.drain(layout.SETTLE_QUEUE) == []


def test_a_run_handed_its_message_early_still_schedules_the_next() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.2.3")  # the message is due in 5 s
    queues.drain(layout.SETTLE_QUEUE)
    clock.now += 5.0 - EARLY_DELIVERY / 2  # ...and its run starts a little before that
    s.reschedule("1.2.3", 55.0)  # not yet stable
    assert [d for _, d in queues.drain(layout.SETTLE_QUEUE)] == [55.0]


def test_a_run_does_not_duplicate_a_message_due_later() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.2.3")
    queues.drain(layout.SETTLE_QUEUE)
    clock.now += 1.0  # another message's run, well before ours is due: ours will follow up
    s.reschedule("1.2.3", 55.0)
    assert queues.drain(layout.SETTLE_QUEUE) == []


def test_a_write_just_before_a_quiet_period_run_gets_a_run_of_its_own() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.2.3")
    clock.now += 5.0
    s.reschedule("1.2.3", 55.0)  # not yet stable: settle asks for a run at the end of the quiet period
    queues.drain(layout.SETTLE_QUEUE)
    clock.now += 55.0 - EARLY_DELIVERY / 2  # that run may already have read the partition (and be stable)
    s.after_write("1.2.3")
    assert [round(d, 3) for _, d in queues.drain(layout.SETTLE_QUEUE)] == [round(EARLY_DELIVERY / 2 + 5.0, 3)]


def test_a_write_just_before_an_arrival_run_waits_for_it() -> None:
    s, queues, clock = scheduler()
    s.after_write("1.2.3")
    queues.drain(layout.SETTLE_QUEUE)
    clock.now += 5.0 - EARLY_DELIVERY / 2  # that run is never stable: it reschedules and reads this later
    s.after_write("1.2.3")
    assert queues.drain(layout.SETTLE_QUEUE) == []


def test_a_settle_run_that_storage_fails_comes_back_later_with_growing_delays() -> None:
    """Storage trouble (here: every table read fails as Azure's SDK fails) puts the request back with the
    next backoff delay instead of spending the trigger's quick retries; past the last delay it raises, so
    the trigger's retries and then the poison queue (re-driven, shared/ingest/redrive.py) take over."""
    from azure.core.exceptions import ServiceRequestError

    from shared.ingest.schedule import SettleRequest
    from shared.ingest.settle import RETRY_DELAYS, SettleService
    from tests.fakes import memory_services

    fakes = memory_services()

    def down(*args: object, **kwargs: object) -> None:
        raise ServiceRequestError("storage unreachable")

    fakes.tables.query = down  # type: ignore[method-assign]
    fakes.tables.get = down  # type: ignore[method-assign]
    request, delays = SettleRequest("1.2.3"), []
    for _ in RETRY_DELAYS:
        assert SettleService(fakes.services).settle(request).state == "deferred"
        ((text, delay),) = fakes.queues.drain(layout.SETTLE_QUEUE)
        request = SettleRequest.from_message(text)
        delays.append(delay)
    assert delays == list(RETRY_DELAYS) and request.attempt == len(RETRY_DELAYS)
    try:
        SettleService(fakes.services).settle(request)
    except ServiceRequestError:
        pass
    else:
        raise AssertionError("the last attempt must raise (the trigger retries it)")
    assert fakes.queues.drain(layout.SETTLE_QUEUE) == []


def test_settle_messages_keep_their_attempt_and_redrive_counts() -> None:
    from shared.ingest.schedule import SettleRequest

    r = SettleRequest("1.2.3", force=True, attempt=2, redrives=1)
    assert SettleRequest.from_message(r.to_message()) == r
    assert SettleRequest.from_message(b'{"study": "1.2", "attempt": "x", "redrives": -1}') == SettleRequest("1.2")
