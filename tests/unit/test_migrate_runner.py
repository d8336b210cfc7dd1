"""The migration's control flow (tools/migration/runner.py) against a scripted source and index: what is
skipped, moved again, verified by count, reported as failed and why, and when the run stops. The real
peers (Orthanc, the gateway, the devhost) are in tests/e2e/test_migrate_e2e.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tools.migration.dimse import Commitment, DimseError, Peer, Retrieved, Sink, SourceInstance, SourceStudy
from tools.migration.runner import Migration, Options, Ports
from tools.migration.state import FAILED, MOVING, VERIFIED, MigrationState
from tools.migration.throttle import Throttle

CT = "1.2.840.10008.5.1.4.1.1.2"


class Pacs:
    """A scripted source: its studies, and what a move does to our (fake) index."""

    def __init__(self, studies: dict[str, int]) -> None:
        self.studies = {s: [SourceInstance(f"{s}.{i}", CT, f"{s}.0") for i in range(1, n + 1)]
                        for s, n in studies.items()}
        self.index: dict[str, dict[str, str]] = {}
        self.moves: list[str] = []
        self.refuse_image_find = False
        self.move_error: dict[str, Exception] = {}
        self.move_status: dict[str, int] = {}
        self.lose: set[str] = set()  # SOPs a move does not deliver
        self.grow_after_move: dict[str, int] = {}  # the source receives N more instances while moving

    def session(self, classes: Sequence[str] | None) -> Session:
        return Session(self)

    def archived(self, study: str) -> dict[str, str]:
        return dict(self.index.get(study, {}))

    def deliver(self, study: str) -> int:
        got = self.index.setdefault(study, {})
        n = 0
        for i in self.studies[study]:
            if i.sop not in self.lose and i.sop not in got:
                got[i.sop] = i.sop_class
                n += 1
        return n


class Session:
    def __init__(self, pacs: Pacs) -> None:
        self.pacs = pacs

    def find_instances(self, study: str) -> list[SourceInstance]:
        if self.pacs.refuse_image_find:
            raise DimseError("LEGACY@h:1 refused the C-FIND: 0xA900")
        return list(self.pacs.studies[study])

    def study_count(self, study: str) -> int | None:
        return len(self.pacs.studies[study])

    def move(self, study: str, destination: str, progress: Callable[[int], None] | None = None) -> Retrieved:
        self.pacs.moves.append(study)
        if study in self.pacs.move_error:
            raise self.pacs.move_error[study]
        status = self.pacs.move_status.get(study, 0)
        if status:
            return Retrieved(status)
        sent = self.pacs.deliver(study)
        extra = self.pacs.grow_after_move.pop(study, 0)
        for k in range(extra):
            self.pacs.studies[study].append(SourceInstance(f"{study}.new{k}", CT, f"{study}.0"))
        lost = sum(1 for i in self.pacs.studies[study] if i.sop in self.pacs.lose)
        return Retrieved(0xB000 if lost else 0, sent, lost)

    def move_many(self, studies: Sequence[str], destination: str,
                  progress: Callable[[int], None] | None = None) -> Retrieved:
        """One C-MOVE of several studies; the source stops at the first study that fails (as Orthanc does)."""
        self.pacs.moves.append(tuple(studies))
        sent = 0
        for study in studies:
            if study in self.pacs.move_error or study in self.pacs.move_status or any(
                    i.sop in self.pacs.lose for i in self.pacs.studies[study]):
                return Retrieved(self.pacs.move_status.get(study, 0xC000), sent, 1)
            sent += self.pacs.deliver(study)
        return Retrieved(0, sent)

    def get(self, study: str, sink: Sink, progress: Callable[[int], None] | None = None) -> Retrieved:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def run(pacs: Pacs, state: MigrationState, *, commit: Callable[..., Commitment] | None = None,
        quarantined: dict[str, tuple[str, str]] | None = None, rate: float | None = None,
        clock: Clock | None = None) -> tuple[Migration, object]:
    """One run; Storage Commitment asked for when the test gives a gateway's answer."""
    clock = clock or Clock()
    ports = Ports(session=pacs.session, archived=pacs.archived,
                  commit=commit or (lambda refs: Commitment(len(refs), [])),
                  quarantined=lambda sops, since: {s: r for s, r in (quarantined or {}).items() if s in sops},
                  sleep=clock.sleep, clock=clock)
    migration = Migration(Options(Peer("LEGACY", "h", 1), Peer("DICOMFLOW", "g", 2), associations=1, rate=rate,
                                  verify_timeout=10, commitment=commit is not None), state, ports)
    studies = [SourceStudy(s, len(i)) for s, i in pacs.studies.items()]
    return migration, migration.run(studies)


