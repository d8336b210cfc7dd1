"""A Python API for end-to-end tests: run ``python -m devhost up`` in a subprocess.

    from devhost.testing import DevHostProcess

    with DevHostProcess(app="my_app:app", events="events.json", azurite=azurite,
                        settings="local.settings.example.json", env={"MY_SETTING": "1"}) as dh:
        requests.get(f"{dh.base_url}/things", headers={"x-functions-key": dh.key})
        dh.wait_for_event(lambda e: e.get("type") == "My.ThingCreated")

It runs on free ports (HTTP and fabric) against the given, already running Azurite (reused, never
stopped), with its own state dir (a temporary one unless given), and waits until the host is
ready. The app's settings come from ``settings`` (a local.settings.json-style file, ``{devhost:...}``
placeholders expanded; default: the ``local.settings.json`` next to the app module, if any) and
``env`` (``--env``, wins). ``token()``/``bearer()`` sign tokens with its development OpenID
issuer (``issuer``). ``kill()`` is a SIGKILL (crash tests); ``restart()`` starts it again on the same ports and
state dir (the watcher remembers what it announced).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devhost import issuer as dev_issuer
from devhost import state
from devhost.azurite import ROOT, Azurite
from devhost.procs import ManagedProcess, ProcessError, free_port, port_open


class DevHostError(ProcessError):
    """The devhost did not start; the message carries the tail of its log."""


class DevHostProcess(ManagedProcess):
    error = DevHostError
    name = "devhost"

    def __init__(self, app: str = "function_app:app", events: str | Path | None = None, *,
                 azurite: Azurite, env: Mapping[str, str] | None = None, state_dir: str | Path | None = None,
                 watch_from_now: bool = False, timeout: float = 60.0, cwd: str | Path = ROOT,
                 extra_args: list[str] | None = None, settings: str | Path | None = None) -> None:
        self.app = app
        self.settings = Path(settings).resolve() if settings else None
        self.events = Path(events).resolve() if events else None  # None: devhost's default lookup
        self.azurite = azurite
        self.env = dict(env or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="devhost-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.watch_from_now = watch_from_now
        self.extra_args = list(extra_args or [])  # more 'up' options, e.g. ["--cors", "*"]
        self.http_port = free_port()
        self.fabric_port = free_port()
        super().__init__(cwd=Path(cwd), log_path=self.state_dir / "devhost-test.log", timeout=timeout)
        keys = state.load_keys(self.state_dir)
        dev_issuer.load_keys(self.state_dir)  # created here, before the host or a test could race for it
        self.key = keys["function"]
        self.events_key = keys["events"]

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api"

    @property
    def events_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.fabric_port}/api/events"

    @property
    def issuer(self) -> str:
        """The development OpenID issuer's URL (what ``{devhost:issuer}`` expands to)."""
        return dev_issuer.issuer_url(self.fabric_port)

    def token(self, *roles: str, minutes: float = 10.0, audience: str = dev_issuer.DEFAULT_AUDIENCE,
              user: str = "test") -> str:
        """A bearer token of this stack's issuer with these app roles."""
        return dev_issuer.mint(self.state_dir, self.issuer, roles=roles, audience=audience, minutes=minutes, user=user)

    def bearer(self, *roles: str, **kwargs: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for these roles."""
        return {"Authorization": f"Bearer {self.token(*roles, **kwargs)}"}

    # -- lifecycle -----------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "devhost", "up", "--app", self.app,
                "--http-port", str(self.http_port), "--fabric-port", str(self.fabric_port),
                "--azurite-ports", ",".join(map(str, self.azurite.ports)), "--state-dir", str(self.state_dir)]
        if self.events:
            argv += ["--events", str(self.events)]
        if self.settings:
            argv += ["--settings", str(self.settings)]
        for k, v in self.env.items():
            argv += ["--env", f"{k}={v}"]
        if self.watch_from_now:
            argv.append("--watch-from-now")
        return argv + self.extra_args

    def ready(self) -> bool:
        st = state.read_json(state.state_path(self.state_dir))
        return (isinstance(st, dict) and self.process is not None and st.get("pid") == self.process.pid
                and bool(st.get("ready")) and port_open(self.http_port))

    def start(self) -> DevHostProcess:
        if not self.azurite.answering():
            raise DevHostError("The given Azurite does not answer: start it first (tests: the 'azurite' fixture)")
        self.launch()
        return self

    def restart(self) -> DevHostProcess:
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> DevHostProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- observation ---------------------------------------------------------------------------------
    def published_events(self, topic: str | None = None, type: str | None = None) -> list[dict[str, Any]]:
        """Events the fabric accepted (both schemas), oldest first, optionally by topic and type."""
        out = []
        for rec in state.read_journal(self.state_dir, "published"):
            e = rec["event"]
            if topic and rec.get("topic") != topic:
                continue
            if type and (e.get("type") or e.get("eventType")) != type:
                continue
            out.append(e)
        return out

    def dead_lettered(self) -> list[dict[str, Any]]:
        """Journal records of dead-lettered events (topic, subscription, id, blob)."""
        return state.read_journal(self.state_dir, "deadlettered")

    def wait_for_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                       topic: str | None = None) -> dict[str, Any]:
        """Poll the journal until an event matches (bounded); raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.published_events(topic):
                if predicate(e):
                    return e
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout:.0f} s")
            time.sleep(0.1)
