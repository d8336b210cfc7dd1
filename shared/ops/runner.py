"""Start operations and run their steps (the ``operations`` queue function calls :func:`run_step`).

One queue message names one operation; each run takes the operation's lease (a conditional write of
its row), runs one bounded step of its handler, records the step (progress, cursor, results) and,
unless the operation is finished, queues the next message before it returns. So:

* a crash before the step is recorded repeats the step (the message comes back: steps are idempotent);
* a crash after it is recorded and before the next message is sent also brings the message back,
  which then runs the next step;
* a message that finds the lease taken comes back when it runs out (the holder may have crashed); one whose
  lease write loses the race ends (the winner works); a duplicate finds the operation done in the end.

A step that raises is retried by the queue; after :data:`MAX_FAILURES` failed steps the operation is
``failed`` with the error's type in its results (never its message: it may hold values).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson

from shared.ops import kinds
from shared.ops.store import Operation, OperationStore, Status
from shared.ports import RowChanged
from shared.services import Services
from shared.storage import layout

log = logging.getLogger(__name__)

#: How long one step may work before it records its cursor and hands over to the next message.
STEP_SECONDS: Final = 20.0
#: A runner's hold on an operation (longer than a step; a crashed runner's hold simply expires).
LEASE_SECONDS: Final = 120.0
MAX_FAILURES: Final = 5


def message(operation_id: str) -> str:
    return orjson.dumps({"id": operation_id}).decode()


def start(svc: Services, type_: str, *, params: dict[str, Any] | None = None, resources: list[str] | None = None,
          delay: float = 0.0) -> Operation:
    """Create an operation of ``type_`` and queue its first step (in ``delay`` seconds)."""
    if type_ not in kinds.HANDLERS:
        raise ValueError(f"Unknown operation type {type_!r}; known: {', '.join(sorted(kinds.HANDLERS))}.")
    svc.ensure_ready()
    op = OperationStore(svc.tables).create(type_, params=params, resources=resources,
                                           not_before=time.time() + delay if delay else 0.0)
    svc.queues.send(layout.OPERATIONS_QUEUE, message(op.id), delay_seconds=delay)
    log.info("Operation %s (%s) started", op.id, type_)
    return op


def run_step(svc: Services, body: bytes | str) -> str:
    """Run one step of the operation a queue message names; returns what happened (for logs and tests):
    ``unknown``, ``finished``, ``early``, ``busy``, ``raced``, ``stepped`` or ``done``."""
    doc = orjson.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise ValueError("An operations message is a JSON object with the operation 'id'.")
    svc.ensure_ready()
    store = OperationStore(svc.tables)
    op = store.get(doc["id"])
    if op is None:
        log.warning("Operation %s: no such operation; message dropped", doc["id"])
        return "unknown"
    if op.done:
        return "finished"
    now = time.time()
    if op.not_before > now + 1.0:  # a message that came early (queues may): come back when it is due
        svc.queues.send(layout.OPERATIONS_QUEUE, message(op.id), delay_seconds=op.not_before - now)
        return "early"
    if op.lease_until > now:
        # Another runner holds it, or a crashed one did (whose message may be this very one, back after the
        # crash): look again when the hold runs out. A duplicate that comes back finds the operation done.
        svc.queues.send(layout.OPERATIONS_QUEUE, message(op.id), delay_seconds=op.lease_until - now + 1.0)
        return "busy"
    op.status, op.lease_until = Status.RUNNING, now + LEASE_SECONDS
    try:
        op = store.save(op)
    except RowChanged:
        return "raced"
    try:
        step = kinds.handler(op.type)(svc, op, time.monotonic() + STEP_SECONDS)
    except Exception as exc:  # the runner's one boundary: count the failed step, fail the operation at the limit
        op.failures += 1
        op.lease_until = 0.0
        if op.failures >= MAX_FAILURES:
            op.status = Status.FAILED
            op.results = {**op.results, "errors": [*op.results.get("errors", []),
                                                   f"Step failed {op.failures} times ({type(exc).__name__})"]}
            store.save(op)
            log.exception("Operation %s (%s) failed after %d attempts", op.id, op.type, op.failures)
            return "done"
        store.save(op)
        raise
    op.percent, op.cursor, op.results, op.lease_until = max(0, min(100, step.percent)), step.cursor, step.results, 0.0
    if step.done:
        op.status = Status.FAILED if step.failed else Status.COMPLETED
        op.percent = 100
        store.save(op)
        log.info("Operation %s (%s) %s", op.id, op.type, op.status)
        return "done"
    op.not_before = time.time() + step.wait if step.wait else 0.0
    store.save(op)
    svc.queues.send(layout.OPERATIONS_QUEUE, message(op.id), delay_seconds=step.wait)
    return "stepped"
