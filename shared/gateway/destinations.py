"""The gateway's peers: ``dicomflow-config/gateway/destinations.json``.

    {"destinations": [{"ae": "WORKSTATION", "host": "10.1.2.3", "port": 104, "tls": false}]}

C-MOVE sends to the entry whose ``ae`` is the request's Move Destination; Storage
Commitment reports go to the entry whose ``ae`` is the requester's calling AE title.
The document is validated against ``destinations.schema.json`` (next to this module)
and re-read when its blob changes (one conditional request per use; an unchanged
document costs a 304). A document that fails validation is refused with the entry
and field named; the last good one stays in force.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from shared import schemas
from shared.errors import BadInput, Reason
from shared.ports import BlobStore
from shared.storage import layout

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).with_name("destinations.schema.json")
SCHEMA, _VALIDATOR = schemas.load(SCHEMA_FILE)


@dataclass(frozen=True, slots=True)
class Peer:
    ae: str
    host: str
    port: int
    tls: bool = False


def parse(raw: bytes) -> dict[str, Peer]:
    """The document as {AE title: peer}; :class:`BadInput` names the entry and field that is wrong."""
    where = layout.GATEWAY_DESTINATIONS_DOC
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(Reason.BAD_CONFIG, f"{where} is not JSON ({exc}); fix it and upload it again.") from None
    found = schemas.errors(_VALIDATOR, document)
    if found:
        err = found[0]
        path = "/".join(str(p) for p in err.absolute_path) or "(document)"
        raise BadInput(Reason.BAD_CONFIG, f"{where} rejected at {path}: {err.message}")
    peers: dict[str, Peer] = {}
    for i, d in enumerate(document["destinations"]):
        ae = d["ae"].strip()
        if ae in peers:
            raise BadInput(Reason.BAD_CONFIG, f"{where} rejected at destinations/{i}/ae: {ae!r} is listed twice.")
        peers[ae] = Peer(ae, d["host"], int(d["port"]), bool(d.get("tls", False)))
    return peers


class DestinationsStore:
    """The peers document from the config container, re-read when it changes (its ETag)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._etag: str | None = None
        self._peers: dict[str, Peer] = {}
        self._lock = threading.Lock()

    def current(self) -> dict[str, Peer]:
        with self._lock:
            props = self.blobs.properties(layout.CONFIG, layout.GATEWAY_DESTINATIONS_DOC)
            raw = self.blobs.read(layout.CONFIG, layout.GATEWAY_DESTINATIONS_DOC) if (
                props is not None and props.etag != self._etag) else None
            if props is None or (raw is None and props.etag != self._etag):
                if self._etag is not None:
                    log.info("Gateway destinations: %s was removed; no destinations", layout.GATEWAY_DESTINATIONS_DOC)
                self._etag, self._peers = None, {}
                return {}
            if raw is None:  # unchanged since the last read
                return dict(self._peers)
            etag = props.etag
            try:
                self._peers = parse(raw)
                log.info("Gateway destinations: %d peer(s) in force", len(self._peers))
            except BadInput as bad:
                log.error("%s; the last good destinations (%d) stay in force.", bad.message, len(self._peers))
            self._etag = etag
            return dict(self._peers)

    def find(self, ae: str) -> Peer | None:
        return self.current().get(ae.strip())

    def put(self, raw: bytes) -> dict[str, Peer]:
        """Validate, then upload (how tools and tests change the document: a bad one never lands)."""
        peers = parse(raw)
        self.blobs.write(layout.CONFIG, layout.GATEWAY_DESTINATIONS_DOC, raw, content_type="application/json")
        return peers
