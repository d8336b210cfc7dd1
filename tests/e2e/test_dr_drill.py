"""The disaster-recovery drill (``make dr-drill``, :mod:`tools.drill`) end to end, with a small corpus.

Two regions on this machine (an Azurite and a devhost running the real app each), object replication
emulated between them (asynchronous, read-only destinations behind a proxy, no events), the primary
lost abruptly while STOW-RS requests are in flight and the secondary's follower is behind, the secondary
caught up with ``reindex --since follower``, the primary brought back behind its failback gate.
``make dr-drill`` runs the issues' numbers (300 + 100 + 50); this test runs 20 + 12 + 5 to keep the
suite's wall time modest: the same code path, fewer files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import stack
from tools.drill import Drill

pytestmark = pytest.mark.slow


def test_the_secondary_serves_everything_after_the_primary_is_lost_and_both_converge(tmp_path: Path) -> None:
    lines: list[str] = []
    with Drill(tmp_path, primary=20, outage=5, abrupt=12, per_study=5, timeout=240, log=lines.append) as drill:
        results = drill.run()
        summary, abrupt = drill.summary(), drill.abrupt_summary()
        # Who announced what: each instance once, by the region that ingested it (the secondary indexed the
        # primary's from the replica without announcing them; the primary likewise the outage writes).
        created = {r.key: [e for e in stack.published_events(r.state_dir)
                           if (e.get("type") or e.get("eventType")) == "Dicom.ImageCreated"]
                   for r in (drill.a, drill.b)}
    log = "\n".join(lines)
    assert summary == ("DR drill: primary ingested 20; secondary served 20/20 QIDO, 20/20 WADO, 20/20 frames; "
                       "outage writes 5/5; after recovery primary 25/25, secondary 25/25"), log
    m = re.fullmatch(r"abrupt loss: replicated (\d+), visible on secondary (\d+)/\1 after [\d.]+ s; outage writes "
                     r"5/5; after recovery primary (\d+)/(\d+), secondary (\d+)/\4", abrupt)
    assert m is not None, f"{abrupt}\n{log}"
    replicated, visible, primary_after, total, secondary_after = map(int, m.groups())
    assert visible == replicated >= 1 and primary_after == secondary_after == total, f"{abrupt}\n{log}"
    # The loss was abrupt and the follower behind: some of what had replicated was not yet visible then.
    assert results["visible_at_loss"] < replicated, log
    assert results["acknowledged"] >= 8 and results["acknowledged_lost"] == 0, log
    assert total == 25 + len(drill.arrived) and len(drill.arrived) >= results["acknowledged"], log
    # The primary came back behind its failback gate: when its health first answered 200 (Front Door would send
    # it traffic again) it served every outage write; a 503 seen before that said why.
    assert results["served_at_failback"] == 5, log
    assert results["gate"] is None or results["gate"]["status"] == "catching up", log
    assert drill.passed()
    assert results["refused_writes"] == 0  # the app never wrote into a replication destination
    sops = {k: {e["data"]["imageSopInstanceUid"] for e in v} for k, v in created.items()}
    assert sops["secondary"] == {i.sop for i in drill.corpus["later"]}, log
    assert sops["primary"] == {i.sop for i in drill.corpus["first"]} | drill.arrived, log
    assert {e["data"]["archivePath"].split("/")[0] for e in created["secondary"]} == {"dicom-archive-secondary"}
