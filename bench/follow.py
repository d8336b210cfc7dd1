"""The secondary's catch-up: the peer follower and ``reindex --since``, instances/s, before and after.

    .venv/bin/python -m bench.follow            # 2,000 instances, 3 repetitions
    .venv/bin/python -m bench.follow --quick    # 400 instances, 1 repetition

Two regions on two Azurites (``a`` the primary, ``b`` the secondary), set up as replication leaves them:
``a``'s change feed lists N created instances (entries older than the follower's late-commit tail, so its
cursor moves), and ``b``'s replica container ``dicom-archive-a`` holds their files with their version
stamps and their studies' arrival marks (written straight into ``b``'s Azurite, as object replication
does). Then, on ``b``, with a fresh
index each time:

* the follower as it was before issue 22 (``shared/ingest/follow.py`` at commit 3d10ae7, read from git: one entry
  at a time, 500 per run; its runs back to back here, where the timer allowed one per 10 s);
* the follower now, with 1 worker and with 16 (``DICOMFLOW_FOLLOW_WORKERS``), one run until drained;
* ``reindex --since`` (the catch-up without the primary) over the same replica, 1 worker and 16.

A warm-up run comes first, and the order of the variants turns by one each repetition. Reported:
instances/s (indexed / wall time), storage requests per instance (counted by the SDK clients),
results in ``bench/results/follow.json``. Everything runs in this process against real Azurite (the
app's own code, not the devhost: no HTTP in the path being measured).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import common
from bench.common import ROOT, WORK, spread
from shared.config import Settings
from shared.index import tables
from shared.index.sequence import seq_of_time
from shared.index.store import FeedEntry
from shared.ingest import follow, reindex
from shared.services import Services
from shared.storage import layout
from shared.storage.regions import STAMP, stamp

FULL, QUICK = 2000, 400
#: The last commit before the follower's rework (issue 22): the "before" column runs its follow.py.
BEFORE = "3d10ae7"


def _services(conn: str, peer: str | None = None, **env: str) -> Services:
    values = {"DicomStorage": conn, "DICOMFLOW_REGION": "b" if peer else "a",
              "DICOMFLOW_PEER_REGION": "a" if peer else "b", "DICOMFLOW_FOLLOW_RUN_SECONDS": "3600", **env}
    if peer:
        values["DicomPeerStorage"] = peer
    return Services.from_settings(Settings.from_env(values))


def _old_follower_module() -> types.ModuleType:
    """The follower as it was before issue 22 (at :data:`BEFORE`), as code, to run beside the new one."""
    source = subprocess.run(["git", "show", f"{BEFORE}:shared/ingest/follow.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType("follow_before")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{BEFORE}:shared/ingest/follow.py", "exec"), module.__dict__)
    return module


def _seed(a: Services, b_conn: str, n: int) -> list[tuple[str, str, str]]:
    """``a``'s feed lists ``n`` creates; ``b``'s replica of ``a``'s archive holds their files."""
    from azure.storage.blob import BlobServiceClient

    from tools.drill import make_corpus, split

    studies, slices = split(n, 50)
    corpus = make_corpus(WORK / "follow" / "corpus", studies=studies, slices=slices, seed=2201)
    container = BlobServiceClient.from_connection_string(b_conn).get_container_client(
        layout.regional(layout.ARCHIVE, "a"))
    if not container.exists():
        container.create_container()
    t0 = time.time() - 600  # older than the follower's late-commit tail

    def put(k: int) -> None:
        i = corpus[k]
        container.upload_blob(layout.instance_path(i.study, i.series, i.sop), i.path.read_bytes(), overwrite=True,
                              metadata={STAMP: stamp("a", t0 + k * 0.01)})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(len(corpus))))
    for study in {i.study for i in corpus}:  # the arrival marks ingest writes in a region of a pair
        container.upload_blob(layout.arrival_path(layout.arrival_hour(time.time()), study), b"", overwrite=True)
    a.ensure_ready()
    entries = [FeedEntry(seq_of_time(t0 + k * 0.1) + 1, i.study, i.series, i.sop, "create", "current",
                         "", "a") for k, i in enumerate(corpus)]
    for part in common.chunks(entries, 500):
        a.index.append_feed(list(part))
    uids = [(i.study, i.series, i.sop) for i in corpus]
    shutil.rmtree(WORK / "follow" / "corpus", ignore_errors=True)
    return uids


