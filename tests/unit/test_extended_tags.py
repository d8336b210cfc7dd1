"""Extended query tags on in-memory fakes: the add checks, value extraction against the VR, and the whole
cycle (add -> reindex operation -> QIDO matches; new uploads indexed at ingest; errors; patch; delete)."""

from __future__ import annotations

import base64
import io
from typing import Any

import orjson
import pydicom
import pytest

from shared.dicomweb import service
from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import BadRequest, Conflict, HttpProblem
from shared.extended import service as tags_api
from shared.extended.registry import TagStore
from shared.extended.tags import ExtendedTag, parse_add
from shared.extended.values import extract
from shared.ingest.service import IngestService
from shared.ops import runner
from shared.ops import service as ops_api
from shared.storage import layout
from tests.fakes import Fakes, memory_services
from tests.instances import instance, uid

BASE = "http://dicomflow.test/api/dicomweb"


# -- the add request -----------------------------------------------------------------------------------

def body(*entries: dict[str, Any]) -> bytes:
    return orjson.dumps(list(entries))


def test_an_add_request_resolves_keywords_and_takes_the_dictionary_vr() -> None:
    got = parse_add(body({"path": "SliceThickness", "level": "series"}, {"path": "00081090", "vr": "LO",
                                                                           "level": "Instance"},
                         {"path": "04011001", "vr": "ss", "privateCreator": "MicrosoftPC", "level": "Study"}), [])
    assert [(t.path, t.vr, t.level, t.private_creator) for t in got] == [
        ("00180050", "DS", Level.SERIES, None), ("00081090", "LO", Level.INSTANCE, None),
        ("04011001", "SS", Level.STUDY, "MicrosoftPC")]


