"""``python -m tools migrate``: move a legacy PACS's studies into the archive, resumably, and prove they arrived.

    python -m tools migrate --source ORTHANC@127.0.0.1:4242                      # every study of the source
    python -m tools migrate --source PACS@10.1.2.3:104 --since 2019-01-01 --until 2019-12-31
    python -m tools migrate --source PACS@10.1.2.3:104 --accession A123 --accession A124
    python -m tools migrate --source PACS@10.1.2.3:104 --studies-file uids.txt --retrieve get
    python -m tools migrate --source PACS@10.1.2.3:104 --associations 2 --rate 50   # spare the clinical PACS

Before anything moves it checks both peers with C-ECHO (a wrong ``--source`` ends here, with what to fix) and
lists the window's studies by C-FIND. Then, study by study (tools/migration/runner.py): the source's instances
by C-FIND, a C-MOVE to our DIMSE gateway's AE title (the source must know it: for Orthanc an entry in
``DicomModalities``) or a C-GET (``--retrieve get``: the instances come to this command, which puts them in
the inbox's batch area, as the gateway does with a C-MOVE's), then verification: our index holds every
instance the source listed (rows are written only once the archive holds the file), and with ``--commitment``
the gateway commits them too (Storage Commitment).
Progress bars show studies and instances with their rate and time left; the report lists what was migrated,
skipped (verified by an earlier run) and failed, with the reason (the source's status, a timeout, or the
ingest outcome of what was quarantined). Its last line is ``migrated S studies, I instances; verified V/T``.

State: ``.migrate/<source>_to_<gateway>.sqlite`` (``--state``). An interrupted run resumes: a verified study
is not moved again unless the source's instance count has changed; every other study is tried again.

Where our archive is: the running devhost (``make up``), or Azure with ``--account-url`` (Storage Table Data
Reader for verification; with ``--retrieve get`` also Storage Blob Data Contributor and Storage Queue Data
Message Sender). The gateway is
``--gateway`` (default: the ``DICOMFLOW_GATEWAY_*`` settings, ``DICOMFLOW@127.0.0.1:11112``).

Exit code 0 when every study of the window is verified, 1 when some failed or a peer could not be reached
(nothing moved then), 2 for bad arguments. Libraries: pynetdicom (DIMSE), sqlite3 (state), tqdm (progress).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.config import get_settings
from tools import stack
from tools.migration.dimse import DimseError, Peer, SourceSession, Window, commit, echo
from tools.migration.runner import Migration, Options, Ports, Report, StudyResult, plan
from tools.migration.state import MigrationState, default_path

HELP = "migrate studies from a legacy PACS (C-FIND + C-MOVE or C-GET), resumable and verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    gw = get_settings().gateway
    parser.add_argument("--source", required=True, metavar="AE@HOST:PORT", help="the legacy PACS")
    parser.add_argument("--gateway", default=f"{gw.ae_title}@{gw.host}:{gw.port}", metavar="AE@HOST:PORT",
                        help="our DIMSE gateway: the C-MOVE destination and the Storage Commitment SCP "
                             "(default %(default)s)")
    parser.add_argument("--calling-ae", metavar="AE", help="our AE title towards the source (default: the "
                                                           "gateway's, so the source needs one entry for us)")
    window = parser.add_argument_group("which studies (default: every study of the source)")
    window.add_argument("--since", metavar="DATE", help="StudyDate from (YYYYMMDD or YYYY-MM-DD)")
    window.add_argument("--until", metavar="DATE", help="StudyDate to, inclusive")
    window.add_argument("--accession", action="append", default=[], metavar="NUMBER", help="repeatable")
    window.add_argument("--accessions-file", type=Path, metavar="FILE", help="accession numbers, one a line")
    window.add_argument("--study", action="append", default=[], metavar="UID", help="a study UID (repeatable)")
    window.add_argument("--studies-file", type=Path, metavar="FILE", help="study UIDs, one a line")
    parser.add_argument("--retrieve", choices=("move", "get"), default="move",
                        help="C-MOVE to the gateway (default), or C-GET where the source allows no move")
    parser.add_argument("--associations", type=int, default=2, metavar="N",
                        help="studies moved at once, one association each (default 2)")
    parser.add_argument("--rate", type=float, default=0, metavar="N", help="at most N instances/s (default: no limit)")
    parser.add_argument("--timeout", type=float, default=60, metavar="S",
                        help="seconds to wait for any answer of the source (default 60)")
    parser.add_argument("--verify-timeout", type=float, default=120, metavar="S",
                        help="seconds our index may stay without a new instance of a study before it is "
                             "judged (default 120)")
    parser.add_argument("--commitment", action="store_true",
                        help="also ask the gateway for Storage Commitment of every instance (about 11 index reads "
                             "per instance; our index is checked either way)")
    parser.add_argument("--state", type=Path, metavar="FILE", help="the state file (default .migrate/<source>_to_"
                                                                    "<gateway>.sqlite)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    stack.add_target_arguments(parser)


def _date(text: str | None, option: str) -> str | None:
    if not text:
        return None
    digits = text.replace("-", "")
    if not re.fullmatch(r"\d{8}", digits):
        raise ValueError(f"{option} {text!r}: give a date as YYYYMMDD or YYYY-MM-DD")
    dt.datetime.strptime(digits, "%Y%m%d")
    return digits


def _lines(path: Path | None, option: str) -> list[str]:
    if path is None:
        return []
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ValueError(f"{option} {path}: {exc.strerror}") from None


def _window(args: argparse.Namespace) -> Window:
    studies = tuple(args.study) + tuple(_lines(args.studies_file, "--studies-file"))
    accessions = tuple(args.accession) + tuple(_lines(args.accessions_file, "--accessions-file"))
    if studies and accessions:
        raise ValueError("give study UIDs or accession numbers, not both")
    bad = [u for u in studies if not re.fullmatch(r"[0-9.]{1,64}", u)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a study UID (digits and dots, at most 64)")
    return Window(_date(args.since, "--since"), _date(args.until, "--until"), accessions, studies)


class _Bars:
    """Two tqdm bars on stderr: studies, and instances with their rate and time left."""

    def __init__(self, studies: int, instances: int | None, *, disable: bool) -> None:
        from tqdm import tqdm

        self.studies = tqdm(total=studies, desc="studies", unit="study", position=0, disable=disable, file=sys.stderr)
        self.inst = tqdm(total=instances, desc="instances", unit="inst", position=1, disable=disable, file=sys.stderr)

    def study_done(self, result: StudyResult) -> None:
        self.studies.update(1)
        if result.outcome == "skipped" and self.inst.total:
            self.inst.total = max(0, self.inst.total - result.instances)
            self.inst.refresh()

    def instances(self, n: int) -> None:
        self.inst.update(n)

    def close(self) -> None:
        self.inst.close()
        self.studies.close()


def print_report(report: Report, header: str, state_path: Path, out: Any = sys.stdout) -> None:
    migrated, skipped, failed = report.of("migrated"), report.of("skipped"), report.of("failed")
    print(header, file=out)
    print(f"  migrated          {len(migrated)} studies, {sum(r.instances for r in migrated)} instances", file=out)
    print(f"  skipped-verified  {len(skipped)} studies, {sum(r.instances for r in skipped)} instances (verified by "
          "an earlier run)", file=out)
    print(f"  failed            {len(failed)} studies", file=out)
    notes = [r for r in migrated if r.reason]
    if notes:
        print("Notes:", file=out)
        for r in notes:
            print(f"  {r.study}  {r.reason}", file=out)
    if failed:
        print("Failed (run again to retry them):", file=out)
        for r in failed:
            print(f"  {r.study}  {r.reason}", file=out)
    not_done = report.planned - len(report.results)
    if report.stopped:
        print(f"Stopped: {report.stopped}; {not_done} studies not tried.", file=out)
    print(f"State: {state_path}", file=out)
    print(report.last_line(), file=out)


def run(args: argparse.Namespace) -> int:
    try:
        source = Peer.parse(args.source, "--source")
        gateway = Peer.parse(args.gateway, "--gateway")
        window = _window(args)
        if args.associations < 1 or args.rate < 0 or args.timeout <= 0 or args.verify_timeout < 0:
            raise ValueError("--associations must be at least 1, --rate and --verify-timeout not negative, "
                             "--timeout positive")
    except ValueError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 2
    calling = args.calling_ae or gateway.ae
    settings, where = stack.settings_for(args)
    from azure.core.exceptions import AzureError

    from shared.ingest.batch import BatchWriter
    from shared.ingest.status import quarantined
    from shared.services import Services

    svc = Services.from_settings(settings)
    # Before anything moves: both peers answer, the archive's index can be read, the window is listed.
    try:
        echo(source, calling, timeout=min(args.timeout, 15))
    except DimseError as exc:
        print(f"migrate: the source does not answer C-ECHO: {exc}. Nothing was moved.", file=sys.stderr)
        return 1
    try:
        echo(gateway, calling, timeout=min(args.timeout, 15))
    except DimseError as exc:
        print(f"migrate: our gateway does not answer C-ECHO: {exc}. Is it running ('make up' starts it on "
              "127.0.0.1:11112)? Nothing was moved.", file=sys.stderr)
        return 1
    try:
        svc.index.get_study("0")
    except AzureError as exc:
        print(f"migrate: cannot read the archive's index at {where} ({type(exc).__name__}). Nothing was moved.",
              file=sys.stderr)
        return 1
    lister = SourceSession(source, calling, timeout=args.timeout)
    try:
        studies = plan(lister, window)
    except DimseError as exc:
        print(f"migrate: cannot list the studies: {exc}. Nothing was moved.", file=sys.stderr)
        return 1
    finally:
        lister.close()

    state_path = args.state or default_path(Path.cwd(), str(source), str(gateway))
    state = MigrationState(state_path)
    run_id = state.start_run(str(source), str(gateway), window.describe())

    writer = BatchWriter(svc, source.ae, window=settings.batch_window_seconds)

    def sink(data: bytes, sop: str) -> tuple[int, str]:
        try:
            refused = writer.write(data, sop_hint=sop).refused  # the batched path, as the gateway's C-MOVEs
        except AzureError as exc:
            return 0xA700, f"archive unavailable ({type(exc).__name__})"
        return (0xC000, str(refused.reason)) if refused is not None else (0x0000, "")

    def archived(study: str) -> dict[str, str]:
        return {r.sop_instance_uid: r.sop_class_uid or "" for r in svc.index.list_study_instances(study)}

    def in_quarantine(sops: Sequence[str], since: dt.datetime) -> dict[str, tuple[str, str]]:
        return {sop: (str(o.reason or "?"), o.message or "") for sop, o in quarantined(svc, sops, since=since).items()}

    ports = Ports(
        session=lambda classes: SourceSession(source, calling, timeout=args.timeout, storage_classes=classes),
        archived=archived,
        commit=lambda refs: commit(gateway, calling, refs, timeout=max(args.timeout, 60)),
        quarantined=in_quarantine, sink=sink, got=writer.close)
    options = Options(source, gateway, retrieve=args.retrieve, associations=args.associations,
                      rate=args.rate or None, verify_timeout=args.verify_timeout,
                      commitment=args.commitment)
    known = [s.count for s in studies]
    total = sum(c for c in known if c is not None) if all(c is not None for c in known) else None
    verb = "C-MOVE" if args.retrieve == "move" else "C-GET into the inbox"
    print(f"Migrating {len(studies)} studies ({window.describe()}{f', {total} instances' if total is not None else ''})"
          f" from {source} to {gateway} by {verb}; archive: {where}; state: {state_path}", file=sys.stderr)
    bars = _Bars(len(studies), total, disable=args.quiet)
    try:
        report = Migration(options, state, ports, progress=bars).run(studies)
    finally:
        bars.close()
        writer.close()
    summary = report.last_line()
    state.finish_run(run_id, summary)
    state.close()
    print_report(report, f"Migration from {source} to {gateway} ({verb}), {window.describe()}: {len(studies)} "
                         "studies", state_path)
    return 0 if report.verified == report.planned and not report.stopped else 1