def _fresh_index(conn: str) -> None:
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(conn)
    for name in tables.TABLES:
        service.delete_table(name)


def _timed(label: str, n: int, make: Any, run: Any) -> dict[str, Any]:
    svc = make()
    svc.ensure_ready()
    before = svc.requests.total() if svc.requests else 0
    t0 = time.monotonic()
    indexed = run(svc)
    seconds = time.monotonic() - t0
    spent = (svc.requests.total() if svc.requests else 0) - before
    print(f"  {label}: {indexed}/{n} in {seconds:.1f} s = {indexed / seconds:.1f}/s, "
          f"{spent / max(1, indexed):.2f} requests per instance", file=sys.stderr)
    if indexed != n:
        raise RuntimeError(f"{label} indexed {indexed} of {n}")
    return {"seconds": seconds, "per_second": indexed / seconds, "requests_per_instance": spent / max(1, indexed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.follow", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} instances, 1 repetition")
    args = parser.parse_args(argv)
    n, reps = (QUICK, 1) if args.quick else (FULL, 3)
    run_dir = WORK / "follow"
    shutil.rmtree(run_dir, ignore_errors=True)
    az_a = common.start_azurite(run_dir / "a", in_memory=True)
    az_b = common.start_azurite(run_dir / "b", in_memory=True)
    try:
        a_conn, b_conn = az_a.connection_string, az_b.connection_string
        a = _services(a_conn)
        print(f"== seeding {n} instances: a's change feed, b's replica", file=sys.stderr)
        _seed(a, b_conn, n)
        old = _old_follower_module()

        def b(**env: str) -> Services:
            return _services(b_conn, a_conn, **env)

        def follow_old(svc: Services) -> int:
            done = 0
            while True:  # back to back: in Azure the timer allowed one run (500 entries) per 10 s
                got = old.Follower(svc).run()
                if not got or not got.counts:
                    return done
                done += got.indexed

        def follow_new(svc: Services) -> int:
            got = follow.Follower(svc).run()
            return got.indexed if got else 0

        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

        def reindex_with(workers: int) -> Any:
            def run(svc: Services) -> int:
                total = reindex.reindex(svc, since=since, workers=workers).total()
                return total["archived"] + total["updated"]
            return run

        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (
            "follow_before", "follow_1", "follow_16", "reindex_since_1", "reindex_since_16")}
        plan = [("follow_before", "follower before (one at a time)", lambda: b(), follow_old),
                ("follow_1", "follower now, 1 worker", lambda: b(DICOMFLOW_FOLLOW_WORKERS="1"), follow_new),
                ("follow_16", "follower now, 16 workers", lambda: b(DICOMFLOW_FOLLOW_WORKERS="16"), follow_new),
                ("reindex_since_1", "reindex --since, 1 worker", lambda: b(), reindex_with(1)),
                ("reindex_since_16", "reindex --since, 16 workers", lambda: b(), reindex_with(16))]
        _fresh_index(b_conn)
        _timed("warm-up (not counted)", n, lambda: b(), follow_new)  # first-run costs land on no variant
        for rep in range(reps):
            print(f"== repetition {rep + 1} of {reps}", file=sys.stderr)
            for key, label, make, run in plan[rep % len(plan):] + plan[:rep % len(plan)]:  # rotated order
                _fresh_index(b_conn)
                runs[key].append(_timed(label, n, make, run))
        result = {
            "machine": common.machine(), "instances": n, "reps": reps,
            **{k: {"per_second": spread([r["per_second"] for r in v]),
                   "requests_per_instance": spread([r["requests_per_instance"] for r in v]),
                   "seconds": spread([r["seconds"] for r in v]), "runs": v} for k, v in runs.items()},
        }
        path = common.save_result("follow-quick" if args.quick else "follow", result)
        print(f"results: {path}", file=sys.stderr)
    finally:
        az_a.stop()
        az_b.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    from bench.report import render

    render()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
