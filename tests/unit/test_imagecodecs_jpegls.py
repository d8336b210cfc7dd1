"""The imagecodecs JPEG-LS plugin (chosen first for JPEG-LS: it releases the GIL) decodes to the same pixels as
pydicom's pyjpegls plugin, and a lossless stream to the uncompressed original."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder

from shared.dicom import transcode
from shared.dicom.transcode import PixelModule


def _frame(name: str) -> tuple[pydicom.Dataset, bytes]:
    ds = pydicom.dcmread(get_testdata_file(name))
    from pydicom.encaps import generate_frames

    return ds, next(generate_frames(ds.PixelData, number_of_frames=1))


@pytest.mark.parametrize("name", ["MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jls_lossy_sample.dcm",
                                  "SC_rgb_jls_lossy_line.dcm"])
def test_imagecodecs_is_chosen_and_agrees_with_pyjpegls(name: str) -> None:
    ds, frame = _frame(name)
    syntax = str(ds.file_meta.TransferSyntaxUID)
    decoder = get_decoder(syntax)
    assert transcode._decoding_plugin(decoder, syntax) == "imagecodecs"
    ours, _ = transcode.decode_frame(PixelModule.of(ds), syntax, frame)
    reference = ds.pixel_array if "pyjpegls" not in decoder.available_plugins else decoder.as_array(
        ds, decoding_plugin="pyjpegls")[0]
    np.testing.assert_array_equal(ours, reference)


def test_a_lossless_stream_decodes_to_the_original() -> None:
    ds, frame = _frame("MR_small_jpeg_ls_lossless.dcm")
    ours, _ = transcode.decode_frame(PixelModule.of(ds), str(ds.file_meta.TransferSyntaxUID), frame)
    np.testing.assert_array_equal(ours, pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array)