@pytest.mark.parametrize(("entry", "words"), [
    ({"path": "0018005", "level": "Series"}, "neither 8 hex digits"),
    ({"path": "NoSuchKeyword", "level": "Series"}, "neither 8 hex digits"),
    ({"path": "00081110.00081150", "level": "Series"}, "inside a sequence"),
    ({"path": "00180050", "vr": "LO", "level": "Series"}, "has VR DS in the DICOM standard"),
    ({"path": "00081110", "level": "Study"}, "VR SQ"),
    ({"path": "00180050", "level": "Patient"}, "level must be Study, Series or Instance"),
    ({"path": "04011001", "level": "Study", "privateCreator": "X"}, "needs a vr"),
    ({"path": "04011001", "vr": "SS", "level": "Study"}, "needs its privateCreator"),
    ({"path": "04010010", "vr": "LO", "level": "Study", "privateCreator": "X"}, "private creator"),
    ({"path": "00180050", "level": "Series", "privateCreator": "X"}, "only for private tags"),
    ({"path": "00180050", "level": "Series", "colour": "red"}, "unknown field"),
])
def test_a_malformed_tag_is_a_400_naming_the_entry(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(BadRequest) as bad:
        parse_add(body({"path": "00081090", "level": "Series"}, entry), [])
    assert bad.value.message.startswith("Entry 2") and words in bad.value.message


def test_bad_bodies_duplicates_and_the_limit_are_400() -> None:
    for raw in (b"", b"{", b"{}", b"[]", b'["x"]'):
        with pytest.raises(BadRequest):
            parse_add(raw, [])
    with pytest.raises(BadRequest, match="given twice"):
        parse_add(body({"path": "00180050", "level": "Series"}, {"path": "SliceThickness", "level": "Series"}), [])
    existing = [ExtendedTag(f"0009{n:04X}", "LO", Level.STUDY, "X") for n in range(0x1000, 0x1000 + 128)]
    with pytest.raises(BadRequest, match="At most 128"):
        parse_add(body({"path": "00180050", "level": "Series"}), existing)


def test_a_tag_already_indexed_or_built_in_is_a_409() -> None:
    with pytest.raises(Conflict, match="matched by QIDO-RS already"):
        parse_add(body({"path": "PatientID", "level": "Study"}), [])
    with pytest.raises(Conflict, match="extended query tag already"):
        parse_add(body({"path": "00180050", "level": "Series"}), [ExtendedTag("00180050", "DS", Level.SERIES)])


# -- values against the VR -----------------------------------------------------------------------------

def tag(path: str, vr: str, creator: str | None = None) -> ExtendedTag:
    return ExtendedTag(path, vr, Level.INSTANCE, creator, gen=7)


def test_values_come_typed_and_a_value_that_fails_its_vr_is_an_error_not_an_exception() -> None:
    doc = {"00180050": {"vr": "DS", "Value": [1.25]}, "00101010": {"vr": "AS", "Value": ["45"]},
           "00081090": {"vr": "LO", "Value": ["Scanner ", "Other"]}, "00100010": {"vr": "PN", "Value": [
               {"Alphabetic": "Doe^Jane", "Ideographic": "山田"}]}, "00280010": {"vr": "US", "Value": [70000]}}
    tags = [tag("00180050", "DS"), tag("00101010", "AS"), tag("00081090", "LO"), tag("00100010", "PN"),
            tag("00280010", "US"), tag("00081030", "LO")]
    values, errors = extract(doc, tags)
    assert values == {"00180050.7": [1.25], "00101010.7": [], "00081090.7": ["Scanner", "Other"],
                      "00100010.7": ["Doe^Jane=山田"], "00280010.7": [], "00081030.7": []}
    assert [(e.tag.path, e.message) for e in errors] == [
        ("00101010", "A value of 00101010 does not fit its VR AS."),
        ("00280010", "A value of 00280010 does not fit its VR US.")]


def test_private_values_need_their_creator_and_unknown_vrs_are_decoded_as_the_tags() -> None:
    raw = base64.b64encode((-3).to_bytes(2, "little", signed=True) + (12).to_bytes(2, "little")).decode()
    doc = {"04010010": {"vr": "LO", "Value": ["MicrosoftPC"]}, "04011001": {"vr": "UN", "InlineBinary": raw},
           "04011002": {"vr": "UN", "InlineBinary": base64.b64encode(b"20261129").decode()}}
    values, errors = extract(doc, [tag("04011001", "SS", "MicrosoftPC"), tag("04011002", "DA", "MicrosoftPC"),
                                   tag("04011001", "SS", "SomeoneElse")])
    assert values["04011001.7"] == [] and not errors  # the last tag asked for another creator: not ours
    values, _ = extract(doc, [tag("04011001", "SS", "MicrosoftPC"), tag("04011002", "DA", "MicrosoftPC")])
    assert values == {"04011001.7": [-3, 12], "04011002.7": ["20261129"]}


# -- the whole cycle on fakes ------------------------------------------------------------------------------

def ct(study: str, series: str, sop: str, *, thickness: str | None, age: str | None = "045Y",
       private: str | None = None) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(instance(study, series, sop)))
    if thickness is not None:
        ds.SliceThickness = thickness
    if age is not None:
        ds.PatientAge = age
    if private is not None:
        block = ds.private_block(0x0401, "MicrosoftPC", create=True)
        block.add_new(0x01, "SH", private)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = memory_services(DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS="0", DICOMFLOW_EXTENDED_TAGS_WRITE_GRACE_SECONDS="0")
    monkeypatch.setattr(service, "services", lambda call: f.services)
    f.services.ensure_ready()
    return f


def put(f: Fakes, data: bytes, name: str) -> None:
    f.blobs.put(layout.INBOX, name, data)
    assert IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, name)).state == "archived"


def call(f: Fakes, method: str = "GET", body_: bytes = b"", params: list[tuple[str, str]] | None = None,
         **path: str) -> service.Call:
    return service.Call(f.services.settings, method=method, base_url=BASE, body=body_, params=params or [],
                        path=path)


def qido(f: Fakes, level: Level, **params: str) -> tuple[int, list[dict[str, Any]], dict[str, str]]:
    try:
        reply = service.search(call(f, params=list(params.items())), level)
    except HttpProblem as problem:
        return problem.status, [], {}
    return reply.status, orjson.loads(reply.body), reply.headers


def run_operations(f: Fakes) -> list[str]:
    outcomes = []
    for _ in range(50):
        pending = f.queues.drain(layout.OPERATIONS_QUEUE)
        if not pending:
            break
        outcomes += [runner.run_step(f.services, text) for text, _ in pending]
    return outcomes


def settle_all(f: Fakes) -> None:
    from shared.ingest.schedule import SettleRequest
    from shared.ingest.settle import SettleService

    for text, _ in f.queues.drain(layout.SETTLE_QUEUE):
        SettleService(f.services).settle(SettleRequest.from_message(text))


