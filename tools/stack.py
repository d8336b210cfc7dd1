"""Where the app's storage and event topic are: the running local stack, or an Azure account by identity.

The local stack is found through the devhost's state files, read as plain JSON (the devhost's
documented interface, devhost/state.py; nothing of the devhost is imported): ``state.json`` gives
the ports and the ``endpoints`` (``storage`` connection string, ``events_endpoint``, ``http_url``)
and ``keys.json`` the function and event keys. In Azure the same commands take
``--account-url https://<account>.blob.core.windows.net`` (and ``--events-endpoint`` for the custom
topic) and sign in with ``DefaultAzureCredential`` (``az login``, a managed identity, environment
credentials): no keys.

Every command builds the app's own :class:`shared.config.Settings` from what it found, and the app's
composition root (:class:`shared.services.Services`) from them: the storage and event clients are the app's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost import procs, state  # the devhost's documented helpers: local processes, its state files
from shared.config import EVENTS_CONNECTION, STORAGE_CONNECTION, Settings, SettingsError
from tools.cli import CommandError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = ROOT / ".devhost"
#: Setting that carries the event fabric's key locally (shared/config.py reads it).
EVENTS_LOCAL_KEY = "DICOMFLOW_EVENTS_LOCAL_KEY"
STACK_HINT = "Is the local stack up? Run 'make up' (or 'python -m devhost up --detach') and try again."


class StackError(CommandError):
    """Nothing to talk to; the message says what to do (the CLI prints it and exits 1)."""


_read_json = procs.read_json
_alive = procs.pid_alive


@dataclass(frozen=True)
class LocalStack:
    """A running devhost, as its state files describe it."""

    state_dir: Path
    pid: int
    http_port: int
    fabric_port: int
    route_prefix: str
    endpoints: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The app's HTTP base, route prefix included (``http://127.0.0.1:7071/api``)."""
        origin = self.endpoints.get("http_url") or f"http://127.0.0.1:{self.http_port}"
        prefix = self.route_prefix.strip("/")
        return origin.rstrip("/") + (f"/{prefix}" if prefix else "")

    @property
    def storage(self) -> str | None:
        return self.endpoints.get("storage")

    @property
    def events_endpoint(self) -> str:
        return self.endpoints.get("events_endpoint") or f"http://127.0.0.1:{self.fabric_port}/api/events"

    def app_env(self) -> dict[str, str]:
        """App settings that point the app's clients at this stack."""
        env = {f"{EVENTS_CONNECTION}__topicEndpointUri": self.events_endpoint}
        if self.storage:
            env[STORAGE_CONNECTION] = self.storage
        if self.keys.get("events"):
            env[EVENTS_LOCAL_KEY] = self.keys["events"]
        return env


