"""DICOM JSON (PS3.18 F.2) of a parsed header, with large values as BulkDataURI.

Values that the header parse deferred (larger than ``DEFER_SIZE``) are never read
for the JSON: binary ones become BulkDataURIs pointing at their byte range in the
archived file; deferred sequences (e.g. megabyte-long per-frame functional groups)
are part of the header and are read (ranged) and converted.

BulkDataURIs are written relative to the DICOMweb base
(``studies/<s>/series/<se>/instances/<i>/bulkdata/<offset>-<length>``); the DICOMweb
layer prefixes its base URL when it serves them.
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement, RawDataElement

from shared.dicom.facts import has_native_pixels_in_place
from shared.dicom.header import Header

#: Binary values above this many bytes go out as BulkDataURI, not inline.
BULK_THRESHOLD = 1024
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
PIXEL_DATA = 0x7FE00010


def bulk_uri(study: str, series: str, sop: str, offset: int, length: int) -> str:
    return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/{offset}-{length}"


def _vr_of(raw: Any) -> str | None:
    vr = getattr(raw, "VR", None)
    return str(vr) if vr else None


def to_dicom_json(header: Header, study: str, series: str, sop: str) -> dict[str, Any]:
    """The instance's metadata as a DICOM JSON object (one instance)."""
    ds = header.dataset
    out: dict[str, Any] = {}

    def handler(elem: DataElement) -> str:
        # Binary values above the threshold inside the parsed header: their offset is
        # known only for top-level elements, so nested ones are addressed by tag.
        return f"studies/{study}/series/{series}/instances/{sop}/bulkdata/tag/{elem.tag:08X}"

    for tag, raw in ds._dict.items():
        if tag.group == 0x0002 or tag.element == 0x0000:
            continue  # file meta and group lengths are not part of DICOM JSON metadata
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length not in (0, 0xFFFFFFFF):
            vr = _vr_of(raw)
            if vr is None or vr in _BINARY_VRS or vr.startswith("O"):
                out[f"{int(tag):08X}"] = {
                    "vr": vr or "UN",
                    "BulkDataURI": bulk_uri(study, series, sop, raw.value_tell, raw.length),
                }
                continue
        try:
            elem = ds[tag]
            out[f"{int(tag):08X}"] = elem.to_json_dict(handler, BULK_THRESHOLD)
        except Exception:  # noqa: BLE001 - tolerant reading: an undecodable value is left out
            continue
    if header.pixel_data_tag is not None and header.pixel_data_offset is not None:
        native = header.pixel_data_length is not None and has_native_pixels_in_place(header.transfer_syntax_uid)
        vr = "OW" if native else "OB"
        length = header.pixel_data_length if header.pixel_data_length is not None else 0xFFFFFFFF
        out[f"{header.pixel_data_tag:08X}"] = {
            "vr": vr, "BulkDataURI": bulk_uri(study, series, sop, header.pixel_data_offset, length),
        }
    return dict(sorted(out.items()))
