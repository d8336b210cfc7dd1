"""multipart/related reading (STOW-RS) and writing (WADO-RS), Accept negotiation (pure logic)."""

from __future__ import annotations

import os

import pytest
from requests_toolbelt.multipart.decoder import MultipartDecoder

from shared.dicomweb import media
from shared.dicomweb.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from shared.dicomweb.multipart import parse_stow_body, related_content_type, stream_parts

CT = 'multipart/related; type="application/dicom"; boundary=XyZ'


def body(*parts: bytes, boundary: str = "XyZ") -> bytes:
    out = b""
    for p in parts:
        out += b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


def test_binary_parts_come_back_byte_exact():
    a = os.urandom(70_000) + b"\r\n--X\r\n\r\n"
    b = b"\r\n" + os.urandom(1000)
    parts = parse_stow_body(body(a, b), CT)
    assert [p.content for p in parts] == [a, b]
    assert {p.content_type for p in parts} == {"application/dicom"}


@pytest.mark.parametrize(
    ("ctype", "exc"),
    [
        ("application/dicom", UnsupportedMediaType),
        ("application/json", UnsupportedMediaType),
        (None, UnsupportedMediaType),
        ('multipart/related; type="application/dicom+json"; boundary=XyZ', UnsupportedMediaType),
        ('multipart/related; type="application/dicom"', BadRequest),  # no boundary
    ],
)
def test_wrong_content_types(ctype, exc):
    with pytest.raises(exc):
        parse_stow_body(body(b"x"), ctype)


def test_malformed_bodies_are_400():
    for bad in (b"", b"not multipart at all", body(b"x")[:-10], body(b"x", boundary="Other")):
        with pytest.raises(BadRequest):
            parse_stow_body(bad, CT)


def test_written_multipart_round_trips_through_a_real_decoder():
    boundary = "b0und"
    files = [os.urandom(5000), os.urandom(10)]
    chunks = list(stream_parts(((("application/dicom"), [f[:100], f[100:]]) for f in files), boundary))
    assert len(chunks) > 4  # streamed in pieces, not joined
    decoded = MultipartDecoder(b"".join(chunks), related_content_type("application/dicom", boundary))
    assert [p.content for p in decoded.parts] == files


def test_accept_negotiation():
    assert media.instance_syntaxes(None) == [None]
    assert media.instance_syntaxes('multipart/related; type="application/dicom"') == [None]
    assert media.instance_syntaxes('multipart/related; type="application/dicom"; transfer-syntax=*') == [None]
    assert media.instance_syntaxes("*/*") == [None]
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    assert media.instance_syntaxes(explicit) == ["1.2.840.10008.1.2.1"]
    assert media.instance_syntaxes(f"{explicit}, */*;q=0.1") == ["1.2.840.10008.1.2.1", None]
    with pytest.raises(NotAcceptable):
        media.instance_syntaxes("application/dicom+json")
    with pytest.raises(NotAcceptable):
        media.instance_syntaxes('multipart/related; type="application/dicom"; q=0')
    assert media.negotiate_json(None) == "application/dicom+json"
    assert media.negotiate_json("application/json") == "application/json"
    assert media.negotiate_json("text/html, application/dicom+json;q=0.5") == "application/dicom+json"
    with pytest.raises(NotAcceptable):
        media.negotiate_json('multipart/related; type="application/dicom+xml"')
    octet = "application/octet-stream"
    assert media.negotiate_frames('multipart/related; type="*/*"', "1.2.840.10008.1.2.1") == (octet, None)
    assert media.negotiate_frames(None, "1.2.840.10008.1.2.5") == ("image/dicom-rle", None)
    jpeg = "1.2.840.10008.1.2.4.50"
    assert media.negotiate_frames('multipart/related; type="image/jpeg"', jpeg) == ("image/jpeg", None)
    # octet-stream of a compressed frame means Explicit VR Little Endian (PS3.18 Table 8.7.3-2): transcoded
    assert media.negotiate_frames(f'multipart/related; type="{octet}"', jpeg) == (octet, "1.2.840.10008.1.2.1")
    jls = ("image/jls", "1.2.840.10008.1.2.4.80")
    assert media.negotiate_frames('multipart/related; type="image/jls"', jpeg) == jls
    lossy = 'multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.91'
    assert media.negotiate_frames(lossy, jpeg) == ("image/jp2", "1.2.840.10008.1.2.4.91")  # named: lossy is fine
    with pytest.raises(NotAcceptable) as refused:  # JPEG lossless is not something we encode
        media.negotiate_frames('multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.70', jpeg)
    assert "image/jphc" in refused.value.message and "transfer-syntax=*" in refused.value.message
    ohif = f'multipart/related; type="{octet}"; transfer-syntax=*'
    assert media.negotiate_frames(ohif, jpeg) == ("image/jpeg", None)  # rule FRAMES_ANY_SYNTAX
    assert media.negotiate_frames(ohif, "1.2.840.10008.1.2.1") == (octet, None)


def test_what_ohif_sends_is_accepted() -> None:
    """Accept headers seen from OHIF 3.13 in the browser test (unquoted type, transfer-syntax=*, mixed lists)."""
    assert media.negotiate_json("application/dicom+json") == "application/dicom+json"
    assert media.negotiate_json("application/json, application/dicom+json, */*") == "application/json"
    assert media.negotiate_json("*/*") == "application/dicom+json"
    frames = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    assert media.negotiate_frames(frames, "1.2.840.10008.1.2.1") == ("application/octet-stream", None)
    assert media.negotiate_frames(frames, "1.2.840.10008.1.2.4.50") == ("image/jpeg", None)
    assert media.instance_syntaxes('multipart/related; type="application/dicom"') == [None]  # the SEG loader
    assert media.instance_syntaxes("multipart/related; type=application/dicom") == [None]
