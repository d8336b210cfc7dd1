"""Which models run: a JSON document in the config container.

``dicomflow-config/inference/models.json``::

    {"models": [
      {"kind": "builtin", "name": "dicomflow-body", "modalities": ["CT", "MR", "MG"],
       "options": {"priorityMl": 8000}},
      {"kind": "python", "factory": "hospital_models.lung:create", "options": {"threshold": 0.7}}
    ]}

``builtin`` is the offline segmentation model (:mod:`shared.inference.builtin`);
``python`` calls a factory installed with the app with ``options`` to get a
:class:`~shared.inference.model.Model`; ``onnx`` runs a model file from the config container
with onnxruntime (:mod:`shared.inference.onnx_model`). Either way a hospital plugs in its own
model without touching the function.

Configuration cannot run code (:class:`Factories`): a ``python`` entry may name only a factory the
operator allowed in the app settings (``DICOMFLOW_INFERENCE_FACTORIES``, ``module:callable``
names) or one an installed package publishes as an entry point in group ``dicomflow.models``
(by the entry point's name or its ``module:callable`` value). Anything else refuses the document
before any import, so whoever can write the config container chooses among what the operator
installed and allowed, and never names a module of their own.

Inference is opt-in: without a document no model runs (results are written into
patients' studies, so a site turns that on deliberately; ``ENABLE_BUILTIN`` is the
one-line document for the built-in model). A document that does not validate, or
names a model file that cannot be loaded, is refused with a message naming the
entry and field, and nothing runs until it is fixed (never a model nobody chose).
"""

from __future__ import annotations

import importlib
import importlib.metadata
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


#: The entry point group installed packages publish model factories in (``[project.entry-points."dicomflow.models"]``).
ENTRY_POINT_GROUP = "dicomflow.models"


class Factories:
    """The model factories a ``python`` registry entry may name: the operator's allow-list
    (``DICOMFLOW_INFERENCE_FACTORIES``) and installed entry points (group :data:`ENTRY_POINT_GROUP`)."""

    def __init__(self, allowed: tuple[str, ...] = ()) -> None:
        self.allowed = allowed

    def resolve(self, name: str, where: str) -> Callable[..., Any]:
        """The factory called ``name``; :class:`BadInput` (nothing imported) when it is not allowed."""
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if name in (ep.name, ep.value):
                return ep.load()  # type: ignore[no-any-return]
        if name in self.allowed:
            module_name, _, attr = name.partition(":")
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY,
            f"Model registry {layout.MODELS_DOC}: {where} field factory: {name!r} is not an allowed factory. "
            f"The operator allows factories in the app setting DICOMFLOW_INFERENCE_FACTORIES (module:callable, "
            f"comma-separated), or installs a package that publishes it as an entry point in group "
            f"{ENTRY_POINT_GROUP!r}; the registry cannot name other code.")


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


def build_model(entry: Mapping[str, Any], fetch: Callable[[str], bytes] | None = None,
                factories: Factories | None = None, where: str = "models[?]") -> Model:
    """One model from a registry entry; ``fetch(blob)`` reads a model file from the config container;
    ``factories`` are the ones a ``python`` entry may name (none when not given)."""
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
    factory = (factories or Factories()).resolve(str(entry["factory"]), where)
    model = factory(**options)
    if not isinstance(model, Model):
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY,
            f"Factory {entry['factory']} did not return a Model (name, version, accepts, predict)."
        )
    return model


def models_from_document(document: Any, fetch: Callable[[str], bytes] | None = None,
                         factories: Factories | None = None) -> list[Model]:
    validate_document(document)
    return [build_model(e, fetch, factories, f"models[{i}]") for i, e in enumerate(document["models"])
            if e.get("enabled", True)]


def parse(raw: bytes | None, fetch: Callable[[str], bytes] | None = None,
          factories: Factories | None = None) -> list[Model]:
    """Models from the document's bytes (``None``: no document, no models)."""
    if raw is None:
        return []
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(
            Reason.INFERENCE_BAD_REGISTRY, f"Model registry {layout.MODELS_DOC} is not JSON: {exc}") from None
    return models_from_document(document, fetch, factories)


def load_models(blobs: BlobStore, factories: Factories | None = None) -> list[Model]:
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
        return parse(raw, fetch, factories)
    except BadInput as exc:
        log.error("Model registry refused, no model runs until it is fixed: %s", exc.message)
        return []
