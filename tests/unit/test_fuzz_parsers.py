"""Property-based fuzzing (Hypothesis) of what parses untrusted input: the DICOM header reader and the
DICOM JSON built from it, the STOW-RS multipart splitter, and the values of HTTP routes.

The property is the same everywhere: any input is either parsed or refused with our own error
(:class:`~shared.errors.BadInput` with a reason code; :class:`~shared.dicomweb.errors.HttpProblem` for
HTTP), never anything else. Anything else is a bug to fix in the parser, not here.

Deterministic in CI: ``derandomize=True`` (the examples follow from the test's source) and a bounded
number of examples (a few seconds in all). Run longer locally with more examples and random seeds::

    DICOMFLOW_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/unit/test_fuzz_parsers.py

(``DICOMFLOW_FUZZ_EXAMPLES`` > 0 also turns derandomization off, so each long run tries new inputs; a
failure prints the smallest input Hypothesis found and how to reproduce it.)
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from shared.config import HeaderLimits
from shared.dicom.dicomjson import to_dicom_json
from shared.dicom.header import read_header_bytes
from shared.dicom.validate import validate
from shared.dicomweb import changefeed
from shared.dicomweb.attributes import Level
from shared.dicomweb.errors import HttpProblem
from shared.dicomweb.matching import wildcard_match
from shared.dicomweb.multipart import parse_stow_body
from shared.dicomweb.qido import check_path_uid, parse_query
from shared.dicomweb.wado import parse_frame_list
from shared.errors import BadInput
from shared.index.records import from_dicom_json, pack_meta
from shared.ingest.status import check_params
from shared.storage import layout
from tests import hostile

LONG = int(os.environ.get("DICOMFLOW_FUZZ_EXAMPLES") or 0)


def fuzz(examples: int) -> settings:
    """CI: ``examples`` derandomized examples; locally with DICOMFLOW_FUZZ_EXAMPLES: that many, random."""
    return settings(max_examples=LONG or examples, derandomize=not LONG, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: Small limits, so the fuzzer reaches every "over the limit" path with small inputs.
TIGHT = HeaderLimits(max_bytes=1 << 20, max_elements=2000, max_inflated_bytes=1 << 20, max_depth=8)


@cache
def seeds() -> tuple[bytes, ...]:
    """Real files of several shapes: explicit/implicit/big endian, deflated, sequences, nesting, pixel data."""
    files = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "rtplan.dcm",
             "ExplVR_LitEndNoMeta.dcm", "UN_sequence.dcm", "nested_priv_SQ.dcm", "test-SR.dcm", "JPEG2000.dcm"]
    out = [open(get_testdata_file(f), "rb").read() for f in files]  # noqa: SIM115 - small test files
    out += [hostile.deflated_ok("fz"), hostile.deep_nesting("fz", 6), hostile.deep_nesting("fz", 6, defined=True),
            hostile.item_flood("fz", 300), hostile.item_flood("fz", 300, defined=False),
            hostile.item_flood("fz", 300, deflate=True), hostile.frame_count("fz", "2")]
    return tuple(out)


INTERESTING = [b"\xff\xff\xff\xff", b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0", b"\xfe\xff\x0d\xe0", b"SQ\0\0",
               b"UN\0\0", b"OB\0\0", b"\0\0\0\x80", b"\xe0\x7f\x10\x00", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "write", "insert", "delete", "cut"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "write":
            value = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=6))
            data[pos:pos + len(value)] = value
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def must_parse_or_refuse(data: bytes, limits: HeaderLimits | None = None) -> None:
    """What ingest does with a file before it writes: parse, validate, DICOM JSON, index record, packed row."""
    try:
        header = read_header_bytes(data, limits=limits)
        study, series, sop, _ = validate(header)
        doc = to_dicom_json(header, study, series, sop)
    except BadInput as bad:
        assert bad.reason and bad.message  # a reason code and a sentence, never a crash
        return
    from_dicom_json(doc, transfer_syntax_uid=header.transfer_syntax_uid, size_bytes=header.size_bytes, digest="d")
    pack_meta(doc)


@fuzz(250)
@given(mutated_files())
def test_any_mutation_of_a_real_file_is_parsed_or_refused_with_a_reason(data: bytes) -> None:
    must_parse_or_refuse(data)


@fuzz(150)
@given(mutated_files())
def test_tight_limits_refuse_with_a_reason_never_crash(data: bytes) -> None:
    must_parse_or_refuse(data, TIGHT)


@st.composite
def deflated_files(draw: st.DrawFn) -> bytes:
    """A real file's meta with a deflated syntax, then a deflate stream of any data set (or of junk)."""
    meta_end = 132 + 12 + 200
    head = bytearray(hostile.deflated_ok("fz")[:meta_end])
    start = 132 + 12 + struct.unpack("<L", bytes(head[140:144]))[0]
    body = draw(mutated_files())
    body = body[body.find(b"DICM") + 4:] if b"DICM" in body else body
    stream = zlib.compress(body, 6)[2:-4] if draw(st.booleans()) else draw(st.binary(max_size=512))
    return bytes(head[:start]) + stream


