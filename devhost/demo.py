"""``python -m devhost demo`` (``make demo``): show a newcomer that the local stack is alive.

Starts the stack in the background unless it already runs, prints the health of each dependency
and the app's functions in a table, and stops what it started (a stack that was already up is
left running).

Then the pipeline, step by step (:func:`scenario`): a synthetic corpus (several patients,
non-ASCII names, CT/MR/DBT/DX/SR and a deliberately broken set) is uploaded to the inbox
with a progress bar; every file's outcome is shown (archived, or quarantined with its
reason); studies settle and become stable; QIDO-RS finds them with ``dicomweb-client``;
the built-in AI model writes a SEG and an SR that appear in QIDO as derived series; the
routing rule sends each stable CT study to a local DICOM receiver (dcmtk's storescp, when
installed) and a reading-group worklist. The demo's rules and model registry are written to
the ``dicomflow-config`` container, where a hospital puts its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devhost import runtime, state

HELP = "start the stack if needed, show it is alive, stop what was started"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runtime.add_up_arguments(parser)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - our own loopback URL
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


def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    st = state.read_json(state.state_path(state_dir))
    started = False
    if not (isinstance(st, dict) and state.pid_alive(st.get("pid"))):
        print("Starting the local stack (Azurite, event fabric, blob watcher, function host)...")
        args.detach = True
        defaults = {"DICOMFLOW_STABLE_AGE_SECONDS": str(DEMO_STABLE_AGE), **LOCAL_AUTH}
        for k, v in defaults.items():
            if not any(e.startswith(k + "=") for e in args.env):
                args.env.append(f"{k}={v}")
        code = runtime.up(args)
        if code != 0:
            return code
        started = True
        st = state.read_json(state.state_path(state_dir))
    try:
        assert isinstance(st, dict)
        prefix = str(st.get("route_prefix", "api")).strip("/")
        base = f"http://127.0.0.1:{st['http_port']}/{prefix}"
        status, body = _get(f"{base}/health")
        deps = (body or {}).get("dependencies", {}) if isinstance(body, dict) else {}
        print(f"\nHealth: GET {base}/health -> {status} ({(body or {}).get('status', '?')})\n")
        print(_table([(name, "up" if d.get("up") else "DOWN", f"{d.get('ms', 0)} ms", d.get("error", ""))
                      for name, d in deps.items()], ("dependency", "state", "latency", "error")))
        print(f"\nFunctions ({len(st.get('functions', []))}), served by the devhost on {base}:\n")
        print(_table([(f["name"], f["trigger"], f["detail"].split(": ", 1)[-1]) for f in st.get("functions", [])],
                     ("function", "trigger", "binding")))
        print(f"\nEvents: publish to http://127.0.0.1:{st['fabric_port']}/api/events "
              "(key: python -m devhost key --events); API tokens: python -m devhost token --role reader|writer|admin")

        if status != 200:
            print("\nA dependency is down: see the table above (Azurite log: .azurite/azurite.log).")
            return 1
        code = scenario(st, base, state_dir)
        viewer = (st.get("static") or {}).get("url")
        if code == 0 and viewer:
            print(f"\n== 9. Read the studies in OHIF: {viewer} ==\n"
                  "  Sign in on the development issuer's page (tick 'reader'), open a CT study (Basic Viewer) and\n"
                  "  double-click its 'SEG AI dicomflow-body' series to overlay the AI segmentation."
                  + ("\n  The demo stops the stack it started: run 'make up' (the data stays) and open the link then."
                     if started else ""))
        return code
    finally:
        if started:
            print("\nStopping what the demo started...")
            runtime.down(argparse.Namespace(state_dir=str(state_dir)))
            sys.stdout.flush()


# -- the pipeline scenario ---------------------------------------------------------------------------

DEMO_STABLE_AGE = 4
#: Sign-in for the API: tokens of the devhost's development issuer (as the Makefile's 'up' sets it).
LOCAL_AUTH = {"DICOMFLOW_AUTH_ISSUER": "{devhost:issuer}", "DICOMFLOW_AUTH_AUDIENCE": "api://devhost"}
DEMO_RULES = {
    "rules": [
        {"name": "ct-to-reading-room", "trigger": "Dicom.StudyStable",
         "conditions": {"Modality": "CT", "derived": False},
         "destinations": [{"type": "dicom", "aeTitle": "DEMO_SCP", "host": "127.0.0.1", "port": 0},
                          {"type": "worklist", "group": "body-ct"}],
         "retry": {"maxAttempts": 3, "backoffSeconds": 1}},
    ],
}


def _wait(what: str, total: int, count: Callable[[], int], timeout: float) -> int:
    """A bounded wait with a progress bar; returns how many arrived."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    done = 0
    with tqdm(total=total, desc=what, unit="", leave=True) as bar:
        while time.monotonic() < deadline:
            now = min(count(), total)
            bar.update(now - done)
            done = now
            if done >= total:
                break
            time.sleep(0.5)
    return done


