"""``python -m tools migrate`` with Orthanc as the legacy PACS, into the real app on the devhost through the
DIMSE gateway: a run killed mid-way and resumed (nothing verified is moved twice), a study whose move fails
(an instance the gateway refuses, reported with its ingest reason), C-GET where no move is wanted, and a
wrong ``--source`` refused before anything moves. The migrate command runs as a subprocess, as a user runs
it; what arrived is checked through QIDO-RS, not through the command's own report."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from devhost.azurite import free_port
from devhost.testing import DevHostProcess
from gateway.process import GatewayProcess
from shared.config import Settings
from shared.services import Services
from shared.storage import layout
from tests.e2e.gateway_peers import start_gateway
from tests.e2e.orthanc import OrthancProcess, available
from tests.waiting import wait_until
from tools.corpus import CorpusOptions, load_manifest, write_corpus
from tools.stack import ROOT

pytestmark = pytest.mark.peers
LEGACY_AE = "LEGACY"
TOO_LONG_UID = "1.2.826.0.1.3680043.8.498.7.1234567890123456789012345678901234567890123"  # 71 characters


class LegacyPacs(OrthancProcess):
    """Orthanc as the hospital's PACS: it knows our gateway as a DICOM peer (move destination, caller)."""

    def __init__(self, folder: Path, gateway_port: int) -> None:
        super().__init__(folder)
        self.gateway_port = gateway_port

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update({"DicomAet": LEGACY_AE, "DicomScpTimeout": 30,
                    "DicomModalities": {"dicomflow": ["DICOMFLOW", "127.0.0.1", self.gateway_port]}})
        return cfg


