"""``python -m tools merge``, ``update`` and ``rejected`` against a real Azurite, as an operator types them:
the dry run names studies and the change but never a Patient ID, a merge submits operations that ``update
wait`` follows to their end, the lists show what happened."""

from __future__ import annotations

import uuid

import pytest

from devhost.azurite import Azurite
from shared.ingest.schedule import SettleRequest
from shared.ingest.service import IngestService
from shared.ingest.settle import SettleService
from shared.ops import runner
from shared.services import Services
from shared.storage import layout
from tests.instances import study_of
from tools import cli


def run(capsys: pytest.CaptureFixture[str], azurite: Azurite, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--connection-string", azurite.connection_string, "--state-dir", "/nonexistent"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_merge_update_and_rejected_commands(pipeline: Services, azurite: Azurite,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_id = uuid.uuid4().hex[:8]
    source, target = f"DUPCLI-{run_id}", f"MRNCLI-{run_id}"
    studies = [study_of(1, 2, f"cli-{run_id}-{n}", patient_id=source) for n in range(2)]
    ingest = IngestService(pipeline)
    for n, (*_, data) in enumerate(i for items in studies for i in items):
        pipeline.blobs.write(layout.INBOX, f"cli/{run_id}/{n}.dcm", data)
        ingest.ingest(pipeline.blobs.open(layout.INBOX, f"cli/{run_id}/{n}.dcm"))
    for items in studies:
        SettleService(pipeline).settle(SettleRequest(items[0][0]))

    code, out, _ = run(capsys, azurite, "merge", "--from", source, "--to", target, "--dry-run")
    assert code == 0 and "2 study(ies) in 1 operation(s)" in out
    assert {items[0][0] for items in studies} <= set(out.split())
    assert source not in out and target not in out  # Patient IDs are never printed

    code, out, _ = run(capsys, azurite, "merge", "--from", source, "--to", target)
    assert code == 0, out
    (op_id,) = [w for w in out.split() if len(w) == 32 and all(c in "0123456789abcdef" for c in w)][:1]
    while runner.run_step(pipeline, runner.message(op_id)) not in ("done", "finished"):  # the app's worker
        pass
    code, out, _ = run(capsys, azurite, "update", "wait", op_id, "--quiet")
    assert code == 0 and "completed" in out and "instances 4" in out
    code, out, _ = run(capsys, azurite, "update", "list")
    assert code == 0 and op_id in out
    code, _, err = run(capsys, azurite, "update", "status", "f" * 32)
    assert code == 2 and "no operation" in err

    code, out, _ = run(capsys, azurite, "merge", "--from", source, "--to", source)
    assert code == 2
    code, out, _ = run(capsys, azurite, "rejected", "list", "--study", studies[0][0][0])
    assert code == 0 and "Rejected instances kept" in out
