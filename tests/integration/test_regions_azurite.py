"""A region of a pair against Azurite, through the real Azure SDK adapters: ingest writes the region's own
archive container with its version stamp, reindex (the CLI) indexes the peer's replica and resumes cheaply,
WADO-RS frames of a replicated instance are served from a frame index keyed on the stamp, in this region's own
metadata container."""

from __future__ import annotations

import io
import uuid
from contextlib import redirect_stdout

import orjson
import pytest

from shared.config import Settings
from shared.dicomweb.wado import Wado
from shared.ingest.service import IngestService
from shared.ingest.states import IngestState
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import STAMP, physical_store, stamp
from tests.instances import study_of
from tools.cli import main as tools_main


@pytest.fixture
def keys() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"b{tag}", f"a{tag}"  # this region, its peer (fresh container names on the session's Azurite)


def _region(connection: str, key: str, peer: str) -> Services:
    svc = Services.from_settings(Settings.from_env({
        "DicomStorage": connection, "DICOMFLOW_REGION": key, "DICOMFLOW_PEER_REGION": peer,
        "DICOMFLOW_STABLE_AGE_SECONDS": "60", "DICOMFLOW_SETTLE_DELAY_SECONDS": "5"}))
    svc.ensure_ready()
    return svc


def test_ingest_writes_the_regions_own_archive_with_its_stamp(storage_env: dict[str, str],
                                                              keys: tuple[str, str]) -> None:
    key, peer = keys
    svc = _region(storage_env["DicomStorage"], key, peer)
    (study, series, sop, data), = study_of(1, 1, tag=key)
    svc.blobs.write(layout.INBOX, f"{key}/x.dcm", data)
    assert IngestService(svc).ingest(svc.blobs.open(layout.INBOX, f"{key}/x.dcm")).state is IngestState.ARCHIVED
    raw = physical_store(svc.blobs)
    props = raw.properties(f"dicom-archive-{key}", layout.instance_path(study, series, sop))
    row = svc.index.get_instance(study, series, sop)
    assert props is not None and row is not None
    assert props.metadata[STAMP] == row.record.stamp and row.record.stamp.endswith(f"-{key}")
    assert raw.properties(layout.ARCHIVE, layout.instance_path(study, series, sop)) is None


def test_reindex_indexes_the_peers_replica_and_frames_are_served_from_it(storage_env: dict[str, str],
                                                                         keys: tuple[str, str]) -> None:
    key, peer = keys
    connection = storage_env["DicomStorage"]
    svc = _region(connection, key, peer)
    raw = physical_store(svc.blobs)
    replica = f"dicom-archive-{peer}"
    raw.ensure_containers([replica])  # infra creates the replication destination
    items = study_of(1, 4, tag=peer)
    for n, (s, se, i, data) in enumerate(items):  # what object replication brings: content and metadata
        raw.write(replica, layout.instance_path(s, se, i), data, metadata={STAMP: stamp(peer, 1_800_000_000 + n)})

    out = io.StringIO()
    with redirect_stdout(out):
        assert tools_main(["reindex", "--connection-string", connection, "--region", key, "--peer-region", peer,
                           "--quiet"]) == 0
    assert f"{replica}: 4 file(s): 4 archived" in out.getvalue(), out.getvalue()
    assert all(svc.index.get_instance(s, se, i) is not None for s, se, i, _ in items)

    with redirect_stdout(io.StringIO()) as again:  # idempotent: a row read per file, nothing rewritten
        assert tools_main(["reindex", "--connection-string", connection, "--region", key, "--peer-region", peer,
                           "--quiet"]) == 0
    assert f"{replica}: 4 file(s): 4 current" in again.getvalue()

    # WADO-RS frames of a replicated instance: the frame index is built once, keyed on the stamp (the same in
    # every region), and stored in this region's own metadata container.
    study, series, sop, data = items[0]
    import pydicom

    pixels = bytes(pydicom.dcmread(io.BytesIO(data)).PixelData)
    wado = Wado(svc.blobs, svc.index)
    path = layout.frame_index_path(study, series, sop)
    versions = []
    for _ in range(2):
        reply = wado.frames(None, study, series, sop, "1")
        assert pixels in b"".join(reply.stream or [])
        item = raw.properties(layout.METADATA, path)
        assert item is not None
        versions.append(item.etag)
    assert versions[0] == versions[1]  # built once, then reused
    index = orjson.loads(raw.read(layout.METADATA, path) or b"{}")
    assert index["etag"] == stamp(peer, 1_800_000_000)