@pytest.fixture(scope="module")
def gateway(devhost: DevHostProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = start_gateway(devhost.azurite.connection_string, tmp_path_factory.mktemp("gateway"),
                       DICOMFLOW_BATCH_WINDOW_SECONDS="1")
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def legacy(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LegacyPacs]:
    if not available():
        pytest.fail("Orthanc or its DICOMweb plugin is missing: install the test peers ('make peers')")
    with LegacyPacs(tmp_path_factory.mktemp("legacy"), gateway.port) as pacs:
        yield pacs


@pytest.fixture(scope="module")
def holdings(legacy: LegacyPacs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the legacy PACS holds: three good studies and one whose second instance the gateway refuses
    (a SeriesInstanceUID over 64 characters: ingest's ``invalid-uid``)."""
    out = tmp_path_factory.mktemp("legacy-corpus")
    write_corpus(out, CorpusOptions(patients=1, slices=3, rows=16, cols=16, seed=2323, broken=False))
    files = [e for e in load_manifest(out)["files"] if e["kind"] == "good"]
    for e in files:
        legacy.upload(out / e["path"])
    good = Counter(e["study_uid"] for e in files)
    sops = {e["sop_uid"]: e["study_uid"] for e in files}
    # The failing study: two CT slices under a new study; the second with an unusable series UID.
    base = [e for e in files if e["modality"] == "CT"][:2]
    bad_study = pydicom.uid.generate_uid(prefix="1.2.826.0.1.3680043.8.498.7.", entropy_srcs=["h23-bad"])
    bad_sop = ""
    for n, e in enumerate(base):
        ds = pydicom.dcmread(out / e["path"])
        ds.StudyInstanceUID = bad_study
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
            prefix="1.2.826.0.1.3680043.8.498.7.", entropy_srcs=["h23-bad", str(n)])
        if n == 1:
            ds.SeriesInstanceUID = TOO_LONG_UID
            bad_sop = ds.SOPInstanceUID
        path = out / f"bad{n}.dcm"
        ds.save_as(path, enforce_file_format=False)
        legacy.upload(path)
    return {"good": dict(good), "sops": sops, "bad_study": bad_study, "bad_sop": bad_sop, "folder": out}


def migrate(devhost: DevHostProcess, gateway: GatewayProcess, legacy: LegacyPacs, state: Path, *args: str,
            background: bool = False) -> Any:
    argv = [sys.executable, "-m", "tools", "migrate", "--source", f"{LEGACY_AE}@127.0.0.1:{legacy.dicom_port}",
            "--gateway", f"DICOMFLOW@127.0.0.1:{gateway.port}", "--connection-string",
            devhost.azurite.connection_string, "--state", str(state), "--quiet", "--verify-timeout", "10", *args]
    if background:
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)


def verified_in(state: Path) -> set[str]:
    if not state.exists():
        return set()
    try:
        with sqlite3.connect(state) as db:
            return {r[0] for r in db.execute("select study from studies where state = 'verified'")}
    except sqlite3.OperationalError:  # the command has not created its tables yet
        return set()


def qido_instances(dh: DevHostProcess, study: str) -> set[str]:
    url = f"{dh.base_url}/dicomweb/studies/{study}/instances?{urllib.parse.urlencode({'limit': '1000'})}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=dh.bearer("reader")), timeout=10) as resp:
        body = resp.read()
    return {d["00080018"]["Value"][0] for d in (json.loads(body) if body else [])}


def received(gateway: GatewayProcess, sops: set[str]) -> Counter[str]:
    """How many times the gateway received each SOP Instance UID by C-STORE (its one log line per instance)."""
    return Counter(sop for sop in re.findall(r"C-STORE assoc=\S+ from \S+ \(moved\): sop=(\S+)", gateway.logs())
                   if sop in sops)


def archived(dh: DevHostProcess, sops: set[str]) -> set[str]:
    """Which of ``sops`` the archive holds (the batched path writes there directly)."""
    svc = Services.from_settings(Settings.from_env({"DicomStorage": dh.azurite.connection_string}))
    return {item.name.rsplit("/", 1)[-1].removesuffix(".dcm") for item in svc.blobs.list(layout.ARCHIVE)} & sops


def test_a_run_killed_midway_resumes_without_moving_verified_studies_again(
        devhost: DevHostProcess, gateway: GatewayProcess, legacy: LegacyPacs, holdings: dict[str, Any],
        tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    # One association and 2 instances/s: slow enough to be stopped between studies.
    first = migrate(devhost, gateway, legacy, state, "--associations", "1", "--rate", "2", background=True)
    try:
        wait_until(lambda: verified_in(state), timeout=90, what="a study verified by the first run")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    before = verified_in(state)
    studies = set(holdings["good"]) | {holdings["bad_study"]}
    assert len(before) < len(studies), "the first run finished before it was stopped: nothing to resume"

    second = migrate(devhost, gateway, legacy, state)
    out = second.stdout
    assert second.returncode == 1, second.stderr + out  # the failing study fails again
    good = holdings["good"]
    assert out.splitlines()[-1] == (f"migrated {len(good) - len(before)} studies, "
                                    f"{sum(n for s, n in good.items() if s not in before)} instances; "
                                    f"verified {len(good)}/{len(studies)}"), out
    assert re.search(rf"skipped-verified\s+{len(before)} studies", out), out
    # The study whose move failed: named, with the ingest outcome's reason of the refused instance.
    failed = [line for line in out.splitlines() if holdings["bad_study"] in line]
    assert failed and "1 quarantined by ingest: invalid-uid (1)" in failed[0], out
    assert "of 2 instance(s) not in the archive" in failed[0], out  # Orthanc stops a move at its first failure
    assert "the source's C-MOVE ended with 0x" in failed[0], out

    # What arrived, asked independently (QIDO-RS), and each verified study's instances sent to us once only.
    for study, n in good.items():
        assert len(qido_instances(devhost, study)) == n, study
    assert verified_in(state) == set(good)
    early = {sop for sop, study in holdings["sops"].items() if study in before}
    assert received(gateway, early) == Counter(dict.fromkeys(early, 1))
    assert archived(devhost, set(holdings["sops"])) == set(holdings["sops"])  # the batched path: straight there



def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in this process (the crash test runs it as a subprocess)."""
    from tools.cli import main

    try:
        code = main(["migrate", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_c_get_brings_a_study_in_where_no_move_is_wanted_and_the_gateway_commits_it(
        devhost: DevHostProcess, gateway: GatewayProcess, legacy: LegacyPacs, holdings: dict[str, Any],
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMFLOW_BATCH_WINDOW_SECONDS", "1")
    out = tmp_path / "getcorpus"
    write_corpus(out, CorpusOptions(patients=1, slices=3, rows=16, cols=16, seed=2324, broken=False))
    files = [e for e in load_manifest(out)["files"] if e["modality"] == "CT"]
    for e in files:
        legacy.upload(out / e["path"])
    study = files[0]["study_uid"]
    code, stdout, stderr = run_cli(
        capsys, "--source", f"{LEGACY_AE}@127.0.0.1:{legacy.dicom_port}", "--gateway",
        f"DICOMFLOW@127.0.0.1:{gateway.port}", "--connection-string", devhost.azurite.connection_string,
        "--state", str(tmp_path / "get.sqlite"), "--quiet", "--retrieve", "get", "--commitment", "--study", study)
    assert code == 0, stdout + stderr
    assert stdout.splitlines()[-1] == f"migrated 1 studies, {len(files)} instances; verified 1/1"
    assert qido_instances(devhost, study) == {e["sop_uid"] for e in files}
    assert re.search(rf"Storage commitment \S+: {len(files)} committed, 0 failed", gateway.logs())


def test_a_wrong_source_is_refused_before_anything_moves(devhost: DevHostProcess, gateway: GatewayProcess,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.sqlite"
    common = ["--gateway", f"DICOMFLOW@127.0.0.1:{gateway.port}", "--connection-string",
              devhost.azurite.connection_string, "--state", str(state)]
    code, _, err = run_cli(capsys, "--source", f"{LEGACY_AE}@127.0.0.1:{free_port()}", *common)
    assert code == 1
    assert "the source does not answer C-ECHO: cannot connect" in err and "Nothing was moved" in err, err
    assert not state.exists()
    code, _, err = run_cli(capsys, "--source", "LEGACY-127.0.0.1-4242", *common)
    assert code == 2 and "give AE@HOST:PORT" in err, err
