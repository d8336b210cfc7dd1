"""The built-in model, the pixel reader and the registry: pure logic on synthetic and pydicom's own files."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from shared.config import Settings, SettingsError
from shared.errors import BadInput, Reason
from shared.inference import pixels, registry
from shared.inference.builtin import BodySegmentation, otsu_threshold
from shared.inference.model import ImageSet, Prediction, SeriesInfo
from shared.inference.writers import ResultUids
from tests.phantoms import disc_mg, ellipsoid_ct, ellipsoid_volume_ml

#: Stated tolerance of the volume and area measurements against the analytic value.
TOLERANCE = 0.01


def _ct_images(**kw: object) -> ImageSet:
    ordered, px, spacing = pixels.load_volume(ellipsoid_ct(**kw))  # type: ignore[arg-type]
    return ImageSet(ordered, px, spacing, is_volume=True)


def test_ellipsoid_volume_matches_analytic_volume_within_one_percent() -> None:
    axes = (60.0, 45.0, 50.0)
    prediction = BodySegmentation().predict(_ct_images(semi_axes_mm=axes))
    assert prediction is not None
    (volume,) = prediction.measurements
    assert volume.unit.value == "mL"
    expected = ellipsoid_volume_ml(axes)
    assert abs(volume.value - expected) / expected < TOLERANCE, (volume.value, expected)


def test_other_geometry_also_matches() -> None:
    axes = (40.0, 60.0, 30.0)
    prediction = BodySegmentation().predict(_ct_images(semi_axes_mm=axes, pixel_mm=0.8, slice_mm=1.5, tag="ct2"))
    assert prediction is not None
    expected = ellipsoid_volume_ml(axes)
    assert abs(prediction.measurements[0].value - expected) / expected < TOLERANCE


def test_air_inside_the_body_counts_as_body() -> None:
    images = _ct_images()
    prediction = BodySegmentation().predict(images)
    assert prediction is not None
    lung = images.pixels < -500
    centre = tuple(s // 2 for s in images.pixels.shape)
    assert lung[centre] and prediction.mask[centre]


def test_slices_are_sorted_by_position_and_spacing_comes_from_positions() -> None:
    datasets = ellipsoid_ct()
    for ds in datasets:
        ds.SliceThickness = 5.0  # not the spacing: the reader must use the positions
    ordered, _, spacing = pixels.load_volume(datasets)
    z = [float(ds.ImagePositionPatient[2]) for ds in ordered]
    assert z == sorted(z)
    assert spacing == (2.0, 0.9, 0.9)


def test_duplicate_positions_are_bad_input() -> None:
    datasets = ellipsoid_ct()
    datasets[1].ImagePositionPatient = datasets[0].ImagePositionPatient
    with pytest.raises(BadInput) as info:
        pixels.load_volume(datasets)
    assert info.value.reason == Reason.INFERENCE_INCONSISTENT


def test_disc_area_in_square_centimetres() -> None:
    mg = disc_mg(radius_mm=40.0)
    px, spacing = pixels.load_projection(mg)
    prediction = BodySegmentation().predict(ImageSet([mg], px, spacing, is_volume=False))
    assert prediction is not None
    (area,) = prediction.measurements
    assert area.unit.value == "cm2"
    assert abs(area.value - math.pi * 4.0**2) / (math.pi * 16) < TOLERANCE


def test_priority_flag_follows_the_configured_threshold() -> None:
    images = _ct_images()
    assert BodySegmentation(priority_ml=100.0).predict(images).priority  # type: ignore[union-attr]
    assert not BodySegmentation(priority_ml=10_000.0).predict(images).priority  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm"],
)
def test_compressed_transfer_syntaxes_decode_to_the_same_pixels(name: str) -> None:
    reference = pixels._frame(dcmread(get_testdata_file("MR_small.dcm")))
    decoded = pixels._frame(dcmread(get_testdata_file(name)))
    np.testing.assert_array_equal(decoded, reference)


def test_jpeg_lossy_decodes() -> None:
    frame = pixels._frame(dcmread(get_testdata_file("JPGExtended.dcm")))
    assert frame.ndim == 2 and frame.std() > 0


def test_otsu_separates_two_levels() -> None:
    values = np.concatenate([np.full(100, 10.0), np.full(100, 200.0)])
    assert 10 < otsu_threshold(values) <= 200


def test_accepts_source_series_but_never_derived_ones() -> None:
    model = BodySegmentation()
    assert model.accepts(SeriesInfo("1.2", "1.2.3", "CT"))
    assert model.accepts(SeriesInfo("1.2", "1.2.3", "MG"))
    assert not model.accepts(SeriesInfo("1.2", "1.2.3", "CT", derived=True))
    assert not model.accepts(SeriesInfo("1.2", "1.2.3", "SEG"))


def test_result_uids_are_deterministic_per_series_model_and_version() -> None:
    a = ResultUids.derive("1.2.3", "m", "1.0")
    assert a == ResultUids.derive("1.2.3", "m", "1.0")
    assert a.seg_sop != ResultUids.derive("1.2.3", "m", "1.1").seg_sop
    assert a.seg_sop != ResultUids.derive("1.2.4", "m", "1.0").seg_sop
    assert len({a.seg_series, a.seg_sop, a.sr_series, a.sr_sop}) == 4
    assert all(len(u) <= 64 for u in (a.seg_sop, a.sr_sop))


# --- registry -------------------------------------------------------------------------------


class ConstantModel:
    """A hospital's model as the registry sees it: built by a factory named in the document."""

    def __init__(self, label: str = "x") -> None:
        self.label = label

    name = "constant"
    version = "0.1"

    def accepts(self, series: SeriesInfo) -> bool:
        return series.modality == "CT"

    def predict(self, images: ImageSet) -> Prediction | None:
        return None