def read_state(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """The devhost's ``state.json`` (empty when none runs there)."""
    st = _read_json(Path(state_dir) / "state.json")
    return st if isinstance(st, dict) else {}


def published_events(state_dir: Path | str = DEFAULT_STATE_DIR, *, since: float = 0.0) -> list[dict[str, Any]]:
    """Events the devhost's fabric accepted (its journal ``events.jsonl``), optionally since a time."""
    out: list[dict[str, Any]] = []
    for rec in state.read_journal(Path(state_dir), "published"):
        if since:
            try:
                if dt.datetime.fromisoformat(str(rec.get("at"))).timestamp() < since:
                    continue
            except ValueError:
                continue
        out.append(rec.get("event") or {})
    return out

free_port = procs.free_port  # the devhost's allocator: reserved, outside the ephemeral range


def read_keys(state_dir: Path | str = DEFAULT_STATE_DIR) -> dict[str, str]:
    """The devhost's local keys (``function``, ``events``), empty when it never ran there."""
    keys = _read_json(Path(state_dir) / "keys.json")
    return {str(k): str(v) for k, v in keys.items()} if isinstance(keys, dict) else {}


def local_token(state_dir: Path | str = DEFAULT_STATE_DIR, *, roles: tuple[str, ...] = ("reader",),
                minutes: float = 120.0, user: str = "tools") -> str | None:
    """A bearer token of the running devhost's development issuer (``python -m devhost token``: the
    runtime's own command, so this package imports nothing of devhost), or None without a stack."""
    argv = [sys.executable, "-m", "devhost", "token", "--state-dir", str(state_dir), "--minutes", str(minutes),
            "--user", user]
    for role in roles:
        argv += ["--role", role]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    token = done.stdout.strip()
    return token if done.returncode == 0 and token else None


def auth_headers(credential: str | None) -> dict[str, str]:
    """A bearer token goes as ``Authorization: Bearer``; anything else is a Functions key (machine clients)."""
    if not credential:
        return {}
    if credential.count(".") == 2:  # a JWT: header.payload.signature
        return {"Authorization": f"Bearer {credential}"}
    return {"x-functions-key": credential}


def find_local(state_dir: Path | str = DEFAULT_STATE_DIR) -> LocalStack | None:
    """The running devhost of ``state_dir``, or None when none runs there."""
    state_dir = Path(state_dir)
    st = _read_json(state_dir / "state.json")
    if not isinstance(st, dict) or not _alive(st.get("pid")) or not st.get("ready"):
        return None
    return LocalStack(
        state_dir=state_dir, pid=int(st["pid"]), http_port=int(st.get("http_port", 7071)),
        fabric_port=int(st.get("fabric_port", 7072)), route_prefix=str(st.get("route_prefix", "api") or ""),
        endpoints={str(k): str(v) for k, v in (st.get("endpoints") or {}).items()},
        keys=read_keys(state_dir),
    )


# --- options every command that touches storage takes ---------------------------------------------

def add_target_arguments(parser: argparse.ArgumentParser, *, events: bool = False) -> None:
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="the local devhost's state folder (default .devhost)")
    parser.add_argument("--account-url", metavar="URL",
                        help="an Azure storage account, e.g. https://<account>.blob.core.windows.net, signed in "
                             "with DefaultAzureCredential (az login or a managed identity; no keys)")
    parser.add_argument("--connection-string", metavar="CS",
                        help="a storage connection string (Azurite only; default: the running devhost's)")
    if events:
        parser.add_argument("--events-endpoint", metavar="URL",
                            help="the custom Event Grid topic endpoint (with --account-url; identity sign-in)")
    parser.add_argument("--region", metavar="KEY",
                        help="the region this account belongs to (DICOMFLOW_REGION, e.g. primary): its containers "
                             "are named <container>-<key>; default: the DICOMFLOW_REGION setting, else one region")
    parser.add_argument("--peer-region", metavar="KEY",
                        help="the other region of the pair (DICOMFLOW_PEER_REGION, e.g. secondary)")


def settings_for(args: argparse.Namespace, env: dict[str, str] | None = None) -> tuple[Settings, str]:
    """The app's settings for the chosen target, and a few words saying which target it is."""
    env = dict(os.environ) if env is None else env
    region = {k: v for k, v in (("DICOMFLOW_REGION", getattr(args, "region", None)),
                                ("DICOMFLOW_PEER_REGION", getattr(args, "peer_region", None))) if v is not None}
    for k in ("DICOMFLOW_REGION", "DICOMFLOW_PEER_REGION"):
        if k not in region and env.get(k):
            region[k] = env[k]
    try:
        return _settings_for(args, env, region)
    except SettingsError as exc:
        raise StackError(str(exc)) from None


def _settings_for(args: argparse.Namespace, env: dict[str, str], region: dict[str, str]) -> tuple[Settings, str]:
    events = getattr(args, "events_endpoint", None)
    if getattr(args, "account_url", None):
        url = str(args.account_url).rstrip("/")
        if not url.startswith("https://"):
            raise StackError(f"--account-url {url!r}: give the blob endpoint, https://<account>.blob.core.windows.net")
        values = {f"{STORAGE_CONNECTION}__blobServiceUri": url, **region}
        if events:
            values[f"{EVENTS_CONNECTION}__topicEndpointUri"] = events
        return Settings.from_env(values), url
    if getattr(args, "connection_string", None):
        values = {STORAGE_CONNECTION: args.connection_string, **region}
        if events:
            values[f"{EVENTS_CONNECTION}__topicEndpointUri"] = events
        return Settings.from_env(values), "the given connection string"
    local = find_local(args.state_dir)
    if local is not None and local.storage:
        return Settings.from_env({**env, **local.app_env(), **region}), f"the local devhost (pid {local.pid})"
    settings = Settings.from_env({**env, **region})
    if settings.storage.connection_string or settings.storage.blob_service_uri:
        return settings, f"the {STORAGE_CONNECTION} setting"
    raise StackError(f"No storage to talk to: no devhost runs in {args.state_dir} and {STORAGE_CONNECTION} is not "
                     f"set. {STACK_HINT} For Azure pass --account-url.")