@fuzz(100)
@given(deflated_files())
def test_any_deflated_stream_is_parsed_or_refused(data: bytes) -> None:
    must_parse_or_refuse(data, TIGHT)


@fuzz(100)
@given(st.binary(max_size=2048).map(lambda b: b"\0" * 128 + b"DICM" + b))
def test_random_bytes_after_the_prefix_are_refused_not_crashed(data: bytes) -> None:
    must_parse_or_refuse(data)


# -- multipart ----------------------------------------------------------------------------------------

CT = 'multipart/related; type="application/dicom"; boundary=XyZ'
NASTY = [b"--XyZ", b"\r\n--XyZ", b"\r\n--XyZ--", b"\r\n\r\n", b"\r\n", b"Content-Type: x\r\n", b"--", b"\r"]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    pieces = draw(st.lists(st.sampled_from(NASTY) | st.binary(max_size=40), max_size=12))
    return b"".join(pieces)


@fuzz(200)
@given(bodies(), st.sampled_from([CT, 'multipart/related; boundary=XyZ', "multipart/related", "text/plain", ""]),
       st.integers(1, 5))
def test_any_body_is_split_or_refused_with_an_http_status(body: bytes, ctype: str, max_parts: int) -> None:
    try:
        parts = parse_stow_body(body, ctype, max_parts=max_parts)
    except HttpProblem as problem:
        assert problem.status in (400, 413, 415) and problem.message
        return
    assert 1 <= len(parts) <= max_parts
    for p in parts:  # every part is a view of the body: nothing copied
        assert isinstance(p.content, memoryview) and p.content.obj is body


@fuzz(100)
@given(st.lists(st.binary(max_size=200).filter(lambda b: b"\r\n--XyZ" not in b and not b.endswith(b"\r")),
                min_size=1, max_size=6))
def test_parts_come_back_exactly_as_sent(contents: list[bytes]) -> None:
    body = b"".join(b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n" + c + b"\r\n" for c in contents)
    parts = parse_stow_body(body + b"--XyZ--\r\n", CT)
    assert [bytes(p.content) for p in parts] == contents


# -- values of HTTP routes ----------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["\u0661\u0662", "\u00b2", "1.2.\u0663", "20260101", "*a*a*a*a*a*a*a*a*a*a*a*b", "..", "../dicom-archive/x",
     "a//b", "-", "1-2"])
NAMES = st.sampled_from(["PatientName", "PatientID", "StudyDate", "StudyTime", "StudyInstanceUID", "limit",
                         "offset", "fuzzymatching", "includefield", "Modality", "00100010", "NumberOfFrames",
                         "AccessionNumber", "x"])


