"""QIDO-RS parameter parsing and PS3.4 C.2.2.2 matching on record views (pure logic)."""

from __future__ import annotations

import orjson
import pytest

from shared.dicomweb.attributes import Level, resolve, snake
from shared.dicomweb.errors import BadRequest
from shared.dicomweb.matching import DIFFERENCES, matches
from shared.dicomweb.qido import MAX_LIMIT, MatchKind, check_path_uid, parse_query
from shared.dicomweb.qido_json import render

STUDY = {
    "StudyInstanceUID": "1.2.3.1",
    "PatientName": "Müller^Jürgen^^^",
    "PatientID": "PID' or ''eq''",
    "StudyDate": "20240315",
    "StudyTime": "103000.25",
    "AccessionNumber": "ACC123",
    "ModalitiesInStudy": ["CT", "SR"],
    "NumberOfStudyRelatedSeries": 2,
    "NumberOfStudyRelatedInstances": 7,
}


def q(level: Level = Level.STUDY, **params: str):
    return parse_query(list(params.items()), level)


def hit(query, view=STUDY) -> bool:
    return matches(query, view)


def test_keyword_and_tag_name_the_same_attribute():
    a = q(PatientID="X").matches[0]
    b = q(**{"00100020": "X"}).matches[0]
    assert a.attribute is b.attribute is resolve("PatientID")
    assert q(**{"0020000d": "1.2.3.1"}).matches[0].attribute.keyword == "StudyInstanceUID"


def test_snake_names_match_record_fields():
    assert snake("PatientName") == "patient_name"
    assert snake("SOPInstanceUID") == "sop_instance_uid"
    assert snake("NumberOfStudyRelatedInstances") == "number_of_study_related_instances"
    assert snake("StudyInstanceUID") == "study_instance_uid"


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"Frobnicate": "1"}, "Frobnicate"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": str(MAX_LIMIT + 1)}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"StudyDate": "2024-03-15"}, "StudyDate"),
        ({"StudyDate": "yesterday"}, "StudyDate"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"includefield": "NotAKeyword"}, "NotAKeyword"),
        ({"SOPInstanceUID": "1.2"}, "SOPInstanceUID"),  # instance key at study level
        ({"NumberOfStudyRelatedSeries": "2"}, "NumberOfStudyRelatedSeries"),  # return-only
        ({"ContentDate": "20240101"}, "ContentDate"),  # real attribute, not matchable here
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(params, word):
    with pytest.raises(BadRequest) as err:
        q(**params)
    assert word in err.value.message
    assert err.value.status == 400


def test_bad_values_are_not_echoed_back():
    with pytest.raises(BadRequest) as err:
        q(StudyDate="Doe^John")
    assert "Doe" not in err.value.message


def test_limit_offset_fuzzy_and_includefield():
    query = parse_query(
        [("limit", "5"), ("offset", "10"), ("fuzzymatching", "true"), ("includefield", "PatientBirthDate,00100040"),
         ("includefield", "ContentDate")],
        Level.STUDY,
    )
    assert (query.limit, query.offset, query.fuzzy) == (5, 10, True)
    assert [a.keyword for a in query.include] == ["PatientBirthDate", "PatientSex"]  # ContentDate: not held
    assert q(includefield="all").include_all


def test_repeated_uid_parameter_is_a_uid_list_but_other_repeats_are_rejected():
    query = parse_query([("StudyInstanceUID", "1.2.3.1"), ("StudyInstanceUID", "1.2.3.9")], Level.STUDY)
    assert query.matches[0].kind is MatchKind.LIST
    assert hit(query)
    with pytest.raises(BadRequest, match="PatientID"):
        parse_query([("PatientID", "A"), ("PatientID", "B")], Level.STUDY)


