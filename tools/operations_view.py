"""Showing and waiting for long-running operations in the CLI (``tools update``, ``tools merge``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from shared.ops.store import Operation, OperationStore
from shared.services import Services


def actor(settings: Any) -> str:
    """Who runs the command, as the operation records and the audit trail name them (``tools audit``'s rule:
    the signed-in Azure identity's object id with --account-url, else ``user@host``)."""
    from tools.audit import operator

    return str(operator(settings).user_id)


def line(op: Operation) -> str:
    r = op.results
    studies = len(op.params.get("studyInstanceUids", []))
    return (f"{op.id}  {op.type:<8} {op.status:<10} {op.percent:>3}%  studies {r.get('studyUpdated', 0)} updated, "
            f"{r.get('studyFailed', 0)} failed of {studies}; instances {r.get('instanceUpdated', 0)}  "
            f"(created {op.created}, by {op.params.get('actor') or '-'})")


def wait(svc: Services, ids: Sequence[str], *, timeout: float, quiet: bool = False) -> list[Operation]:
    """Poll until every operation has ended (or ``timeout``), with a progress bar; returns their last records."""
    from tqdm import tqdm

    store = OperationStore(svc.tables)
    deadline = time.monotonic() + timeout
    bar = tqdm(total=100 * len(ids), unit="%", desc="operations", disable=quiet or not sys.stderr.isatty(),
               leave=False)
    last: dict[str, Operation] = {}
    with bar:
        while True:
            for op_id in ids:
                op = store.get(op_id)
                if op is not None:
                    last[op_id] = op
            bar.n = sum(op.percent for op in last.values())
            bar.refresh()
            if len(last) == len(ids) and all(op.done for op in last.values()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return [last[i] for i in ids if i in last]
