"""Rendered images against Azurite: what a client that decodes nothing sees, compared with pydicom's own
grayscale pipeline (Modality LUT, windowing), palette and colour conversion on the stored files."""

from __future__ import annotations

import copy
import io
import threading
from collections import Counter
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing

from shared.dicomweb import rendered as rendered_module
from shared.dicomweb.errors import HttpProblem
from shared.dicomweb.rendered import Renderer, flush_cache_writes, parse_params
from shared.dicomweb.transcoded import FrameCache
from shared.dicomweb.wado import Wado
from shared.ports import BlobStore
from shared.services import Services
from shared.storage import layout
from tests.integration.test_wado_transcode import counted, fresh, put

__all__ = ["counted"]  # the fixture, shared with the transcoding tests

PNG = "image/png"


def render(storage: Services, ids: tuple[str, str, str], frame: int = 1, media: str = PNG,
           renderer: Renderer | None = None, **params: str) -> np.ndarray:
    renderer = renderer or Renderer(Wado(storage.blobs, storage.index))
    reply = renderer.instance(media, *ids, frame, parse_params(list(params.items())))
    assert reply.headers["Content-Type"] == media
    return np.asarray(Image.open(io.BytesIO(reply.body)))


def forget_pixels() -> None:
    """As if this process's decoded frames had been evicted (its memory is bounded)."""
    rendered_module._PIXELS.clear()


