"""What every benchmark shares: the machine, statistics, result files, an Azurite that logs
every request, and the request classifier that turns that log into "requests per instance".

Counting from the emulator's side: Azurite's ``--debug`` log has one
``<Blob|Queue|Table>StorageContextMiddleware: RequestMethod=... RequestURL=... RequestHeaders:{...}``
line per request it served, whoever sent it (the app, the devhost's blob watcher, the uploader).
:func:`count_requests` parses those lines (and, for Table ``$batch`` requests, the table named in the
batch body) into :class:`Request` rows that :func:`classify` puts into buckets: what the pipeline
does per instance, what only the local runtime does (the blob watcher standing in for Event Grid),
the upload itself, and the bench's own observation. The debug log slows Azurite, so only the
instrumented run uses it; timed runs use a quiet Azurite.

Libraries: psutil (process CPU and memory), tqdm (progress), statistics (min/median/max).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from devhost.azurite import Azurite, azurite_binary, free_port
from shared.index import tables
from shared.storage import layout

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
#: Scratch space for corpora and emulator data (big files: never inside the repo).
WORK = Path(os.environ.get("DICOMFLOW_BENCH_DIR", "/tmp/dicomflow-bench"))
#: How benches host the real app on the devhost (DevHostProcess keywords): its example settings, which reach
#: the devhost's Azurite and event fabric through {devhost:...} placeholders, and its subscriptions.
REAL_APP: dict[str, Any] = {"app": "function_app:app", "settings": ROOT / "local.settings.example.json",
                            "events": ROOT / "infra" / "events.json"}


# --- the machine and statistics ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "orthanc": orthanc_version(),
        "commit": git_commit(),
    }


def git_commit() -> str | None:
    """The repository's HEAD when the results were written (the code measured)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or None


def orthanc_version() -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "orthanc"], capture_output=True, text=True)
    return out.stdout.strip() or None


def spread(values: Sequence[float]) -> dict[str, float]:
    """min/median/max of repetitions (``n`` says how many)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def run_child(module: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """One measurement in a fresh process: ``python -m <module> --child <args>``, whose last stdout line is
    its JSON result; ``{"failed": why}`` when it times out or exits with an error."""
    cmd = [sys.executable, "-m", module, "--child", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"failed": f"no answer within {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"failed": f"exit {proc.returncode}: {tail[0][:200]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def summarize_runs(runs: list[dict[str, Any]], *counts: str) -> dict[str, Any]:
    """One peer's repetitions (rows of :func:`run_child` or alike): the :func:`spread` of the seconds, the peak
    RSS growth over the baseline (MiB) and each of ``counts`` over the runs that did not fail, the distinct
    failures, and the runs themselves."""
    ok = [r for r in runs if not r.get("failed")]
    out: dict[str, Any] = {
        "seconds": spread([r["seconds"] for r in ok]),
        "rss_growth_mib": spread([(r["peak_rss"] - r.get("baseline_rss", 0)) / 2**20 for r in ok if r.get("peak_rss")]),
    }
    for name in counts:
        out[name] = spread([r[name] for r in ok if r.get(name) is not None])
    out["failed"] = sorted({r["failed"] for r in runs if r.get("failed")})
    out["runs"] = runs
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = max(0, min(len(vals) - 1, math.ceil(p / 100 * len(vals)) - 1))
    return vals[k]


def fmt(s: dict[str, Any] | None, digits: int = 1, scale: float = 1.0) -> str:
    """``median (min-max)`` of a :func:`spread`."""
    if not s or not s.get("n"):
        return "n/a"
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if s["n"] == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def save_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), **data}
    path.write_text(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")
    return path


def load_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live children."""
    import psutil

    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
        return float(total)
    except psutil.Error:
        return float("nan")


def peak_rss(pid: int) -> int:
    """The process's resident-set high-water mark (VmHWM) in bytes, 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2, what: str = "condition") -> float:
    """Poll (bounded) until ``predicate()``; returns the seconds waited; raises TimeoutError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - start


# --- Azurite, optionally logging every request ----------------------------------------------------------


