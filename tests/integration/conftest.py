from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.corpus import CorpusOptions, write_corpus
from shared.config import Settings
from shared.services import Services
from tests.integration.eventsink import EventSink


@pytest.fixture(scope="session")
def event_sink() -> Iterator[EventSink]:
    with EventSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def pipeline(storage_env: dict[str, str], event_sink: EventSink) -> Services:
    """The real services (real Azurite, real SDK publisher) with stable age 0."""
    env = {**storage_env, "DicomEvents__topicEndpointUri": event_sink.endpoint,
           "DICOMFLOW_EVENTS_LOCAL_KEY": event_sink.key, "DICOMFLOW_STABLE_AGE_SECONDS": "0",
           "DICOMFLOW_SETTLE_DELAY_SECONDS": "0"}
    svc = Services.from_settings(Settings.from_env(env))
    svc.ensure_ready()
    return svc


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    write_corpus(out, CorpusOptions(patients=3, slices=6, rows=64, cols=64, seed=7, sentinel="Sentinel^Leak"))
    return out
