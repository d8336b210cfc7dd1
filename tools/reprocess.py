"""``python -m tools reprocess``: run inference and routing again for studies that are already stable.

    python -m tools reprocess --study 1.2.3 --study 1.2.4     # these studies
    python -m tools reprocess --from 2026-01-01 --to 2026-01-31  # by StudyDate (either end may be left open)
    python -m tools reprocess --series 1.2.3.4                # just these series (SeriesStable only)
    python -m tools reprocess --from 2026-01-01 --dry-run     # what would be announced

It announces ``Dicom.SeriesStable`` / ``Dicom.StudyStable`` again for what settle found stable
(shared/ingest/reprocess.py), through the app's event publisher, so the subscriptions run as usual:
a model enabled since writes its SEG/SR, a rule added since routes. Running it twice adds nothing
(deterministic result UIDs, the routing delivery ledger). ``--only series`` limits it to inference and
series-level rules, ``--only study`` to study-level rules.

Where: the running devhost (default), or Azure with ``--account-url`` and ``--events-endpoint``
(DefaultAzureCredential; roles Storage Table Data Reader on the account and EventGrid Data Sender on
the topic).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from shared.ingest import reprocess
from shared.services import Services
from tools import stack

HELP = "announce stable studies again so inference and routing run for them (by study, series or date)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", action="append", default=[], metavar="UID", help="a study (repeatable)")
    parser.add_argument("--series", action="append", default=[], metavar="UID", help="a series (repeatable)")
    parser.add_argument("--from", dest="date_from", metavar="DATE", help="StudyDate from (YYYYMMDD or YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", metavar="DATE", help="StudyDate to, inclusive")
    parser.add_argument("--only", choices=reprocess.LEVELS, help="announce only series or only study events")
    parser.add_argument("--dry-run", action="store_true", help="list what would be announced; publish nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    stack.add_target_arguments(parser, events=True)


def run(args: argparse.Namespace) -> int:
    if not (args.study or args.series or args.date_from or args.date_to):
        print("reprocess: choose what to reprocess: --study UID, --series UID, or --from/--to DATE", file=sys.stderr)
        return 2
    settings, where = stack.settings_for(args)
    if not settings.events_endpoint and not args.dry_run:
        print("reprocess: no event topic to publish to: pass --events-endpoint "
              "https://<topic>.<region>-1.eventgrid.azure.net/api/events", file=sys.stderr)
        return 2
    from azure.core.exceptions import AzureError

    ctx = Services.from_settings(settings)
    levels = (args.only,) if args.only else reprocess.LEVELS
    try:
        by_series = reprocess.find_series(ctx.index, args.series)
        studies = list(reprocess.find_studies(ctx.index, study_uids=args.study, date_from=args.date_from,
                                              date_to=args.date_to))
        return _announce(args, ctx, where, studies, by_series, levels)
    except ValueError as exc:
        print(f"reprocess: {exc}", file=sys.stderr)
        return 2
    except AzureError as exc:
        print(f"reprocess: {where} failed ({type(exc).__name__}): {stack.STACK_HINT}", file=sys.stderr)
        return 1


def _announce(args: argparse.Namespace, ctx: Services, where: str, studies: list[str],
              by_series: dict[str, set[str]], levels: tuple[str, ...]) -> int:
    from tqdm import tqdm

    missing_series = set(args.series) - {s for ss in by_series.values() for s in ss}
    work: list[tuple[str, set[str] | None]] = [(s, None) for s in studies if s not in by_series]
    work += [(s, ss) for s, ss in by_series.items()]
    counts: Counter[str] = Counter()
    verb = "would announce" if args.dry_run else "announced"
    bar = tqdm(work, unit="study", desc="reprocess", disable=args.quiet or not sys.stderr.isatty(), leave=False)
    for study, series in bar:
        plan, published = reprocess.reannounce(ctx, study, series_uids=series, levels=levels, dry_run=args.dry_run)
        if plan.skipped:
            counts[plan.skipped] += 1
            print(f"  {study}: skipped ({plan.skipped})")
            continue
        n_series = len(plan.series) if "series" in levels else 0
        n_study = 1 if plan.study is not None and "study" in levels and series is None else 0
        counts["studies"] += 1
        counts["series"] += n_series
        counts["events"] += published if not args.dry_run else n_series + n_study
        if args.dry_run:
            print(f"  {study}: {n_series} series{' + the study' if n_study else ''}")
    print(f"Reprocess on {where}: {verb} {counts['events']} event(s) for {counts['studies']} study(ies), "
          f"{counts['series']} series.")
    if counts["not-stable"] or counts["not-found"] or missing_series:
        print(f"  skipped: {counts['not-stable']} not stable yet (settle announces them), {counts['not-found']} "
              f"not found, {len(missing_series)} series not found")
    if counts["events"] and not args.dry_run:
        print("  Inference and routing run as these events arrive: see 'python -m devhost status' (functions) or "
              "the Dicom.InferenceCompleted / Dicom.RoutingCompleted events.")
    return 0 if counts["studies"] or not (counts["not-found"] or missing_series) else 1
