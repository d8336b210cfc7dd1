"""``python -m tools demo`` (``make demo``): the whole pipeline on the local stack, step by step.

Starts the stack (``python -m devhost up --detach``) unless one already runs, prints the health of
each dependency and the app's functions, then: writes the configuration (the built-in AI model on,
one routing rule) with ``tools.config``; writes a synthetic corpus (several patients, non-ASCII
names, CT/MR/DBT/DX/SR and a deliberately broken set); uploads it with a progress bar and shows every
file's outcome (archived, or quarantined with its reason); waits until the studies are stable;
queries them with ``dicomweb-client``; waits for the AI results (SEG + SR, indexed as derived) and
the routing outcomes (dcmtk's storescp as the reading room's receiver, when installed); prints the
events of this run. Then it stops what it started (a stack that was already up is left running).

Every run shows the same thing: the corpus gets fresh UIDs (a new seed per run, ``--seed`` to
choose), and every count (events, QIDO results, routing) is of this run's studies only, so a second
``make demo`` on the same checkout is not a run of duplicates reporting the first run's numbers.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools import stack

HELP = "run the whole pipeline on the local stack (started if needed) and show each step"
DEMO_STABLE_AGE = 4
HEALTH_PATH = "/api/health"
SETTINGS = stack.ROOT / "local.settings.json"
SETTINGS_EXAMPLE = stack.ROOT / "local.settings.example.json"
VIEWER_SITE = stack.ROOT / "viewer" / "site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", type=Path, default=stack.DEFAULT_STATE_DIR,
                        help="the devhost's state folder (default .devhost)")
    up = parser.add_argument_group("starting the stack (when none runs; passed to 'python -m devhost up')")
    up.add_argument("--http-port", type=int)
    up.add_argument("--fabric-port", type=int)
    up.add_argument("--azurite-ports", metavar="B,Q,T")
    up.add_argument("--azurite-dir", type=Path)
    up.add_argument("--settings", type=Path, help="the app's settings (default local.settings.json, created from "
                                                  "local.settings.example.json when missing)")
    up.add_argument("--env", action="append", default=[], metavar="K=V", help="extra app setting (repeatable)")
    size = parser.add_argument_group("the corpus")
    size.add_argument("--patients", type=int, default=3, help="patients (default 3)")
    size.add_argument("--slices", type=int, default=12, help="CT slices per patient (default 12)")
    size.add_argument("--size", type=int, default=128, metavar="PX", help="rows and columns (default 128)")
    size.add_argument("--seed", type=int, default=None, help="UID seed (default: a new one per run)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each step (default 180)")


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - our own loopback URL
            return int(r.status), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return int(exc.code), json.loads(exc.read() or b"null")
        except ValueError:
            return int(exc.code), None
    except (OSError, ValueError):
        return 0, None


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(ln.rstrip() for ln in out)


def _devhost(*argv: str) -> int:
    return subprocess.run([sys.executable, "-m", "devhost", *argv], cwd=stack.ROOT, check=False).returncode


def _start(args: argparse.Namespace) -> int:
    settings = args.settings
    if settings is None:
        if not SETTINGS.exists():
            shutil.copyfile(SETTINGS_EXAMPLE, SETTINGS)
            print(f"Created {SETTINGS.name} from {SETTINGS_EXAMPLE.name} (the app's local settings; edit freely)")
        settings = SETTINGS
    argv = ["up", "--detach", "--ready-path", HEALTH_PATH, "--state-dir", str(args.state_dir),
            "--settings", str(settings)]
    if (VIEWER_SITE / "index.html").exists():  # built by 'make demo' / 'make up' (python -m viewer build)
        argv += ["--static", str(VIEWER_SITE)]
    for flag in ("http_port", "fabric_port", "azurite_ports", "azurite_dir"):
        value = getattr(args, flag)
        if value is not None:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    env = list(args.env)
    if not any(e.startswith("DICOMFLOW_STABLE_AGE_SECONDS=") for e in env):
        env.append(f"DICOMFLOW_STABLE_AGE_SECONDS={DEMO_STABLE_AGE}")
    for kv in env:
        argv += ["--env", kv]
    return _devhost(*argv)


def run(args: argparse.Namespace) -> int:
    for name in ("patients", "slices", "size"):
        if getattr(args, name) < 1:
            print(f"demo: --{name} must be at least 1", file=sys.stderr)
            return 2
    local = stack.find_local(args.state_dir)
    started = False
    if local is None:
        print("Starting the local stack (Azurite, event fabric, blob watcher, function host)...")
        sys.stdout.flush()
        code = _start(args)
        if code != 0:
            return code
        started = True
        local = stack.find_local(args.state_dir)
    try:
        if local is None:
            print("demo: the stack did not come up; see .devhost/devhost.log", file=sys.stderr)
            return 1
        base = local.base_url
        status, body = _get(f"{base}/health")
        print(f"\nHealth: GET {base}/health -> {status} ({(body or {}).get('status', '?')})")
        # The dependency checks are the admin's (the anonymous probe says up or down, nothing more).
        status, body = _get(f"{base}/health/deep", stack.local_token(args.state_dir, roles=("admin",), user="demo"))
        deps = (body or {}).get("dependencies", {}) if isinstance(body, dict) else {}
        print(f"Dependencies: GET {base}/health/deep (admin) -> {status}\n")
        print(_table([(name, "up" if d.get("up") else "DOWN", f"{d.get('ms', 0)} ms", d.get("error", ""))
                      for name, d in deps.items()], ("dependency", "state", "latency", "error")))
        functions = stack.read_state(args.state_dir).get("functions", [])
        print(f"\nFunctions ({len(functions)}), served by the devhost on {base}:\n")
        print(_table([(f["name"], f["trigger"], f["detail"].split(": ", 1)[-1]) for f in functions],
                     ("function", "trigger", "binding")))
        print(f"\nEvents: publish to {local.events_endpoint} (key: python -m devhost key --events); "
              "API tokens: python -m devhost token --role reader|writer|admin")
        if status != 200:
            print("\nA dependency is down: see the table above (Azurite log: .azurite/azurite.log).")
            return 1
        seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
        return Scenario(args, local, seed).run()
    finally:
        if started:
            print("\nStopping what the demo started...")
            sys.stdout.flush()
            _devhost("down", "--state-dir", str(args.state_dir))


# -- the pipeline scenario ---------------------------------------------------------------------------

MODELS = {"models": [{"kind": "builtin"}]}
RULE = {"name": "ct-to-reading-room", "trigger": "Dicom.StudyStable",
        "conditions": {"Modality": "CT", "derived": False},
        "destinations": [{"type": "worklist", "group": "body-ct"}],
        "retry": {"maxAttempts": 3, "backoffSeconds": 1}}


def _wait(what: str, total: int, count: Callable[[], int], timeout: float) -> int:
    """A bounded wait with a progress bar; returns how many arrived."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    done = 0
    with tqdm(total=total, desc=what, unit="", leave=False, disable=not sys.stderr.isatty()) as bar:
        while True:
            now = min(count(), total)
            bar.update(now - done)
            done = now
            if done >= total or time.monotonic() >= deadline:
                return done
            time.sleep(0.5)