@pytest.fixture
def state(tmp_path: Path) -> MigrationState:
    return MigrationState(tmp_path / "state.sqlite")


def test_every_study_is_moved_verified_and_recorded(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 3, "1.2": 1})
    _, report = run(pacs, state)
    assert report.last_line() == "migrated 2 studies, 4 instances; verified 2/2"  # type: ignore[attr-defined]
    assert pacs.moves == [("1.1", "1.2")]  # small studies go together: one C-MOVE, one chunk
    assert {s: (v.state, v.source_count) for s, v in state.all().items()} == {"1.1": (VERIFIED, 3),
                                                                              "1.2": (VERIFIED, 1)}


def test_a_verified_study_is_skipped_unless_the_source_count_changed(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 3, "1.2": 1})
    run(pacs, state)
    pacs.moves.clear()
    _, report = run(pacs, state)
    assert pacs.moves == []
    assert report.last_line() == "migrated 0 studies, 0 instances; verified 2/2"  # type: ignore[attr-defined]
    pacs.studies["1.1"].append(SourceInstance("1.1.9", CT, "1.1.0"))  # the PACS got one more since
    _, report = run(pacs, state)
    assert pacs.moves == ["1.1"]
    assert report.last_line() == "migrated 1 studies, 4 instances; verified 2/2"  # type: ignore[attr-defined]


def test_a_study_whose_instances_are_all_here_already_is_verified_without_a_move(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2})
    pacs.deliver("1.1")  # e.g. a run that crashed after the move, before recording it
    _, report = run(pacs, state)
    assert pacs.moves == []
    assert report.of("migrated")[0].instances == 2  # type: ignore[attr-defined]


def test_a_source_that_refuses_to_list_instances_is_verified_by_count(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2})
    pacs.refuse_image_find = True
    _, report = run(pacs, state)
    result = report.of("migrated")[0]  # type: ignore[attr-defined]
    assert result.instances == 2 and "verified by count" in result.reason


def test_a_timeout_fails_that_study_with_a_clear_message_and_the_run_goes_on(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2, "1.2": 1})
    pacs.move_error["1.1"] = DimseError("LEGACY@h:1 did not answer the C-MOVE within 60 s")
    _, report = run(pacs, state)
    failed = report.of("failed")  # type: ignore[attr-defined]
    assert [(r.study, r.reason) for r in failed] == [("1.1", "LEGACY@h:1 did not answer the C-MOVE within 60 s")]
    assert report.last_line() == "migrated 1 studies, 1 instances; verified 1/2"  # type: ignore[attr-defined]
    assert state.get("1.1").state == FAILED  # type: ignore[union-attr]


def test_a_refused_move_names_the_status_and_what_arrived(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2})
    pacs.move_status["1.1"] = 0xC001
    _, report = run(pacs, state)
    reason = report.of("failed")[0].reason  # type: ignore[attr-defined]
    assert "2 of 2 instance(s) not in the archive" in reason
    assert "C-MOVE ended with 0xC001 (the source was unable to process the request), 0 sent" in reason


def test_instances_refused_by_ingest_are_reported_with_their_reason(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 3})
    pacs.lose = {"1.1.2"}
    _, report = run(pacs, state, quarantined={"1.1.2": ("invalid-uid", "SeriesInstanceUID is not a valid UID.")})
    reason = report.of("failed")[0].reason  # type: ignore[attr-defined]
    assert reason.startswith("1 of 3 instance(s) not in the archive; 1 quarantined by ingest: invalid-uid (1) "
                             "(SeriesInstanceUID is not a valid UID)")


