"""The audit trail against Azurite: nothing is lost when a process stops.

A child process writes records with a flush interval of an hour (so the background never appends them first),
then either exits normally (every record must be in the audit container: appended at exit) or is killed with
SIGKILL (none can be appended by it; a writer started afterwards on the same machine appends them all from the
spool the child left).
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared import audit
from shared.audit.query import AuditQuery, search
from shared.config import Settings
from shared.services import Services
from tests.waiting import wait_until
from tools import cli

ROOT = Path(__file__).resolve().parents[2]
COUNT = 300


def child(storage_env: dict[str, str], spool: Path, study: str, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, **storage_env, "DICOMFLOW_AUDIT_SPOOL_DIR": str(spool),
           "DICOMFLOW_AUDIT_FLUSH_SECONDS": "3600", "DICOMFLOW_AUDIT_BATCH": "100000"}
    return subprocess.Popen([sys.executable, "-m", "tests.integration.audit_child", study, str(COUNT), mode],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def found(storage: Services, study: str) -> int:
    return len(search(storage.blobs, AuditQuery.parse({"study": study, "limit": "1000"})).records)


def test_a_graceful_stop_appends_every_record(storage_env: dict[str, str], storage: Services, tmp_path: Path) -> None:
    study = f"2.25.{uuid.uuid4().int}"
    proc = child(storage_env, tmp_path, study, "exit")
    assert proc.wait(timeout=60) == 0
    assert found(storage, study) == COUNT
    assert not list(tmp_path.rglob("*.jsonl"))  # nothing left behind


def test_after_a_hard_kill_the_next_process_appends_what_the_killed_one_spooled(
        storage_env: dict[str, str], storage: Services, tmp_path: Path) -> None:
    study = f"2.25.{uuid.uuid4().int}"
    proc = child(storage_env, tmp_path, study, "wait")
    assert proc.stdout is not None and proc.stdout.readline().strip() == "emitted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert found(storage, study) == 0  # the killed process appended nothing
    assert len(list(tmp_path.rglob("*.jsonl"))) == 1
    settings = Settings.from_env({**storage_env, "DICOMFLOW_AUDIT_SPOOL_DIR": str(tmp_path)})
    try:
        audit.writer(settings)  # a new process on this machine: its writer's thread recovers the spool first
        wait_until(lambda: found(storage, study) == COUNT, timeout=30, what="the killed process's records",
                   interval=0.2)
    finally:
        audit.close_all()
    assert not list(tmp_path.rglob("*.jsonl"))


def test_a_configuration_change_is_audited_and_tools_audit_prints_it(
        storage_env: dict[str, str], storage: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = ["--connection-string", storage_env["DicomStorage"], "--state-dir", str(tmp_path / "no-stack")]
    doc = tmp_path / "models.json"
    doc.write_text(json.dumps({"models": [{"kind": "builtin", "modalities": ["CT"]}]}))
    assert cli.main(["config", "set", "models", str(doc), *target]) == 0
    me = f"{getpass.getuser()}@{socket.gethostname()}"
    capsys.readouterr()
    assert cli.main(["audit", "--actor", me, "--json", *target]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    changes = [r for r in records if r["EventIdentification"]["EventID"]["csd-code"] == "110113"]
    assert changes and changes[-1]["ParticipantObjectIdentification"][0]["ParticipantObjectID"] == \
        "dicomflow-config/inference/models.json"
    assert changes[-1]["EventIdentification"]["EventTypeCode"][0]["originalText"] == "Software Configuration"
    assert cli.main(["audit", "--actor", me, *target]) == 0
    table = capsys.readouterr().out
    assert "Security Alert" in table and "Audit Log Used" in table  # the first audit read is itself recorded
    assert cli.main(["audit", "--from", "yesterday", *target]) == 2