@fuzz(200)
@given(st.lists(st.tuples(NAMES, TEXT), max_size=5), st.sampled_from(list(Level)))
def test_any_qido_query_is_parsed_or_a_400(params: list[tuple[str, str]], level: Level) -> None:
    try:
        query = parse_query(params, level, max_wildcards=10)
    except HttpProblem as problem:
        assert problem.status == 400
        return
    for m in query.matches:  # what reaches matching and the planner is ASCII where it must be
        if m.attribute.vr in ("DA", "TM", "DT", "UI", "IS", "US", "UL", "SS", "SL"):
            assert all(v.isascii() for v in m.values) and all((b or "").isascii() for b in (m.low, m.high))


@fuzz(100)
@given(TEXT)
def test_path_and_list_values_are_ascii_or_a_400(value: str) -> None:
    for parse in (parse_frame_list, lambda v: check_path_uid(v, "study")):
        try:
            out = parse(value)
        except HttpProblem as problem:
            assert problem.status == 400
        else:
            assert str(out).isascii()


@fuzz(100)
@given(st.lists(st.tuples(st.sampled_from(["offset", "limit", "startTime", "endTime", "includemetadata", "x"]),
                          TEXT), max_size=4))
def test_change_feed_parameters_are_read_or_a_400(params: list[tuple[str, str]]) -> None:
    try:
        p = changefeed._params(params, {"starttime", "endtime", "offset", "limit", "includemetadata"})
        changefeed._time("startTime", p.get("starttime"))
        changefeed._int("offset", p.get("offset"), 0, 0, 2**63 - 1)
        changefeed._int("limit", p.get("limit"), 100, 1, 200)
        changefeed._bool("includemetadata", p.get("includemetadata"))
    except HttpProblem as problem:
        assert problem.status == 400


@fuzz(100)
@given(TEXT)
def test_status_blob_names_never_leave_the_inbox(name: str) -> None:
    problem = check_params([("blob", name)])
    if problem is None:
        assert layout.is_safe_blob_name(name)
        assert ".." not in name.split("/") and not name.startswith("/") and "\\" not in name


@fuzz(300)
@given(st.text("ab*?", max_size=10), st.text("ab", max_size=12))
def test_wildcard_matching_agrees_with_the_regular_expression_it_replaces(pattern: str, text: str) -> None:
    expected = re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                            text, re.DOTALL) is not None
    assert wildcard_match(pattern, text) is expected


@pytest.mark.parametrize("name", ["../dicom-archive/1.2/3.4/5.6.dcm", "/x", "a/./b", "a\\b", "a\x00b", "", "a//b"])
def test_names_that_leave_their_container_are_refused(name: str) -> None:
    assert check_params([("blob", name)]) is not None


HEADER_TEXT = st.text(st.characters(codec="latin-1"), max_size=60) | st.sampled_from(
    ['multipart/related; type="application/dicom"; transfer-syntax=*', "application/dicom+json;q=abc",
     'multipart/related; type="', "*/*;q=0", ";;;,,,", 'a/b; c="d\\"e"'])


@fuzz(200)
@given(HEADER_TEXT, st.sampled_from(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.5"]))
def test_any_accept_header_is_negotiated_or_refused_with_an_http_status(accept: str, syntax: str) -> None:
    from shared.dicomweb import media

    for negotiate in (media.negotiate_json, media.instance_syntaxes, media.negotiate_bulk,
                      lambda a: media.negotiate_frames(a, syntax)):
        try:
            negotiate(accept)
        except HttpProblem as problem:
            assert problem.status in (400, 406)


@fuzz(100)
@given(HEADER_TEXT)
def test_any_stow_content_type_is_read_or_refused_with_an_http_status(ctype: str) -> None:
    try:
        parse_stow_body(b"--XyZ\r\n\r\nx\r\n--XyZ--\r\n", ctype)
    except HttpProblem as problem:
        assert problem.status in (400, 413, 415)