def test_add_reindex_query_new_uploads_errors_patch_delete(fakes: Fakes) -> None:
    f = fakes
    s1, s2 = uid("xt", "s1"), uid("xt", "s2")
    a, b = uid("xt", "a"), uid("xt", "b")
    put(f, ct(s1, a, uid("xt", "a1"), thickness="1.25", private="LEFT"), "a1.dcm")
    put(f, ct(s1, a, uid("xt", "a2"), thickness="1.250"), "a2.dcm")
    put(f, ct(s2, b, uid("xt", "b1"), thickness="5", age="45"), "b1.dcm")  # "45" is not an AS value
    settle_all(f)

    status, _, _ = qido(f, Level.SERIES, SliceThickness="1.25")
    assert status == 400  # not an extended query tag yet
    add = tags_api.add(call(f, "POST", body(
        {"path": "SliceThickness", "level": "Series"}, {"path": "00101010", "level": "Study"},
        {"path": "04011001", "vr": "SH", "privateCreator": "MicrosoftPC", "level": "Instance"})))
    assert add.status == 202
    ref = orjson.loads(add.body)
    assert ref["href"] == f"{BASE}/operations/{ref['id']}"
    listed = orjson.loads(tags_api.list_tags(call(f)).body)
    assert {t["path"]: t["status"] for t in listed} == {"00180050": "Adding", "00101010": "Adding",
                                                         "04011001": "Adding"}
    with pytest.raises(HttpProblem) as still:  # not Ready: QIDO does not match on it yet
        service.search(call(f, params=[("SliceThickness", "1.25")]), Level.SERIES)
    assert still.value.status == 400

    assert "done" in run_operations(f)
    op = ops_api.status(call(f, operation=ref["id"]))
    doc = orjson.loads(op.body)
    assert op.status == 200 and doc["status"] == "completed" and doc["percentComplete"] == 100
    assert doc["results"]["instancesIndexed"] == 3 and doc["results"]["valueErrors"] == 1
    assert doc["resources"] == [f"{BASE}/extendedquerytags/{p}" for p in ("00180050", "00101010", "04011001")]
    got = {t["path"]: t for t in orjson.loads(tags_api.list_tags(call(f)).body)}
    assert got["00180050"]["status"] == "Ready" and got["00180050"]["queryStatus"] == "Enabled"
    assert got["00101010"]["queryStatus"] == "Disabled"  # its indexing found a bad value (the Azure rule)
    assert got["00101010"]["errors"] == {"count": 1, "href": f"{BASE}/extendedquerytags/00101010/errors"}
    errors = orjson.loads(tags_api.tag_errors(call(f, tag="PatientAge")).body)
    assert [(e["sopInstanceUid"], e["errorMessage"]) for e in errors] == [
        (uid("xt", "b1"), "A value of 00101010 does not fit its VR AS.")]

    # Series level: both instances of series a (1.25 and 1.250 are one DS value); 5 is the other study's.
    status, found, _ = qido(f, Level.SERIES, SliceThickness="1.25", includefield="SliceThickness")
    assert status == 200 and [r["0020000E"]["Value"] for r in found] == [[a]]
    assert found[0]["00180050"] == {"vr": "DS", "Value": [1.25]}
    _, found, _ = qido(f, Level.INSTANCE, **{"04011001": "LEFT"})
    assert [r["00080018"]["Value"][0] for r in found] == [uid("xt", "a1")]
    with pytest.raises(HttpProblem):  # Disabled: not matched until an admin enables it
        service.search(call(f, params=[("PatientAge", "045Y")]), Level.STUDY)

    # Enabled by hand despite its error: matched, and the answer names it as erroneous.
    patched = tags_api.patch_tag(call(f, "PATCH", b'{"queryStatus": "Enabled"}', tag="00101010"))
    assert orjson.loads(patched.body)["queryStatus"] == "Enabled"
    status, found, headers = qido(f, Level.STUDY, PatientAge="045Y")
    assert [r["0020000D"]["Value"] for r in found] == [[s1]]
    assert headers["erroneous-dicom-attributes"] == "PatientAge"

    # A new upload is indexed at ingest, in its row's own transaction: found at once, before any settle run.
    c = uid("xt", "c")
    put(f, ct(uid("xt", "s3"), c, uid("xt", "c1"), thickness="1.25"), "c1.dcm")
    _, found, _ = qido(f, Level.SERIES, SliceThickness="1.25")
    assert sorted(r["0020000E"]["Value"][0] for r in found) == sorted([a, c])

    assert tags_api.delete_tag(call(f, "DELETE", tag="SliceThickness")).status == 204
    with pytest.raises(HttpProblem) as gone:
        service.search(call(f, params=[("SliceThickness", "1.25")]), Level.SERIES)
    assert gone.value.status == 400
    assert TagStore(f.services.tables).errors("00180050") == []
    with pytest.raises(HttpProblem) as missing:
        tags_api.get_tag(call(f, tag="00180050"))
    assert missing.value.status == 404


