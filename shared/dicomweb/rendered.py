"""Rendered resources and thumbnails (PS3.18 9.5, 8.3.5): a picture for a client that decodes nothing.

``…/instances/{i}/rendered`` (the first frame), ``…/frames/{n}/rendered``, ``…/series/{se}/rendered`` and
``…/studies/{s}/rendered`` (a multipart/related of each instance's picture), and ``…/thumbnail`` at the
frame, instance, series and study level (a series shows its middle image, a study its largest image series),
as ``image/jpeg`` (default), ``image/png`` or ``image/gif``.

The pipeline follows PS3.3 C.11: the frame is decoded (:mod:`shared.dicom.transcode`; YBR colour becomes
RGB), then for grayscale the Modality LUT (Rescale Slope/Intercept, or the Modality LUT Sequence; per frame
for enhanced multi-frame objects), the VOI transform (the ``window`` parameter, else the header's window:
Window Center/Width with VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID, per frame where the functional
groups carry it, or a VOI LUT Sequence, else the frame's own range), MONOCHROME1 inverted to display as
MONOCHROME2; PALETTE COLOR through its lookup tables (pydicom's ``apply_color_lut``). ``viewport=vw,vh[,sx,sy,
sw,sh]`` crops to the source region and scales to fit (aspect kept); ``quality`` (1-100) is the JPEG quality.
Pillow writes the image.

What it costs (:meth:`Renderer.image`): an instance the process has not seen is read whole in one request when it
is small (up to 1 MiB: a CT or MR slice), else through its frame index, version check and header; the process then
remembers, per archived version, the frame index, the header and the decoded frames (64 MiB), so another window on
a frame it holds costs a version check and about a millisecond of LUT and JPEG, and another frame of the instance
one read, conditional on the version. ``dicom-cache`` keeps, keyed on the archived version and the parameters, the
renderings that cost more to make than to fetch (frames stored over 1 MiB or in JPEG 2000: :func:`worth_caching`),
written after the response (:class:`_CacheWrites`).

Objects that are not images (no pixel data: SR, KO, PR; or a result object such as SEG) get 406.
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from pydicom import dcmread, uid
from pydicom.dataset import Dataset

from shared.dicom import facts, transcode
from shared.dicom.frames import FrameIndex
from shared.dicom.header import Header
from shared.dicomweb import media, transcoded
from shared.dicomweb.errors import BadRequest, HttpProblem, NotAcceptable, NotFoundProblem
from shared.dicomweb.multipart import new_boundary, related_content_type, stream_parts
from shared.dicomweb.reply import Reply
from shared.dicomweb.wado import Recent, Wado
from shared.ports import Blob, BlobGone
from shared.storage import layout

log = logging.getLogger(__name__)

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
GIF: Final = "image/gif"
RENDERED_TYPES: Final = (JPEG, PNG, GIF)
PILLOW_FORMAT: Final = {JPEG: "JPEG", PNG: "PNG", GIF: "GIF"}
DEFAULT_QUALITY: Final = 90
#: A thumbnail fits this square unless the request names a viewport.
THUMBNAIL_SIZE: Final = 128
MAX_VIEWPORT: Final = 8192
MAX_RENDERED_INSTANCES: Final = 1000
#: An instance this size or smaller is read whole on its first rendering in a process (one request instead of
#: the frame index, its version check, the header and the frame); a larger one costs one wasted read of this size.
WHOLE_INSTANCE_BYTES: Final = 1 << 20
#: Renderings of frames stored larger than this, or in these syntaxes, are kept in dicom-cache (:func:`worth_caching`).
CACHE_FRAME_BYTES: Final = 1 << 20
SLOW_SYNTAXES: Final = frozenset({uid.JPEG2000Lossless, uid.JPEG2000, uid.JPEG2000MCLossless, uid.JPEG2000MC,
                                  uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K})
WINDOW_FUNCTIONS: Final = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
PARAMETERS: Final = ("window", "viewport", "quality")


@dataclass(frozen=True, slots=True)
class Window:
    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True, slots=True)
class Viewport:
    width: int
    height: int
    #: The source region (sx, sy, sw, sh) in image pixels, or None for the whole image.
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class RenderParams:
    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = DEFAULT_QUALITY

    def key(self, frame: int, media_type: str) -> str:
        w = f"{self.window.center:g}_{self.window.width:g}_{self.window.function}" if self.window else "auto"
        v = f"{self.viewport.width}x{self.viewport.height}_{self.viewport.region}" if self.viewport else "full"
        return f"f{frame}_{media_type.split('/')[1]}_q{self.quality}_w{w}_v{v}"


def _numbers(value: str, name: str, count: Sequence[int], kind: type) -> list[Any]:
    items = [v.strip() for v in value.split(",")]
    if len(items) not in count:
        raise BadRequest(f"{name} needs {' or '.join(map(str, count))} comma-separated numbers, as in "
                         f"{'window=40,400,linear' if name == 'window' else 'viewport=512,512'}; got {value!r}.")
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise BadRequest(f"{name} values must be numbers; got {value!r}.") from None


def parse_params(params: Sequence[tuple[str, str]], *, thumbnail: bool = False) -> RenderParams:
    """The rendering query parameters (PS3.18 8.3.5); 400 naming the one at fault."""
    window: Window | None = None
    viewport: Viewport | None = None
    quality = DEFAULT_QUALITY
    for name, value in params:
        if name not in PARAMETERS:
            raise BadRequest(f"Query parameter {name!r} is not supported on rendered resources "
                             f"(supported: {', '.join(PARAMETERS)}); remove it.")
        if name == "window":
            parts = [v.strip() for v in value.split(",")]
            function = parts.pop().upper().replace("-", "_") if len(parts) == 3 else "LINEAR"
            center, width = _numbers(",".join(parts), "window", (2,), float)
            if function not in WINDOW_FUNCTIONS:
                raise BadRequest(f"window function must be one of linear, linear-exact, sigmoid; got {value!r}.")
            if not (math.isfinite(center) and math.isfinite(width)) or width <= 0 or (
                    function == "LINEAR" and width < 1):
                raise BadRequest(f"window width must be a positive number (at least 1 for linear); got {value!r}.")
            window = Window(center, width, function)
        elif name == "viewport":
            nums = _numbers(value, "viewport", (2, 6), int)
            vw, vh = nums[0], nums[1]
            if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
                raise BadRequest(f"viewport width and height must be 1 to {MAX_VIEWPORT}; got {value!r}.")
            region = None
            if len(nums) == 6:
                sx, sy, sw, sh = nums[2:]
                if sx < 0 or sy < 0 or sw <= 0 or sh <= 0:
                    raise BadRequest(f"viewport source region must be inside the image, positive size; got {value!r}.")
                region = (sx, sy, sw, sh)
            viewport = Viewport(vw, vh, region)
        else:
            if not re.fullmatch(r"\d{1,3}", value.strip()) or not 1 <= int(value) <= 100:
                raise BadRequest(f"quality must be a whole number from 1 to 100; got {value!r}.")
            quality = int(value)
    if thumbnail and viewport is None:
        viewport = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return RenderParams(window, viewport, quality)


def negotiate(accept: str | None) -> str:
    """image/jpeg (default), image/png or image/gif; 406 otherwise."""
    for rng in media.parse_accept(accept):
        for candidate in RENDERED_TYPES:
            if rng.covers(candidate):
                return candidate
    raise NotAcceptable(f"Rendered images are {', '.join(RENDERED_TYPES)}; send one of them in Accept (or */*).")


# -- the pipeline ------------------------------------------------------------------------------------------
def _item(ds: Dataset, index: int, inner: str) -> Dataset | None:
    """The ``inner`` item of frame ``index``'s functional groups (per-frame first, then shared)."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        if seq and len(seq) > i:
            item = seq[i].get(inner)
            if item:
                found: Dataset = item[0]
                return found
    return None


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


