"""The upload command: files land in a real Azurite under the documented names; the waiting and
summary logic is checked against a small aiohttp stub of the ingest-status contract (the real
end-to-end with the ingest function is the e2e suite's job)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from azure.storage.blob import ContainerClient

from devhost.azurite import Azurite, connection_string, free_port
from shared.errors import ADVICE, Reason
from shared.ingest.states import IngestState, Outcome
from tools import corpus, stack, upload

ROOT = Path(__file__).resolve().parents[2]
KEY = "stub-function-key"
SUFFIX = re.compile(r"~[0-9a-f]{8}")


@pytest.fixture(scope="module")
def upload_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("up") / "corpus"
    corpus.write_corpus(out, patients=1, slices=3, seed=5)
    return out


class StatusStub:
    """Answers ``GET /api/ingest/status?blob=`` like the app: pending for the first ``polls_before``
    asks of a blob, then quarantined for names with 'broken' or 'zero_bytes', archived otherwise; names with
    'never' stay pending."""

    def __init__(self, polls_before: int = 2) -> None:
        self.polls_before = polls_before
        self.asked: dict[str, int] = {}
        self.keys_seen: set[str] = set()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/api"

    async def handle(self, request: web.Request) -> web.Response:
        self.keys_seen.add(request.headers.get("x-functions-key", ""))
        if request.headers.get("x-functions-key") != KEY:
            return web.Response(status=401)
        name = request.query["blob"]
        n = self.asked[name] = self.asked.get(name, 0) + 1
        outcome = Outcome(name, IngestState.PENDING)  # the app's own outcome type renders the body
        if n > self.polls_before and "never" not in name:
            if "broken" in name or "zero_bytes" in name:
                outcome = Outcome(name, IngestState.QUARANTINED, reason=Reason.NOT_DICOM,
                                  message=ADVICE[Reason.NOT_DICOM])
            else:
                outcome = Outcome(name, IngestState.ARCHIVED, study="1.2", series="1.2.3", sop="1.2.3.4")
        return web.json_response(outcome.to_json())


@pytest.fixture
def stub() -> Iterator[StatusStub]:
    server = StatusStub()
    app = web.Application()
    app.router.add_get("/api/ingest/status", server.handle)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", server.port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture
def container(azurite: Azurite) -> Iterator[Callable[[str], ContainerClient]]:
    """Fresh, uniquely named containers per test (removed afterwards)."""
    made: list[ContainerClient] = []

    def make(prefix: str) -> ContainerClient:
        client = ContainerClient.from_connection_string(azurite.connection_string, f"{prefix}-{free_port()}")
        made.append(client)
        return client

    yield make
    for c in made:
        c.delete_container()
        c.close()


def _args(*argv: str) -> list[str]:
    return [*argv, "--quiet", "--state-dir", "/nonexistent-devhost-state"]


def test_plan_names_keep_relative_paths_with_a_unique_suffix(upload_corpus, tmp_path):
    items = upload.plan_uploads([upload_corpus])
    names = [i.blob_name for i in items]
    assert "corpus/manifest.json" not in {SUFFIX.sub("", n) for n in names}  # excluded by default
    stripped = sorted(SUFFIX.sub("", n) for n in names)
    on_disk = sorted(f"corpus/{p.relative_to(upload_corpus).as_posix()}" for p in upload_corpus.rglob("*")
                     if p.is_file() and p.name != "manifest.json")
    assert stripped == on_disk
    assert "corpus/good/p01/ct/IM0001.dcm" in stripped
    assert any(re.fullmatch(r"corpus/broken/dicomdir/DICOMDIR~[0-9a-f]{8}", n) for n in names)
    assert all(SUFFIX.search(n) for n in names) and len(set(names)) == len(names)
    one = upload_corpus / "good" / "p01" / "ct" / "IM0001.dcm"
    again = upload.plan_uploads([one, one])
    assert again[0].blob_name != again[1].blob_name
    assert all(re.fullmatch(r"IM0001~[0-9a-f]{8}\.dcm", i.blob_name) for i in again)
    with pytest.raises(upload.UploadError, match="no such file or folder"):
        upload.plan_uploads([tmp_path / "missing"])


def test_upload_lands_every_file_under_its_name(azurite, upload_corpus, container, capsys):
    inbox = container("inbox")
    code = upload.main(_args(str(upload_corpus), "--container", inbox.container_name, "--no-wait",
                             "--connection-string", azurite.connection_string, "--workers", "4"))
    assert code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    items = upload.plan_uploads([upload_corpus])
    assert f"Uploaded {len(items)}/{len(items)} file(s)" in out and "uploaded" in out
    blobs = {b.name: b.size for b in inbox.list_blobs()}
    assert sorted(SUFFIX.sub("", n) for n in blobs) == sorted(SUFFIX.sub("", i.blob_name) for i in items)
    for name, size in blobs.items():
        local = upload_corpus.parent / SUFFIX.sub("", name)
        assert size == local.stat().st_size
    sample = next(n for n in blobs if n.endswith(".dcm") and "/ct/" in n)
    assert inbox.download_blob(sample).readall() == (upload_corpus.parent / SUFFIX.sub("", sample)).read_bytes()

    # The same file again: a second, distinct blob.
    one = upload_corpus / "good" / "p01" / "ct" / "IM0001.dcm"
    assert upload.main(_args(str(one), "--container", inbox.container_name, "--no-wait",
                             "--connection-string", azurite.connection_string)) == 0
    copies = [n for n in (b.name for b in inbox.list_blobs()) if re.fullmatch(r"IM0001~[0-9a-f]{8}\.dcm", n)]
    assert len(copies) == 1
    assert len(list(inbox.list_blobs())) == len(blobs) + 1


_UPLOAD_PROBE = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tools import stack, upload
import azure.storage.blob, tqdm  # imported before the baseline
path, conn, container = Path(sys.argv[2]), sys.argv[3], sys.argv[4]
upload.check_storage(conn, container, "test")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
[outcome] = upload.upload_all(upload.plan_uploads([path]), conn, container, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"blob": outcome.item.blob_name, "error": outcome.error, "growth_kib": after - before}))
"""


