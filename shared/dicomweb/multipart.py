"""multipart/related bodies (RFC 2387) for STOW-RS requests and WADO-RS responses.

Reading splits the body on its boundary with ``bytes.find`` (C speed) and hands out each part as a
``memoryview`` of the one body buffer: no part is copied by the parse, whatever the request holds, and
a request of more than ``DICOMFLOW_STOW_MAX_PARTS`` parts is refused (413) as soon as the limit is
passed. Why not a library: the stdlib ``email`` parser decodes bodies to ``str`` and splits them line by
line (slow, several copies of 100 MB of binary DICOM); requests-toolbelt's ``MultipartDecoder`` copies
every part (a split, then a join per part: the body about three times over with the request's own
buffer); ``python-multipart`` streams but is a form-data parser and would be a new deployed dependency.
What is left is a loop of ~40 lines over RFC 2046 5.1.1, fuzzed with Hypothesis
(``tests/unit/test_fuzz_parsers.py``): any body is either parsed or a 400/413/415.

Writing is a generator: each part's header, then its body chunk by chunk as the
caller produces them (blob ranges), so a response never holds a whole file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from shared.dicomweb.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

DICOM = "application/dicom"
#: Most bytes of one part's header lines.
MAX_PART_HEADER: Final = 8192
#: How far into the body the first boundary may be (after a preamble).
MAX_PREAMBLE: Final = 4096


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    #: The part's bytes: a view of the request body (``bytes(part.content)`` copies it, if needed).
    content: bytes | memoryview


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` -> (``type/subtype`` lower-cased, {param: value})."""
    head, *rest = _split_params(value)
    params: dict[str, str] = {}
    for item in rest:
        name, eq, val = item.partition("=")
        if not eq:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return head.strip().lower(), params


def _split_params(value: str) -> list[str]:
    # Split on ';' outside double quotes.
    return [p for p in re.findall(r'(?:[^;"]|"[^"]*")+', value or "")] or [""]


def parse_stow_body(body: bytes | bytearray, content_type: str | None, *, max_parts: int = 1000) -> list[Part]:
    """The parts of a STOW-RS request body, each a view of ``body``.

    Raises 415 unless the request is ``multipart/related`` whose ``type`` (if given) is
    ``application/dicom``; 400 if the body is not a well-formed multipart message; 413 past
    ``max_parts`` parts.
    """
    media, params = parse_content_type(content_type or "")
    if media != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS expects Content-Type: multipart/related; type="application/dicom"; boundary=...; '
            f"got {media or 'none'}."
        )
    declared = params.get("type", DICOM).lower()
    if declared != DICOM:
        raise UnsupportedMediaType(
            f'STOW-RS here accepts type="application/dicom" parts only (got type="{declared}"); '
            "send the DICOM files themselves, not JSON or XML metadata with bulk data."
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise BadRequest("The multipart/related Content-Type has no boundary parameter.")
    if len(boundary) > 200:
        raise BadRequest("The multipart boundary is longer than 200 characters (RFC 2046 allows 70).")
    if not body:
        raise BadRequest("The request body is empty: send at least one application/dicom part.")
    delimiter = b"--" + boundary.encode("latin-1", "replace")
    pos = body.find(delimiter, 0, MAX_PREAMBLE + len(delimiter))
    while pos > 0 and body[pos - 2:pos] != b"\r\n":  # a delimiter begins a line (RFC 2046 5.1.1)
        pos = body.find(delimiter, pos + 1, MAX_PREAMBLE + len(delimiter))
    if pos < 0:
        raise BadRequest("The body does not start with the boundary declared in Content-Type.")
    view = memoryview(body)
    separator = b"\r\n" + delimiter
    parts: list[Part] = []
    while True:
        after = pos + len(delimiter)
        if body[after:after + 2] == b"--":
            break  # the close delimiter; an epilogue may follow
        line_end = body.find(b"\r\n", after, after + 256)
        if line_end < 0 or body[after:line_end].strip(b" \t"):
            raise BadRequest("Malformed multipart body: a boundary line is followed by more than white space.")
        head_start = line_end + 2
        if body[head_start:head_start + 2] == b"\r\n":
            headers, content_start = b"", head_start + 2
        else:
            head_end = body.find(b"\r\n\r\n", head_start, head_start + MAX_PART_HEADER)
            if head_end < 0:
                raise BadRequest(f"Malformed multipart body: part {len(parts) + 1}'s header lines do not end "
                                 f"within {MAX_PART_HEADER} bytes.")
            headers, content_start = bytes(body[head_start:head_end]), head_end + 4
        end = body.find(separator, content_start)
        if end < 0:
            raise BadRequest("The body has no closing boundary: it is truncated or not multipart.")
        if len(parts) == max_parts:
            raise PayloadTooLarge(f"The request holds more than {max_parts} parts (DICOMFLOW_STOW_MAX_PARTS); "
                                  "send the instances in several requests.")
        parts.append(Part(_part_type(headers, declared), view[content_start:end]))
        pos = end + 2
    if not parts:
        raise BadRequest("The multipart body holds no parts: send at least one application/dicom part.")
    return parts


def _part_type(headers: bytes, default: str) -> str:
    """The media type a part's header lines give it (the request's ``type`` if they give none)."""
    for line in headers.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-type":
            return parse_content_type(value.decode("latin-1").strip())[0]
    return default


def new_boundary() -> str:
    return f"dicomflow-{uuid.uuid4().hex}"


def related_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """The response's Content-Type for a multipart/related body of ``part_type`` parts."""
    ts = f"; transfer-syntax={transfer_syntax}" if transfer_syntax else ""
    return f'multipart/related; type="{part_type}"; boundary={boundary}{ts}'


def stream_parts(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """Yield a multipart/related body: for each (content type, chunks) a header then its chunks.

    Parts are produced lazily: the second file is not opened until the first is sent.
    """
    b = boundary.encode("ascii")
    any_part = False
    for content_type, chunks in parts:
        any_part = True
        yield b"--" + b + b"\r\nContent-Type: " + content_type.encode("ascii") + b"\r\n\r\n"
        yield from chunks
        yield b"\r\n"
    if any_part:
        yield b"--" + b + b"--\r\n"
