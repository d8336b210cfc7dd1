"""Fabric delivery logic with a recording target (no servers): fan-out by filter, retry then
dead-letter, and resuming unfinished deliveries from the journal."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from devhost import fabric as fabric_mod
from devhost.fabric import Fabric
from devhost.state import Journal, read_journal
from devhost.subscriptions import Subscription, parse

DOC = {
    "topics": {"dicom": {"kind": "customTopic", "schema": "CloudEventSchemaV1_0"}},
    "subscriptions": [
        {"name": "ct", "topic": "dicom", "function": "f_ct", "endpoint": "eventGridTrigger",
         "filter": {"advancedFilters": [{"operatorType": "StringIn", "key": "data.modality", "values": ["CT"]}]},
         "retryPolicy": {"maxDeliveryAttempts": 2}, "deadLetterContainer": "dead"},
        {"name": "all", "topic": "dicom", "function": "f_all", "endpoint": "eventGridTrigger"},
    ],
}


def ev(i: str, modality: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": i, "source": "/t", "type": "Dicom.ImageCreated", "data": {"modality": modality}}


class Target:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail or set()

    async def deliver(self, sub: Subscription, event: dict[str, Any]) -> None:
        self.calls.append((sub.name, event["id"]))
        if sub.name in self.fail:
            raise RuntimeError("handler failed")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fabric_mod, "BACKOFF_START", 0.001)


async def _run(f: Fabric, action: Any) -> None:
    action()
    while f._tasks:
        await asyncio.gather(*list(f._tasks))


def test_fan_out_retry_and_dead_letter(tmp_path: Path) -> None:
    letters: list[tuple[str, str, bytes]] = []

    async def dead_letter(container: str, name: str, body: bytes) -> None:
        letters.append((container, name, body))

    target = Target(fail={"ct"})
    f = Fabric(parse(DOC), "k", Journal(tmp_path / "events.jsonl"), target, dead_letter)
    asyncio.run(_run(f, lambda: f.publish("dicom", [ev("1", "ct"), ev("2", "MR")])))
    assert sorted(target.calls) == [("all", "1"), ("all", "2"), ("ct", "1"), ("ct", "1")]
    (container, name, body), = letters
    assert container == "dead" and re.fullmatch(r"dicom/ct/\d{4}/\d{2}/\d{2}/\d{2}/1\.json", name)
    assert json.loads(body)[0]["deliveryAttempts"] == 2
    kinds = [(r["kind"], r.get("subscription")) for r in read_journal(tmp_path)]
    assert kinds.count(("published", None)) == 2 and ("deadlettered", "ct") in kinds
    assert kinds.count(("delivered", "all")) == 2


def test_resume_delivers_only_what_was_unfinished(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "events.jsonl")
    journal.append({"kind": "published", "topic": "dicom", "event": ev("a", "CT"), "subscriptions": ["ct", "all"]})
    journal.append({"kind": "published", "topic": "dicom", "event": ev("b", "MR"), "subscriptions": []})
    journal.append({"kind": "delivered", "topic": "dicom", "id": "a", "subscription": "all"})
    journal.append({"kind": "published", "topic": "dicom", "event": ev("c", "CT"), "subscriptions": ["gone"]})
    target = Target()

    async def dead_letter(container: str, name: str, body: bytes) -> None:
        raise AssertionError("nothing to dead-letter")

    f = Fabric(parse(DOC), "k", journal, target, dead_letter)
    records = read_journal(tmp_path)
    asyncio.run(_run(f, lambda: f.resume(records)))
    # "a" to "ct" only; "b" matched nothing when published (even though "all" would match it now);
    # "c" went to a subscription that no longer exists.
    assert target.calls == [("ct", "a")]
    asyncio.run(_run(f, lambda: f.resume(read_journal(tmp_path))))
    assert target.calls == [("ct", "a")]  # now journaled as delivered
