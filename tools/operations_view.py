"""Showing and waiting for long-running operations in the CLI (``tools update``, ``tools merge``)."""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Sequence

from shared.operations.store import Operation, OperationStore
from shared.services import Services


def actor() -> str:
    """Who runs the command, as operation records and the audit name them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def line(op: Operation) -> str:
    st = op.status_json()
    r = st["results"]
    return (f"{op.id}  {st['status']:<10} {st['percentComplete']:>3}%  studies {r['studyUpdated']} updated, "
            f"{r['studyFailed']} failed of {len(op.studies)}; instances {r['instanceUpdated']}  "
            f"(created {op.created}, by {op.actor or '-'})")


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
            if len(last) == len(ids) and all(op.status.ended for op in last.values()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return [last[i] for i in ids if i in last]