def test_path_scope_is_a_match_and_cannot_be_repeated_in_the_query():
    query = parse_query([], Level.SERIES, scope={"StudyInstanceUID": "1.2.3.1"})
    assert hit(query, {"StudyInstanceUID": "1.2.3.1"})
    assert not hit(query, {"StudyInstanceUID": "1.2.3.2"})
    with pytest.raises(BadRequest, match="path"):
        parse_query([("StudyInstanceUID", "1.2.3.1")], Level.SERIES, scope={"StudyInstanceUID": "1.2.3.1"})


def test_relational_keys_allowed_below_their_level():
    assert hit(q(Level.INSTANCE, PatientID="PID' or ''eq''", Modality="CT"), {**STUDY, "Modality": "CT"})


def test_single_value_is_exact_and_literal():
    assert hit(q(PatientID="PID' or ''eq''"))  # OData-looking text matches literally
    assert not hit(q(PatientID="PID"))
    assert not hit(q(PatientID="pid' or ''eq''"))  # LO is case sensitive
    assert hit(q(AccessionNumber=" ACC123 "))  # rule TEXT_TRIM_SPACES


def test_uid_list_with_comma_or_backslash():
    assert hit(q(StudyInstanceUID="1.2.9,1.2.3.1"))
    assert hit(q(StudyInstanceUID="1.2.9\\1.2.3.1"))
    assert not hit(q(StudyInstanceUID="1.2.9,1.2.3"))


def test_wildcards():
    assert hit(q(AccessionNumber="ACC*"))
    assert hit(q(AccessionNumber="ACC1?3"))
    assert not hit(q(AccessionNumber="ACC1?"))
    assert hit(q(AccessionNumber="*"))
    assert q(AccessionNumber="*").matches[0].kind is MatchKind.UNIVERSAL
    assert hit(q(AccessionNumber="a.c*")) is False  # '.' is literal, not a regex


def test_date_ranges_with_open_ends():
    assert hit(q(StudyDate="20240301-20240331"))
    assert hit(q(StudyDate="20240315-"))
    assert hit(q(StudyDate="-20240315"))
    assert not hit(q(StudyDate="20240316-"))
    assert not hit(q(StudyDate="-20240314"))
    assert hit(q(StudyDate="20240315"))
    assert not hit(q(StudyDate="20240314"))


def test_time_ranges_and_partial_times():
    assert hit(q(StudyTime="1000-1100"))
    assert hit(q(StudyTime="-1030"))  # rule TM_PARTIAL_AS_RANGE: includes 10:30:xx
    assert not hit(q(StudyTime="1031-"))
    assert hit(q(StudyTime="10"))
    assert hit(q(StudyTime="10:30-10:31"))


def test_datetime_range():
    from shared.dicomweb.attributes import BY_KEYWORD
    from shared.dicomweb.matching import match_one
    from shared.dicomweb.qido import parse_value

    dt = BY_KEYWORD["StudyDate"].__class__("AcquisitionDateTime", "0008002A", "DT", Level.INSTANCE)
    assert match_one(parse_value(dt, "2024-20250101"), "20240315103000")
    assert match_one(parse_value(dt, "20240315-"), "20240315103000.5+0100")  # rule DT_OFFSET_IGNORED
    assert not match_one(parse_value(dt, "-20240314"), "20240315103000")
    assert match_one(parse_value(dt, "2024031510"), "20240315103000")


def test_empty_value_matching():
    assert hit(q(StudyDate=""))  # universal
    assert q(StudyDate="").matches[0].kind is MatchKind.UNIVERSAL
    assert hit(q(StudyID='""'))  # StudyID absent counts as empty
    assert hit(q(StudyID='""'), {**STUDY, "StudyID": ""})
    assert not hit(q(AccessionNumber='""'))
    assert not hit(q(StudyID="X"))  # absent value never matches a non-universal key


def test_multi_valued_attribute_matches_any_value():
    assert hit(q(ModalitiesInStudy="SR"))  # rule MULTI_VALUED_ANY
    assert hit(q(ModalitiesInStudy="MR\\CT"))  # rule LIST_ANY
    assert not hit(q(ModalitiesInStudy="MR"))


