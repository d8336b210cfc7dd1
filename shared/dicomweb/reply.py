"""What a DICOMweb service returns: status, headers and a body that may be a stream.

Kept free of any web framework so ``shared/`` stays importable without
``azure.functions``; ``functions/dicomweb.py`` turns it into a Starlette response.
A streamed body is a plain (synchronous) iterator of byte chunks, produced lazily
from blob downloads; the adapter iterates it off the event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: Iterator[bytes] | None = None

    @classmethod
    def json(cls, obj: object, *, status: int = 200, media_type: str = "application/dicom+json",
             headers: dict[str, str] | None = None) -> Reply:
        return cls(status, {"Content-Type": media_type, **(headers or {})}, orjson.dumps(obj))

    @classmethod
    def problem(cls, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        """An error body: ``{"error": message}``, plus any extra headers."""
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps({"error": message}))
