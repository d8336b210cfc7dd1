"""The request budget (docs/architecture.md#budgets), pinned on two mixes and both ingest paths, against Azurite:
every storage request the app's SDK clients make is counted (``Services.requests``), and every event publish call.

The mixes (``tools/corpus.py``): a day of small projection studies (``write_small_mix``: 20 DX/MG/CR studies of
1-10 instances, 100 instances) and 60-instance CT/MR studies (``write_large_mix``: 2 studies, 120 instances).

The paths:

* **live** (a file, its ``BlobCreated`` event, one ingest): per instance a header read, a conditional copy, one
  table transaction; per study a settle run at the settle delay (images announced) and one at the stable age.
* **backfill** (``shared/ingest/batch.py``, what ``tools migrate`` and the gateway's C-MOVE sub-operations
  use): the writer archives each file itself (its upload, not charged here, as a client's upload to the inbox
  is not) and prepares its row in the chunk's manifest; ``ingest_batch`` writes the rows, 50 a transaction;
  one settle run per study, at the stable age, for all studies of a chunk together. Charged here: the
  writer's chunk messages and manifests, and everything ingest and settle do.

Settle runs are driven the way the settle queue would drive them, on the scheduler's quiet-period clock
(advanced by hand, so nothing waits 60 s), with the messages the pipeline itself sent. Each queue message
costs its trigger one delete besides (counted here); receives are polling, time- not instance-driven
(bench/ingest.py counts them from Azurite's log).

If this fails because a change adds a request: that request costs every instance, or every study, in Azure.
Take it out, or make the case in docs/capacity.md and change the pinned numbers with the reason.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings
from shared.ingest.batch import BatchIngest, BatchRequest, BatchWriter
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState
from shared.ports import SentMessage
from shared.services import Services
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import load_manifest, write_large_mix, write_small_mix

SETTLE_DELAY = 5.0
STABLE_AGE = 60.0
#: The targets (docs/architecture.md#budgets): storage requests per instance on each mix, publish calls.
SMALL_PER_INSTANCE = 5.0
LARGE_PER_INSTANCE = 3.0
PUBLISH_CALLS_PER_INSTANCE = 0.1
#: Instances per C-MOVE group as tools migrate makes them (tools/migration/runner.py), one chunk each.
GROUP = 50


class Clock:
    """The quiet-period clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Run:
    instances: int
    studies: int
    series: int
    #: Every request of the pipeline, by kind, with a delete per queue message (its trigger's).
    spent: Counter[str]
    publish_calls: int

    @property
    def total(self) -> int:
        return sum(self.spent.values())

    def per_instance(self) -> float:
        return self.total / self.instances


def mix(kind: str, path: str, out: Path) -> list[dict[str, Any]]:
    """The mix's files, with UIDs of their own per path (the session's storage keeps what each test wrote)."""
    if kind == "small":
        write_small_mix(out, studies=20, seed=23, variant=path)
    else:
        write_large_mix(out, studies=2, slices=60, seed=4712, variant=path)
    return [{**e, "file": out / e["path"]} for e in load_manifest(out)["files"]]


def services(env: dict[str, str], clock: Clock) -> Services:
    settings = dataclasses.replace(Settings.from_env(env), settle_delay_seconds=SETTLE_DELAY,
                                   stable_age_seconds=STABLE_AGE)
    svc = Services.from_settings(settings)
    svc.ensure_ready()
    svc.scheduler.clock = clock
    return svc


