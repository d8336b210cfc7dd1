"""``python -m tools merge``: move every study of one Patient ID under another (a patient merge).

    python -m tools merge --from OLD-123 --to MRN-456 --dry-run   # which studies, which change
    python -m tools merge --from OLD-123 --to MRN-456 --wait      # submit, then wait with a progress bar

The studies are changed by bulk update operations (shared/update/merge.py): each instance gets a new
version with the target's Patient ID and, when the archive holds studies of the target, its name, birth
date and sex (``--name``, ``--birth-date``, ``--sex`` override them); the first versions are kept and
``update`` entries go to the change feed. The running app's ``operations`` function does the work; this
command submits it (the same as ``POST /api/dicomweb/patients/$merge``). Patient IDs are never printed.
In Azure add ``--account-url`` (Storage Table Data Contributor, Storage Queue Data Message Sender).
"""

from __future__ import annotations

import argparse
import sys

import orjson

from shared.services import Services
from shared.update import merge
from shared.update import service as update
from tools import stack
from tools.operations_view import actor, line, wait

HELP = "merge a patient: every study of one Patient ID under another, as bulk updates"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="PATIENT_ID", help="the ID that goes away")
    parser.add_argument("--to", dest="target", required=True, metavar="PATIENT_ID", help="the ID that stays")
    parser.add_argument("--name", help="PatientName for the merged studies (DICOM PN, e.g. Doe^Jane)")
    parser.add_argument("--birth-date", help="PatientBirthDate (YYYYMMDD)")
    parser.add_argument("--sex", choices=["M", "F", "O"], help="PatientSex")
    parser.add_argument("--dry-run", action="store_true", help="show the studies and the change; submit nothing")
    parser.add_argument("--wait", action="store_true", help="wait until the operations end (progress bar)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most (600)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    stack.add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    settings, where = stack.settings_for(args)
    svc = Services.from_settings(settings)
    demographics = {k: v for k, v in (("PatientName", args.name), ("PatientBirthDate", args.birth_date),
                                      ("PatientSex", args.sex)) if v}
    try:
        svc.ensure_ready()
        if args.dry_run:
            plan = merge.plan(svc, args.source, args.target, demographics)
            merge.changes_of(plan)  # refused here, as it would be on submission
            print(f"Merge on {where}: {len(plan.studies)} study(ies) in {len(plan.batches)} operation(s); the target "
                  f"patient has {plan.target_studies} study(ies) here.")
            for uid in plan.studies:
                print(f"  {uid}")
            print("  change (DICOM JSON): " + orjson.dumps(sorted(plan.change)).decode())
            return 0
        plan, ops = merge.merge(svc, args.source, args.target, actor=actor(settings), demographics=demographics)
    except update.UpdateRefused as refused:
        print(f"merge: {refused.message}", file=sys.stderr)
        return 2 if refused.status == 400 else 1
    except AzureError as exc:
        print(f"merge: {where} failed ({type(exc).__name__}). {stack.STACK_HINT}", file=sys.stderr)
        return 1
    finally:
        from shared import audit

        audit.close_all()  # the merge's audit record is appended before the command returns
    print(f"Merge on {where}: {len(plan.studies)} study(ies) submitted in {len(ops)} operation(s):")
    for op in ops:
        print(f"  {op.id}  (python -m tools update status {op.id})")
    if not args.wait:
        return 0
    done = wait(svc, [op.id for op in ops], timeout=args.timeout, quiet=args.quiet)
    for op in done:
        print("  " + line(op))
    return 0 if done and all(op.status == "completed" for op in done) else 1