def test_person_names():
    assert hit(q(PatientName="muller^jurgen"))  # rule PN_CASE_ACCENT_INSENSITIVE + PN_TRAILING_CARETS
    assert hit(q(PatientName="MÜLLER*"))
    assert hit(q(PatientName="m?ller^*"))
    assert not hit(q(PatientName="muller"))  # strict single value without fuzzy matching
    assert hit(q(PatientName="jur", fuzzymatching="true"))  # rule PN_FUZZY_PREFIX
    assert hit(q(PatientName="mul jur", fuzzymatching="true"))
    assert not hit(q(PatientName="urg", fuzzymatching="true"))  # prefix, not substring
    assert hit(q(PatientName="yamada^tarou"), {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"})
    assert hit(q(PatientName="山田^太郎"), {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"})  # PN_ANY_GROUP


def test_numbers():
    assert hit(q(Level.SERIES, SeriesNumber="3"), {"SeriesNumber": "3"})
    assert hit(q(Level.SERIES, SeriesNumber="3"), {"SeriesNumber": 3})
    assert not hit(q(Level.SERIES, SeriesNumber="4"), {"SeriesNumber": 3})
    with pytest.raises(BadRequest, match="SeriesNumber"):
        q(Level.SERIES, SeriesNumber="three")


def test_path_uids_are_checked():
    assert check_path_uid("1.2.840.10008", "study") == "1.2.840.10008"
    assert check_path_uid("1.2.0123", "study") == "1.2.0123"  # leading zeros: ingest accepts them too
    for bad in ("", "1..2", ".1.2", "1.2.", "abc", "1" * 65, "1.2/../3", "1.2 3"):
        with pytest.raises(BadRequest):
            check_path_uid(bad, "study")


def test_every_rule_has_a_sentence():
    assert all(len(v) > 20 for v in DIFFERENCES.values())


def test_response_is_dicom_json_with_charset_counts_and_retrieve_url():
    query = q(PatientName="muller*")
    body = render([STUDY], query, "http://h/api/dicomweb")
    (obj,) = orjson.loads(body)
    assert obj["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert obj["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen^^^"}]}
    assert obj["00201206"] == {"vr": "IS", "Value": [2]}
    assert obj["00201208"] == {"vr": "IS", "Value": [7]}
    assert obj["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert obj["00081190"]["Value"] == ["http://h/api/dicomweb/studies/1.2.3.1"]
    assert obj["00200010"] == {"vr": "SH"}  # StudyID absent: returned empty
    assert obj["00100030"] == {"vr": "DA"}  # a default study attribute (PS3.18 Table 10.6.3-3), empty here
    series = orjson.loads(render([{"StationName": "S1"}], q(Level.SERIES), "http://h"))[0]
    assert "00081010" not in series  # StationName only with includefield
    series = orjson.loads(render([{"StationName": "S1"}], q(Level.SERIES, includefield="StationName"), "http://h"))[0]
    assert series["00081010"] == {"vr": "SH", "Value": ["S1"]}
    assert list(obj) == sorted(obj)
    assert "Müller".encode() in body  # UTF-8, not escaped
    full = orjson.loads(render([STUDY], q(includefield="all"), "http://h"))[0]
    assert "00100040" in full


def test_instance_results_carry_study_and_series_uids():
    view = {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.3.4", "Rows": 512}
    (obj,) = orjson.loads(render([view], q(Level.INSTANCE), "http://h"))
    assert obj["0020000D"]["Value"] == ["1.2"]
    assert obj["0020000E"]["Value"] == ["1.2.3"]
    assert obj["00280010"] == {"vr": "US", "Value": [512]}
    assert obj["00081190"]["Value"] == ["http://h/studies/1.2/series/1.2.3/instances/1.2.3.4"]