def sent_messages(svc: Services) -> list[tuple[str, str, float]]:
    """Record what the services send to queues (and still send it: it is counted)."""
    log: list[tuple[str, str, float]] = []
    real = svc.queues.send

    def send(queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
        log.append((queue, text, delay_seconds))
        return real(queue, text, delay_seconds=delay_seconds)

    svc.queues.send = send  # type: ignore[method-assign]
    return log


class SettleQueue:
    """The settle queue as the pipeline leaves it (sends, and rewrites of what it sent), on the test's clock:
    :meth:`deliver` hands every message due by then to settle, as the queue trigger would, once each."""

    def __init__(self, svc: Services, clock: Clock) -> None:
        self.clock, self.waiting, self.delivered = clock, {}, 0
        self.waiting: dict[str, tuple[str, float]] = {}
        send, update = svc.queues.send, svc.queues.update

        def sent(queue: str, text: str, *, delay_seconds: float = 0.0) -> SentMessage | None:
            handle = send(queue, text, delay_seconds=delay_seconds)
            if queue == layout.SETTLE_QUEUE:
                key = handle.id if handle is not None else uuid.uuid4().hex
                self.waiting[key] = (text, self.clock() + delay_seconds)
            return handle

        def updated(queue: str, message: SentMessage, text: str, *, delay_seconds: float) -> SentMessage | None:
            handle = update(queue, message, text, delay_seconds=delay_seconds)
            if handle is not None and queue == layout.SETTLE_QUEUE:
                assert message.id in self.waiting, "only a message not yet received can be rewritten"
                self.waiting[message.id] = (text, self.clock() + delay_seconds)
            return handle

        svc.queues.send, svc.queues.update = sent, updated  # type: ignore[method-assign]

    def deliver(self, settle: SettleService) -> Counter[str]:
        """Run every message due now (and what those runs send that is due now too); their results' states."""
        states: Counter[str] = Counter()
        while due := sorted((at, key) for key, (_, at) in self.waiting.items() if at <= self.clock()):
            for _, key in due:
                text, _ = self.waiting.pop(key)
                self.delivered += 1
                request = SettleRequest.from_message(text)
                if request.studies:
                    states.update(r.state for r in settle.settle_group(request.studies, force=request.force,
                                                                       pending=request.pending, hold=request.hold))
                else:
                    states[settle.settle(request).state] += 1
        return states


def run_live(env: dict[str, str], sink: EventSink, files: list[dict[str, Any]]) -> Run:
    clock = Clock()
    app, client = services(env, clock), services(env, clock)
    names = []
    for e in files:
        name = f"budget/{uuid.uuid4().hex}.dcm"
        client.blobs.write(layout.INBOX, name, e["file"].read_bytes())
        names.append(name)
    studies = sorted({e["study_uid"] for e in files})
    queue = SettleQueue(app, clock)
    published, start = sink.requests, app.requests.snapshot()
    ingest = IngestService(app)
    assert {ingest.ingest(app.blobs.open(layout.INBOX, n)).state for n in names} == {IngestState.ARCHIVED}
    settle = SettleService(app)
    clock.now += SETTLE_DELAY  # the arrival group's message comes due: the studies are not quiet yet
    assert queue.deliver(settle) == Counter({"settled": len(studies)})
    clock.now += STABLE_AGE  # quiet for the stable age: the follow-up comes due
    assert queue.deliver(settle) == Counter({"stable": len(studies)})
    assert not queue.waiting
    spent = app.requests.snapshot() - start
    spent["queue DELETE (trigger)"] = queue.delivered
    return Run(len(files), len(studies), len({e["series_uid"] for e in files}), spent, sink.requests - published)


def run_backfill(env: dict[str, str], sink: EventSink, files: list[dict[str, Any]]) -> Run:
    clock = Clock()
    app, writer_side = services(env, clock), services(env, clock)
    app_messages, writer_messages = sent_messages(app), sent_messages(writer_side)
    studies = sorted({e["study_uid"] for e in files})
    published, start, writer_start = sink.requests, app.requests.snapshot(), writer_side.requests.snapshot()
    # The gateway's writer, as a migration drives it: studies grouped up to 50 instances per C-MOVE, the
    # chunk closed when the move's association ends.
    writer = BatchWriter(writer_side, "LEGACY", window=600)
    group: list[dict[str, Any]] = []
    for study in studies:
        members = [e for e in files if e["study_uid"] == study]
        if group and len(group) + len(members) > GROUP:
            for e in group:
                assert writer.write(e["file"]).refused is None
            writer.close()
            group = []
        group += members
    for e in group:
        assert writer.write(e["file"]).refused is None
    writer.close()
    written = writer_side.requests.snapshot() - writer_start
    assert written["blob PUT"] == len(files) + sum(1 for q, _, d in writer_messages if d == 0)  # files, manifests
    batch = BatchIngest(app)
    for queue, text, _delay in sorted(writer_messages, key=lambda m: m[2]):  # each chunk's, then the safety nets
        assert queue == layout.BATCH_QUEUE
        outcomes = batch.run(BatchRequest.from_message(text))
        assert {o.state for o in outcomes} <= {IngestState.ARCHIVED}
    clock.now += STABLE_AGE + 3.0  # the chunks' settle messages come due: every study quiet
    settle = SettleService(app)
    groups = [SettleRequest.from_message(t) for q, t, _ in app_messages if q == layout.SETTLE_QUEUE]
    assert all(r.studies for r in groups)
    for request in groups:
        assert {r.state for r in settle.settle_group(request.studies, pending=request.pending)} == {"stable"}
    assert len(app_messages) == len(groups)  # nothing was rescheduled: one run per study
    spent = app.requests.snapshot() - start
    spent["queue DELETE (trigger)"] = spent["queue POST"] + len(writer_messages)
    spent["queue POST (writer)"] = len(writer_messages)
    spent["blob PUT (writer: manifests)"] = written["blob PUT"] - len(files)
    return Run(len(files), len(studies), len({e["series_uid"] for e in files}), spent, sink.requests - published)


@pytest.fixture
def env(storage_env: dict[str, str], event_sink: EventSink) -> dict[str, str]:
    return {**storage_env, "DicomEvents__topicEndpointUri": event_sink.endpoint,
            "DICOMFLOW_EVENTS_LOCAL_KEY": event_sink.key}


PATHS: dict[str, Callable[[dict[str, str], EventSink, list[dict[str, Any]]], Run]] = {
    "live": run_live, "backfill": run_backfill}

#: What each (mix, path) costs, request by request: the pinned numbers (see the module docstring). Measured
#: 2026-12 on these mixes; per instance: small live 5.54 (8.57 before issue 23's per-study work, 6.33 before the
#: value lookups shared partitions and a study's UID lookups one), small backfill 2.51 (3.16), large live 3.34
#: (3.43), large backfill 0.63 (0.64).
PINNED: dict[tuple[str, str], dict[str, int]] = {
    # 100 instances in 20 studies (33 series, none of BUNDLE_MIN_INSTANCES: no bundles). Per instance: header
    # read, copy, row transaction. Per series: a pending row (ingest). Per study: joining the process's arrival
    # group (its message rewritten: queue PUT), two runs (each reads the partition; the first holds the study
    # and commits its images, the second commits stability and removes the pending rows by their keys), the
    # series and study aggregates. Shared by the group: one message per run, the lookups (PatientID, accession
    # and name-token rows in a few partitions per kind, date, modality and UID shards), the feed.
    ("small", "live"): {"blob GET": 100, "blob PUT": 100, "queue DELETE (trigger)": 2, "queue POST": 2,
                        "queue PUT": 19, "table GET": 40, "table POST": 238, "table PUT": 53},
    # The same mix by the batched path: 3 chunks (6 writer messages: each chunk's, and its safety net; 3
    # manifests), 3 listings x2, 3 manifest reads, 3 done markers; rows and pending rows per study; one settle run
    # per study, 3 group messages, lookups shared by the chunk's studies where their partitions are.
    ("small", "backfill"): {"blob GET": 9, "blob PUT": 3, "blob PUT (writer: manifests)": 3,
                            "queue DELETE (trigger)": 9, "queue POST": 3, "queue POST (writer)": 6,
                            "table GET": 20, "table POST": 178, "table PUT": 20},
    # 120 instances in 2 studies of 60 (one series each: a bundle each).
    ("large", "live"): {"blob GET": 120, "blob PUT": 122, "queue DELETE (trigger)": 2, "queue POST": 2,
                        "queue PUT": 1, "table GET": 4, "table POST": 146, "table PUT": 4},
    # 4 chunks (50 + 10 per study), rows 50 to a transaction, one settle run per study (the second chunk of a
    # study is covered by the first one's message: schedule_group).
    ("large", "backfill"): {"blob GET": 12, "blob PUT": 6, "blob PUT (writer: manifests)": 4,
                            "queue DELETE (trigger)": 10, "queue POST": 2, "queue POST (writer)": 8,
                            "table GET": 2, "table POST": 29, "table PUT": 2},
}


@pytest.mark.parametrize(("kind", "path"), [("small", "live"), ("small", "backfill"), ("large", "live"),
                                            ("large", "backfill")])
def test_requests_per_instance_stay_within_the_pinned_budget(kind: str, path: str, env: dict[str, str],
                                                             event_sink: EventSink, tmp_path: Path) -> None:
    files = mix(kind, path, tmp_path / kind)
    run = PATHS[path](env, event_sink, files)
    n = run.instances
    # A metadata bundle for each series of BUNDLE_MIN_INSTANCES or more (a smaller one's rows are its metadata).
    bundles = sum(1 for k in Counter(e["series_uid"] for e in files).values() if k >= layout.BUNDLE_MIN_INSTANCES)
    if path == "live":
        # Per new instance: its header (one ranged read), its archive copy, one table transaction.
        assert run.spent["blob GET"] == n
        assert run.spent["blob PUT"] == n + bundles  # copies, and the bundles
    else:
        # Per instance: nothing read, nothing copied (the writer archived it); rows 50 to a transaction.
        assert run.spent["blob GET"] <= n / 10  # per chunk: its listing (twice: and its safety net) and manifest
        chunks = run.spent["blob PUT (writer: manifests)"]
        assert run.spent["blob PUT"] == bundles + chunks  # the bundles; each chunk's done marker
    assert dict(run.spent) == PINNED.get((kind, path)), (kind, path, dict(run.spent))
    budget = SMALL_PER_INSTANCE if kind == "small" else LARGE_PER_INSTANCE
    if path == "backfill":  # the targets hold on the path a backfill takes
        assert run.per_instance() <= budget, (kind, run.total, n)
    # One publish call per (group) run with something to announce, split only where a call would pass the
    # topic's 1 MB: on the live path the images, then stability; on the backfill path one per chunk's run.
    assert run.publish_calls <= run.spent["queue POST"] + n // 100, (run.publish_calls, dict(run.spent))
    assert run.publish_calls / n <= PUBLISH_CALLS_PER_INSTANCE, (run.publish_calls, n)