def start_azurite(location: Path, *, debug_log: Path | None = None, in_memory: bool = False,
                  timeout: float = 30.0) -> Azurite:
    """Azurite on free ports with data under ``location`` (or in memory), the same flags as
    :class:`devhost.azurite.Azurite` plus ``--debug <file>`` when counting requests.
    Stop it with ``.stop()`` (it is ours)."""
    az = Azurite(free_port(), free_port(), free_port(), location=location, in_memory=in_memory)
    if debug_log is None:
        return az.start(timeout)
    location.mkdir(parents=True, exist_ok=True)
    args = [str(azurite_binary()), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(az.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(az.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(az.table_port),
            "--debug", str(debug_log)]
    args += ["--inMemoryPersistence"] if in_memory else ["--location", str(location)]
    az.log_path = location / "azurite.log"
    with open(az.log_path, "ab") as log:
        az.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
    try:
        wait_until(az.answering, timeout, 0.1, "Azurite answering")
    except TimeoutError:
        az.stop()
        raise
    return az


# --- counting requests from Azurite's debug log -----------------------------------------------------------

_REQ = re.compile(r"^\S+ (\S+) info: (Blob|Queue|Table)StorageContextMiddleware: RequestMethod=(\w+) "
                  r"RequestURL=(\S+) RequestHeaders:(\{.*?\}) ClientIP=")
_TABLE_IN_BATCH = re.compile(r"/devstoreaccount1/(" + "|".join(tables.TABLES) + r")\b", re.IGNORECASE)


@dataclass
class Request:
    service: str  # blob | queue | table
    method: str
    target: str  # container, queue or table name
    op: str  # what kind of request (see _op)
    range_bytes: int = 0
    #: The blob path within its container ("" for queues and tables).
    name: str = ""


def _range_len(value: str | None) -> int:
    m = re.match(r"bytes=(\d+)-(\d+)", value or "")
    return int(m.group(2)) - int(m.group(1)) + 1 if m else 0


def _op(service: str, method: str, path: list[str], query: dict[str, list[str]], headers: dict[str, Any]) -> str:
    comp = (query.get("comp") or [""])[0]
    restype = (query.get("restype") or [""])[0]
    if service == "blob":
        if restype == "container":
            return "list blobs" if comp == "list" else f"container {method}"
        if len(path) < 2:
            return f"account {method} {comp}".strip()
        if method == "PUT" and "x-ms-copy-source" in headers:
            return "copy blob"
        if method == "PUT":
            return f"put {comp}".strip() if comp else "put blob"
        if method == "GET":
            return "ranged get" if ("x-ms-range" in headers or "range" in headers) else "get blob"
        if method == "HEAD":
            return "get properties"
        return f"{method.lower()} blob"
    if service == "queue":
        if len(path) >= 2 and path[1] == "messages":
            return {"POST": "put message", "GET": "receive messages", "DELETE": "delete message",
                    "PUT": "update message"}.get(method, method)
        return f"queue {method} {comp}".strip()
    # table
    if path and path[0] == "$batch":
        return "batch"
    if path and path[0].lower().startswith("tables"):
        return f"tables {method}"
    entity = "(" in (path[0] if path else "") and not path[0].endswith("()")
    if method == "GET":
        if entity and "PartitionKey=" in path[0]:
            return "point get"
        return "query (select)" if "$select" in query else "query"
    conditional = "if-match" in {k.lower() for k in headers}
    if method == "PUT":
        return "replace (conditional)" if conditional else "upsert"
    if method == "DELETE":
        return "delete (conditional)" if conditional and headers.get("if-match") != "*" else "delete"
    return {"POST": "insert", "MERGE": "merge", "PATCH": "merge"}.get(method, method)


def parse_debug_log(path: Path, *, start: int = 0) -> tuple[list[Request], int]:
    """Requests logged from byte ``start`` on; returns them and the offset to continue from."""
    reqs: list[Request] = []
    batches: dict[str, Request] = {}
    with open(path, "rb") as f:
        f.seek(start)
        for raw in f:
            line = raw.decode("utf-8", "replace")
            m = _REQ.match(line)
            if m:
                rid, svc, method, url, hdr = m.groups()
                svc = svc.lower()
                parts = urlsplit(url)
                path_parts = [unquote(p) for p in parts.path.split("/")[2:] if p]  # drop the account
                try:
                    headers = json.loads(hdr)
                except ValueError:
                    headers = {}
                op = _op(svc, method, path_parts, parse_qs(parts.query), headers)
                target = path_parts[0] if path_parts else ""
                if svc == "table":
                    target = target.split("(", 1)[0]
                req = Request(svc, method, target, op, _range_len(headers.get("x-ms-range") or headers.get("range")),
                              "/".join(path_parts[1:]) if svc == "blob" else "")
                reqs.append(req)
                if op == "batch":
                    batches[rid] = req
                continue
            if batches:
                # A Table batch names its table only in the body, logged on later lines of the same request.
                rid = line.split(" ", 2)[1] if line.count(" ") >= 2 else ""
                pending = batches.get(rid)
                found = _TABLE_IN_BATCH.search(line) if pending is not None else None
                if pending is not None and found:
                    pending.target = found.group(1).lower()
                    del batches[rid]
        end = f.tell()
    return reqs, end


#: Bucket of each request kind (see :func:`classify`).
PIPELINE = "pipeline"
LOCAL_ONLY = "local runtime only"
UPLOAD = "upload (client)"
OBSERVER = "bench observation"
SETUP = "setup (once per process)"


def classify(req: Request) -> str:
    """Which bucket a request belongs to.

    * upload: the client's PUT into the inbox (Orthanc's equivalent is its POST /instances).
    * local runtime only: the devhost's blob watcher listing the inbox (Event Grid's system topic
      does this in Azure, for no storage request).
    * setup: creating containers, tables, queues (once per process).
    * bench observation: the bench's own reads (settle queue depth).
    * pipeline: everything else, what the app does in Azure too (ingest, settle, inference, routing,
      and the Functions host polling the settle queue).
    """
    if req.service == "blob" and req.target == layout.INBOX and req.op in ("put blob", "put block",
                                                                          "put blocklist"):
        # The batched path's own writes into its chunk folders (manifests, done markers) are the pipeline's.
        if req.name.startswith(layout.BATCH_PREFIX) and req.name.endswith(("/manifest.json", "/done")):
            return PIPELINE
        return UPLOAD
    if req.service == "blob" and req.target == layout.ARCHIVE and req.op in ("put blob", "put block",
                                                                            "put blocklist"):
        return UPLOAD  # the batched path's writer puts the file there instead of in the inbox
    if req.service == "blob" and req.target == layout.INBOX and req.op == "list blobs":
        return LOCAL_ONLY
    if req.op.startswith(("container", "tables", "queue PUT", "account")):
        return SETUP
    if req.service == "queue" and req.op == "queue GET metadata":
        return OBSERVER
    return PIPELINE


#: Which step of the design makes each kind of request (read from the code, confirmed by the counts).
STEPS: dict[tuple[str, str, str], str] = {
    ("blob", layout.INBOX, "ranged get"): "ingest: header read (ranged); batched path: a chunk's manifest",
    ("blob", layout.INBOX, "put blob (derived objects)"): "inference: SEG/SR results into the inbox",
    ("blob", layout.ARCHIVE, "copy blob"): "ingest: server-side copy to the archive (if absent)",
    ("blob", layout.ARCHIVE, "get properties"): "ingest: copy still pending (Azure copies large blobs async)",
    ("blob", layout.ARCHIVE, "ranged get"): "inference/routing: reads an archived instance",
    ("blob", layout.ARCHIVE, "get blob"): "inference/routing: reads an archived instance",
    ("blob", layout.ARCHIVE, "list blobs"): "inference: lists the series",
    ("blob", layout.METADATA, "put blob"): "settle: series metadata bundle (ingest: sidecar of oversized metadata)",
    ("blob", layout.METADATA, "ranged get"): "settle: oversized metadata sidecar",
    ("blob", layout.METADATA, "get blob"): "settle: oversized metadata sidecar",
    ("blob", layout.CONFIG, "ranged get"): "routing rules / model registry",
    ("blob", layout.CONFIG, "get blob"): "routing rules / model registry",
    ("table", tables.INSTANCES, "batch"): "ingest: instance row + change entry (batched path: 50 a transaction); "
                                          "settle: its state committed with the changes marked published",
    ("table", tables.INSTANCES, "point get"): "ingest: known instance (retry, duplicate, update)",
    ("table", tables.INSTANCES, "query"): "settle: the study partition, once per run",
    ("table", tables.INSTANCES, "query (select)"): "index columns of a study's instances (QIDO, tools migrate's "
                                                   "verification)",
    ("table", tables.PENDING, "upsert"): "ingest: pending row, once per series and quiet period",
    ("table", tables.PENDING, "query"): "settle: the study's pending rows (when stable)",
    ("table", tables.PENDING, "delete (conditional)"): "settle: pending rows go when the study is stable",
    ("table", tables.STUDIES, "point get"): "settle: a study last settled before its state row existed (once)",
    ("table", tables.STUDIES, "replace (conditional)"): "settle: study aggregate (or an expired lease taken over)",
    ("table", tables.STUDIES, "batch"): "settle: first study aggregate",
    ("table", tables.LOOKUP, "batch"): "settle: study lookup rows, when new or the study changed (one batch per "
                                       "partition)",
    ("table", tables.LOOKUP, "delete"): "settle: stale lookup rows",
    ("table", tables.UID_LOOKUP, "batch"): "settle: series and SOP UID lookups of changed series",
    ("table", tables.UID_LOOKUP, "delete"): "settle: UID lookups of removed instances",
    ("table", tables.SERIES, "batch"): "settle: series aggregates",
    ("table", tables.CHANGEFEED, "batch"): "settle: change feed entries (one batch per hour shard)",
    ("table", tables.CHANGEFEED, "insert"): "settle: the feed's head row (once per process)",
    ("table", tables.CHANGEFEED, "merge"): "settle: earlier feed entries marked replaced/deleted",
    ("table", tables.DELIVERIES, "point get"): "routing: delivery ledger",
    ("table", tables.DELIVERIES, "query"): "routing: delivery ledger",
    ("table", tables.DELIVERIES, "insert"): "routing: delivery ledger",
    ("table", tables.DELIVERIES, "upsert"): "routing: delivery ledger",
    ("table", tables.DELIVERIES, "replace (conditional)"): "routing: delivery ledger",
    ("queue", layout.SETTLE_QUEUE, "put message"): "ingest: a process's settle message, once per window "
                                                   "(settle: next run; the pending sweep)",
    ("queue", layout.SETTLE_QUEUE, "receive messages"): "settle trigger: queue polling",
    ("queue", layout.SETTLE_QUEUE, "delete message"): "settle trigger: message done",
    ("queue", layout.SETTLE_QUEUE, "update message"): "ingest: the group's message names the studies that joined "
                                                      "(at most once a second); settle: lease renewal of a long run",
    ("queue", f"{layout.SETTLE_QUEUE}-poison", "receive messages"): "redrive timer: the poison queue polled "
                                                                    "(every 5 minutes)",
    ("queue", "webjobs-blobtrigger-poison", "receive messages"): "redrive timer: the poison queue polled "
                                                                 "(every 5 minutes)",
    ("table", tables.PENDING, "query (select)"): "pending sweep (redrive timer, every 5 minutes): the pending "
                                                 "table read",
    ("blob", layout.INBOX, "put blob"): "batched path: a chunk's manifest (writer) and done marker (ingest_batch)",
    ("blob", layout.INBOX, "list blobs"): "batched path: a chunk listed (ingest_batch)",
    ("blob", layout.INBOX, "get blob"): "batched path: a chunk's manifest read (ingest_batch)",
    ("table", tables.INSTANCES, "insert"): "settle: the study held (its settle state row, first run)",
    ("table", tables.INSTANCES, "replace (conditional)"): "settle: the study held (settle state row)",
    ("table", tables.STUDIES, "upsert"): "settle: study aggregate, when it changed",
    ("table", tables.PENDING, "batch"): "ingest: pending rows of a study (batched path); settle: removed",
    ("queue", layout.BATCH_QUEUE, "put message"): "batched path: a chunk's messages (writer: safety net + ready)",
    ("queue", layout.BATCH_QUEUE, "receive messages"): "ingest_batch trigger: queue polling",
    ("queue", layout.BATCH_QUEUE, "delete message"): "ingest_batch trigger: message done",
    ("queue", layout.OPERATIONS_QUEUE, "receive messages"): "operations trigger: queue polling",
    ("blob", layout.AUDIT, "put appendblock"): "audit records (appended in batches)",
    ("blob", layout.AUDIT, "put blob"): "audit: a new append blob",
    ("table", tables.EXTENDED_TAGS, "query"): "extended query tags (read once per process and TTL)",
}


def step_of(service: str, target: str, op: str) -> str:
    return STEPS.get((service, target, op), "")


def summarize_requests(reqs: Iterable[Request], instances: int, uploads: int | None = None) -> dict[str, Any]:
    """Counts per bucket and per (service, target, op), and per uploaded instance.

    ``uploads``: how many inbox puts the client made; inbox puts beyond that are the pipeline's
    own (inference results go through the inbox like any instance)."""
    reqs = list(reqs)
    if uploads is not None:
        seen = 0
        for r in reqs:
            if classify(r) == UPLOAD:
                seen += 1
                if seen > uploads:
                    r.op = "put blob (derived objects)"
    buckets: Counter[str] = Counter(classify(r) for r in reqs)
    detail: Counter[tuple[str, str, str, str]] = Counter((classify(r), r.service, r.target, r.op) for r in reqs)
    n = max(1, instances)
    rows = [{"bucket": b, "service": s, "target": t, "op": o, "count": c, "per_instance": round(c / n, 3)}
            for (b, s, t, o), c in sorted(detail.items(), key=lambda kv: (kv[0][0] != PIPELINE, -kv[1]))]
    return {
        "instances": instances,
        "total": len(reqs),
        "buckets": {b: {"count": c, "per_instance": round(c / n, 3)} for b, c in buckets.most_common()},
        "detail": rows,
    }


def journal_events(journal: Path) -> list[dict[str, Any]]:
    """Records of the devhost fabric's journal (``events.jsonl``)."""
    out: list[dict[str, Any]] = []
    try:
        text = journal.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def count_events(journal: Path, instances: int) -> dict[str, Any]:
    """Published events by type, publish calls (one journal timestamp per batch) and deliveries."""
    recs = journal_events(journal)
    published = [r for r in recs if r.get("kind") == "published"]
    by_type: Counter[str] = Counter()
    calls: set[tuple[str, str]] = set()
    for r in published:
        e = r.get("event") or {}
        by_type[str(e.get("type") or e.get("eventType"))] += 1
        if r.get("topic") != "storage":
            calls.add((str(r.get("topic")), str(r.get("at"))))
    deliveries: Counter[str] = Counter(str(r.get("subscription")) for r in recs if r.get("kind") == "delivered")
    n = max(1, instances)
    custom = sum(c for t, c in by_type.items() if not t.startswith("Microsoft."))
    return {
        "published_by_type": dict(by_type),
        "custom_events": custom,
        "custom_events_per_instance": round(custom / n, 3),
        "publish_calls": len(calls),
        "publish_calls_per_instance": round(len(calls) / n, 3),
        "system_events": sum(c for t, c in by_type.items() if t.startswith("Microsoft.")),
        "deliveries": dict(deliveries),
        "deliveries_per_instance": round(sum(deliveries.values()) / n, 3),
    }


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def sized_main(argv: list[str] | None, *, prog: str, doc: str, name: str,
               run: Callable[[dict[str, Any], float, float], Any], sizes: dict[str, Any], quick_sizes: dict[str, Any],
               quick_help: str, timeout: float, remove_files: Callable[[dict[str, Any]], None],
               child: Callable[[list[str]], dict[str, Any]]) -> int:
    """The command line of a bench that measures files of a few sizes, ours and a naive reader each in a child
    process under an address-space cap (``bench.large``, ``bench.update``): ``--child ...`` runs one
    measurement and prints it as JSON; otherwise the sizes are run, saved as ``name`` (``name-quick``) and the
    README's tables rendered."""
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1:])))
        return 0
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--naive-cap-gib", type=float, default=8.0, help="the naive child's address-space cap")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds per measured step")
    parser.add_argument("--keep-files", action="store_true", help="keep the generated files for the next run")
    args = parser.parse_args(argv)
    from bench.orthanc import ensure_installed

    ensure_installed()
    chosen = quick_sizes if args.quick else sizes
    results = run(chosen, args.naive_cap_gib, args.timeout)
    if not args.keep_files:
        remove_files(chosen)
    path = save_result(f"{name}-quick" if args.quick else name,
                       {"quick": args.quick, "naive_cap_gib": args.naive_cap_gib, "sizes": results})
    print(f"wrote {path}", file=sys.stderr)
    from bench.report import render

    render()
    return 0
