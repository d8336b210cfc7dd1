"""``python -m tools rejected``: IOCM rejections (shared/rejection/).

    python -m tools rejected list [--study UID]   # rejected instances still kept, and each note's report
    python -m tools rejected purge                # delete rejected files past their retention now
    python -m tools rejected note --code 113001 --study S --series SE --sop I1 --sop I2 -o note.dcm
        # write a rejection note (a Key Object Selection) to send like any instance:
        #   storescu -aec DICOMFLOW 127.0.0.1 11112 note.dcm   or   python -m tools upload note.dcm

A note is applied by the archive when it is stored, by whatever path it comes; ``note`` only writes the
file (the SOP Class of each instance is taken from the index when it is there). In Azure add
``--account-url`` (list: Storage Blob Data Reader; purge: Storage Blob Data Contributor).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from pydicom.uid import generate_uid

from shared.dicom.validate import is_valid_uid
from shared.rejection import service as rejection
from shared.rejection.codes import MEANING, RejectionCode
from shared.rejection.notes import Reference, build_note
from shared.services import Services
from tools import stack
from tools.operations_view import actor

HELP = "list rejected instances, purge expired ones, or write an IOCM rejection note"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "purge", "note"])
    parser.add_argument("--study", metavar="UID", help="list: only this study; note: the study of the instances")
    parser.add_argument("--series", metavar="UID", help="note: the series of the instances")
    parser.add_argument("--sop", action="append", default=[], metavar="UID", help="note: an instance (repeatable)")
    parser.add_argument("--code", choices=[c.value for c in RejectionCode], default=RejectionCode.QUALITY.value,
                        help="note: the rejection code (" + "; ".join(f"{c.value} {m}" for c, m in MEANING.items())
                        + ")")
    parser.add_argument("-o", "--output", type=Path, help="note: where to write the note (a .dcm file)")
    parser.add_argument("--json", action="store_true", help="list: print the JSON GET /api/rejected answers")
    stack.add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    if args.study and not is_valid_uid(args.study):
        print("rejected: --study must be a Study Instance UID", file=sys.stderr)
        return 2
    if args.action == "note" and not (args.study and args.series and args.sop and args.output):
        print("rejected note: give --study, --series, one or more --sop and -o FILE", file=sys.stderr)
        return 2
    settings, where = stack.settings_for(args)
    svc = Services.from_settings(settings)
    try:
        if args.action == "purge":
            n = rejection.purge(svc, actor=actor(settings))
            print(f"Rejected files past their retention deleted on {where}: {n}")
            return 0
        if args.action == "note":
            return _note(svc, args)
        body = rejection.listing(svc, args.study)
        _audit_listing(settings, body)
    except AzureError as exc:
        print(f"rejected: {where} failed ({type(exc).__name__}). {stack.STACK_HINT}", file=sys.stderr)
        return 1
    finally:
        from shared import audit

        audit.close_all()  # this command's records are appended before it returns
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"Rejected instances kept on {where}: {len(body['instances'])}")
    for r in body["instances"]:
        print(f"  {r['code']} {r['meaning']:<36} {r['sop']}  rejected {r['rejectedAt']}  deleted after "
              f"{r['deleteAfter']}  (note {r['note']})")
    for n in body["notes"]:
        unknown = n["unknownReferences"]
        print(f"Note {n['note']} ({n['code']}): {len(n['rejected']) + len(n['deleted'])} withdrawn, "
              f"{len(n['alreadyRejected'])} already, {len(unknown)} unknown reference(s)")
        for u in unknown:
            print(f"  unknown: {u['sop']} ({u.get('reason', '')})")
    return 0


def _audit_listing(settings: Any, body: dict[str, Any]) -> None:
    """The list's audit record (a Query, as GET /api/rejected's): who looked, at which instances."""
    from shared import audit
    from shared.audit.record import EXECUTE, QUERY, SUCCESS, Subjects
    from tools.audit import operator

    subjects = Subjects()
    for r in body["instances"]:
        subjects.add(r["study"], r["series"], r["sop"])
    audit.emit(settings, audit.new_record(settings, QUERY, EXECUTE, outcome=SUCCESS, requestor=operator(settings),
                                          subjects=subjects, description="python -m tools rejected list"))


def _note(svc: Services, args: argparse.Namespace) -> int:
    bad = [u for u in (args.series, *args.sop) if not is_valid_uid(u)]
    if bad:
        print("rejected note: --series and --sop take UIDs (digits and dots)", file=sys.stderr)
        return 2
    refs = []
    patient: dict[str, str] = {}
    for sop in args.sop:
        got = svc.index.get_instance(args.study, args.series, sop)
        refs.append(Reference(args.study, args.series, sop, got.record.sop_class_uid if got else ""))
        if got is not None and not patient:
            rec = got.record
            patient = {k: v for k, v in (("PatientName", rec.patient_name), ("PatientID", rec.patient_id),
                                         ("PatientBirthDate", rec.patient_birth_date),
                                         ("PatientSex", rec.patient_sex), ("AccessionNumber", rec.accession_number),
                                         ("StudyDate", rec.study_date), ("StudyTime", rec.study_time),
                                         ("StudyID", rec.study_id)) if v}
    ds = build_note(RejectionCode(args.code), refs, series=str(generate_uid()), sop=str(generate_uid()),
                    patient=patient)
    ds.save_as(args.output, enforce_file_format=True)
    known = sum(1 for r in refs if r.sop_class)
    print(f"Wrote {args.output}: rejection note {ds.SOPInstanceUID} ({args.code} {MEANING[RejectionCode(args.code)]}) "
          f"naming {len(refs)} instance(s), {known} of them in this archive's index. Send it like any instance.")
    return 0