def modality(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """Stored values -> modality values (Rescale Slope/Intercept, per frame if the groups say so)."""
    item = _item(ds, index, "PixelValueTransformationSequence") or ds
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    slope = _first(item.get("RescaleSlope"))
    intercept = _first(item.get("RescaleIntercept"))
    out = arr.astype(np.float64)
    if slope is not None and slope != 1.0:
        out *= slope
    if intercept:
        out += intercept
    return out


def header_window(ds: Dataset, index: int) -> Window | None:
    item = _item(ds, index, "FrameVOILUTSequence") or ds
    center, width = _first(item.get("WindowCenter")), _first(item.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(item.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if function not in WINDOW_FUNCTIONS or (function == "LINEAR" and width < 1):
        function = "LINEAR_EXACT"
    return Window(center, width, function)


def apply_window(values: np.ndarray, w: Window) -> np.ndarray:
    """Modality values -> 0..1 (PS3.3 C.11.2.1.2 and C.11.2.1.3)."""
    c, width = w.center, w.width
    if w.function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - c) / width))
    elif w.function == "LINEAR_EXACT":
        out = (values - (c - width / 2)) / width
    else:
        out = ((values - (c - 0.5)) / (width - 1)) + 0.5
    return np.clip(out, 0.0, 1.0)


