"""``python -m tools audit``: who accessed or changed what, from the audit trail (the same query as GET /api/audit).

    python -m tools audit --study 1.2.826.0.1.3680043.8.498.1          # the last 24 hours of one study
    python -m tools audit --actor <object id or AE title> --from 2026-11-01T00:00:00Z --to 2026-11-30T00:00:00Z
    python -m tools audit --patient PID-1 --json                        # records naming the patient or their studies

Reads the running local stack's storage (``.devhost``), or an Azure account with ``--account-url`` (signed in with
``DefaultAzureCredential``; role Storage Blob Data Reader on the account, Table Data Reader for ``--patient``).
Reading the trail is itself recorded (Audit Log Used), with your identity.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import socket
import sys
from typing import Any

from tools import stack

log = logging.getLogger(__name__)

HELP = "show audit records (who accessed or changed patient data), by study, actor, patient and time window"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack.add_target_arguments(parser)
    parser.add_argument("--study", help="a Study Instance UID")
    parser.add_argument("--actor", help="a requestor: token subject (object id) or calling AE title")
    parser.add_argument("--patient", help="a Patient ID (matched by its digest, and by the patient's studies)")
    parser.add_argument("--from", dest="start", metavar="ISO", help="window start (default: 24 hours before --to)")
    parser.add_argument("--to", dest="end", metavar="ISO", help="window end (default: now)")
    parser.add_argument("--limit", type=int, default=100, help="most records shown (1-1000, default 100)")
    parser.add_argument("--json", action="store_true", help="print the records as JSON lines")


def operator(settings: Any) -> Any:
    """The person running the CLI, as an audit participant: the signed-in Azure identity (its object id, from
    the token ``DefaultAzureCredential`` gets) with --account-url, else the local user and host."""
    from shared.audit.record import Actor

    if settings.storage.blob_service_uri:
        try:
            import base64

            from azure.identity import DefaultAzureCredential

            token = DefaultAzureCredential().get_token("https://storage.azure.com/.default").token
            claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            return Actor(user_id=str(claims.get("oid") or claims.get("sub")), alternative="azure-identity",
                         roles=("cli",))
        except Exception:  # noqa: BLE001 - who it is, for the record only: the local user then
            log.info("Audit: the Azure identity could not be read; the record names the local user")
    return Actor(user_id=f"{getpass.getuser()}@{socket.gethostname()}", alternative="local-user", roles=("cli",))


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError

    from shared import audit
    from shared.audit.query import AuditQueryError
    from shared.audit.record import AUDIT_LOG_USED, READ, SUCCESS, Subjects
    from shared.audit.service import run as query_trail
    from shared.services import Services

    params = {k: v for k, v in (("study", args.study), ("actor", args.actor), ("patient", args.patient),
                                ("from", args.start), ("to", args.end), ("limit", str(args.limit))) if v}
    try:
        settings, where = stack.settings_for(args)
        svc = Services.from_settings(settings)
        query, found = query_trail(svc, params)
    except AuditQueryError as bad:
        print(f"audit: {bad}", file=sys.stderr)
        return 2
    except AzureError as exc:
        print(f"audit: cannot read {layout_name()} ({type(exc).__name__}). {stack.STACK_HINT}", file=sys.stderr)
        return 1
    subjects = Subjects(resources=["audit"])
    if query.study:
        subjects.add(query.study)
    audit.emit(settings, audit.new_record(settings, AUDIT_LOG_USED, READ, outcome=SUCCESS,
                                          requestor=operator(settings), subjects=subjects,
                                          description=f"python -m tools audit: {len(found.records)} record(s)"))
    audit.close_all()
    if args.json:
        for doc in found.records:
            print(json.dumps(doc, ensure_ascii=False))
        return 0
    print(f"Audit trail on {where}, {query.to_json()['from']} to {query.to_json()['to']}: {len(found.records)} "
          f"record(s){' (more: narrow the window or raise --limit)' if found.more else ''}")
    print(f"{'time':<24} {'event':<28} {'act':<3} {'out':<3} {'who':<38} {'from':<15} studies")
    for doc in found.records:
        print(_row(doc))
    return 0


def layout_name() -> str:
    from shared.storage import layout

    return layout.AUDIT


def _row(doc: dict[str, Any]) -> str:
    from shared.audit.record import requestors_of, studies_of

    ident = doc.get("EventIdentification", {})
    who = ",".join(sorted(requestors_of(doc))) or "-"
    address = next((str(p.get("NetworkAccessPointID")) for p in doc.get("ActiveParticipant", [])
                    if p.get("UserIsRequestor") and p.get("NetworkAccessPointID")), "-")
    studies = ",".join(sorted(studies_of(doc))) or "-"
    return (f"{str(ident.get('EventDateTime', ''))[:23]:<24} {ident.get('EventID', {}).get('originalText')!s:<28} "
            f"{ident.get('EventActionCode', ''):<3} {ident.get('EventOutcomeIndicator', ''):<3} {who[:38]:<38} "
            f"{address:<15} {studies}")