def _events(state_dir: Path, kind: str) -> list[dict[str, Any]]:
    out = []
    for rec in state.read_journal(state_dir, "published"):
        ev = rec.get("event", {})
        if ev.get("type") == kind or ev.get("eventType") == kind:
            out.append(ev)
    return out


def scenario(st: dict[str, Any], base: str, state_dir: Path) -> int:
    from azure.storage.blob import BlobServiceClient
    from dicomweb_client.api import DICOMwebClient

    from devhost.azurite import connection_string, free_port
    from devhost.corpus import CorpusOptions, load_manifest, write_corpus
    from devhost.upload import summarize, upload_and_wait

    ports = (st.get("azurite") or {}).get("ports")
    conn = connection_string(*ports) if ports else None
    if conn is None:
        print("The devhost state has no Azurite ports: restart the stack (make down; make demo).")
        return 1
    from devhost.issuer import mint

    if not st.get("issuer"):
        print("The devhost state has no OpenID issuer: restart the stack (make down; make demo).")
        return 1
    key = mint(state_dir, str(st["issuer"]), roles=["reader", "writer"], minutes=120, user="demo")
    auth = {"Authorization": f"Bearer {key}"}
    work = state_dir / "demo"
    if work.exists():
        shutil.rmtree(work)
    receiver = work / "received"
    receiver.mkdir(parents=True)
    svc = BlobServiceClient.from_connection_string(conn)

    # 1. A local DICOM receiver for the routing rule, when dcmtk is installed.
    scp = None
    rules = json.loads(json.dumps(DEMO_RULES))
    if shutil.which("storescp"):
        port = free_port()
        scp = subprocess.Popen(["storescp", "-od", str(receiver), "-aet", "DEMO_SCP", "+B", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rules["rules"][0]["destinations"][0]["port"] = port
    else:
        rules["rules"][0]["destinations"].pop(0)
        print("\n(dcmtk's storescp is not installed: routing goes to the worklist only; 'make peers' adds it)")
    try:
        print("\n== 1. Configuration (dicomflow-config): built-in AI model on, one routing rule ==")
        config = svc.get_container_client("dicomflow-config")
        if not config.exists():
            config.create_container()
        config.upload_blob("inference/models.json", b'{"models": [{"kind": "builtin"}]}', overwrite=True)
        config.upload_blob("routing/rules.json", json.dumps(rules).encode(), overwrite=True)
        print("  inference/models.json  built-in body segmentation (CT/MR volume in mL, 2-D area in cm2)")
        print("  routing/rules.json     stable CT studies -> " +
              ("DEMO_SCP (storescp) + " if scp else "") + "worklist 'body-ct'")

        print("\n== 2. A synthetic corpus (synthetic patients; names in five character sets) ==")
        corpus = work / "corpus"
        write_corpus(corpus, CorpusOptions(patients=3, slices=12, rows=128, cols=128, seed=2026), progress=True)
        manifest = load_manifest(corpus)
        print(f"  {len(manifest['files'])} files in {corpus}")

        print("\n== 3. Upload to dicom-inbox; ingest runs on each BlobCreated event ==")
        outcomes = upload_and_wait([corpus], connection_string=conn, base_url=base, key=key, timeout=180,
                                   progress=True)
        table, ok = summarize(outcomes, waited=True)
        print(table)
        if not ok:
            print("Some files have no outcome yet: python -m devhost status; GET /api/ingest/status")
            return 1

        studies = sorted({e["study_uid"] for e in manifest["files"]
                          if e["expect"] == "archived" and e.get("study_uid")})
        print(f"\n== 4. Studies settle and become stable ({DEMO_STABLE_AGE} s without new instances here; "
              "60 s in Azure) ==")
        _wait("studies stable", len(studies), lambda: len({e["data"]["imageStudyInstanceUid"]
                                                             for e in _events(state_dir, "Dicom.StudyStable")
                                                             if e["data"]["imageStudyInstanceUid"] in studies}),
              timeout=120)

        print("\n== 5. QIDO-RS with dicomweb-client (GET /api/dicomweb/studies) ==")
        client = DICOMwebClient(f"{base}/dicomweb", headers=auth)
        found = client.search_for_studies(fields=["PatientName", "StudyDescription"])
        rows: list[tuple[str, ...]] = []
        for d in found:
            def v(tag: str, d: dict[str, Any] = d) -> str:
                val = d.get(tag, {}).get("Value", [""])
                first = val[0] if val else ""
                return first.get("Alphabetic", "") if isinstance(first, dict) else str(first)
            rows.append((v("00100010"), v("00080020"), "\\".join(d.get("00080061", {}).get("Value", [])),
                         v("00201206"), v("00201208"), v("0020000D")[-12:]))
        print(_table(rows, ("PatientName", "StudyDate", "Modalities", "Series", "Instances", "StudyUID (end)")))
        hits = client.search_for_studies(search_filters={"PatientName": "muller*"})
        print(f"\n  PatientName=muller* (case- and accent-insensitive) -> {len(hits)} study(ies)")

        print("\n== 6. AI: the built-in model writes a SEG and an SR per stable CT/MR/2-D series ==")
        inferred = _wait("inference results", 1, lambda: len(_events(state_dir, "Dicom.InferenceCompleted")),
                         timeout=120)
        if inferred:
            time.sleep(DEMO_STABLE_AGE + 2)  # the results are ingested like any upload
            derived = client.search_for_series(search_filters={"Modality": "SEG"}) + \
                client.search_for_series(search_filters={"Modality": "SR"})
            print(f"  {len(_events(state_dir, 'Dicom.InferenceCompleted'))} InferenceCompleted event(s); "
                  f"QIDO finds {len(derived)} SEG/SR series (indexed as derived)")
        else:
            print("  no inference result yet: python -m devhost status shows the inference function's runs")

        print("\n== 7. Routing: stable CT studies to the reading room ==")
        routed = _wait("routing outcomes", 1, lambda: len(_events(state_dir, "Dicom.RoutingCompleted")) +
                       len(_events(state_dir, "Dicom.RoutingFailed")), timeout=120)
        received = sum(1 for p in receiver.rglob("*") if p.is_file())
        print(f"  RoutingCompleted: {len(_events(state_dir, 'Dicom.RoutingCompleted'))}, "
              f"RoutingFailed: {len(_events(state_dir, 'Dicom.RoutingFailed'))}; "
              f"files received by storescp: {received}" if routed else "  no routing outcome yet")

        print("\n== 8. Events published (the fabric's journal: .devhost/events.jsonl) ==")
        counts: dict[str, int] = {}
        for rec in state.read_journal(state_dir, "published"):
            ev = rec.get("event", {})
            kind = str(ev.get("type") or ev.get("eventType"))
            counts[kind] = counts.get(kind, 0) + 1
        print(_table(sorted(((k, str(n)) for k, n in counts.items())), ("event type", "count")))
        print(f"\nTry: curl -H \"Authorization: Bearer $(python -m devhost token)\" '{base}/ingest/status'\n"
              f"     python -m devhost upload <your DICOM folder>")
        return 0
    finally:
        if scp is not None:
            scp.terminate()
            try:
                scp.wait(10)
            except subprocess.TimeoutExpired:
                scp.kill()
