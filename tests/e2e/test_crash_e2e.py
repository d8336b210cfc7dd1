"""Kill the host (SIGKILL) in the middle of a 200-file upload, restart: every file ends
with exactly one outcome, every instance is indexed once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from devhost.testing import DevHostProcess
from shared.config import Settings
from shared.ingest.states import FINAL, IngestState
from shared.ingest.status import blob_status
from shared.services import Services
from shared.storage import layout
from tests.e2e.conftest import REAL_APP_ENV
from tools.corpus import CorpusOptions, load_manifest, write_corpus


def test_sigkill_mid_upload_then_restart_every_file_has_one_outcome(
        devhost_factory: Callable[..., DevHostProcess], tmp_path: Path) -> None:
    out = tmp_path / "crash"
    write_corpus(out, CorpusOptions(patients=2, slices=67, rows=16, cols=16, seed=123, broken=False))
    files = [e for e in load_manifest(out)["files"] if e["kind"] == "good"][:200]
    assert len(files) == 200
    dh = devhost_factory(env=REAL_APP_ENV)
    svc = BlobServiceClient.from_connection_string(dh.azurite.connection_string)
    storage = Services.from_settings(Settings.from_env({"DicomStorage": dh.azurite.connection_string}))

    def outcome(name: str) -> IngestState:
        return blob_status(storage, name).state
    names = [f"crash/{i:03d}.dcm" for i in range(len(files))]

    def finished(name: str) -> bool:
        try:
            return outcome(name) in FINAL
        except ResourceNotFoundError:  # the app creates its tables when it first runs
            return False

    def put(i: int) -> None:
        svc.get_blob_client(layout.INBOX, names[i]).upload_blob((out / files[i]["path"]).read_bytes(),
                                                                overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        uploads = [pool.submit(put, i) for i in range(len(files))]
        # Kill once a few of the first files have an outcome, while later ones are still being uploaded, in
        # flight or waiting (after every upload had finished, a host with the machine to itself had sometimes
        # done all 200 before a slow sampler saw the tenth). What arrives while the host is down is announced
        # when it is back, as Event Grid redelivers.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(finished(n) for n in names[:20]) < 4:
            time.sleep(0.1)
        dh.kill()
        for done in uploads:
            done.result()
    done_before = sum(outcome(n) in FINAL for n in names)
    assert done_before < len(names), "the host finished everything before the kill: make the test harder"
    dh.start()
    deadline = time.monotonic() + 300
    left = list(names)
    while left and time.monotonic() < deadline:
        left = [n for n in left if outcome(n) not in FINAL]
        if left:
            time.sleep(1)
    assert not left, f"{len(left)} files without an outcome after the restart"
    states = Counter(outcome(n) for n in names)
    assert states[IngestState.ARCHIVED] == len(set(e["sop_uid"] for e in files)), states
    for e in files[::25]:
        assert storage.index.get_instance(e["study_uid"], e["series_uid"], e["sop_uid"]) is not None