def pydicom_window(ds: pydicom.Dataset, center: float, width: float) -> np.ndarray:
    """pydicom's windowing of the stored pixels, scaled from its output range to 0..255."""
    ds = copy.deepcopy(ds)
    ds.WindowCenter, ds.WindowWidth = center, width
    values = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    bits = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    lo, hi = lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept), hi * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept)
    return np.clip((values - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def test_ct_window_from_the_header_and_from_the_request(storage: Services) -> None:
    ds = fresh("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ids = put(storage, ds)
    got = render(storage, ids)
    assert np.abs(got.astype(int) - pydicom_window(ds, 40, 400).astype(int)).max() <= 1
    narrow = render(storage, ids, window="100,50")
    assert np.abs(narrow.astype(int) - pydicom_window(ds, 100, 50).astype(int)).max() <= 1
    assert not np.array_equal(got, narrow)


def test_monochrome1_is_shown_inverted(storage: Services) -> None:
    ds = fresh("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400
    inverted = copy.deepcopy(ds)
    inverted.SOPInstanceUID = pydicom.uid.generate_uid()
    inverted.PhotometricInterpretation = "MONOCHROME1"
    normal, one = render(storage, put(storage, ds)), render(storage, put(storage, inverted))
    assert np.abs(one.astype(int) - (255 - normal.astype(int))).max() <= 1


def large_ct(rows: int = 512) -> pydicom.Dataset:
    """A CT slice of the usual size (512x512, 16-bit signed): more pixels than a 16-bit type has values."""
    ds = fresh("CT_small.dcm")
    rng = np.random.default_rng(20)
    ds.Rows = ds.Columns = rows
    ds.PixelData = rng.integers(-1500, 2500, (rows, rows)).astype(np.int16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    return ds


@pytest.mark.parametrize("function", ["linear", "linear-exact", "sigmoid"])
def test_a_full_size_ct_slice_windowed_as_pydicom_windows_it(storage: Services, function: str) -> None:
    """A 512x512 16-bit slice goes through the renderer's table of every possible stored value: the picture is
    pydicom's windowing of every pixel, for each VOI LUT function, and inverted for MONOCHROME1."""
    ds = large_ct()
    ids = put(storage, ds)
    got = render(storage, ids, window=f"40,400,{function}")
    ref = copy.deepcopy(ds)
    ref.VOILUTFunction = function.upper().replace("-", "_")
    assert np.abs(got.astype(int) - pydicom_window(ref, 40, 400).astype(int)).max() <= 1
    inverted = copy.deepcopy(ds)
    inverted.SOPInstanceUID = pydicom.uid.generate_uid()
    inverted.PhotometricInterpretation = "MONOCHROME1"
    one = render(storage, put(storage, inverted), window=f"40,400,{function}")
    assert np.abs(one.astype(int) - (255 - got.astype(int))).max() <= 1


def test_a_full_size_slice_without_a_window_spans_its_own_range(storage: Services) -> None:
    """No window in the request or the header: the frame's own lowest and highest values (not the type's)."""
    ds = large_ct()
    assert "WindowCenter" not in ds and "VOILUTSequence" not in ds
    ds.PixelData = (np.frombuffer(ds.PixelData, np.int16) // 8 + 100).astype(np.int16).tobytes()  # a narrow range
    values = apply_modality_lut(ds.pixel_array, ds)
    expected = np.clip((values - values.min()) / (values.max() - values.min()) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    got = render(storage, put(storage, ds))
    assert got.min() == 0 and got.max() == 255
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_palette_and_ybr_colour_and_a_chosen_frame(storage: Services) -> None:
    palette = fresh("examples_palette.dcm")
    got = render(storage, put(storage, palette))
    expected = apply_color_lut(palette.pixel_array, palette)  # 16-bit LUT entries
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - (expected.astype(int) * 255 // 65535)).max() <= 1
    ybr = fresh("examples_ybr_color.dcm")  # JPEG, YBR_FULL_422, 30 frames
    ids = put(storage, ybr)
    np.testing.assert_array_equal(render(storage, ids, frame=12), ybr.pixel_array[11])  # RGB, as pydicom shows it
    thumb = render(storage, ids, frame=12, viewport="64,64")
    assert max(thumb.shape[:2]) == 64
    crop = render(storage, ids, viewport="50,50,10,20,50,50")
    np.testing.assert_array_equal(crop, ybr.pixel_array[0][20:70, 10:60])  # the region, unscaled
    jpeg = Image.open(io.BytesIO(Renderer(Wado(storage.blobs, storage.index)).instance(
        "image/*", *ids, 1, parse_params([("quality", "50")])).body))
    assert jpeg.format == "JPEG" and jpeg.size == (ybr.Columns, ybr.Rows)


def test_rendered_images_are_cached_per_parameters(storage: Services) -> None:
    ds = fresh("JPEG2000.dcm")
    ids = put(storage, ds)
    first = render(storage, ids, window="0,1000")
    assert flush_cache_writes()
    cached = sorted(b.name for b in storage.blobs.list(layout.CACHE, f"rendered/{ids[0]}/"))
    assert len(cached) == 1
    np.testing.assert_array_equal(render(storage, ids, window="0,1000"), first)
    forget_pixels()  # else rendered from the decoded pixels this process kept, which costs less than caching
    render(storage, ids, window="0,2000")
    assert flush_cache_writes()
    assert len(list(storage.blobs.list(layout.CACHE, f"rendered/{ids[0]}/"))) == 2


@pytest.mark.parametrize(("params", "word"), [
    ({"window": "abc,400"}, "numbers"), ({"window": "40"}, "window needs 2"), ({"window": "40,0"}, "positive"),
    ({"viewport": "0,10"}, "viewport"), ({"quality": "0"}, "quality"), ({"annotation": "patient"}, "annotation"),
])
def test_bad_parameters_are_400_naming_them(params: dict[str, str], word: str) -> None:
    with pytest.raises(HttpProblem) as bad:
        parse_params(list(params.items()))
    assert bad.value.status == 400 and word in bad.value.message


def test_non_images_and_missing_frames(storage: Services) -> None:
    renderer = Renderer(Wado(storage.blobs, storage.index))
    sr = put(storage, fresh("test-SR.dcm"))
    with pytest.raises(HttpProblem) as refused:
        renderer.instance(None, *sr, 1, parse_params([]))
    assert refused.value.status == 406 and "not an image" in refused.value.message
    seg_like = fresh("CT_small.dcm")
    seg_like.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    with pytest.raises(HttpProblem) as refused:
        renderer.instance(None, *put(storage, seg_like), 1, parse_params([]))
    assert refused.value.status == 406 and "result object" in refused.value.message
    with pytest.raises(HttpProblem) as missing:
        renderer.instance(None, *put(storage, fresh("CT_small.dcm")), 2, parse_params([]))
    assert missing.value.status == 404 and "1 frame" in missing.value.message
    with pytest.raises(HttpProblem) as refused:
        renderer.instance("application/dicom", *sr, 1, parse_params([]))
    assert refused.value.status == 406 and "image/jpeg" in refused.value.message


class GatedCache:
    """The session's store, whose writes to ``dicom-cache`` wait until ``opened`` is set (a slow cache write)."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.opened = threading.Event()

    def write(self, container: str, path: str, data: Any, **kwargs: Any) -> str:
        if container == layout.CACHE:
            assert self.opened.wait(20), "the cache write was never let through"
        return self.inner.write(container, path, data, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_the_cache_is_written_after_the_response_and_serves_meanwhile(counted: Services) -> None:
    """A rendering worth caching (a 2 MiB frame) answers before its blob PUT lands; the same request repeated
    meanwhile (its pixels no longer in memory) gets the same image without rendering it again (the version check
    alone: no cache or frame read), and once the write lands it is in dicom-cache."""
    ids = put(counted, large_ct(1024))
    gated = GatedCache(counted.blobs)
    renderer = Renderer(Wado(gated, counted.index))
    try:
        first = renderer.instance(PNG, *ids, 1, parse_params([("window", "40,400")])).body
        cached = list(counted.blobs.list(layout.CACHE, f"rendered/{ids[0]}/"))
        assert cached == []  # answered while the write waits
        forget_pixels()
        before = counted.requests.snapshot()
        again = renderer.instance(PNG, *ids, 1, parse_params([("window", "40,400")])).body
        assert again == first and counted.requests.snapshot() - before == {"blob HEAD": 1}
    finally:
        gated.opened.set()
    assert flush_cache_writes()
    (blob,) = counted.blobs.list(layout.CACHE, f"rendered/{ids[0]}/")
    assert counted.blobs.read(layout.CACHE, blob.name) == first


def test_what_a_rendering_costs_in_storage_requests(counted: Services) -> None:
    """An instance this process has not seen, small (a 30-frame JPEG, 220 KiB): read whole, one request. The
    same frame again in another viewport: the version check, then the decoded pixels it kept. Another frame:
    that frame alone, read on the condition of the remembered version. None of these is worth caching. A frame
    over 1 MiB whose pixels were evicted: the cache lookup and the frame; its rendering cached after the
    response."""
    small = put(counted, fresh("examples_ybr_color.dcm"))
    big = put(counted, large_ct(1024))
    renderer = Renderer(Wado(counted.blobs, counted.index))
    render(counted, big, renderer=renderer, window="40,400")
    assert flush_cache_writes()
    steps: list[tuple[tuple[str, str, str], int, dict[str, str], dict[str, int]]] = [
        (small, 1, {"viewport": "40,40"}, {"blob GET": 1}),
        (small, 1, {"viewport": "50,50"}, {"blob HEAD": 1}),
        (small, 2, {"viewport": "50,50"}, {"blob GET": 1}),
        (big, 1, {"window": "60,400"}, {"blob GET": 2, "blob PUT": 1}),
    ]
    for n, (ids, frame, params, cost) in enumerate(steps):
        if ids == big:
            forget_pixels()
        before = counted.requests.snapshot()
        got = render(counted, ids, frame=frame, renderer=renderer, **params)
        answered = counted.requests.snapshot() - before
        assert flush_cache_writes()
        assert answered - Counter({"blob PUT": 1}) == Counter(cost) - Counter({"blob PUT": 1}), (n, answered)
        assert counted.requests.snapshot() - before == cost, n
        if "viewport" in params:
            assert max(got.shape[:2]) == int(params["viewport"].split(",")[0])


@pytest.mark.parametrize("rows", [512, 1024], ids=["read-whole", "cached"])
def test_a_remembered_instance_replaced_or_deleted_is_never_served_stale(storage: Services, rows: int) -> None:
    """Another process replaces an instance this one rendered: whether this process still holds its decoded
    pixels, its rendering in the cache (a frame over 1 MiB), or only its frame index and header, the next
    rendering shows the new pixels; deleted, it is 404, not the remembered or cached picture."""
    old = large_ct(rows)
    new = copy.deepcopy(old)
    new.PixelData = (-np.frombuffer(old.PixelData, np.int16)).astype(np.int16).tobytes()
    ids = put(storage, old)
    renderer = Renderer(Wado(storage.blobs, storage.index))

    def shows(ds: pydicom.Dataset, center: int) -> None:
        got = render(storage, ids, renderer=renderer, window=f"{center},400")
        assert np.abs(got.astype(int) - pydicom_window(ds, center, 400).astype(int)).max() <= 1
        assert flush_cache_writes()

    shows(old, 40)
    put(storage, new)
    shows(new, 40)  # this process holds the old version's pixels
    forget_pixels()
    put(storage, old)
    shows(old, 90)  # its frame index and header only: the conditional frame read is refused
    forget_pixels()
    put(storage, new)
    shows(new, 90)  # 1024 rows: the old version's rendering with these parameters is in the cache
    storage.blobs.delete(layout.ARCHIVE, layout.instance_path(*ids))
    for center in (90, 120):
        with pytest.raises(HttpProblem) as gone:
            render(storage, ids, renderer=renderer, window=f"{center},400")
        assert gone.value.status == 404


def test_cache_writes_never_drop_or_fail_a_rendering(storage: Services, caplog: pytest.LogCaptureFixture) -> None:
    """Writes beyond the queue's depth are made by the request itself (it waits; nothing is dropped); a write that
    fails is logged without naming the instance and costs a rendering later, never the response."""
    class GatedOne(GatedCache):  # only the write of ".../queued" waits
        def write(self, container: str, path: str, data: Any, **kwargs: Any) -> str:
            if path.endswith("/queued"):
                return super().write(container, path, data, **kwargs)
            return self.inner.write(container, path, data, **kwargs)

    gated = GatedOne(storage.blobs)
    writes = rendered_module._CacheWrites(depth=1, workers=1)
    cache = FrameCache(gated)
    prefix = f"rendered/{pydicom.uid.generate_uid()}"
    try:
        writes.put(cache, f"{prefix}/queued", b"one")  # waits at the gate on the worker
        writes.put(cache, f"{prefix}/inline", b"two")  # the queue is full: written before put returns
        assert storage.blobs.read(layout.CACHE, f"{prefix}/inline") == b"two"
        assert storage.blobs.read(layout.CACHE, f"{prefix}/queued") is None and writes.get(cache, f"{prefix}/queued")
    finally:
        gated.opened.set()
    assert writes.flush(10) and storage.blobs.read(layout.CACHE, f"{prefix}/queued") == b"one"

    class Refusing(GatedCache):
        def write(self, container: str, path: str, data: Any, **kwargs: Any) -> str:
            raise OSError("the storage account is full")

    with caplog.at_level("WARNING", logger="shared.dicomweb.rendered"):
        writes.put(FrameCache(Refusing(storage.blobs)), f"{prefix}/refused", b"three")
        assert writes.flush(10)
    assert storage.blobs.read(layout.CACHE, f"{prefix}/refused") is None
    (record,) = [r for r in caplog.records if "not kept" in r.getMessage()]
    assert "OSError" in record.getMessage() and prefix.split("/")[1] not in record.getMessage()
