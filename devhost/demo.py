"""``python -m devhost demo`` (``make demo``): show a newcomer that the local stack is alive.

Starts the stack in the background unless it already runs, prints the health of each dependency
and the app's functions in a table, and stops what it started (a stack that was already up is
left running).

PLACEHOLDER: the ingest demo (upload a synthetic study, watch it archived, indexed, queried
over DICOMweb, inferred and routed) is added at the marked place in :func:`run` by its owner.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
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
              "(key: python -m devhost key --events); function key: python -m devhost key")

        # --- INGEST DEMO GOES HERE -------------------------------------------------------------
        # Upload a synthetic study to the inbox (devhost.upload / devhost.synth), wait for each
        # outcome via GET /api/ingest/status, then query it back over DICOMweb and show the
        # events journal (state.read_journal(state_dir)). Keep it readable: a table per step.
        # -----------------------------------------------------------------------------------------

        return 0 if status == 200 else 1
    finally:
        if started:
            print("\nStopping what the demo started...")
            runtime.down(argparse.Namespace(state_dir=str(state_dir)))
            sys.stdout.flush()
