"""Bounded work per request (pure logic and in-memory fakes): wildcards, rows examined, change-feed
offsets, STOW-RS parts and copies, ingest status names and summary, the health probe."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import BadRequest, PayloadTooLarge
from shared.dicomweb.matching import wildcard_match
from shared.dicomweb.multipart import parse_stow_body
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import find, search
from shared.dicomweb.wado import parse_frame_list
from shared.health import Probe
from shared.index import changefeed
from shared.index.records import StudyRecord
from shared.index.sequence import seq_of_time
from shared.index.store import FeedEntry
from shared.ingest import status
from shared.storage import layout
from tests.fakes import memory_services
from tests.hostile import multipart

ARABIC_TEN = "\u0661\u0660"  # Arabic-Indic "10": int() and str.isdigit() take it, the API must not


# -- wildcards ---------------------------------------------------------------------------------------

def test_the_reported_wildcard_query_is_refused_and_matching_is_linear_anyway() -> None:
    attack = "*a" * 30 + "*b"  # 31 wildcards: a backtracking regular expression never finished on it
    with pytest.raises(BadRequest, match=r"31 wildcards.*at most 10.*DICOMFLOW_QUERY_MAX_WILDCARDS"):
        parse_query([("PatientName", attack)], Level.STUDY, max_wildcards=10)
    assert parse_query([("PatientName", attack)], Level.STUDY, max_wildcards=40).matches
    # The matcher itself: linear (fixed-length runs found left to right), so even the attack is instant.
    assert not wildcard_match(attack, "a" * 60)
    assert wildcard_match(attack, "a" * 60 + "b")
    assert wildcard_match("*a?c*", "xxabcyy") and not wildcard_match("a*c", "ab")


def test_a_value_of_stars_only_is_universal_whatever_their_number() -> None:
    query = parse_query([("PatientName", "*" * 40)], Level.STUDY, max_wildcards=2)
    assert query.matches[0].kind.value == "universal"


@pytest.mark.parametrize(("name", "value"), [("limit", ARABIC_TEN), ("offset", "\u00b2"),
                                             ("StudyDate", "\u0662\u0660\u0662\u0666\u0660\u0661\u0660\u0661"),
                                             ("StudyInstanceUID", "1.2.\u0663"), ("NumberOfFrames", "\u0663")])
def test_non_ascii_digits_are_a_400(name: str, value: str) -> None:
    with pytest.raises(BadRequest):
        parse_query([(name, value)], Level.INSTANCE)


def test_frame_numbers_are_ascii_digits_only() -> None:
    assert parse_frame_list("1,3,5") == [1, 3, 5]
    for bad in (ARABIC_TEN, "\u00b2", "1,\u0663", "\uff11"):  # Arabic-Indic, superscript, full-width
        with pytest.raises(BadRequest):
            parse_frame_list(bad)


# -- rows examined -----------------------------------------------------------------------------------

def studies(n: int, pid: str = "P") -> list[StudyRecord]:
    return [StudyRecord(study_instance_uid=f"1.2.{i}", patient_id=pid, patient_name="Nomatch^Here") for i in range(n)]


def test_a_search_stops_at_its_rows_budget_and_is_refused_with_413() -> None:
    pulled: list[int] = []

    def fetch(query: object) -> tuple[str, object]:
        def rows():  # counts what the search pulls from the index
            for i, rec in enumerate(studies(5000)):
                pulled.append(i)
                yield rec
        return "scan:studies", rows()

    query = parse_query([("PatientName", "*zz*")], Level.STUDY)
    found = find(query, fetch, max_rows=300)
    assert found.exhausted and found.examined == 300 and len(pulled) == 301
    with pytest.raises(PayloadTooLarge, match=r"300 index rows.*DICOMFLOW_QUERY_MAX_ROWS"):
        search(query, fetch, "http://h", max_rows=300)


def test_a_page_filled_within_the_budget_is_answered() -> None:
    def fetch(query: object) -> tuple[str, object]:
        return "scan:studies", iter(studies(5000))

    reply = search(parse_query([("limit", "10")], Level.STUDY), fetch, "http://h", max_rows=300)
    assert reply.status == 200 and "Warning" in reply.headers  # more results exist: the usual PS3.18 warning


# -- change feed -------------------------------------------------------------------------------------

def feed_with_hours(hours: int, per_hour: int) -> tuple[object, list[int]]:
    f = memory_services()
    base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    seqs = []
    entries = []
    for h in range(hours):
        for i in range(per_hour):
            seq = seq_of_time((base + dt.timedelta(hours=h, seconds=i)).timestamp()) + 1
            seqs.append(seq)
            entries.append(FeedEntry(seq, f"1.2.{h}", "1.3", f"1.4.{h}.{i}", "create", "current", "t"))
    f.services.index.append_feed(entries)
    return f, seqs


def test_the_feed_seeks_to_a_sequence_instead_of_reading_from_the_start() -> None:
    f, seqs = feed_with_hours(hours=24, per_hour=50)
    cursor = seqs[-10]  # in the last hour
    before = sum(f.tables.requests.values())  # type: ignore[attr-defined]
    got = list(changefeed.entries(f.services.index, None, None, horizon=0, after=cursor))  # type: ignore[attr-defined]
    asked = sum(f.tables.requests.values()) - before  # type: ignore[attr-defined]
    assert [e.seq for e in got] == seqs[-9:]
    # The head row, the first bucket at the cursor's hour (one row), that bucket's 4 shards, and one look
    # for a later bucket (none: the empty hours up to now cost that one query): never the 23 hours before
    # the cursor, whose 1,150 entries an offset that reads and skips would have read.
    assert asked <= 7, f.tables.requests  # type: ignore[attr-defined]
    assert len(list(changefeed.entries(f.services.index, None, None, horizon=0))) == 24 * 50  # type: ignore[attr-defined]


def test_latest_finds_the_last_entry_without_reading_every_empty_hour() -> None:
    f, seqs = feed_with_hours(hours=3, per_hour=20)
    before = sum(f.tables.requests.values())  # type: ignore[attr-defined]
    assert changefeed.latest(f.services.index, horizon=0).seq == seqs[-1]  # type: ignore[attr-defined, union-attr]
    asked = sum(f.tables.requests.values()) - before  # type: ignore[attr-defined]
    hours_since = (dt.datetime.now(dt.UTC) - dt.datetime(2026, 11, 1, tzinfo=dt.UTC)).total_seconds() / 3600
    assert asked < 40 < hours_since, (asked, hours_since)  # bisection, not one read per hour since


def test_pages_of_the_feed_hold_one_page_whatever_the_hour_holds() -> None:
    f, seqs = feed_with_hours(hours=1, per_hour=500)
    got = list(changefeed.entries(f.services.index, None, None, horizon=0, page=64))  # type: ignore[attr-defined]
    assert [e.seq for e in got] == seqs


# -- STOW-RS -----------------------------------------------------------------------------------------

def test_stow_parts_are_views_of_one_body_and_their_number_is_capped() -> None:
    body, ctype = multipart([b"a" * 1000, b"b" * 10, b""])
    parts = parse_stow_body(body, ctype, max_parts=3)
    assert [bytes(p.content) for p in parts] == [b"a" * 1000, b"b" * 10, b""]
    assert all(isinstance(p.content, memoryview) and p.content.obj is body for p in parts)  # no copies
    with pytest.raises(PayloadTooLarge, match=r"more than 2 parts.*DICOMFLOW_STOW_MAX_PARTS"):
        parse_stow_body(body, ctype, max_parts=2)
    many, ctype = multipart([b"x"] * 100_000)  # 6 MB of tiny parts: refused at the 1,001st, not split whole
    with pytest.raises(PayloadTooLarge):
        parse_stow_body(many, ctype, max_parts=1000)


# -- ingest status -----------------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    [("blob", "../dicom-archive/1.2/1.3/1.4.dcm")], [("blob", "a/../../x")], [("blob", "/etc")],
    [("blob", "a\\b")], [("blob", "a\nb")], [("blob", "")], [("blob", "x" * 1025)], [("blob", "a"), ("blob", "b")],
    [("blob", "a"), ("other", "b")],
])
def test_status_refuses_names_that_leave_the_inbox(params: list[tuple[str, str]]) -> None:
    assert status.check_params(params)


def test_status_of_an_unsafe_name_reads_nothing_even_when_called_directly() -> None:
    f = memory_services()
    f.blobs.put(layout.ARCHIVE, "1.2/1.3/1.4.dcm", b"DICM")
    before = sum(f.blobs.requests.values())
    out = status.blob_status(f.services, "../dicom-archive/1.2/1.3/1.4.dcm")
    assert out.state.value == "unknown" and sum(f.blobs.requests.values()) == before


def test_the_status_summary_looks_at_a_bounded_number_of_items() -> None:
    f = memory_services(DICOMFLOW_STATUS_MAX_ITEMS="20")
    for i in range(50):
        f.blobs.put(layout.QUARANTINE, f"etag{i}/bad-{i}.dcm", b"x")
    out = status.summary(f.services)
    assert out["complete"] is False and out["counts"].get("quarantined", 0) <= 20
    assert status.summary(f.services, max_items=100)["complete"] is True


# -- health ------------------------------------------------------------------------------------------

def test_the_anonymous_probe_makes_one_backend_call_per_cache_period() -> None:
    now = [0.0]
    calls: list[int] = []
    probe = Probe(lambda: calls.append(1), 10.0, clock=lambda: now[0])
    assert all(probe.up() for _ in range(1000)) and len(calls) == 1
    now[0] = 10.5
    assert probe.up() and len(calls) == 2


def test_a_failing_backend_makes_the_probe_down_until_it_answers_again() -> None:
    now, state = [0.0], {"up": False}

    def call() -> None:
        if not state["up"]:
            raise ConnectionError("storage unreachable")

    probe = Probe(call, 5.0, clock=lambda: now[0])
    assert not probe.up() and not probe.up()
    state["up"] = True
    assert not probe.up()  # cached until the period ends
    now[0] = 6
    assert probe.up()


# -- index rows ----------------------------------------------------------------------------------------

def test_a_legacy_zlib_row_inflates_with_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written before LZ4 hold a zlib stream: it is inflated up to ``META_MAX_INFLATED``, never further."""
    import zlib

    from shared.index import records

    monkeypatch.setattr(records, "META_MAX_INFLATED", 1024 * 1024)
    fits, bomb = b"[" + b" " * (1024 * 1024 - 2) + b"]", b"\0" * (8 * 1024 * 1024)
    assert records.unpack_meta({"meta0": zlib.compress(fits, 9)}) == fits
    packed = zlib.compress(bomb, 9)
    assert len(packed) < 10_000  # what a row can hold inflates 1000:1
    with pytest.raises(ValueError, match="inflates past 1,048,576 bytes"):
        records.unpack_meta({"meta0": packed})
