"""multipart/related bodies (RFC 2387) for STOW-RS requests and WADO-RS responses.

Reading uses ``requests_toolbelt.MultipartDecoder`` (requests-toolbelt, maintained by
the requests team). We chose it over the stdlib ``email`` parser because the latter
decodes bodies to ``str`` (surrogateescape) and splits them line by line, which is
slow and memory-hungry on 100 MB of binary DICOM; MultipartDecoder splits the bytes
on the boundary in C and keeps each part's bytes exactly as sent.

Writing is a generator: each part's header, then its body chunk by chunk as the
caller produces them (blob ranges), so a response never holds a whole file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from requests_toolbelt.multipart.decoder import (
    ImproperBodyPartContentException,
    MultipartDecoder,
    NonMultipartContentTypeException,
)

from shared.dicomweb.errors import BadRequest, UnsupportedMediaType

DICOM = "application/dicom"


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    content: bytes


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


def parse_stow_body(body: bytes, content_type: str | None) -> list[Part]:
    """The parts of a STOW-RS request body.

    Raises 415 unless the request is ``multipart/related`` whose ``type`` (if given) is
    ``application/dicom``; 400 if the body is not a well-formed multipart message.
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
    if not params.get("boundary"):
        raise BadRequest("The multipart/related Content-Type has no boundary parameter.")
    if not body:
        raise BadRequest("The request body is empty: send at least one application/dicom part.")
    boundary = params["boundary"].encode("latin-1", "replace")
    if b"--" + boundary not in body[: len(boundary) + 4096]:
        raise BadRequest("The body does not start with the boundary declared in Content-Type.")
    if b"--" + boundary + b"--" not in body[-(len(boundary) + 4096) :]:
        raise BadRequest("The body has no closing boundary: it is truncated or not multipart.")
    try:
        decoder = MultipartDecoder(body, content_type or "")
    except (ImproperBodyPartContentException, NonMultipartContentTypeException) as exc:
        raise BadRequest(f"Malformed multipart body: {exc}.") from None
    parts: list[Part] = []
    for p in decoder.parts:
        ctype = ""
        for k, v in p.headers.items():
            if k.lower() == b"content-type":
                ctype = v.decode("latin-1")
        media_p, _ = parse_content_type(ctype) if ctype else (declared, {})
        parts.append(Part(media_p, p.content))
    if not parts:
        raise BadRequest("The multipart body holds no parts: send at least one application/dicom part.")
    return parts


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