class Scenario:
    """One run: its own corpus (fresh UIDs), its own counts."""

    def __init__(self, args: argparse.Namespace, local: stack.LocalStack, seed: int) -> None:
        self.args = args
        self.local = local
        self.seed = seed
        self.work = args.state_dir / "demo"
        self.started = time.time()
        self.studies: set[str] = set()
        self.blobs: set[str] = set()

    @property
    def blob_digests(self) -> set[str]:
        from shared.storage.layout import log_name

        return {log_name(b) for b in self.blobs}

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Events this run caused: published since it started, about its studies or its uploads."""
        out = []
        for e in stack.published_events(self.args.state_dir, since=self.started):
            data = e.get("data") or {}
            study = data.get("imageStudyInstanceUid")
            blob = data.get("blobDigest")  # an IngestFailed event names its blob by digest only
            if (study and study not in self.studies) or (blob and blob not in self.blob_digests):
                continue
            if kind is None or (e.get("type") or e.get("eventType")) == kind:
                out.append(e)
        return out

    def run(self) -> int:
        from dicomweb_client.api import DICOMwebClient

        from shared.config import Settings
        from shared.inference.registry import models_from_document
        from shared.inference.service import series_info
        from shared.services import Services
        from tools import config
        from tools.corpus import CorpusOptions, load_manifest, write_corpus
        from tools.upload import summarize, upload_and_wait

        args, local = self.args, self.local
        if self.work.exists():
            shutil.rmtree(self.work)
        receiver = self.work / "received"
        receiver.mkdir(parents=True)
        blobs = Services.from_settings(Settings.from_env(local.app_env())).blobs
        key = stack.local_token(args.state_dir, roles=("reader", "writer"), user="demo")

        # 1. A local DICOM receiver for the routing rule, when dcmtk is installed.
        rule = json.loads(json.dumps(RULE))
        # The receiver keeps its port across runs when it can: routing reads its rules at most every
        # DICOMFLOW_ROUTING_RULES_TTL_SECONDS per worker, so a rule whose port changed applies only after that.
        port_file = args.state_dir / "demo-storescp-port"
        previous = int(port_file.read_text()) if port_file.exists() and port_file.read_text().isdigit() else 0
        scp, port = _start_storescp(receiver, previous) if shutil.which("storescp") else (None, 0)
        if scp is not None:
            port_file.write_text(str(port))
        rules_changed = bool(scp is not None and previous and port != previous)
        if scp is not None:
            rule["destinations"].insert(0, {"type": "dicom", "aeTitle": "DEMO_SCP", "host": "127.0.0.1",
                                            "port": port})
        else:
            print("\n(dcmtk's storescp is not installed or did not start: routing goes to the worklist only; "
                  "'make peers' installs it)")
        try:
            print("\n== 1. Configuration (dicomflow-config): built-in AI model on, one routing rule ==")
            for name, doc in (("models", MODELS), ("rules", {"rules": [rule]})):
                summary = config.write(blobs, config.DOCUMENTS[name], json.dumps(doc).encode())
                print(f"  {config.DOCUMENTS[name].blob:<22} {summary}")
            written = time.monotonic()
            if scp is not None:
                print(f"  the reading room's DICOM receiver: dcmtk storescp DEMO_SCP on 127.0.0.1:{port}")
            print("  (python -m tools config get|set|validate models|rules: the same, by hand)")

            print(f"\n== 2. A synthetic corpus (synthetic patients; names in five character sets; seed {self.seed}) ==")
            corpus = self.work / "corpus"
            write_corpus(corpus, CorpusOptions(patients=args.patients, slices=args.slices, rows=args.size,
                                               cols=args.size, seed=self.seed, slide=True),
                         progress=sys.stderr.isatty())
            manifest = load_manifest(corpus)
            self.studies = {e["study_uid"] for e in manifest["files"]
                            if e["expect"] == "archived" and e.get("study_uid")}
            print(f"  {len(manifest['files'])} files in {corpus}, {len(self.studies)} studies with fresh UIDs "
                  "(one a whole-slide pathology image: a 3-level TILED_FULL JPEG pyramid)")
            slide = next((e["study_uid"] for e in manifest["files"] if e.get("modality") == "SM"), None)

            if rules_changed:
                ttl = Settings.from_env(local.app_env()).routing_rules_ttl_seconds

                print(f"\n(the receiver's port changed since the last run: routing reads rules at most every "
                      f"{ttl:.0f} s, so the demo gives it that long)")
                _wait("rules in force", int(ttl), lambda: int(time.monotonic() - written), ttl + 1)

            print("\n== 3. Upload to dicom-inbox; ingest runs on each BlobCreated event ==")
            outcomes = upload_and_wait([corpus], connection_string=str(local.storage), base_url=local.base_url,
                                       key=key, timeout=args.timeout, progress=sys.stderr.isatty())
            self.blobs = {o.item.blob_name for o in outcomes}
            table, ok = summarize(outcomes, waited=True)
            print(table)
            if not ok:
                print("Some files have no outcome yet: python -m devhost status; GET /api/ingest/status")
                return 1

            print(f"\n== 4. Studies settle and become stable ({DEMO_STABLE_AGE} s without new instances here; "
                  "60 s in Azure) ==")
            stable = _wait("studies stable", len(self.studies), lambda: len(
                {e["data"]["imageStudyInstanceUid"] for e in self.events("Dicom.StudyStable")}), args.timeout)
            print(f"  {stable} of {len(self.studies)} studies stable")

            print("\n== 5. QIDO-RS with dicomweb-client (GET /api/dicomweb/studies) ==")
            client = DICOMwebClient(f"{local.base_url}/dicomweb", headers=stack.auth_headers(key))
            found = [d for d in client.search_for_studies(fields=["PatientName", "StudyDescription"])
                     if _first(d, "0020000D") in self.studies]
            rows = [(_first(d, "00100010"), _first(d, "00080020"), "\\".join(d.get("00080061", {}).get("Value", [])),
                     _first(d, "00201206"), _first(d, "00201208"), _first(d, "0020000D")[-12:]) for d in found]
            print(_table(sorted(rows), ("PatientName", "StudyDate", "Modalities", "Series", "Instances",
                                        "StudyUID (end)")))
            hits = [d for d in client.search_for_studies(search_filters={"PatientName": "muller*"})
                    if _first(d, "0020000D") in self.studies]
            print(f"\n  PatientName=muller* (case- and accent-insensitive) -> {len(hits)} study(ies) of this run")

            print("\n== 6. AI: the built-in model writes a SEG and an SR per stable CT/MR/2-D series ==")
            # Every stable source series a model accepts gets one inference run (the subscription's filter
            # and the model's own modalities decide, as in the app).
            models = models_from_document(MODELS)

            def accepted() -> set[str]:
                return {e["data"]["imageSeriesInstanceUid"] for e in self.events("Dicom.SeriesStable")
                        if any(m.accepts(series_info(e["data"])) for m in models)}

            def inferred() -> set[str]:
                return {e["data"]["imageSeriesInstanceUid"] for e in self.events("Dicom.InferenceCompleted")}

            def results() -> set[str]:
                return {r["seriesInstanceUid"] for e in self.events("Dicom.InferenceCompleted")
                        for r in e["data"].get("results", [])}

            def indexed() -> int:  # the results come back through ingest, indexed like any instance
                wanted = results()
                return sum(1 for s in self.studies for d in client.search_for_series(study_instance_uid=s)
                           if _first(d, "0020000E") in wanted)

            _wait("inference runs", len(accepted()), lambda: len(inferred() & accepted()), args.timeout)
            if results():
                _wait("results indexed", len(results()), indexed, args.timeout)
                print(f"  {len(self.events('Dicom.InferenceCompleted'))} InferenceCompleted event(s) for "
                      f"{len(inferred())} series; QIDO finds {indexed()} SEG/SR series (indexed as derived)")
            else:
                print("  no inference result yet: python -m devhost status shows the inference function's runs")

            print("\n== 7. Routing: stable CT studies to the reading room ==")
            kinds = {d["type"] for d in rule["destinations"]}
            ct_studies = {e["data"]["imageStudyInstanceUid"] for e in self.events("Dicom.StudyStable")
                          if "CT" in (e["data"].get("modalitiesInStudy") or [])}

            def routed() -> set[tuple[str, str]]:
                return {(e["data"]["imageStudyInstanceUid"], e["data"].get("destination", ""))
                        for kind in ("Dicom.RoutingCompleted", "Dicom.RoutingFailed") for e in self.events(kind)}

            wanted = {(s, k) for s in ct_studies for k in kinds}
            _wait("routing outcomes", len(wanted), lambda: len(routed() & wanted), args.timeout)
            received = sum(1 for p in receiver.rglob("*") if p.is_file())
            print(f"  {len(ct_studies)} CT studies x {len(kinds)} destinations: "
                  f"RoutingCompleted: {len(self.events('Dicom.RoutingCompleted'))}, "
                  f"RoutingFailed: {len(self.events('Dicom.RoutingFailed'))}; files received by storescp: {received}")

            print("\n== 8. Events of this run (the fabric's journal: .devhost/events.jsonl) ==")
            counts = Counter(str(e.get("type") or e.get("eventType")) for e in self.events())
            print(_table(sorted((k, str(n)) for k, n in counts.items()), ("event type", "count")))
            print('\nTry: curl -H "Authorization: Bearer $(python -m devhost token)" '
                  f"'{local.base_url}/ingest/status'\n"
                  "     python -m tools upload <your DICOM folder>\n"
                  "     python -m tools config get rules")
            viewer = (stack.read_state(args.state_dir).get("static") or {}).get("url")
            if viewer:
                print(f"\n== 9. Read the studies in OHIF: {viewer} ==\n"
                      "  Sign in on the development issuer's page (tick 'reader'), open a CT study (Basic Viewer) and\n"
                      "  double-click its 'SEG AI dicomflow-body' series to overlay the AI segmentation.\n"
                      f"  The slide opens in OHIF's microscopy mode: {viewer.rstrip('/')}/microscopy?"
                      f"StudyInstanceUIDs={slide}\n"
                      "  (If the demo started the stack it stops it at the end: run 'make up', the data stays.)")
            return 0
        finally:
            if scp is not None:
                scp.terminate()
                try:
                    scp.wait(10)
                except subprocess.TimeoutExpired:
                    scp.kill()


def _start_storescp(receiver: Path, preferred: int = 0) -> tuple[subprocess.Popen[bytes] | None, int]:
    """dcmtk's storescp listening on ``preferred`` if it is free, else on a free port (another process may take
    a free port first: then try again)."""
    import socket

    for attempt in range(4):
        port = preferred if attempt == 0 and preferred else stack.free_port()
        scp = subprocess.Popen(["storescp", "-od", str(receiver), "-aet", "DEMO_SCP", "+B", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while scp.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            except OSError:
                time.sleep(0.1)
                continue
            if scp.poll() is None:  # it is ours that answers, not another process on that port
                return scp, port
        scp.kill()
        scp.wait()
    return None, 0


def _first(d: dict[str, Any], tag: str) -> str:
    val = d.get(tag, {}).get("Value", [""])
    first = val[0] if val else ""
    return str(first.get("Alphabetic", "")) if isinstance(first, dict) else str(first)
