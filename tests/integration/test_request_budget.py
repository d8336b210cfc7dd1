"""The request budget (docs/architecture.md#budgets), pinned: a small corpus ingested and settled against
Azurite with production-like settle timings, every storage request the app's SDK clients make
counted (``Services.requests``), and every event publish call.

Request counts are deterministic once the settle runs are: this test drives them the way the
settle queue would, on the scheduler's quiet-period clock (advanced by hand, so nothing waits
60 s): each study arrives in one burst; its first run comes when the settle delay has passed
(the study is not quiet yet: images are announced, aggregates and lookups written), its second
once the study has been quiet for the stable age (series/study stable announced, pending rows
removed). Each settle message costs the trigger one delete besides (counted here); its receives
are polling, time- not instance-driven (bench/ingest.py counts them from Azurite's log).

If this fails because a change adds a request: that request costs every instance in Azure. Take
it out, or make the case in docs/capacity.md and change the pinned numbers with the reason.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from pathlib import Path

from shared.config import Settings
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ingest.states import IngestState
from shared.services import Services
from shared.storage import layout
from tests.integration.eventsink import EventSink
from tools.corpus import CorpusOptions, load_manifest, write_corpus

SETTLE_DELAY = 5.0
STABLE_AGE = 60.0
#: docs/architecture.md#budgets: storage requests per instance (now), event publish calls per instance.
REQUESTS_PER_INSTANCE = 4.5
PUBLISH_CALLS_PER_INSTANCE = 0.1


class Clock:
    """The quiet-period clock, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_ingest_and_settle_stay_within_the_pinned_request_budget(storage_env: dict[str, str], event_sink: EventSink,
                                                                 tmp_path: Path) -> None:
    env = {**storage_env, "DicomEvents__topicEndpointUri": event_sink.endpoint,
           "DICOMFLOW_EVENTS_LOCAL_KEY": event_sink.key}
    settings = dataclasses.replace(Settings.from_env(env), settle_delay_seconds=SETTLE_DELAY,
                                   stable_age_seconds=STABLE_AGE)
    app = Services.from_settings(settings)  # the app's clients: what they send is counted
    client = Services.from_settings(settings)  # the uploader's: not the pipeline's cost
    app.ensure_ready()
    clock = Clock()
    app.scheduler.clock = clock

    out = tmp_path / "corpus"
    write_corpus(out, CorpusOptions(patients=1, slices=60, rows=16, cols=16, seed=4711, broken=False))
    files = [e for e in load_manifest(out)["files"] if e["kind"] == "good"]
    studies = sorted({e["study_uid"] for e in files})
    series = {(e["study_uid"], e["series_uid"]) for e in files}
    n = len(files)
    names = []
    for e in files:
        name = f"budget/{uuid.uuid4().hex}.dcm"
        client.blobs.write(layout.INBOX, name, (out / e["path"]).read_bytes())
        names.append(name)
    published = event_sink.requests
    start = app.requests.snapshot()

    ingest = IngestService(app)
    outcomes = [ingest.ingest(app.blobs.open(layout.INBOX, name)) for name in names]
    assert [o.state for o in outcomes] == [IngestState.ARCHIVED] * n
    ingested = app.requests.snapshot() - start
    # Per new instance: its header (one ranged read), its archive copy, one table transaction.
    # Per series: one pending row. Per study: one settle message.
    assert ingested == Counter({"blob GET": n, "blob PUT": n, "table POST": n, "table PUT": len(series),
                                "queue POST": len(studies)}), ingested

    settle = SettleService(app)
    clock.now += SETTLE_DELAY  # the settle message comes due: the study is not quiet yet
    assert {settle.settle(SettleRequest(s)).state for s in studies} == {"settled"}
    clock.now += STABLE_AGE  # quiet for the stable age: the rescheduled message comes due
    assert {settle.settle(SettleRequest(s)).state for s in studies} == {"stable"}
    spent = app.requests.snapshot() - start
    settled = spent - ingested
    messages = spent["queue POST"]  # ingest's first message and settle's next, per study
    assert messages == 2 * len(studies), spent
    calls = event_sink.requests - published

    # What the two settle runs of each study cost, all studies together (CT+SR, MR, DX).
    runs = 2 * len(studies)
    modalities = {s: {e["modality"] for e in files if e["study_uid"] == s} for s in studies}
    # Lookup rows, one batch per partition: PatientID, AccessionNumber, StudyDate, the two name
    # tokens, one per modality, the study's series-UID shard and SOP-UID shard.
    lookup_batches = sum(7 + len(modalities[s]) for s in studies)
    assert settled == Counter({
        "table POST": runs  # the study's settle lease taken
        + lookup_batches
        + len(studies)  # series aggregates, one batch per study
        + 1 + len(studies)  # change feed: its head row (once per process), one batch per study's entries
        + len(studies)  # the study's changes marked published (one batch: under 100 each)
        + len(studies),  # study rows (first run: inserted)
        "table GET": runs * 2  # the study partition and the study row, per run
        + len(studies),  # the study's pending rows, at the stable run
        "table DELETE": runs  # the lease given back
        + len(series),  # pending rows removed at the stable run
        "table PUT": len(studies),  # study rows replaced (conditional) at the stable run
        "blob PUT": len(series),  # series metadata bundles
        "queue POST": len(studies),  # settle's next run (when the study will be quiet)
    }), settled
    total = sum(spent.values()) + messages  # + the trigger's delete of every settle message
    assert total / n <= REQUESTS_PER_INSTANCE, (total, n)
    # One publish call per settle run that has something to announce: images, then stable.
    assert calls == 2 * len(studies)
    assert calls / n <= PUBLISH_CALLS_PER_INSTANCE, (calls, n)
    assert len([e for e in event_sink.of_type("Dicom.StudyStable")
                if e["data"]["imageStudyInstanceUid"] in studies]) == len(studies)
