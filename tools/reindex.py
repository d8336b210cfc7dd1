"""``python -m tools reindex``: rebuild a region's index from the archive it holds.

    python -m tools reindex                       # the local devhost's region: its archive (+ replicas)
    python -m tools reindex --restart             # start over instead of resuming an interrupted run
    python -m tools reindex --rebuild             # rewrite every row from its file (a row schema change)
    python -m tools reindex --account-url https://<account>.blob.core.windows.net --region secondary \\
        --peer-region primary                     # a region in Azure (DefaultAzureCredential)

Walks this region's own archive container and, in a region of a pair, the peer region's replica here,
and indexes each instance the way ingest does, without the copy (shared/ingest/reindex.py):
resumable (the position in each container is saved every 100 files), idempotent (an instance already
indexed at the archived version costs one table read), safe while ingest runs (conditional writes; the
newer version wins). Settle derives aggregates, lookups and bundles afterwards, in the running app.

In Azure the signed-in user (or identity) needs Storage Blob Data Reader and Storage Table Data
Contributor on the region's data account, and Storage Queue Data Message Sender (settle messages).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from shared.ingest import reindex
from shared.services import Services
from tools import stack

HELP = "rebuild a region's index from its archive (resumable, idempotent, safe while ingest runs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true", help="start over instead of resuming an interrupted run")
    parser.add_argument("--rebuild", action="store_true",
                        help="rewrite rows that already describe their file (after a change of the row schema)")
    parser.add_argument("--container", action="append", default=[], metavar="NAME",
                        help="only this archive container (repeatable; default: the region's own and its "
                             "peer's replica)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    stack.add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError
    from tqdm import tqdm

    try:
        settings, where = stack.settings_for(args)
    except stack.StackError as exc:
        print(f"reindex: {exc}", file=sys.stderr)
        return 1
    svc = Services.from_settings(settings)
    containers = args.container or list(reindex.archive_containers(svc))
    unknown = set(args.container) - set(reindex.archive_containers(svc))
    if unknown:
        print(f"reindex: {', '.join(sorted(unknown))} is not an archive container of this region "
              f"({', '.join(reindex.archive_containers(svc))}); check --region/--peer-region", file=sys.stderr)
        return 2
    try:
        total = reindex.pending_files(svc, containers, restart=args.restart)
        bar = tqdm(total=total, unit="file", desc="reindex", disable=args.quiet or not sys.stderr.isatty(),
                   leave=False)
        with bar:
            result = reindex.reindex(svc, containers, restart=args.restart, rebuild=args.rebuild,
                                     progress=lambda _c, _o: bar.update(1))
    except AzureError as exc:
        print(f"reindex: {where} failed ({type(exc).__name__}). {stack.STACK_HINT} In Azure, check the roles "
              "in 'python -m tools reindex --help'. Run it again to resume.", file=sys.stderr)
        return 1
    print(f"Reindex on {where} (region {settings.region.key or '-'}):")
    for container, counts in result.counts.items():
        resumed = f" (resumed after {result.resumed[container]})" if container in result.resumed else ""
        print(f"  {container}: {sum(counts.values())} file(s){resumed}: " + (
            ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "empty"))
    totals: Counter[str] = result.total()
    if totals["refused"]:
        print("  refused: archived files that cannot be read as DICOM now; see the app's log lines "
              "'Index <container>/<path>: cannot be indexed (<reason>)'")
    print("  Aggregates, lookups and bundles follow when the running app settles the touched studies.")
    return 0
