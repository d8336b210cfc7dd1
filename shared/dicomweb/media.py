"""Accept header negotiation for WADO-RS and QIDO-RS (PS3.18 8.7); 406 for what we cannot send.

We serve instances and frames in their stored transfer syntax (no transcoding): a
request that insists on another transfer syntax gets 406 naming what we have.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.dicom.facts import has_native_pixels
from shared.dicomweb.errors import NotAcceptable
from shared.dicomweb.multipart import parse_content_type

DICOM: Final = "application/dicom"
DICOM_JSON: Final = "application/dicom+json"
OCTET: Final = "application/octet-stream"

#: Encapsulated transfer syntax -> the media type of one frame (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES: Final = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}


@dataclass(frozen=True, slots=True)
class MediaRange:
    media: str  # "multipart/related", "*/*", ...
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    def covers(self, media: str) -> bool:
        return _covers(self.media, media)


def _covers(pattern: str, media: str) -> bool:
    if pattern in ("*/*", "*"):
        return True
    ptype, _, psub = pattern.partition("/")
    mtype, _, msub = media.partition("/")
    return ptype == mtype and psub in ("*", msub)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges of an Accept header, best first; an absent header means ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[MediaRange] = []
    for item in _split_commas(header):
        if not item.strip():
            continue
        media, params = parse_content_type(item)
        q = 1.0
        if "q" in params:
            try:
                q = float(params.pop("q"))
            except ValueError:
                q = 0.0
        ranges.append(MediaRange(media, params, q))
    return sorted((r for r in ranges if r.q > 0), key=lambda r: -r.q)


def _split_commas(value: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for c in value:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


def _ts_ok(rng: MediaRange, stored: Iterable[str]) -> bool:
    ts = rng.params.get("transfer-syntax")
    return ts is None or ts == "*" or all(s == ts for s in stored)


def negotiate_json(accept: str | None) -> str:
    """Metadata and QIDO responses: application/dicom+json (application/json too)."""
    for rng in parse_accept(accept):
        if rng.covers(DICOM_JSON):
            return DICOM_JSON
        if rng.media == "application/json":
            return "application/json"
    raise NotAcceptable(
        f"This resource is available as {DICOM_JSON} only; send Accept: {DICOM_JSON} "
        "(application/dicom+xml is not supported)."
    )


def negotiate_instances(accept: str | None) -> str | None:
    """Study/series/instance retrieve: multipart/related; type="application/dicom".

    Returns the transfer syntax the client insists on, or None when any will do (no
    ``transfer-syntax`` parameter, or ``*``). We send what is stored (rule
    RETRIEVE_AS_STORED), so the caller answers 406 if the stored syntax differs.
    """
    for rng in parse_accept(accept):
        if rng.media in ("*/*", "multipart/*", "multipart/related"):
            ptype = rng.params.get("type", DICOM).lower()
            if _covers(ptype, DICOM):
                ts = rng.params.get("transfer-syntax")
                return None if ts in (None, "*") else ts
    raise NotAcceptable(
        'Instances are sent as multipart/related; type="application/dicom" (in their stored transfer syntax); '
        "send that Accept header, or */*."
    )


def check_stored_syntax(requested: str | None, stored: Iterable[str]) -> None:
    """406 if the client insists on a transfer syntax some stored instance is not in (no transcoding)."""
    if requested is None:
        return
    other = sorted({s for s in stored if s != requested})
    if other:
        raise NotAcceptable(
            f"The instances are stored as {', '.join(other)} and are sent as stored (no transcoding); "
            "ask for transfer-syntax=* or the stored syntax."
        )


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of one frame's bytes in ``transfer_syntax``."""
    if has_native_pixels(transfer_syntax):  # native frames go out as application/octet-stream
        return OCTET
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET)


def negotiate_frames(accept: str | None, transfer_syntax: str) -> str:
    """Frames: multipart/related with parts of the stored syntax's media type. Returns the part type."""
    part = frame_media_type(transfer_syntax)
    for rng in parse_accept(accept):
        if rng.media in ("*/*", "multipart/*", "multipart/related"):
            ptype = rng.params.get("type", part).lower()
            if _covers(ptype, part) and _ts_ok(rng, [transfer_syntax]):
                return part
            if rng.params.get("transfer-syntax") == "*":
                # Rule FRAMES_ANY_SYNTAX: "any transfer syntax" (what OHIF sends with type=octet-stream)
                # lets us send the stored one, labelled with its real media type.
                return part
    raise NotAcceptable(
        f'Frames of this instance are available as multipart/related; type="{part}" '
        f"(stored transfer syntax {transfer_syntax}); no transcoding is done."
    )


def negotiate_bulk(accept: str | None) -> None:
    """Bulk data: multipart/related; type="application/octet-stream"."""
    for rng in parse_accept(accept):
        if rng.media in ("*/*", "multipart/*", "multipart/related") and _covers(
            rng.params.get("type", OCTET).lower(), OCTET
        ):
            return
    raise NotAcceptable('Bulk data is available as multipart/related; type="application/octet-stream".')
