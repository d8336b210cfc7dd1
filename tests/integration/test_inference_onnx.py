"""A hospital's ONNX model from the config container, run by onnxruntime through the same service.

The model is built here with the ``onnx`` helper API: ``sigmoid((x + 500) * 0.05)``, a soft
threshold at -500 HU. Unlike the built-in model it does not fill holes, so on the phantom it
must measure the ellipsoid minus its "lung" (1/27 of the volume): an analytic number again.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
import orjson
import pytest
from onnx import TensorProto, helper

from shared.inference.registry import load_models
from shared.inference.service import run_inference
from shared.storage import layout
from shared.storage.clients import StorageClients
from tests.integration.routing_peers import archive
from tests.phantoms import ellipsoid_ct, ellipsoid_volume_ml

MODEL_BLOB = "models/soft-threshold.onnx"


def soft_threshold_model() -> bytes:
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])
    y = helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1, "H", "W"])
    offset = helper.make_tensor("offset", TensorProto.FLOAT, [], [500.0])
    gain = helper.make_tensor("gain", TensorProto.FLOAT, [], [0.05])
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["image", "offset"], ["shifted"]),
            helper.make_node("Mul", ["shifted", "gain"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["probability"]),
        ],
        "soft_threshold",
        [x],
        [y],
        initializer=[offset, gain],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def blob(ready_clients: StorageClients) -> Iterator[object]:
    service = ready_clients.blob
    config = service.get_container_client(layout.CONFIG)
    config.upload_blob(MODEL_BLOB, soft_threshold_model(), overwrite=True)
    yield service
    config.delete_blob(MODEL_BLOB)


def registry(**entry: object) -> bytes:
    base = {"kind": "onnx", "name": "soft-threshold", "version": "0.3", "blob": MODEL_BLOB, "modalities": ["CT"]}
    return orjson.dumps({"models": [{**base, **entry}]})


def test_onnx_model_from_the_config_container_segments_and_measures(blob: object) -> None:
    axes = (60.0, 45.0, 50.0)
    data = archive(blob, ellipsoid_ct(axes, tag="onnx-ct"))
    data.update(imageSeriesInstanceUid=ellipsoid_ct(axes, tag="onnx-ct")[0].SeriesInstanceUID, modality="CT")
    config = blob.get_container_client(layout.CONFIG)  # type: ignore[attr-defined]
    config.upload_blob(layout.MODELS_DOC, registry(options={"segmentLabel": "Soft tissue"}), overwrite=True)
    try:
        outcome = run_inference(data, blob)
    finally:
        config.delete_blob(layout.MODELS_DOC)
    (result,) = outcome.results
    assert (result.model, result.version) == ("soft-threshold", "0.3")
    (volume,) = result.measurements.values()
    expected = ellipsoid_volume_ml(axes) * (1 - 1 / 27)
    assert abs(volume - expected) / expected < 0.01, (volume, expected)


def test_missing_model_file_is_refused_and_nothing_runs(blob: object) -> None:
    config = blob.get_container_client(layout.CONFIG)  # type: ignore[attr-defined]
    config.upload_blob(layout.MODELS_DOC, registry(blob="models/absent.onnx"), overwrite=True)
    try:
        assert load_models(config) == []
    finally:
        config.delete_blob(layout.MODELS_DOC)


def test_a_file_that_is_not_onnx_is_refused(blob: object) -> None:
    config = blob.get_container_client(layout.CONFIG)  # type: ignore[attr-defined]
    config.upload_blob("models/garbage.onnx", b"not a model", overwrite=True)
    config.upload_blob(layout.MODELS_DOC, registry(blob="models/garbage.onnx"), overwrite=True)
    try:
        assert load_models(config) == []
    finally:
        config.delete_blob(layout.MODELS_DOC)
        config.delete_blob("models/garbage.onnx")