def grayscale(arr: np.ndarray, ds: Dataset, pm: transcode.PixelModule, index: int,
              window: Window | None) -> np.ndarray:
    """Stored values -> 8-bit display values. Every step (Modality LUT, VOI, MONOCHROME1) is a function of the
    stored value alone, so an 8- or 16-bit frame with more pixels than its type has values is mapped through a
    table computed once per possible value (65,536 at most) instead of per pixel: the same numbers, a 512x512
    CT slice in about a tenth of the time."""
    w = window or header_window(ds, index)
    voi_lut = w is None and "VOILUTSequence" in ds
    lookup = _domain(arr)
    if lookup is None:
        return _display(modality(arr, ds, index), ds, pm, w, voi_lut, None)
    domain, positions = lookup
    values = modality(domain, ds, index)
    own_range = None
    if w is None and not voi_lut:  # the frame's own range: the values its pixels have, not every possible one
        present = values[positions]
        own_range = float(present.min()), float(present.max())
    table = _display(values, ds, pm, w, voi_lut, own_range)
    out: np.ndarray = table[positions]
    return out


def _domain(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(every value the frame's integer type can hold, the frame as positions in that list) when a lookup table
    pays: 8- or 16-bit integers in native byte order, more pixels than possible values; None otherwise."""
    dtype = arr.dtype
    if dtype.kind not in "iu" or dtype.itemsize > 2 or not dtype.isnative or arr.size < 1 << (8 * dtype.itemsize):
        return None
    unsigned = np.dtype(f"u{dtype.itemsize}")
    return np.arange(1 << (8 * dtype.itemsize), dtype=unsigned).view(dtype), arr.view(unsigned)


def _display(values: np.ndarray, ds: Dataset, pm: transcode.PixelModule, w: Window | None, voi_lut: bool,
             own_range: tuple[float, float] | None) -> np.ndarray:
    """Modality values -> 8-bit display values (the VOI transform, then MONOCHROME1 inverted)."""
    if w is not None:
        out = apply_window(values, w)
    elif voi_lut:
        from pydicom.pixels import apply_voi_lut

        lut = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2] or 16)
        out = lut / float((1 << bits) - 1)
    else:  # no window anywhere: the frame's own range
        lo, hi = own_range or (float(values.min()), float(values.max()))
        out = np.clip((values - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(values)
    if pm.photometric == "MONOCHROME1":
        out = 1.0 - out
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_8bit(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    top = float((1 << bits) - 1) if bits > 0 else float(arr.max() or 1)
    return np.clip(arr.astype(np.float64) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)


def render_frame(arr: np.ndarray, photometric: str, ds: Dataset, pm: transcode.PixelModule, index: int,
                 params: RenderParams, media_type: str) -> bytes:
    """One decoded frame as an image file of ``media_type``."""
    from PIL import Image

    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(arr, ds))
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2] or 8)
        image = Image.fromarray(to_8bit(rgb, bits), "RGB")
    elif arr.ndim == 3:
        image = Image.fromarray(to_8bit(arr, pm.bits_stored), "RGB")
    else:
        image = Image.fromarray(grayscale(arr, ds, pm, index, params.window), "L")
    vp = params.viewport
    if vp is not None:
        if vp.region is not None:
            sx, sy, sw, sh = vp.region
            image = image.crop((sx, sy, min(sx + sw, image.width), min(sy + sh, image.height)))
        scale = min(vp.width / image.width, vp.height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if media_type == JPEG:
        image.save(out, "JPEG", quality=params.quality)
    else:
        image.save(out, PILLOW_FORMAT[media_type])
    return out.getvalue()


class Renderer:
    """Rendered resources over :class:`~shared.dicomweb.wado.Wado`'s frame access."""

    def __init__(self, wado: Wado) -> None:
        self.wado = wado
        self.cache = transcoded.FrameCache(wado.blobs)

    def image(self, study: str, series: str, sop: str, frame: int, params: RenderParams, media_type: str) -> bytes:
        """Frame ``frame`` of one instance, rendered.

        An instance this process does not know is read whole in one request when it is small (a CT or MR slice;
        :data:`WHOLE_INSTANCE_BYTES`), else through its stored frame index, version check and header. What the
        process learnt is remembered per archived version: the frame index and header, and the decoded frames
        (within a memory budget). Rendering a frame again (another window: a viewer dragging the level) checks the
        version and renders the pixels it holds, no read, no decode; another frame of the instance is read alone,
        on the condition that the version is the one remembered (If-Match). An instance replaced or deleted since
        fails that check or that read and is rendered anew. ``dicom-cache`` keeps the renderings that cost more to
        make than to fetch (:func:`worth_caching`); a cached one is served only after the version is checked."""
        remembered = self.wado.remembered_index(study, series, sop)
        if remembered is not None:
            ready = _READY.get(self._version_key(study, series, sop, remembered[0].etag))
            if ready is not None:
                try:
                    return self._render(study, series, sop, frame, params, media_type, remembered, ready)
                except BlobGone:
                    self.wado.forget_index(study, series, sop)
                    remembered = None
        large = remembered is not None and _extent(remembered[0]) > WHOLE_INSTANCE_BYTES
        return self._render(study, series, sop, frame, params, media_type, None, None, whole=not large)

    def _render(self, study: str, series: str, sop: str, frame: int, params: RenderParams, media_type: str,
                trusted: tuple[FrameIndex, Blob] | None, ready: _Ready | None, *, whole: bool = True) -> bytes:
        opened = trusted or self._opened(study, series, sop, whole)
        index = opened[0]
        if not 1 <= frame <= index.number_of_frames:
            raise NotFoundProblem(f"Frame {frame} does not exist: the instance has {index.number_of_frames} frame(s).")
        version = self._version_key(study, series, sop, index.etag)
        ready = ready or _READY.get(version)
        pixels = _PIXELS.get(f"{version}|{frame}") if ready is not None else None
        if pixels is not None and ready is not None:  # rendering these costs less than a cache read
            if trusted is not None:
                self._same_version(study, series, sop, index)
            return render_frame(pixels.array, pixels.photometric, ready.dataset, ready.pm, frame - 1, params,
                                media_type)
        path = layout.rendered_path(study, series, sop, index.etag, params.key(frame, media_type)) \
            if worth_caching(index, frame) else None
        if path is not None:
            hit = _WRITES.get(self.cache, path)
            if hit is None:
                hit = self.cache.get(path)
            if hit is not None:
                if trusted is not None:
                    self._same_version(study, series, sop, index)
                return hit
        if ready is None:
            ready = self._ready(study, series, sop, opened[1])
            _READY.put(version, ready, ready.size)
        source, _, _ = self.wado.frame_source(study, series, sop, ready.header, opened)
        try:
            arr, photometric = transcode.decode_frame(source.pm, source.syntax, source.read_frame(frame))
        except transcode.TranscodeError as exc:
            raise NotAcceptable(f"Frame {frame} of instance {sop} cannot be rendered: {exc}") from None
        arr.flags.writeable = False  # shared by the renderings that follow
        _PIXELS.put(f"{version}|{frame}", _Pixels(arr, photometric), arr.nbytes)
        data = render_frame(arr, photometric, ready.dataset, source.pm, frame - 1, params, media_type)
        if path is not None:
            _WRITES.put(self.cache, path, data)
        return data

    def _opened(self, study: str, series: str, sop: str, whole: bool) -> tuple[FrameIndex, Blob]:
        """An instance this process does not trust yet: read whole if small (``whole``: not known to be large),
        else its frame index, checked."""
        try:
            read = self.wado.whole_instance(study, series, sop, WHOLE_INSTANCE_BYTES) if whole else None
        except HttpProblem as problem:
            raise _no_frames(problem, sop) from None
        if read is None:
            return self._checked(study, series, sop)
        index, header, held = read
        if _READY.get(self._version_key(study, series, sop, index.etag)) is None:
            ready = self._ready(study, series, sop, held, header)
            _READY.put(self._version_key(study, series, sop, index.etag), ready, ready.size)
        return index, held

    def _same_version(self, study: str, series: str, sop: str, index: FrameIndex) -> None:
        """Raise :class:`BlobGone` if the archived instance is no longer the version ``index`` was made from."""
        if self._checked(study, series, sop)[0].etag != index.etag:
            raise BlobGone(layout.instance_path(study, series, sop))

    def _checked(self, study: str, series: str, sop: str) -> tuple[FrameIndex, Blob]:
        """The frame index, its version checked (or built); 406 for an object without frames."""
        try:
            return self.wado.frame_index(study, series, sop)
        except HttpProblem as problem:
            raise _no_frames(problem, sop) from None

    def _ready(self, study: str, series: str, sop: str, src: Blob, header: Header | None = None) -> _Ready:
        """What rendering needs from the header of the version ``src`` reads; 406 for a result object."""
        header = header or self.wado.header(study, series, sop, src)
        ds = header.dataset
        if facts.is_derived(header.sop_class_uid, str(ds.get("Modality", ""))):
            raise NotAcceptable(f"Instance {sop} is a result object ({transcode.name(header.sop_class_uid or '')}), "
                                "not an image to render; a viewer overlays it on its source images.")
        needs_whole = any(k in ds for k in ("RedPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
                                             "VOILUTSequence", "ModalityLUTSequence"))
        if needs_whole:  # lookup tables may be large values the header parse skipped: read them
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(io.BytesIO(transcoded.header_dataset(src, header)), force=True,
                             stop_before_pixels=True)
        try:
            pm = transcode.PixelModule.of(header.dataset)
        except transcode.TranscodeError as exc:
            raise HttpProblem(f"The frames of instance {sop} cannot be rendered: {exc}", status=406) from None
        return _Ready(header, ds, pm, header.header_end)

    def _version_key(self, study: str, series: str, sop: str, version: str | None) -> str:
        return f"{id(self.wado.blobs)}|{layout.instance_path(study, series, sop)}|{version}"

    def instance(self, accept: str | None, study: str, series: str, sop: str, frame: int,
                 params: RenderParams) -> Reply:
        media_type = negotiate(accept)
        return Reply(200, {"Content-Type": media_type}, self.image(study, series, sop, frame, params, media_type))

    def many(self, accept: str | None, study: str, series: str | None, params: RenderParams) -> Reply:
        """Series or study rendered: a multipart/related of each image instance's first frame."""
        media_type = negotiate(accept)
        records = self.wado.index.list_series_instances(study, series) if series else \
            self.wado.index.list_study_instances(study)
        images = sorted((r for r in records if not r.derived and r.rows),
                        key=lambda r: (r.series_instance_uid, _number(r.instance_number), r.sop_instance_uid))
        if not images:
            raise NotFoundProblem(f"{'Series ' + series + ' of study' if series else 'Study'} {study} has no images.")
        if len(images) > MAX_RENDERED_INSTANCES:
            raise BadRequest(f"{len(images)} instances are more than the {MAX_RENDERED_INSTANCES} rendered in one "
                             "response; ask per series or per instance.")

        def parts() -> Iterator[tuple[str, list[bytes]]]:
            for r in images:
                try:
                    yield media_type, [self.image(study, r.series_instance_uid, r.sop_instance_uid, 1, params,
                                                  media_type)]
                except (NotAcceptable, NotFoundProblem) as exc:  # this one cannot be shown; the rest still can
                    yield transcoded.error_part(exc.message)

        boundary = new_boundary()
        return Reply(200, {"Content-Type": related_content_type(media_type, boundary)},
                     stream=stream_parts(parts(), boundary))

    def representative(self, study: str, series: str | None) -> tuple[str, str, int]:
        """(series, SOP Instance, frame) a thumbnail of a series or study shows: the middle image of the series
        (of the study's image series with the most instances)."""
        records = [r for r in (self.wado.index.list_series_instances(study, series) if series else
                               self.wado.index.list_study_instances(study))
                   if not r.derived and r.rows]
        if not records:
            raise NotFoundProblem(f"{'Series ' + series + ' of study' if series else 'Study'} {study} has no images.")
        if series is None:
            counts: dict[str, int] = {}
            for r in records:
                counts[r.series_instance_uid] = counts.get(r.series_instance_uid, 0) + 1
            chosen = max(sorted(counts), key=lambda s: counts[s])
            records = [r for r in records if r.series_instance_uid == chosen]
        records.sort(key=lambda r: (_number(r.instance_number), r.sop_instance_uid))
        middle = records[len(records) // 2]
        frames = int(middle.number_of_frames or 1)
        return middle.series_instance_uid, middle.sop_instance_uid, (frames + 1) // 2


def _no_frames(problem: HttpProblem, sop: str) -> HttpProblem:
    """A frame index refused (400: no pixel data, frames that cannot be located) as the 406 of a non-image."""
    if problem.status != 400:
        return problem
    return NotAcceptable(f"Instance {sop} has no frames to render ({problem.message}); it is not an image (an SR, a "
                         "key object selection, ...): retrieve its metadata instead.")


def _extent(index: FrameIndex) -> int:
    """Where the instance's last frame ends: the file is at least this large."""
    return max((offset + length for ranges in index.frames for offset, length in ranges), default=0)


def worth_caching(index: FrameIndex, frame: int) -> bool:
    """Whether a rendering of ``frame`` goes to ``dicom-cache``: when the frame costs more to read and decode than
    a cached image costs to fetch, i.e. when it is stored larger than :data:`CACHE_FRAME_BYTES` or in a JPEG 2000
    syntax (HTJ2K included: the slow decoders). A CT slice (512x512, 16-bit; about 200 KiB in JPEG-LS) is read
    and decoded in less time than a cache lookup and write cost, so it is rendered each time it is not in memory."""
    stored = sum(length for _, length in index.frame(frame))
    return stored > CACHE_FRAME_BYTES or index.transfer_syntax_uid in SLOW_SYNTAXES


def _number(value: int | None) -> int:
    return value if value is not None else 1 << 30


@dataclass(frozen=True, slots=True)
class _Ready:
    """What rendering needs from the header of one archived version: the parsed header, the data set the
    pipeline reads (the header's, or the whole header re-read where lookup tables were skipped), the pixel
    module, and the header's size in bytes (what remembering it costs, roughly)."""

    header: Header
    dataset: Dataset
    pm: transcode.PixelModule
    size: int


@dataclass(frozen=True, slots=True)
class _Pixels:
    """One decoded frame (read-only) and its Photometric Interpretation."""

    array: np.ndarray
    photometric: str


class _CacheWrites:
    """Rendered results on their way to ``dicom-cache``, written by worker threads after the response (the
    client does not wait for the blob PUT). Until a write lands the result is served from here, so a request
    repeated at once is still a hit. At most ``depth`` wait; beyond that a request writes its own before it
    answers (nothing is dropped). A write that fails is logged and costs a rendering later; a process that ends
    finishes its pending writes first (the executor's threads are joined at exit)."""

    def __init__(self, depth: int, workers: int) -> None:
        self.depth, self.workers = depth, workers
        self.pending: dict[tuple[int, str], bytes] = {}
        self.changed = threading.Condition()
        self.pool: ThreadPoolExecutor | None = None

    def get(self, cache: transcoded.FrameCache, path: str) -> bytes | None:
        with self.changed:
            return self.pending.get((id(cache.blobs), path))

    def put(self, cache: transcoded.FrameCache, path: str, data: bytes) -> None:
        key = (id(cache.blobs), path)
        with self.changed:
            if key in self.pending:
                return
            if len(self.pending) >= self.depth:
                pool = None
            else:
                self.pending[key] = data
                if self.pool is None:
                    self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rendered-cache")
                pool = self.pool
        if pool is None:  # the writes fall behind: this one waits for its own
            self._write(cache, path, data, None)
        else:
            pool.submit(self._write, cache, path, data, key)

    def _write(self, cache: transcoded.FrameCache, path: str, data: bytes, key: tuple[int, str] | None) -> None:
        try:
            cache.put(path, data)
        except Exception as exc:  # noqa: BLE001 - a cache not written costs a rendering later, never the response
            log.warning("A rendered image was not kept in %s (%s); it is rendered again when asked",
                        layout.CACHE, type(exc).__name__)
        finally:
            if key is not None:
                with self.changed:
                    self.pending.pop(key, None)
                    self.changed.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every pending write has landed (or failed); False if some are still pending at ``timeout``."""
        with self.changed:
            return self.changed.wait_for(lambda: not self.pending, timeout)


#: Rendering-ready headers (4 MiB of header bytes, none over 256 KiB), decoded frames (64 MiB: 128 CT slices of
#: 512x512x16 bits; none over 16 MiB), each keyed on the archived version; and the cache writes under way.
_READY: Recent[_Ready] = Recent(4 << 20, 256 << 10)
_PIXELS: Recent[_Pixels] = Recent(64 << 20, 16 << 20)
_WRITES = _CacheWrites(depth=64, workers=2)


def flush_cache_writes(timeout: float = 30.0) -> bool:
    """Wait for the rendered images still being written to ``dicom-cache`` (tests, a clean shutdown)."""
    return _WRITES.flush(timeout)
