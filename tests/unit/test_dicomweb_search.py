"""QIDO search over candidates (pure logic): planner criteria, exact matching, paging, plan header."""

from __future__ import annotations

import orjson

from shared.dicomweb.attributes import Level
from shared.dicomweb.planner import criteria_of
from shared.dicomweb.qido import parse_query
from shared.dicomweb.search import PLAN_HEADER, search, view_of
from shared.index.query import choose
from shared.index.records import InstanceRecord, StudyRecord


def q(level: Level, scope: dict[str, str] | None = None, **params: str):
    return parse_query(list(params.items()), level, scope=scope)


def test_supported_keys_become_planner_keys_and_never_scan():
    cases = [
        (q(Level.STUDY, PatientID="PID' or ''eq''"), "lookup:PatientID"),
        (q(Level.STUDY, PatientID="AB*"), "lookup:PatientID"),
        (q(Level.STUDY, AccessionNumber="A1"), "lookup:AccessionNumber"),
        (q(Level.STUDY, StudyDate="20240101-"), "lookup:StudyDate"),
        (q(Level.STUDY, StudyDate="20240101"), "lookup:StudyDate"),
        (q(Level.SERIES, Modality="CT", StudyDate="20240101-20240131"), "lookup:Modality"),
        (q(Level.STUDY, ModalitiesInStudy="MR"), "lookup:Modality"),
        (q(Level.STUDY, PatientName="doe^j*"), "lookup:PatientName"),
        (q(Level.SERIES, {"StudyInstanceUID": "1.2"}), "key:StudyInstanceUID"),
        (q(Level.INSTANCE, SOPInstanceUID="1.2.3"), "lookup:SOPInstanceUID"),
        (q(Level.SERIES, SeriesInstanceUID="1.2.3,1.2.4"), "lookup:SeriesInstanceUID"),
    ]
    for query, plan in cases:
        assert str(choose(query.level.value, criteria_of(query))) == plan, query  # type: ignore[arg-type]
    assert str(choose("study", criteria_of(q(Level.STUDY, StudyDescription="x")))).startswith("scan:")


def test_planner_gets_the_date_range_and_uid_list():
    c = criteria_of(q(Level.STUDY, StudyDate="-20240131", StudyInstanceUID="1.2\\1.3"))
    assert c.study_date == (None, "20240131")
    assert c.study_uids == ["1.2", "1.3"]


def test_views_of_index_records_use_keyword_names():
    rec = InstanceRecord(study_instance_uid="1.2", series_instance_uid="1.2.3", sop_instance_uid="1.2.3.4",
                         patient_name="Doe^Jane", rows=64, transfer_syntax_uid="1.2.840.10008.1.2.1")
    v = view_of(rec)
    assert v["PatientName"] == "Doe^Jane" and v["Rows"] == 64 and v["SOPInstanceUID"] == "1.2.3.4"
    assert v["AvailableTransferSyntaxUID"] == "1.2.840.10008.1.2.1"


def test_search_filters_candidates_pages_and_warns():
    studies = [StudyRecord(study_instance_uid=f"1.2.{i}", patient_id="P1" if i % 2 else "P2") for i in range(10)]
    fetched: list[object] = []

    def fetch(query):
        fetched.append(query)
        return "lookup:PatientID", iter(studies + studies[:3])  # candidates may repeat

    query = q(Level.STUDY, PatientID="P1", limit="2", offset="1")
    reply = search(query, fetch, "http://h/api/dicomweb")
    body = orjson.loads(reply.body)
    assert [o["0020000D"]["Value"][0] for o in body] == ["1.2.3", "1.2.5"]
    assert reply.headers[PLAN_HEADER] == "lookup:PatientID"
    assert reply.headers["Warning"].startswith("299 ")
    last = search(q(Level.STUDY, PatientID="P1", limit="2", offset="4"), fetch, "http://h")
    assert len(orjson.loads(last.body)) == 1 and "Warning" not in last.headers
    none = search(q(Level.STUDY, PatientID="nobody"), fetch, "http://h")
    assert none.status == 200 and orjson.loads(none.body) == []
