"""``python -m tools reindex``: rebuild a region's index from the archive it holds.

    python -m tools reindex                       # the local devhost's region: its archive (+ replicas)
    python -m tools reindex --restart             # start over instead of resuming an interrupted run
    python -m tools reindex --rebuild             # rewrite every row from its file (a row schema change)
    python -m tools reindex --since follower      # only what replicated since the follower's position
    python -m tools reindex --since 2026-12-01T09:00Z   # ... or since a time (also: --since 2h)
    python -m tools reindex --account-url https://<account>.blob.core.windows.net --region secondary \\
        --peer-region primary --since follower    # a region in Azure (DefaultAzureCredential)

Walks this region's own archive container and, in a region of a pair, the peer region's replica here,
and indexes each instance the way ingest does, without the copy (shared/ingest/reindex.py), 16 files at a
time (``--workers``): resumable (the position in each container is saved every 100 files), idempotent (an
instance already indexed at the archived version costs one table read), safe while ingest runs
(conditional writes; the newer version wins). Settle derives aggregates, lookups and bundles afterwards,
in the running app.

``--since`` indexes only the files written into each container since a time (their Last-Modified there:
for a replica, when replication brought them), the failover runbook's catch-up of a secondary whose
primary is lost (docs/deploy.md). ``--since follower`` takes the time from this region's follower of the
peer's change feed: ``--margin`` minutes (default 60) before its cursor, and no later than the first
miss of any entry still waiting for its file; that covers every replicated file it had not indexed.

In Azure the signed-in user (or identity) needs Storage Blob Data Reader and Storage Table Data
Contributor on the region's data account, and Storage Queue Data Message Sender (settle messages).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections import Counter

from shared.ingest import follow, reindex
from shared.services import Services
from tools import stack

HELP = "rebuild a region's index from its archive (resumable, idempotent, safe while ingest runs)"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--restart", action="store_true", help="start over instead of resuming an interrupted run")
    parser.add_argument("--rebuild", action="store_true",
                        help="rewrite rows that already describe their file (after a change of the row schema)")
    parser.add_argument("--container", action="append", default=[], metavar="NAME",
                        help="only this archive container (repeatable; default: the region's own and its "
                             "peer's replica)")
    parser.add_argument("--since", metavar="WHEN",
                        help="only files written into the containers since WHEN: an ISO 8601 time (UTC if no "
                             "offset), a duration back from now (90m, 2h, 1d), or 'follower' (this region's "
                             "follower position minus --margin)")
    parser.add_argument("--margin", type=float, default=60.0, metavar="MINUTES",
                        help="with --since follower: how long before the follower's cursor to start (default 60: "
                             "a file is archived at most a settle delay or backlog before its feed entry)")
    parser.add_argument("--workers", type=int, default=reindex.WORKERS, metavar="N",
                        help=f"files indexed at once (default {reindex.WORKERS})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    stack.add_target_arguments(parser)


def parse_since(value: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO 8601 time (naive = UTC) or a duration back from ``now`` (``90m``, ``2h``, ``1d``)."""
    now = now or dt.datetime.now(dt.UTC)
    m = _DURATION.match(value.strip().lower())
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {value!r}: give an ISO 8601 time (2026-12-01T09:00Z), a duration (90m, 2h, "
                         "1d) or 'follower'") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def run(args: argparse.Namespace) -> int:
    from azure.core.exceptions import AzureError
    from tqdm import tqdm

    settings, where = stack.settings_for(args)
    if args.workers < 1:
        print("reindex: --workers must be at least 1", file=sys.stderr)
        return 2
    svc = Services.from_settings(settings)
    containers = args.container or list(reindex.archive_containers(svc))
    unknown = set(args.container) - set(reindex.archive_containers(svc))
    if unknown:
        print(f"reindex: {', '.join(sorted(unknown))} is not an archive container of this region "
              f"({', '.join(reindex.archive_containers(svc))}); check --region/--peer-region", file=sys.stderr)
        return 2
    show = not args.quiet and sys.stderr.isatty()
    t0 = time.monotonic()
    try:
        since = None
        if args.since:
            since = _since(args, svc)
            if since is None:
                return 2
            print(f"Reindex on {where}: files written since {since.isoformat(timespec='seconds')}", file=sys.stderr)
            with tqdm(unit="name", desc="listing", disable=not show, leave=False) as listed:
                items = reindex.changed_since(svc, containers, since, listed=listed.update)
            total = sum(len(v) for v in items.values())
            with tqdm(total=total, unit="file", desc="reindex", disable=not show, leave=False) as bar:
                result = reindex.reindex(svc, containers, since=since, items=items, rebuild=args.rebuild,
                                         workers=args.workers, progress=lambda _c, _o: bar.update(1))
        else:
            total = reindex.pending_files(svc, containers, restart=args.restart)
            with tqdm(total=total, unit="file", desc="reindex", disable=not show, leave=False) as bar:
                result = reindex.reindex(svc, containers, restart=args.restart, rebuild=args.rebuild,
                                         workers=args.workers, progress=lambda _c, _o: bar.update(1))
    except AzureError as exc:
        print(f"reindex: {where} failed ({type(exc).__name__}). {stack.STACK_HINT} In Azure, check the roles "
              "in 'python -m tools reindex --help'. Run it again to resume.", file=sys.stderr)
        return 1
    seconds = time.monotonic() - t0
    files = sum(result.total().values())
    print(f"Reindex on {where} (region {settings.region.key or '-'}"
          f"{', since ' + since.isoformat(timespec='seconds') if since else ''}): {files} file(s) in {seconds:.1f} s"
          f"{f' ({files / seconds:.0f}/s)' if seconds > 0 and files else ''}")
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


def _since(args: argparse.Namespace, svc: Services) -> dt.datetime | None:
    if args.since.strip().lower() != "follower":
        try:
            return parse_since(args.since)
        except ValueError as exc:
            print(f"reindex: {exc}", file=sys.stderr)
            return None
    state = follow.read_state(svc)
    if state is None:
        print("reindex: --since follower: this region has no follower state (it follows no peer, or its follower "
              "never ran); give a time, or run without --since to index everything", file=sys.stderr)
        return None
    since = follow.since_for_reindex(state, args.margin * 60)
    print(f"reindex: the follower of {state.peer} had handled its feed up to "
          f"{dt.datetime.fromtimestamp(state.upto, dt.UTC).isoformat(timespec='seconds')} "
          f"({state.waiting} entr{'y' if state.waiting == 1 else 'ies'} waiting for their file)", file=sys.stderr)
    return since
