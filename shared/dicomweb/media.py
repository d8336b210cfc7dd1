"""Accept header negotiation for WADO-RS and QIDO-RS (PS3.18 8.7); 406 for what we cannot send.

Instances and frames go out in their stored transfer syntax unless the client names another
(``transfer-syntax=`` in ``Accept``, PS3.18 8.7.3): then they are transcoded to it when it is one
of :data:`shared.dicom.transcode.OFFERED`. ``*`` and no preference mean "as stored" (nothing is
decoded). A syntax we cannot produce gets 406 naming the ones we can.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from shared.dicom import transcode
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


def instance_syntaxes(accept: str | None) -> list[str | None]:
    """Study/series/instance retrieve: the transfer syntaxes the client accepts, best first, for
    ``multipart/related; type="application/dicom"``; None stands for "as stored" (no ``transfer-syntax``
    parameter, or ``*``). 406 if no range covers application/dicom."""
    wanted: list[str | None] = []
    for rng in parse_accept(accept):
        if rng.media in ("*/*", "multipart/*", "multipart/related"):
            ptype = rng.params.get("type", DICOM).lower()
            if _covers(ptype, DICOM):
                ts = rng.params.get("transfer-syntax")
                wanted.append(None if ts in (None, "*") else ts)
    if not wanted:
        raise NotAcceptable(
            'Instances are sent as multipart/related; type="application/dicom" (as stored, or in a transfer-syntax '
            f"you name: {transcode.offered_text()}); send that Accept header, or */*."
        )
    return wanted


def not_acceptable_syntax(wanted: list[str | None], stored: list[str]) -> NotAcceptable:
    """406 for instances asked only in syntaxes we can neither send as stored nor produce."""
    named = ", ".join(w for w in wanted if w)
    have = ", ".join(sorted(set(stored))) or "unknown"
    return NotAcceptable(
        f"Cannot send these instances as {named}: they are stored as {have}, and we can transcode to "
        f"{transcode.offered_text()} (lossy ones only when named); ask for one of those, or transfer-syntax=*."
    )


#: The transfer syntax a frame media type means when the client names none (PS3.18 Table 8.7.3-2).
DEFAULT_FRAME_SYNTAX: Final = {
    OCTET: transcode.EXPLICIT_LE,
    "image/jls": transcode.JPEG_LS_LOSSLESS,
    "image/jp2": transcode.JPEG_2000_LOSSLESS,
    "image/jphc": transcode.HTJ2K_LOSSLESS,
    "image/dicom-rle": transcode.RLE_LOSSLESS,
}


def frame_media_type(transfer_syntax: str) -> str:
    """The media type of one frame's bytes in ``transfer_syntax``."""
    if has_native_pixels(transfer_syntax):  # native frames go out as application/octet-stream
        return OCTET
    return FRAME_MEDIA_TYPES.get(transfer_syntax, OCTET)


def negotiate_frames(accept: str | None, transfer_syntax: str) -> tuple[str, str | None]:
    """Frames: multipart/related with parts of one media type. Returns (part media type, target syntax),
    the target None for "as stored" (``transfer_syntax``: what is stored, big endian counted as the little
    endian it is served as)."""
    stored_part = frame_media_type(transfer_syntax)
    for rng in parse_accept(accept):
        if rng.media not in ("*/*", "multipart/*", "multipart/related"):
            continue
        ptype = rng.params.get("type")
        ptype = ptype.lower() if ptype else None
        ts = rng.params.get("transfer-syntax")
        if ts == "*":
            # Rule FRAMES_ANY_SYNTAX: "any transfer syntax" (what OHIF sends with type=octet-stream)
            # lets us send the stored one, labelled with its real media type.
            return stored_part, None
        if ts is None:
            if ptype is None or _covers(ptype, stored_part):
                return stored_part, None
            if ptype in DEFAULT_FRAME_SYNTAX:  # e.g. octet-stream of a compressed frame: Explicit VR LE
                return ptype, DEFAULT_FRAME_SYNTAX[ptype]
            continue
        native_alias = has_native_pixels(transfer_syntax) and ts in transcode.NATIVE
        if ts == transfer_syntax or native_alias:  # native frames are the same bytes in either LE syntax
            if ptype is None or _covers(ptype, stored_part):
                return stored_part, None if ts == transfer_syntax else ts
            continue
        if ts in transcode.OFFERED:
            part = frame_media_type(ts)
            if ptype is None or _covers(ptype, part):
                return part, ts
    offers = "; ".join(f'type="{frame_media_type(t)}"; transfer-syntax={t}' for t in transcode.OFFERED
                       if t != transcode.IMPLICIT_LE)
    raise NotAcceptable(
        f'Frames of this instance are stored as {transfer_syntax} (type="{stored_part}"). We can send them as '
        f"stored (transfer-syntax=*) or transcoded: {offers}."
    )


def negotiate_bulk(accept: str | None) -> None:
    """Bulk data: multipart/related; type="application/octet-stream"."""
    for rng in parse_accept(accept):
        if rng.media in ("*/*", "multipart/*", "multipart/related") and _covers(
            rng.params.get("type", OCTET).lower(), OCTET
        ):
            return
    raise NotAcceptable('Bulk data is available as multipart/related; type="application/octet-stream".')