def make_constant(**options: object) -> ConstantModel:
    return ConstantModel(**options)  # type: ignore[arg-type]


def test_inference_is_opt_in_no_document_no_models() -> None:
    assert registry.parse(None) == []
    (model,) = registry.parse(registry.ENABLE_BUILTIN)
    assert model.name == "dicomflow-body"


def test_registry_plugs_in_a_python_factory_the_operator_allowed() -> None:
    doc = b'{"models": [{"kind": "python", "factory": "tests.unit.test_inference_model:make_constant",'
    doc += b' "options": {"label": "lung"}}, {"kind": "builtin", "enabled": false}]}'
    allowed = registry.Factories(("tests.unit.test_inference_model:make_constant",))
    (model,) = registry.parse(doc, factories=allowed)
    assert isinstance(model, ConstantModel) and model.label == "lung"


def test_configuration_cannot_import_code_the_operator_did_not_allow(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A module the config writer would like the app to run (on the path, as any installed module is).
    (tmp_path / "planted_by_config_writer.py").write_text("import sys\nsys.planted = True\ndef run(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = b'{"models": [{"kind": "builtin"}, {"kind": "python", "factory": "planted_by_config_writer:run"}]}'
    for factories in (None, registry.Factories(("tests.unit.test_inference_model:make_constant",))):
        with pytest.raises(BadInput) as info:
            registry.parse(doc, factories=factories)
        assert "models[1] field factory" in info.value.message
        assert "DICOMFLOW_INFERENCE_FACTORIES" in info.value.message and "dicomflow.models" in info.value.message
    assert "planted_by_config_writer" not in sys.modules and not hasattr(sys, "planted")


def test_installed_entry_points_are_factories_by_name_or_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed distribution (a dist-info folder on the path) that publishes a model factory.
    (tmp_path / "hospital_models.py").write_text(
        "from tests.unit.test_inference_model import ConstantModel\n"
        "def create(**options):\n    return ConstantModel(**options)\n")
    info = tmp_path / "hospital_models-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hospital-models\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dicomflow.models]\nlung = hospital_models:create\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("lung", "hospital_models:create"):
        doc = orjson.dumps({"models": [{"kind": "python", "factory": name, "options": {"label": name}}]})
        (model,) = registry.parse(doc)
        assert isinstance(model, ConstantModel) and model.label == name


def test_the_factory_allow_list_setting_is_checked() -> None:
    s = Settings.from_env({"DICOMFLOW_INFERENCE_FACTORIES": "a.b:create, c:make"})
    assert s.inference_factories == ("a.b:create", "c:make")
    with pytest.raises(SettingsError, match="DICOMFLOW_INFERENCE_FACTORIES"):
        Settings.from_env({"DICOMFLOW_INFERENCE_FACTORIES": "os.system"})


def test_registry_modalities_narrow_the_builtin_model() -> None:
    (model,) = registry.parse(b'{"models": [{"kind": "builtin", "modalities": ["MG"]}]}')
    assert model.accepts(SeriesInfo("1", "2", "MG")) and not model.accepts(SeriesInfo("1", "2", "CT"))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (b'{"models": [{"kind": "builtin"}, {"kind": "tensorflow"}]}', "models[1] field kind"),
        (b'{"models": [{"kind": "python"}]}', "models[0]"),
        (b'{"models": [{"kind": "onnx", "name": "m"}]}', "models[0] field (entry): 'version' is a required"),
        (b'{"models": [{"kind": "builtin", "modalities": ["ct"]}]}', "models[0] field modalities.0"),
        (b"not json", "not JSON"),
    ],
)
def test_bad_registry_is_refused_naming_entry_and_field(doc: bytes, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        registry.parse(doc)
    assert info.value.reason == Reason.INFERENCE_BAD_REGISTRY
    assert expected in info.value.message
