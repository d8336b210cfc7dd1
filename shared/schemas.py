"""The configuration documents' JSON Schemas: loaded from the files published beside their modules
(``shared/inference/models.schema.json``, ``shared/routing/rules.schema.json``,
``shared/gateway/destinations.schema.json``), which editors and ``python -m tools config`` use too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema


def load(path: Path) -> tuple[dict[str, Any], jsonschema.Draft202012Validator]:
    """A schema file and its validator (draft 2020-12)."""
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema, jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[jsonschema.ValidationError]:
    """Every violation, in document order (the first one is what a message names)."""
    return sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