def test_an_operation_resumes_from_its_cursor_after_a_crash(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    f = fakes
    for n in range(4):
        study = uid("resume", n)
        put(f, ct(study, uid("resume-se", n), uid("resume-i", n), thickness=str(n + 1)), f"r{n}.dcm")
    settle_all(f)
    tags_api.add(call(f, "POST", body({"path": "SliceThickness", "level": "Series"})))
    from shared.extended import reindex

    done: list[str] = []
    real = reindex.index_study

    def crash_on_third(svc: Any, study: str, tags: Any) -> tuple[int, int]:
        if len(done) == 2:
            raise OSError("storage went away")
        done.append(study)
        return real(svc, study, tags)

    monkeypatch.setattr(reindex, "index_study", crash_on_third)
    monkeypatch.setattr(reindex.time, "monotonic", lambda: 0.0)  # a step never runs out of time here
    (text, _), = f.queues.drain(layout.OPERATIONS_QUEUE)
    with pytest.raises(OSError):
        runner.run_step(f.services, text)
    monkeypatch.setattr(reindex, "index_study", real)
    assert runner.run_step(f.services, text) == "done"  # the message came back: the next step resumes
    op = f.services.tables.query("dicomoperations")
    (row,) = list(op)
    assert orjson.loads(row["results"])["studiesIndexed"] == 2 and row["failures"] == 1
    _, found, _ = qido(f, Level.SERIES, SliceThickness="3")
    assert [r["0020000E"]["Value"][0] for r in found] == [uid("resume-se", 2)]


def test_query_values_are_checked_against_the_tags_vr(fakes: Fakes) -> None:
    f = fakes
    tags_api.add(call(f, "POST", body({"path": "SliceThickness", "level": "Series"})))
    run_operations(f)
    for bad in ("thick", "1.2.3"):
        with pytest.raises(BadRequest, match="decimal number"):
            service.search(call(f, params=[("SliceThickness", bad)]), Level.SERIES)


def test_the_ingest_request_count_does_not_grow_with_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = []
    for with_tags in (False, True):
        f = memory_services(DICOMFLOW_EXTENDED_TAGS_TTL_SECONDS="3600")
        monkeypatch.setattr(service, "services", lambda call, f=f: f.services)
        f.services.ensure_ready()
        if with_tags:
            tags_api.add(call(f, "POST", body({"path": "SliceThickness", "level": "Series"},
                                                {"path": "00081090", "level": "Instance"})))
        f.services.extended_tags.current()
        study = uid("count", with_tags)
        items = [ct(study, uid("count-se", with_tags), uid("count-i", with_tags, n), thickness="2") for n in range(5)]
        for n, data in enumerate(items):
            f.blobs.put(layout.INBOX, f"{n}.dcm", data)
        before = f.requests()
        for n in range(len(items)):
            IngestService(f.services).ingest(f.services.blobs.open(layout.INBOX, f"{n}.dcm"))
        counts.append(f.requests() - before)
        row = next(r for r in f.tables.query("dicominstances") if not r["RowKey"].startswith("~"))
        assert ("extended" in row) is with_tags
    assert counts[0] == counts[1]


def test_a_held_operation_is_looked_at_again_when_its_lease_runs_out(fakes: Fakes) -> None:
    """A runner that crashed mid-step left its lease: the message that comes back must not be dropped."""
    import time

    from shared.ops.store import OperationStore

    f = fakes
    op = runner.start(f.services, "reindex", params={"tags": []})
    (text, _), = f.queues.drain(layout.OPERATIONS_QUEUE)
    store = OperationStore(f.services.tables)
    held = store.get(op.id)
    assert held is not None
    held.lease_until = time.time() + 30  # a crashed runner's hold
    store.save(held)
    assert runner.run_step(f.services, text) == "busy"
    (again, delay), = f.queues.drain(layout.OPERATIONS_QUEUE)
    assert again == text and 29 < delay <= 31
    held = store.get(op.id)
    assert held is not None
    held.lease_until = 0.0
    store.save(held)
    assert runner.run_step(f.services, again) == "done"  # no tags of its own: finished at once
    assert runner.run_step(f.services, again) == "finished"  # a duplicate finds it done
