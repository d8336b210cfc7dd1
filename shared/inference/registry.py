"""Which models run: a JSON document in the config container.

``dicomflow-config/inference/models.json``::

    {"models": [
      {"kind": "builtin", "name": "dicomflow-body", "modalities": ["CT", "MR", "MG"],
       "options": {"priorityMl": 8000}},
      {"kind": "python", "factory": "hospital_models.lung:create", "options": {"threshold": 0.7}}
    ]}

``builtin`` is the offline segmentation model (:mod:`shared.inference.builtin`);
``python`` imports ``module:callable`` (a package installed with the app) and calls
it with ``options`` to get a :class:`~shared.inference.model.Model`; ``onnx`` runs a
model file from the config container with onnxruntime
(:mod:`shared.inference.onnx_model`). Either way a hospital plugs in its own model
without touching the function.

Inference is opt-in: without a document no model runs (results are written into
patients' studies, so a site turns that on deliberately; ``ENABLE_BUILTIN`` is the
one-line document for the built-in model). A document that does not validate, or
names a model file that cannot be loaded, is refused with a message naming the
entry and field, and nothing runs until it is fixed (never a model nobody chose).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from shared import schemas
from shared.errors import BadInput, Reason
from shared.inference.builtin import BodySegmentation
from shared.inference.model import Model
from shared.ports import BlobStore
from shared.storage import layout

log = logging.getLogger(__name__)


#: The document's JSON Schema, published as a file (editors and ``python -m tools config`` use the same one).
SCHEMA_PATH = Path(__file__).with_name("models.schema.json")
SCHEMA, _VALIDATOR = schemas.load(SCHEMA_PATH)

#: The registry document that turns on the built-in model alone.
ENABLE_BUILTIN = b'{"models": [{"kind": "builtin"}]}'


def _where(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if len(path) >= 2 and path[0] == "models":
        field = ".".join(str(p) for p in path[2:]) or "(entry)"
        return f"models[{path[1]}] field {field}"
    return "/".join(str(p) for p in path) or "(document)"


def validate_document(document: Any) -> None:
    """Raise :class:`BadInput` naming the first invalid entry and field."""
    errors = schemas.errors(_VALIDATOR, document)
    if errors:
        first = errors[0]
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY, f"Model registry {layout.MODELS_DOC}: {_where(first)}: {first.message}")


def build_model(entry: Mapping[str, Any], fetch: Callable[[str], bytes] | None = None) -> Model:
    """One model from a registry entry; ``fetch(blob)`` reads a model file from the config container."""
    options = dict(entry.get("options", {}))
    if entry["kind"] == "onnx":
        from shared.inference.onnx_model import OnnxSegmentation

        if fetch is None:
            raise BadInput(
                Reason.INFERENCE_BAD_REGISTRY, f"ONNX model {entry['name']!r} needs the config container to load from.")
        return OnnxSegmentation(
            name=entry["name"],
            version=entry["version"],
            content=fetch(entry["blob"]),
            modalities=frozenset(entry.get("modalities") or ["CT", "MR"]),
            options=options,
        )
    if entry["kind"] == "builtin":
        model = BodySegmentation(
            priority_ml=options.get("priorityMl"),
            priority_cm2=options.get("priorityCm2"),
        )
        if entry.get("modalities"):
            model.modalities = frozenset(entry["modalities"])
        return model
    module_name, _, attr = str(entry["factory"]).partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    model = factory(**options)
    if not isinstance(model, Model):
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY,
            f"Factory {entry['factory']} did not return a Model (name, version, accepts, predict)."
        )
    return model


def models_from_document(document: Any, fetch: Callable[[str], bytes] | None = None) -> list[Model]:
    validate_document(document)
    return [build_model(e, fetch) for e in document["models"] if e.get("enabled", True)]


def parse(raw: bytes | None, fetch: Callable[[str], bytes] | None = None) -> list[Model]:
    """Models from the document's bytes (``None``: no document, no models)."""
    if raw is None:
        return []
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY, f"Model registry {layout.MODELS_DOC} is not JSON: {exc}") from None
    return models_from_document(document, fetch)


def load_models(blobs: BlobStore) -> list[Model]:
    """Read the registry from the config container.

    A missing document means no models; an invalid one is logged (the message names
    the entry and field to fix) and no model runs.
    """
    raw = blobs.read(layout.CONFIG, layout.MODELS_DOC)

    def fetch(name: str) -> bytes:
        data = blobs.read(layout.CONFIG, name)
        if data is None:
            raise BadInput(Reason.INFERENCE_BAD_REGISTRY, f"Model file {name} is not in the config container.")
        return data

    try:
        return parse(raw, fetch)
    except BadInput as exc:
        log.error("Model registry refused, no model runs until it is fixed: %s", exc.message)
        return []