@pytest.mark.slow
def test_big_file_goes_up_in_blocks_without_being_read_into_memory(azurite, tmp_path, container):
    """A 200 MiB file: uploaded in blocks from the open file; the uploader's peak RSS (measured in a
    fresh process) grows far less than the file."""
    uids = corpus.UidFactory(1)
    study = corpus.make_study(corpus.make_patients(1)[0], uids, "big", description="DBT")
    path = corpus.make_multiframe_mg(tmp_path / "big.dcm", study, uids, frames=25, rows=2048, cols=2048)
    size = path.stat().st_size
    assert size > 3 * upload.BLOCK_UPLOAD_THRESHOLD
    inbox = container("big")
    proc = subprocess.run([sys.executable, "-c", _UPLOAD_PROBE, str(ROOT), str(path), azurite.connection_string,
                           inbox.container_name], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"] is None
    assert result["growth_kib"] / 1024 < 100, f"uploader RSS grew {result['growth_kib'] / 1024:.0f} MiB"
    blob = inbox.get_blob_client(result["blob"])
    props = blob.get_blob_properties()
    assert props.size == size
    assert len(blob.get_block_list("committed")[0]) > 1
    with path.open("rb") as f:
        f.seek(size - 4096)
        assert blob.download_blob(offset=size - 4096, length=4096).readall() == f.read()


def test_storage_down_says_what_to_do(upload_corpus, capsys):
    dead = connection_string(free_port(), free_port(), free_port())
    code = upload.main(_args(str(upload_corpus), "--connection-string", dead, "--no-wait"))
    assert code == 1
    err = capsys.readouterr().err
    assert "Cannot reach blob storage" in err and "make up" in err


def test_wait_reports_outcomes_and_quarantine_reasons(azurite, upload_corpus, container, stub, capsys):
    """Full command: real uploads, outcomes from the stub, summary table, exit 0."""
    inbox = container("wait")
    code = upload.main(_args(str(upload_corpus / "good"), str(upload_corpus / "broken" / "zero_bytes.dcm"),
                             "--container", inbox.container_name, "--connection-string",
                             azurite.connection_string, "--base-url", stub.base_url, "--key", KEY,
                             "--timeout", "30"))
    out = capsys.readouterr().out
    assert code == 0, out
    uploaded = sorted(b.name for b in inbox.list_blobs())
    assert sorted(stub.asked) == uploaded  # asked about exactly the blobs that went up
    assert all(n > stub.polls_before for n in stub.asked.values())
    assert stub.keys_seen == {KEY}
    good = len(uploaded) - 1
    assert re.search(rf"archived\s+{good}\b", out) and re.search(r"quarantined\s+1\b", out)
    quarantine_line = next(line for line in out.splitlines() if "zero_bytes.dcm" in line)
    assert "not-dicom" in quarantine_line and ADVICE[Reason.NOT_DICOM] in quarantine_line


def test_upload_and_wait_for_other_code(azurite, upload_corpus, container, stub):
    inbox = container("api")
    outcomes = upload.upload_and_wait([upload_corpus / "broken"], connection_string=azurite.connection_string,
                                      base_url=stub.base_url, key=KEY, container=inbox.container_name, timeout=30)
    assert {o.state for o in outcomes} == {"quarantined"} and len(outcomes) == len(corpus.BROKEN_CASES)
    assert upload.summarize(outcomes, waited=True)[1]
    with pytest.raises(upload.UploadError, match="make up"):
        upload.upload_and_wait([upload_corpus / "broken"], wait=False, container=inbox.container_name,
                               connection_string=connection_string(free_port(), free_port(), free_port()))


def test_wait_times_out_with_a_next_step(stub):
    statuses = upload.wait_for_outcomes(stub.base_url, ["a.dcm", "never.dcm", "broken.dcm"], key=KEY,
                                        timeout=3, progress=False)
    assert statuses["a.dcm"]["state"] == "archived"
    assert statuses["broken.dcm"]["state"] == "quarantined"
    assert statuses["never.dcm"]["state"] == "pending"
    outcomes = []
    for name in ("a.dcm", "never.dcm", "broken.dcm"):
        o = upload.Outcome(upload.UploadItem(Path(name), name, 1), uploaded=True, status=statuses[name])
        outcomes.append(o)
    outcomes.append(upload.Outcome(upload.UploadItem(Path("x.dcm"), "x.dcm", 1), error="OSError: gone"))
    text, ok = upload.summarize(outcomes, waited=True)
    assert not ok
    assert "timed out (pending)" in text and "--timeout" in text and "never.dcm" in text
    assert "Upload failed" in text and "OSError: gone" in text
    assert "broken.dcm" in text.split("Quarantined:")[1]


def test_wait_with_a_wrong_key_says_so(stub):
    with pytest.raises(upload.StatusError, match="refused the credential"):
        upload.wait_for_outcomes(stub.base_url, ["a.dcm"], key="wrong", timeout=5, progress=False)


def test_wait_without_a_host_says_what_to_do():
    base = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(upload.StatusError, match="make up"):
        upload.wait_for_outcomes(base, ["a.dcm"], key=KEY, timeout=5, progress=False, unreachable_grace=0.5)


def test_target_from_devhost_state_then_setting_then_default(tmp_path):
    """The devhost's state files are read as plain JSON (its documented interface), nothing imported."""
    args = upload.argparse.Namespace(connection_string=None, base_url=None, key=None, state_dir=str(tmp_path))
    default = upload.resolve_target(args, env={})
    assert default.connection_string == "UseDevelopmentStorage=true" and default.base_url == upload.DEFAULT_BASE_URL
    assert default.key is None
    assert upload.resolve_target(args, env={"DicomStorage": "UseDevelopmentStorage=true"}).connection_string == (
        "UseDevelopmentStorage=true")
    conn = connection_string(20001, 20002, 20003)
    running = {"pid": os.getpid(), "ready": True, "http_port": 7999, "route_prefix": "api",
               "endpoints": {"storage": conn, "http_url": "http://127.0.0.1:7999"},
               "issuer": "http://127.0.0.1:7998/issuer"}
    (tmp_path / "state.json").write_text(json.dumps(running))
    t = upload.resolve_target(args, env={"DicomStorage": "UseDevelopmentStorage=true"})
    assert "BlobEndpoint=http://127.0.0.1:20001/" in t.connection_string
    assert t.base_url == "http://127.0.0.1:7999/api"
    # The credential: a writer token of the running stack's issuer (the status API wants reader or writer).
    claims = jwt.decode(t.key, options={"verify_signature": False})
    assert claims["iss"] == "http://127.0.0.1:7998/issuer" and claims["roles"] == ["writer"]
    assert stack.auth_headers(t.key) == {"Authorization": f"Bearer {t.key}"}
    assert stack.auth_headers("k1") == {"x-functions-key": "k1"}
    # A state file left by a host that is gone is ignored.
    (tmp_path / "state.json").write_text(json.dumps(running | {"pid": 2**22 + 12345}))
    t = upload.resolve_target(args, env={})
    assert t.connection_string == "UseDevelopmentStorage=true" and t.base_url == upload.DEFAULT_BASE_URL
    assert t.key is None