def test_a_count_that_changes_during_the_move_is_moved_again_and_said(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2})
    pacs.grow_after_move["1.1"] = 1
    _, report = run(pacs, state)
    result = report.of("migrated")[0]  # type: ignore[attr-defined]
    assert pacs.moves == ["1.1", "1.1"]
    assert result.instances == 3 and "count changed during the move (2 -> 3); moved again" in result.reason


def test_an_unknown_move_destination_stops_the_run_before_more_studies_are_tried(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2, "1.2": 1})
    pacs.move_status["1.1"] = 0xA801
    _, report = run(pacs, state)
    assert pacs.moves == [("1.1", "1.2")]  # the group's one C-MOVE, refused: nothing more is tried
    assert "does not know the move destination DICOMFLOW" in report.stopped  # type: ignore[attr-defined]
    assert report.results == []  # type: ignore[attr-defined]
    assert state.get("1.1").state == MOVING  # type: ignore[union-attr]  # tried again by the next run
    assert state.get("1.2").state == MOVING  # type: ignore[union-attr]


def test_a_commitment_failure_fails_the_study(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2})
    _, report = run(pacs, state, commit=lambda refs: Commitment(1, [(refs[0][1], 0x0112)]))
    assert "Storage Commitment failed for 1 of 2 instance(s) (0x0112 x1)" in report.of("failed")[0].reason  # type: ignore[attr-defined]


def test_the_rate_limit_paces_moves_by_their_instances(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 10, "1.2": 10})
    clock = Clock()
    run(pacs, state, rate=5, clock=clock)
    # A burst of one second (5) is free; the other 15 instances take 3 s at 5/s.
    assert clock.slept == pytest.approx(3.0, abs=0.01)


def test_throttle_is_unlimited_without_a_rate() -> None:
    clock = Clock()
    assert Throttle(None, clock=clock, sleep=clock.sleep).take(1000) == 0.0
    assert clock.slept == 0


def test_the_state_file_survives_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    first = MigrationState(path)
    first.planned("1.1")
    first.verified("1.1", 3, 3)
    first.close()
    again = MigrationState(path)
    assert again.get("1.1") is not None and again.get("1.1").state == VERIFIED  # type: ignore[union-attr]
    again.planned("1.1")  # planning again keeps what is known
    assert again.get("1.1").state == VERIFIED  # type: ignore[union-attr]


def test_a_study_that_fails_its_groups_move_fails_alone_and_the_rest_is_moved_again(state: MigrationState) -> None:
    pacs = Pacs({"1.1": 2, "1.2": 3, "1.3": 1})
    pacs.lose = {"1.2.2"}  # the source stops the group's move at this study (Orthanc does)
    _, report = run(pacs, state, quarantined={"1.2.2": ("invalid-uid", "")})
    assert pacs.moves == [("1.1", "1.2", "1.3"), "1.2", "1.3"]  # then each study that is not complete, alone
    assert [(r.study, r.outcome) for r in report.results] == [  # type: ignore[attr-defined]
        ("1.1", "migrated"), ("1.2", "failed"), ("1.3", "migrated")]
    assert "1 quarantined by ingest: invalid-uid (1)" in report.results[1].reason  # type: ignore[attr-defined]


def test_groups_hold_small_studies_up_to_a_chunk_and_large_ones_alone(state: MigrationState) -> None:
    migration, _ = run(Pacs({}), state)
    studies = [SourceStudy(f"1.{k}", n) for k, n in enumerate([10, 30, 20, 60, 5, None, 1])]  # type: ignore[attr-defined]
    assert [[s.uid for s in g] for g in migration.groups(studies)] == [  # type: ignore[attr-defined]
        ["1.0", "1.1"], ["1.2"], ["1.3"], ["1.4"], ["1.5"], ["1.6"]]
