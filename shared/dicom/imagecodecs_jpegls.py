"""A pydicom decoding plugin for JPEG-LS backed by ``imagecodecs`` (CharLS, as pyjpegls is).

pydicom 3 takes extra decoders through its plugin interface (``Decoder.add_plugin``: a module with
``is_available``, ``DECODER_DEPENDENCIES`` and the frame function); this module is one, shaped like pydicom's
own ``pydicom.pixels.decoders.pyjpegls``. The difference that matters here: imagecodecs releases the GIL while
CharLS decodes, pyjpegls does not, so a series transcoded on worker threads decodes on every core instead of
one at a time. Pixels are CharLS's either way (pydicom's runner does sign and shape as for any plugin).
"""

from __future__ import annotations

from typing import Any, Final

from pydicom import uid

DECODER_DEPENDENCIES: Final = {
    uid.JPEGLSLossless: ("numpy", "imagecodecs"),
    uid.JPEGLSNearLossless: ("numpy", "imagecodecs"),
}
LABEL: Final = "imagecodecs"


def is_available(syntax: str) -> bool:
    if syntax not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs

        return bool(imagecodecs.JPEGLS.available)
    except (ImportError, AttributeError):
        return False


def _decode_frame(src: bytes, runner: Any) -> bytes:
    """One JPEG-LS frame's samples, colour by pixel (what the runner is told)."""
    import imagecodecs

    arr = imagecodecs.jpegls_decode(src)
    if arr.ndim == 3:  # imagecodecs returns (rows, columns, samples), whatever the stored interleave mode
        runner.set_option("planar_configuration", 0)
    runner.set_option("bits_allocated", 8 * arr.dtype.itemsize)
    return arr.tobytes()
