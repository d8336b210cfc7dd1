"""``python -m tools update``: long-running bulk update and merge operations.

    python -m tools update list                   # the latest operations, newest first
    python -m tools update status <id>            # one operation (the GET operations/{id} JSON)
    python -m tools update wait <id> [<id> ...]   # until they end, with a progress bar
    python -m tools update resume <id>            # queue an operation that has not ended again

Operations are started with ``POST /api/dicomweb/studies/$bulkUpdate`` (or ``python -m tools merge``) and
run by the app's ``operations`` function; a crashed run resumes by itself when its queue message comes
back. ``resume`` is for an operation whose message was used up (moved to ``dicom-operations-poison``).
In Azure add ``--account-url`` (Storage Table Data Reader; resume also Storage Queue Data Message Sender).
"""

from __future__ import annotations

import argparse
import sys

import orjson

from shared.ops import kinds
from shared.ops.store import OperationStore, Status
from shared.services import Services
from shared.update import service as update
from tools import stack
from tools.operations_view import line, wait

HELP = "list, show, wait for or resume bulk update / merge operations"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "status", "wait", "resume"])
    parser.add_argument("ids", nargs="*", metavar="ID", help="operation id(s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds 'wait' waits at most (600)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    stack.add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    if args.action in ("status", "wait", "resume") and not args.ids:
        print(f"update {args.action}: give the operation id (see 'python -m tools update list')", file=sys.stderr)
        return 2
    settings, where = stack.settings_for(args)
    svc = Services.from_settings(settings)
    store = OperationStore(svc.tables)
    try:
        svc.ensure_ready()
        if args.action == "list":
            ops = store.recent(type_=kinds.UPDATE)
            print(f"Operations on {where}: {len(ops)}")
            for op in ops:
                print("  " + line(op))
            return 0
        missing = [i for i in args.ids if store.get(i) is None]
        if missing:
            print(f"update: no operation {missing[0]!r} on {where}", file=sys.stderr)
            return 2
        if args.action == "status":
            for op_id in args.ids:
                shown = store.get(op_id)
                assert shown is not None
                print(orjson.dumps(shown.to_json(""), option=orjson.OPT_INDENT_2).decode())
            return 0
        if args.action == "resume":
            for op_id in args.ids:
                again = update.resume(svc, op_id)
                assert again is not None
                print(f"{op_id}: " + ("queued again" if not again.done else f"already ended ({again.status})"))
            return 0
        done = wait(svc, args.ids, timeout=args.timeout, quiet=args.quiet)
        for op in done:
            print(line(op))
        if any(not op.done for op in done):
            print(f"update: still running after {args.timeout:.0f} s; wait again or check the app's log",
                  file=sys.stderr)
            return 1
        return 0 if all(op.status is Status.COMPLETED for op in done) else 1
    except AzureError as exc:
        print(f"update: {where} failed ({type(exc).__name__}). {stack.STACK_HINT}", file=sys.stderr)
        return 1
