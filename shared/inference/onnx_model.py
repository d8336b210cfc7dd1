"""A hospital's own segmentation model as an ONNX file, run with onnxruntime (CPU).

Registered in the model registry as ``{"kind": "onnx", "name": ..., "version": ...,
"blob": "models/<file>.onnx", "modalities": [...], "options": {...}}``; the file is
read from the config container (``dicomflow-config``), so a new model is an upload
and a registry edit, not a deploy.

The contract with the model file: one input of shape ``(N, 1, H, W)`` (float32,
dynamic or matching the image size), one output of the same spatial shape holding
the foreground probability; each frame is run on its own (2-D models, which is what
most clinical segmentation exports are). Options: ``scale`` and ``offset`` applied
to modality values before the model (``x' = (x + offset) * scale``), ``threshold``
(default 0.5), ``segmentLabel``, ``category`` and ``type`` (``[value, scheme,
meaning]`` codes, CID 7150/7151), ``priorityMl`` / ``priorityCm2``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from shared.errors import BadInput, Reason
from shared.inference.builtin import measured_prediction
from shared.inference.model import ImageSet, Prediction, SeriesInfo


@functools.lru_cache(maxsize=8)
def _session(digest: str, content: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the worker is shared; one model run per invocation
    return ort.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"])


def _code(value: Sequence[str] | None, default: Code) -> Code:
    return Code(str(value[0]), str(value[1]), str(value[2])) if value else default


@dataclass
class OnnxSegmentation:
    name: str
    version: str
    content: bytes = field(repr=False)
    modalities: frozenset[str] = frozenset({"CT", "MR"})
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.session = _session(hashlib.sha256(self.content).hexdigest(), self.content)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise BadInput(Reason.INFERENCE_BAD_MODEL,
                f"ONNX model {self.name!r} could not be loaded: {type(exc).__name__}.") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise BadInput(Reason.INFERENCE_BAD_MODEL, f"ONNX model {self.name!r} must take one (N, 1, H, W) input.")
        self.input_name = inputs[0].name

    def accepts(self, series: SeriesInfo) -> bool:
        return (not series.derived) and series.modality in self.modalities

    def predict(self, images: ImageSet) -> Prediction | None:
        o = self.options
        x = (images.pixels + float(o.get("offset", 0.0))) * float(o.get("scale", 1.0))
        threshold = float(o.get("threshold", 0.5))
        mask = np.zeros(images.pixels.shape, dtype=bool)
        for i in range(x.shape[0]):
            frame = x[i][np.newaxis, np.newaxis].astype(np.float32)
            try:
                (probability, *_) = self.session.run(None, {self.input_name: frame})
            except Exception as exc:  # noqa: BLE001 - shape or type mismatch inside onnxruntime
                raise BadInput(
                    Reason.INFERENCE_BAD_MODEL, f"ONNX model {self.name!r} failed on a frame: {type(exc).__name__}."
                ) from None
            probability = np.asarray(probability).reshape(-1, *x.shape[1:])[0]
            mask[i] = probability >= threshold
        return measured_prediction(
            mask,
            images,
            str(o.get("segmentLabel", self.name))[:64],
            _code(o.get("category"), codes.SCT.Tissue),
            _code(o.get("type"), codes.SCT.SoftTissue),
            priority_ml=o.get("priorityMl"),
            priority_cm2=o.get("priorityCm2"),
        )
