"""The disaster-recovery drill (``make dr-drill``, :mod:`tools.drill`) end to end, with a small corpus.

Two regions on this machine (an Azurite and a devhost running the real app each), object replication
emulated between them (asynchronous, read-only destinations behind a proxy, no events), the primary
lost and brought back. ``make dr-drill`` runs the issue's numbers (300 + 50); this test runs 20 + 5 to
keep the suite's wall time modest: the same code path, fewer files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import stack
from tools.drill import Drill

pytestmark = pytest.mark.slow


def test_the_secondary_serves_everything_after_the_primary_is_lost_and_both_converge(tmp_path: Path) -> None:
    lines: list[str] = []
    with Drill(tmp_path, primary=20, outage=5, per_study=5, timeout=240, log=lines.append) as drill:
        results = drill.run()
        summary = drill.summary()
        # Who announced what: each instance once, by the region that ingested it (the secondary indexed the
        # primary's 20 from the replica without announcing them; the primary likewise the outage writes).
        created = {r.key: [e for e in stack.published_events(r.state_dir)
                           if (e.get("type") or e.get("eventType")) == "Dicom.ImageCreated"]
                   for r in (drill.a, drill.b)}
    assert summary == ("DR drill: primary ingested 20; secondary served 20/20 QIDO, 20/20 WADO, 20/20 frames; "
                       "outage writes 5/5; after recovery primary 25/25, secondary 25/25"), "\n".join(lines)
    assert drill.passed()
    assert results["refused_writes"] == 0  # the app never wrote into a replication destination
    assert len(created["primary"]) == 20 and len(created["secondary"]) == 5
    assert {e["data"]["archivePath"].split("/")[0] for e in created["secondary"]} == {"dicom-archive-secondary"}
