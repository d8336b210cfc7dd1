"""WADO-RS transcoding on retrieve against Azurite: frames and instances in the syntax a client names, pixels
equal to pydicom's decoding of the stored file, the cache, and the as-stored path's cost left as it was."""

from __future__ import annotations

import copy
import dataclasses
import io
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import generate_uid

from shared.config import Settings
from shared.dicom import transcode
from shared.dicomweb.errors import HttpProblem
from shared.dicomweb.multipart import parse_content_type
from shared.dicomweb.wado import Wado
from shared.services import Services
from shared.storage import layout

ELE = "1.2.840.10008.1.2.1"


def put(svc: Services, ds: pydicom.Dataset) -> tuple[str, str, str]:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    svc.blobs.write(layout.ARCHIVE, layout.instance_path(*ids), buf.getvalue())
    return ids


def fresh(name: str, study: str | None = None, series: str | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def parts(stream: Any, content_type: str) -> list[tuple[str, bytes]]:
    """(part content type, body) of a multipart/related reply."""
    body = b"".join(stream)
    boundary = parse_content_type(content_type)[1]["boundary"].encode()
    out = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        ctype = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type"))
        out.append((ctype, data[:-2]))
    return out


@pytest.fixture(scope="module")
def counted(settings: Settings, storage: Services) -> Services:
    """Services with their own request counter (the session's is shared by every test)."""
    return Services.from_settings(settings)


def test_compressed_frames_in_explicit_little_endian_and_back_compressed(storage: Services) -> None:
    """An AI loader asks a JPEG multi-frame's frames as octet-stream (Explicit VR Little Endian, the default):
    plain pixels, equal to pydicom's decoding; JPEG-LS and HTJ2K lossless decode to the same pixels."""
    ds = fresh("examples_ybr_color.dcm")  # JPEG baseline, YBR_FULL_422, 30 frames
    ids = put(storage, ds)
    expected = ds.pixel_array  # pydicom: RGB
    wado = Wado(storage.blobs, storage.index)
    reply = wado.frames('multipart/related; type="application/octet-stream"', *ids, "1,30")
    got = parts(reply.stream, reply.headers["Content-Type"])
    assert [c for c, _ in got] == ["application/octet-stream"] * 2
    shape = expected.shape[1:]
    assert np.frombuffer(got[0][1], np.uint8).reshape(shape).tolist() == expected[0].tolist()
    assert np.frombuffer(got[1][1], np.uint8).reshape(shape).tolist() == expected[29].tolist()
    for target in (transcode.JPEG_LS_LOSSLESS, transcode.HTJ2K_LOSSLESS):
        reply = wado.frames(f'multipart/related; type="{"image/jls" if "80" in target else "image/jphc"}"; '
                            f"transfer-syntax={target}", *ids, "2")
        ((ctype, data),) = parts(reply.stream, reply.headers["Content-Type"])
        assert ctype.endswith(f"transfer-syntax={target}")
        pm = dataclasses.replace(transcode.PixelModule.of(ds), photometric="RGB")  # decoded YBR frames are RGB
        arr, _ = transcode.decode_frame(pm, target, data)
        np.testing.assert_array_equal(arr, expected[1])


def test_transcoded_frames_are_cached_per_version(storage: Services, counted: Services) -> None:
    ds = fresh("JPEG2000.dcm")
    ids = put(storage, ds)
    accept = f'multipart/related; type="image/jls"; transfer-syntax={transcode.JPEG_LS_LOSSLESS}'
    wado = Wado(counted.blobs, counted.index)
    first = b"".join(wado.frames(accept, *ids, "1").stream or [])
    before = counted.requests.snapshot()
    second = b"".join(wado.frames(accept, *ids, "1").stream or [])
    cost = counted.requests.snapshot() - before
    assert first.split(b"\r\n\r\n", 1)[1][:64] == second.split(b"\r\n\r\n", 1)[1][:64]
    # the second request: the frame index, its version check, the header, and the cached frame; nothing written
    assert "blob PUT" not in cost, cost
    cached = [b.name for b in storage.blobs.list(layout.CACHE, f"frames/{ids[0]}/")]
    assert len(cached) == 1 and cached[0].endswith(f"/{transcode.JPEG_LS_LOSSLESS}/1")


def test_as_stored_frames_cost_what_they_did(storage: Services, counted: Services) -> None:
    """No preference, or transfer-syntax=*: no header read, no cache lookup, nothing decoded. In a fresh process
    the stored frame index (read, and its version checked) and the frame's range, as before transcoding existed;
    once the process has parsed that index, the range alone (read on the condition that the version is the one
    checked before)."""
    from shared.dicomweb import wado as wado_module

    ds = fresh("JPEG2000.dcm")
    ids = put(storage, ds)
    wado = Wado(counted.blobs, counted.index)
    b"".join(wado.frames(None, *ids, "1").stream or [])  # builds the frame index
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    for accept in (None, 'multipart/related; type="application/octet-stream"; transfer-syntax=*'):
        for fresh_process, cost in ((True, {"blob GET": 2, "blob HEAD": 1}), (False, {"blob GET": 1})):
            if fresh_process:
                wado_module._INDEXES.clear()
            before = counted.requests.snapshot()
            body = b"".join(wado.frames(accept, *ids, "1").stream or [])
            assert counted.requests.snapshot() - before == cost, (accept, fresh_process)
            assert frame in body


def test_a_remembered_frame_index_never_serves_a_replaced_or_deleted_instance(storage: Services,
                                                                              counted: Services) -> None:
    """Another process replaces the instance (an update) after this one remembered its frame index: the frame
    comes from the new file; then deletes it (a rejection): 404, not the remembered frames."""
    old = fresh("JPEG2000.dcm")
    ids = put(storage, old)
    wado = Wado(counted.blobs, counted.index)
    (old_frame,) = generate_frames(old.PixelData, number_of_frames=1)
    assert old_frame in b"".join(wado.frames(None, *ids, "1").stream or [])
    new = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # native pixels, another size: another index
    new.StudyInstanceUID, new.SeriesInstanceUID, new.SOPInstanceUID = ids
    new.file_meta.MediaStorageSOPInstanceUID = ids[2]
    put(storage, new)
    body = b"".join(wado.frames(None, *ids, "1").stream or [])
    assert new.PixelData in body and old_frame not in body
    assert new.PixelData in b"".join(wado.frames(None, *ids, "1").stream or [])  # remembered again, the new one
    storage.blobs.delete(layout.ARCHIVE, layout.instance_path(*ids))
    with pytest.raises(HttpProblem) as gone:
        b"".join(wado.frames(None, *ids, "1").stream or [])
    assert gone.value.status == 404


@pytest.mark.parametrize("first_read", [None, 4096], ids=["whole-file-in-memory", "streamed-frame-by-frame"])
def test_instances_in_explicit_little_endian_from_every_stored_syntax(storage: Services, first_read: int | None,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A series stored as big endian, deflated, RLE, JPEG-LS, JPEG 2000 and JPEG baseline, retrieved as
    Explicit VR Little Endian: each part a Part 10 file in that syntax with the stored pixels; a JPEG source keeps
    "lossy" in Lossy Image Compression. Small files are transcoded whole (the first read holds them); larger ones
    (a first read of 4 KiB here) are re-encoded header first, then frame by frame."""
    if first_read:
        monkeypatch.setattr("shared.dicomweb.wado.CHUNK", first_read)
    study, series = generate_uid(), generate_uid()
    names = ["MR_small_bigendian.dcm", "image_dfl.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
             "MR_small_jp2klossless.dcm", "SC_rgb_jpeg_dcmtk.dcm", "test-SR.dcm", "MR_small.dcm"]
    originals = {}
    for name in names:
        ds = fresh(name, study, series)
        put(storage, ds)
        originals[str(ds.SOPInstanceUID)] = ds
    wado = Wado(storage.blobs, storage.index)
    reply = wado.retrieve(f'multipart/related; type="application/dicom"; transfer-syntax={ELE}', study, series)
    assert f"transfer-syntax={ELE}" in reply.headers["Content-Type"]
    got = parts(reply.stream, reply.headers["Content-Type"])
    assert len(got) == len(names)
    for ctype, data in got:
        assert ctype == f"application/dicom; transfer-syntax={ELE}"
        back = pydicom.dcmread(io.BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == ELE
        original = originals[str(back.SOPInstanceUID)]
        assert back.PatientName == original.PatientName
        if "PixelData" in original:
            np.testing.assert_array_equal(back.pixel_array, original.pixel_array)
        if original.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50":
            assert back.LossyImageCompression == "01"


def test_lossy_only_when_named_and_406_names_what_we_offer(storage: Services) -> None:
    ds = fresh("CT_small.dcm")
    ids = put(storage, ds)
    wado = Wado(storage.blobs, storage.index)
    reply = wado.retrieve(f'multipart/related; type="application/dicom"; transfer-syntax={transcode.JPEG_2000}', *ids)
    ((_, data),) = parts(reply.stream, reply.headers["Content-Type"])
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == transcode.JPEG_2000
    assert back.LossyImageCompression == "01" and back.LossyImageCompressionMethod == "ISO_15444_1"
    assert np.abs(back.pixel_array.astype(int) - ds.pixel_array.astype(int)).max() > 0  # it is lossy
    lossless = transcode.JPEG_2000_LOSSLESS
    reply = wado.retrieve(f'multipart/related; type="application/dicom"; transfer-syntax={lossless}', *ids)
    ((_, data),) = parts(reply.stream, reply.headers["Content-Type"])
    back = pydicom.dcmread(io.BytesIO(data))
    assert "LossyImageCompression" not in back
    np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
    with pytest.raises(HttpProblem) as refused:
        wado.retrieve('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', *ids)
    assert refused.value.status == 406
    assert transcode.HTJ2K_LOSSLESS in refused.value.message and ELE in refused.value.message


def test_a_corrupt_frame_fails_its_part_and_the_rest_streams(storage: Services) -> None:
    """Frames 1 and 3 of a three-frame JPEG-LS instance decode; frame 2 is corrupt: its part is an error, the
    others arrive; asked alone it is a 406 with the reason, never a 500."""
    ds = fresh("MR_small_jpeg_ls_lossless.dcm")
    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    ds.NumberOfFrames = 3
    ds.PixelData = encapsulate([bytes(frame), bytes(frame)[:4] + b"\0" * 64, bytes(frame)])
    ids = put(storage, ds)
    wado = Wado(storage.blobs, storage.index)
    reply = wado.frames('multipart/related; type="application/octet-stream"', *ids, "1,2,3")
    got = parts(reply.stream, reply.headers["Content-Type"])
    assert [c for c, _ in got] == ["application/octet-stream", "application/json", "application/octet-stream"]
    assert b"Frame 2" in got[1][1]
    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    np.testing.assert_array_equal(np.frombuffer(got[2][1], "<i2").reshape(reference.shape), reference)
    with pytest.raises(HttpProblem) as refused:
        wado.frames('multipart/related; type="application/octet-stream"', *ids, "2")
    assert refused.value.status == 406 and "transfer-syntax=*" in refused.value.message


def test_a_series_with_one_undecodable_instance_still_streams(storage: Services) -> None:
    study, series = generate_uid(), generate_uid()
    good = fresh("MR_small_RLE.dcm", study, series)
    bad = copy.deepcopy(fresh("MR_small_jpeg_ls_lossless.dcm", study, series))
    bad.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 64])
    put(storage, good)
    put(storage, bad)
    wado = Wado(storage.blobs, storage.index)
    reply = wado.retrieve(f'multipart/related; type="application/dicom"; transfer-syntax={ELE}', study, series)
    got = parts(reply.stream, reply.headers["Content-Type"])
    kinds = sorted(c.split(";")[0] for c, _ in got)
    assert kinds == ["application/dicom", "application/json"]
    error = next(d for c, d in got if c == "application/json")
    assert str(bad.SOPInstanceUID).encode() in error
