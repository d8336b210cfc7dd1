"""Small helpers over the blob port: JSON documents and blob metadata values."""

from __future__ import annotations

from typing import Any

import orjson

from shared.ports import BlobStore

DICOM_JSON = "application/dicom+json"


def put_json(store: BlobStore, container: str, path: str, obj: Any, *, content_type: str = DICOM_JSON) -> None:
    store.write(container, path, orjson.dumps(obj), content_type=content_type)


def get_json(store: BlobStore, container: str, path: str) -> Any | None:
    raw = store.read(container, path)
    return orjson.loads(raw) if raw is not None else None


def ascii_metadata(value: str, limit: int = 1024) -> str:
    """Blob metadata values must be ASCII: replace anything else."""
    return value.encode("ascii", "replace").decode("ascii")[:limit]
