"""``up``/``down``/``status``/``key``: start and stop the local stack.

``up`` validates everything that can be checked before anything starts (events.json, the app's
settings, ports, the Azurite binary, the app import, subscriptions naming real functions), so a bad
input gives one line on stderr, exit code 2, and leaves nothing running. Then it starts Azurite
(unless one already answers on the given ports), the event fabric, the blob watcher and the function
host (or ``func start`` with ``--core-tools``) in one asyncio loop, records every process it starts in
``<state-dir>/children.json``, writes ``<state-dir>/state.json`` and runs until Ctrl-C / SIGTERM.
``up --detach`` runs the same command in the background and returns when the host listens with every
function loaded (and, with ``--ready-path``, when that path of the app answers 200).

The app is known only through ``--app``, its settings file (:mod:`devhost.settings`) and ``--events``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devhost import settings, state
from devhost.azurite import DEFAULT_PORTS, ROOT, Azurite, AzuriteError, azurite_binary, port_open, terminate_pid
from devhost.subscriptions import EventsConfig, EventsConfigError
from devhost.subscriptions import load as load_events

log = logging.getLogger("devhost")

#: Where ``--events`` is looked for when not given, relative to the app module's folder (azd's layout keeps
#: Bicep and what it loads under infra/).
EVENTS_CANDIDATES = ("events.json", "infra/events.json")
HTTP_PORT = 7071
FABRIC_PORT = 7072
STATIC_PORT = 3000


class StartupError(RuntimeError):
    """``up`` cannot start; the message is one line that says what to do."""


# --- arguments -----------------------------------------------------------------------------------

def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", default=str(state.DEFAULT_DIR),
                        help="where keys, the pid/state file and the event journal live (default .devhost)")


def add_up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detach", action="store_true", help="run in the background; return when healthy")
    parser.add_argument("--app", default="function_app:app", help="the FunctionApp as module:attr")
    parser.add_argument("--settings", default=None, metavar="PATH",
                        help="the app's settings file (default: local.settings.json next to the app module)")
    parser.add_argument("--events", default=None, metavar="PATH",
                        help="the Event Grid subscriptions file (default: events.json or infra/events.json next to "
                             "the app module; none: no subscriptions)")
    parser.add_argument("--http-port", type=int, default=HTTP_PORT)
    parser.add_argument("--fabric-port", type=int, default=FABRIC_PORT)
    parser.add_argument("--azurite-ports", default=",".join(map(str, DEFAULT_PORTS)),
                        help="blob,queue,table ports; an Azurite answering there is reused")
    parser.add_argument("--azurite-dir", default=str(ROOT / ".azurite"), help="Azurite's data folder")
    add_state_dir(parser)
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="app setting, overrides the settings file; {devhost:...} placeholders expand "
                             "(repeatable)")
    parser.add_argument("--core-tools", action="store_true", help="run 'func start' and deliver to its webhooks")
    parser.add_argument("--cors", default=None, metavar="ORIGINS",
                        help="comma-separated allowed origins ('*' for any); default: Host.CORS in local.settings.json")
    parser.add_argument("--http-v2-strict", action="store_true",
                        help="when the app imports the FastAPI extension, pass EVERY HTTP function the FastAPI "
                             "request, as the Azure Python worker does")
    parser.add_argument("--watch-from-now", action="store_true",
                        help="on a fresh state dir, do not announce blobs that already exist")
    parser.add_argument("--ready-path", default=None, metavar="PATH",
                        help="--detach: also wait until GET PATH on the host answers 200 (e.g. /api/health)")
    parser.add_argument("--timeout", type=float, default=90.0, help="--detach: seconds to wait until ready")
    parser.add_argument("--static", default=None, metavar="DIR",
                        help="also serve this folder of static files (a web app such as a viewer) at an origin root")
    parser.add_argument("--static-port", type=int, default=STATIC_PORT, help="port for --static (default 3000)")


def up_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m devhost up`` command line (without --detach) for a parsed namespace."""
    argv = [sys.executable, "-m", "devhost", "up", "--app", args.app,
            "--http-port", str(args.http_port), "--fabric-port", str(args.fabric_port),
            "--azurite-ports", args.azurite_ports, "--azurite-dir", str(args.azurite_dir),
            "--state-dir", str(args.state_dir)]
    if args.events:
        argv += ["--events", str(Path(args.events).resolve())]
    if args.settings:
        argv += ["--settings", str(Path(args.settings).resolve())]
    for kv in args.env:
        argv += ["--env", kv]
    if args.core_tools:
        argv.append("--core-tools")
    if args.watch_from_now:
        argv.append("--watch-from-now")
    if args.cors is not None:
        argv += ["--cors", args.cors]
    if args.http_v2_strict:
        argv.append("--http-v2-strict")
    if args.static:
        argv += ["--static", str(Path(args.static).resolve()), "--static-port", str(args.static_port)]
    return argv


# --- preparation (no process started) --------------------------------------------------------------

@dataclass
class Prepared:
    args: argparse.Namespace
    state_dir: Path
    config: EventsConfig
    azurite: Azurite
    keys: dict[str, str]
    env: dict[str, str]
    app: Any = None
    app_dir: Path = ROOT
    settings_file: Path | None = None
    host_config: Any = None
    specs: dict[str, Any] = field(default_factory=dict)
    cors: list[str] = field(default_factory=list)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return not port_open(port)


def _parse_ports(text: str) -> tuple[int, int, int]:
    try:
        ports = tuple(int(p) for p in text.split(","))
    except ValueError:
        ports = ()
    if len(ports) != 3 or not all(0 < p < 65536 for p in ports):
        raise StartupError(f"--azurite-ports {text!r} is not three ports: give blob,queue,table e.g. 10000,10001,10002")
    return ports


def _leftovers(state_dir: Path, azurite: Azurite) -> None:
    """Deal with what a devhost that died (SIGKILL, power cut) left running: adopt its Azurite when it
    serves the same ports and folder (so ``down`` stops it), stop everything else it started."""
    children = state.read_children(state_dir)
    for role, rec in children.items():
        if not state.child_alive(rec):
            continue
        if (role == "azurite" and rec.get("ports") == list(azurite.ports)
                and rec.get("data_dir") == str(azurite.location.resolve()) and azurite.answering()):
            azurite.adopted_pid = int(rec["pid"])
            log.info("Adopting Azurite (pid %d) left running by a devhost that stopped without cleaning up",
                     rec["pid"])
            continue
        log.info("Stopping %s (pid %d) left running by a devhost that stopped without cleaning up", role, rec["pid"])
        _stop_child(rec)
    state.remove(state.children_path(state_dir))
    if azurite.adopted_pid is not None:
        state.record_child(state_dir, "azurite", azurite.adopted_pid, ports=list(azurite.ports),
                           data_dir=str(azurite.location.resolve()))


def prepare(args: argparse.Namespace) -> Prepared:
    state_dir = Path(args.state_dir).resolve()
    module_dir = _module_dir(args.app)
    events_path = Path(args.events) if args.events else next(
        (module_dir / c for c in EVENTS_CANDIDATES if (module_dir / c).is_file()), None)
    try:
        config = load_events(events_path) if events_path else EventsConfig({}, ())
    except EventsConfigError as exc:
        raise StartupError(str(exc)) from None
    if events_path is None:
        log.warning("No events file (--events, or %s next to the app): no Event Grid subscriptions",
                    " or ".join(EVENTS_CANDIDATES))
    args.events = str(events_path.resolve()) if events_path else None
    running = state.read_json(state.state_path(state_dir))
    host = state.read_children(state_dir).get("host")
    pid = (running.get("pid") if isinstance(running, dict) and state.pid_alive(running.get("pid"))
           else host["pid"] if host and state.child_alive(host) else None)
    if pid:
        raise StartupError(f"devhost is already running (pid {pid}, state dir {state_dir}): "
                           "run 'python -m devhost down' first")
    blob, queue, table = _parse_ports(args.azurite_ports)
    azurite = Azurite(blob, queue, table, location=Path(args.azurite_dir))
    _leftovers(state_dir, azurite)
    for flag, port in (("--http-port", args.http_port), ("--fabric-port", args.fabric_port)):
        if not _port_free(port):
            raise StartupError(f"Port {port} is already in use: stop what uses it (maybe 'python -m devhost down') "
                               f"or choose another with {flag}")
    if args.http_port == args.fabric_port:
        raise StartupError("--http-port and --fabric-port must differ")
    if args.static:
        if not (Path(args.static) / "index.html").is_file():
            raise StartupError(f"--static {args.static}: no index.html there; build the site into it first")
        if args.static_port in (args.http_port, args.fabric_port) or not _port_free(args.static_port):
            raise StartupError(f"Port {args.static_port} is already in use: stop what uses it or choose another "
                               "with --static-port")
    if args.core_tools and shutil.which("func") is None:
        raise StartupError("Azure Functions Core Tools ('func') is not on PATH: install it, or run without "
                           "--core-tools to use the devhost's own function host")
    if not azurite.answering():
        busy = [p for p in azurite.ports if port_open(p)]
        if busy:
            raise StartupError(f"Port(s) {', '.join(map(str, busy))} answer but not as a complete Azurite: stop "
                               "that process or choose other --azurite-ports")
        try:
            azurite_binary()
        except AzuriteError as exc:
            raise StartupError(str(exc)) from None
        if shutil.which("node") is None:
            raise StartupError("Node.js is not on PATH: install Node 20 to run Azurite")
    keys = state.load_keys(state_dir)
    from devhost import issuer as dev_issuer

    dev_issuer.load_keys(state_dir)  # the signing key exists before anyone mints a token with it
    env: dict[str, str] = {}
    prepared = Prepared(args, state_dir, config, azurite, keys, env)

    from devhost.host import HostConfig, HostError, discover, load_app

    # Settings before the app is imported: the host's own < the settings file < --env.
    try:
        file = settings.read_file(Path(args.settings) if args.settings else module_dir / settings.FILE_NAME,
                                  required=bool(args.settings))
        env.update(settings.app_settings(prepared, file, args.env))
    except settings.SettingsError as exc:
        raise StartupError(str(exc)) from None
    if file.path is None:
        log.warning("No %s next to the app (%s): the app gets only --env settings (copy the app's "
                    "local.settings.example.json, or pass --settings PATH)", settings.FILE_NAME, module_dir)
    prepared.settings_file = file.path
    prepared.cors = (args.cors if args.cors is not None else file.cors).split(",")
    os.environ.update(env)
    try:
        prepared.app, prepared.app_dir = load_app(args.app)
        prepared.host_config = HostConfig.load(prepared.app_dir)
        prepared.specs = discover(prepared.app, prepared.host_config)
    except HostError as exc:
        raise StartupError(str(exc)) from None
    except ValueError as exc:  # azure.functions' own checks, e.g. two functions with one name
        raise StartupError(f"{args.app}: {exc}") from None
    from devhost.host import classic_http_functions, http_v2_enabled

    classic = classic_http_functions(prepared.specs)
    if http_v2_enabled(os.environ) and classic:
        log.warning("The app imports azurefunctions-extensions-http-fastapi, so in Azure the Python worker passes "
                    "EVERY HTTP function a FastAPI Request and expects a FastAPI response; these are written for "
                    "func.HttpRequest and will fail there: %s. Port them, or run with --http-v2-strict to see it "
                    "here.", ", ".join(classic))
    for sub in config.subscriptions:
        spec = prepared.specs.get(sub.function)
        if spec is None or spec.trigger_type != sub.endpoint:
            # Azure would refuse to create this subscription; locally its deliveries fail and are dead-lettered,
            # so one function in progress does not stop the whole stack.
            log.warning("%s: subscription %r names function %r, but the app has no %s function of that name: "
                        "its events will be dead-lettered (fix \"function\" or add the function)",
                        args.events, sub.name, sub.function, sub.endpoint)
    return prepared


def _module_dir(app_spec: str) -> Path:
    """The folder of the app module without importing it (local.settings.json sits there)."""
    import importlib.util

    for p in (str(Path.cwd()), str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        spec = importlib.util.find_spec(app_spec.partition(":")[0])
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise StartupError(f"Cannot find the app module {app_spec!r}: pass --app module:attr (importable from "
                           f"{Path.cwd()})")
    return Path(spec.origin).resolve().parent


# --- running ---------------------------------------------------------------------------------------

def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[%(asctime)s] %(message)s",
                        datefmt="%Y-%m-%dT%H:%M:%S")
    logging.Formatter.converter = time.gmtime
    for noisy in ("azure", "aiohttp.access", "urllib3", "uvicorn", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _serve(p: Prepared) -> None:
    from aiohttp import web

    from devhost.fabric import DeliveryTarget, Fabric, InProcessTarget, WebhookTarget
    from devhost.host import FunctionHost
    from devhost.watcher import BlobWatcher

    args = p.args
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    host = FunctionHost(p.specs, p.host_config, os.environ, p.keys["function"], p.app_dir, cors=p.cors,
                        strict_http_v2=args.http_v2_strict)
    func_proc: subprocess.Popen[bytes] | None = None
    target: DeliveryTarget = (WebhookTarget(f"http://127.0.0.1:{args.http_port}") if args.core_tools
                              else InProcessTarget(host))

    from azure.storage.blob import BlobServiceClient

    blob_service = BlobServiceClient.from_connection_string(p.azurite.connection_string)

    async def dead_letter(container: str, name: str, body: bytes) -> None:
        def write() -> None:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                blob_service.create_container(container)
            blob_service.get_blob_client(container, name).upload_blob(body, overwrite=True)

        await host.to_thread(write)

    journal = state.Journal(state.journal_path(p.state_dir))
    fabric = Fabric(p.config, p.keys["events"], journal, target, dead_letter)
    from devhost.issuer import PATH as ISSUER_PATH
    from devhost.issuer import IssuerApp, issuer_url

    issuer = issuer_url(args.fabric_port)
    unfinished = state.read_journal(p.state_dir)
    runners: list[web.AppRunner] = []
    tasks: list[asyncio.Task[Any]] = []
    state_file = state.state_path(p.state_dir)
    try:
        fabric_app = fabric.http_app()
        fabric_app.add_subapp(ISSUER_PATH, IssuerApp(p.state_dir, issuer).app())
        fabric_runner = web.AppRunner(fabric_app, access_log=None)
        await fabric_runner.setup()
        runners.append(fabric_runner)
        await web.TCPSite(fabric_runner, "127.0.0.1", args.fabric_port).start()
        if args.core_tools:
            func_proc = subprocess.Popen(["func", "start", "--port", str(args.http_port)], cwd=p.app_dir,
                                         env={**os.environ}, start_new_session=True)
            state.record_child(p.state_dir, "func", func_proc.pid, ports=[args.http_port], group=True)
        else:
            http_runner = web.AppRunner(host.http_app(), access_log=None)
            await http_runner.setup()
            runners.append(http_runner)
            await web.TCPSite(http_runner, "127.0.0.1", args.http_port).start()
            tasks += host.start_listeners()
        if args.static:
            from devhost.static import StaticSite

            static_runner = web.AppRunner(StaticSite(Path(args.static)).app(), access_log=None)
            await static_runner.setup()
            runners.append(static_runner)
            await web.TCPSite(static_runner, "127.0.0.1", args.static_port).start()
        fabric.resume(unfinished)
        watched = p.config.watched_containers()  # container -> its system topic in events.json

        def announce(events: list[dict[str, Any]]) -> None:
            for topic in dict.fromkeys(watched.values()):
                mine = [e for e in events if watched.get(_container_of(e)) == topic]
                if mine:
                    fabric.publish(topic, mine)

        watcher = BlobWatcher(blob_service, list(watched), p.state_dir / "watcher.json", announce,
                              from_now=args.watch_from_now)
        if watcher.containers:
            await host.to_thread(watcher.prepare)  # the watched containers exist once 'up' says ready
            tasks.append(host.spawn(watcher.run(host.to_thread, stopping)))

        # What other tools may read (no secrets: keys stay in keys.json).
        endpoints = settings.placeholder_values(p, [n for n in settings.PLACEHOLDERS if not n.endswith("_key")])

        def snapshot(ready: bool) -> dict[str, Any]:
            return {
                "pid": os.getpid(), "ready": ready, "mode": "core-tools" if args.core_tools else "devhost",
                "app": args.app, "events": args.events,
                "settings": str(p.settings_file) if p.settings_file else None,
                "http_port": args.http_port, "fabric_port": args.fabric_port, "issuer": issuer,
                "static": ({"dir": str(Path(args.static).resolve()), "url": f"http://127.0.0.1:{args.static_port}/"}
                           if args.static else None),
                "route_prefix": p.host_config.route_prefix,
                "endpoints": endpoints,
                "azurite": {"ports": list(p.azurite.ports), "started_by_us": p.azurite.started_by_us,
                            "pid": p.azurite.pid, "data_dir": str(p.azurite.location.resolve())},
                "func_pid": func_proc.pid if func_proc else None,
                "functions": [{"name": s.name, "trigger": s.trigger_type, "detail": s.describe(),
                               **host.counts[s.name]} for s in p.specs.values()],
                "watched_containers": watcher.containers, "announced_blobs": watcher.announced,
                "fabric": dict(fabric.stats),
            }

        state.write_json(state_file, snapshot(True))
        log.info("devhost is up: functions on http://127.0.0.1:%d/%s, events on http://127.0.0.1:%d/api/events, "
                 "Azurite on %s (%d functions), OpenID issuer %s", args.http_port, p.host_config.route_prefix,
                 args.fabric_port, ",".join(map(str, p.azurite.ports)), len(p.specs), issuer)
        if args.static:
            log.info("  static site %s on http://127.0.0.1:%d/", args.static, args.static_port)
        for s in p.specs.values():
            log.info("  %s: %s", s.name, s.describe())
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 2.0)
            if func_proc is not None and func_proc.poll() is not None:
                log.error("'func start' exited with code %s; stopping", func_proc.returncode)
                break
            state.write_json(state_file, snapshot(True))
    finally:
        log.info("devhost is stopping")
        await fabric.close()
        await host.stop()
        for r in runners:
            await r.cleanup()
        if func_proc is not None and func_proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(func_proc.pid, signal.SIGTERM)
            try:
                func_proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(func_proc.pid, signal.SIGKILL)
        if func_proc is not None:
            state.forget_child(p.state_dir, "func")
        blob_service.close()
        state.remove(state_file)


def up(args: argparse.Namespace) -> int:
    if args.detach:
        return _detach(args)
    _configure_logging()
    try:
        p = prepare(args)
    except StartupError as exc:
        print(f"devhost: {exc}", file=sys.stderr)
        return 2
    state.record_child(p.state_dir, "host", os.getpid())
    try:
        try:
            p.azurite.start()
        except AzuriteError as exc:
            print(f"devhost: {exc}", file=sys.stderr)
            return 2
        if p.azurite.process is not None:
            state.record_child(p.state_dir, "azurite", p.azurite.process.pid, ports=list(p.azurite.ports),
                               data_dir=str(p.azurite.location.resolve()))
        try:
            asyncio.run(_serve(p))
        except OSError as exc:  # a port taken between the check and the bind
            print(f"devhost: cannot listen ({exc.strerror}): choose other ports with --http-port/--fabric-port",
                  file=sys.stderr)
            return 2
        finally:
            # The hosted app's exit handlers (buffers it flushes to storage at exit) run now, while the emulator
            # they write to is still up: a Functions worker shuts down before the storage it uses goes away.
            # Run at interpreter exit instead, they found Azurite stopped and retried until `down` killed us.
            atexit._run_exitfuncs()
            p.azurite.stop()
            state.forget_child(p.state_dir, "azurite")
    finally:
        state.forget_child(p.state_dir, "host")
    return 0


def _detach(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "devhost.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(up_argv(args), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + args.timeout
    ready_url = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
            print(tail[-1] if tail else f"devhost: up exited with code {code} (see {log_path})", file=sys.stderr)
            return code or 1
        st = state.read_json(state.state_path(state_dir))
        # Ready: every function loaded and the host listening (state.json says so), then the app's own
        # --ready-path, if given, answers 200.
        if isinstance(st, dict) and st.get("pid") == proc.pid and st.get("ready") and port_open(args.http_port):
            if ready_url is None:
                ready_url = (f"http://127.0.0.1:{args.http_port}/{args.ready_path.lstrip('/')}"
                             if args.ready_path else "")
            if not ready_url or _http_status(ready_url) == 200:
                prefix = str(st.get("route_prefix", "api")).strip("/")
                print(f"devhost is up (pid {proc.pid}): http://127.0.0.1:{args.http_port}/{prefix}, "
                      f"{len(st.get('functions', []))} functions, events http://127.0.0.1:{args.fabric_port}"
                      f"/api/events, logs {log_path}")
                if args.static:
                    print(f"  static site http://127.0.0.1:{args.static_port}/ ({args.static})")
                return 0
        time.sleep(0.2)
    _terminate(proc.pid)
    what = f"GET {ready_url} did not answer 200" if ready_url else "not ready"
    print(f"devhost: {what} within {args.timeout:.0f} s (see {log_path}); stopped it", file=sys.stderr)
    return 1


def _stop_child(rec: dict[str, Any]) -> None:
    """Stop a recorded child; one started in its own process group (func and its worker) as a group."""
    pid = int(rec["pid"])
    if rec.get("group"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    terminate_pid(pid)


def _container_of(event: dict[str, Any]) -> str:
    subject = str(event.get("subject", ""))
    prefix = "/blobServices/default/containers/"
    return subject[len(prefix):].split("/", 1)[0] if subject.startswith(prefix) else ""


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - our own loopback URL
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _terminate(pid: int | None, timeout: float = 30.0) -> bool:
    """SIGTERM a process (SIGKILL after ``timeout``); True if it is gone."""
    if not state.pid_alive(pid):
        return True
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not state.pid_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    return not state.pid_alive(pid)


def down(args: argparse.Namespace) -> int:
    """Stop the host, then whatever it started that still runs (recorded in children.json), even when the
    host itself died without cleaning up."""
    state_dir = Path(args.state_dir).resolve()
    path = state.state_path(state_dir)
    st = state.read_json(path)
    children = state.read_children(state_dir)
    host = children.pop("host", None)
    pids = {st.get("pid")} if isinstance(st, dict) else set()
    if host and state.child_alive(host):
        pids.add(host["pid"])
    stopped = [pid for pid in pids if pid and state.pid_alive(pid)]
    for pid in stopped:
        _terminate(pid)
    # A host that stopped cleanly has removed its children from the file; what remains was left behind.
    left = {role: rec for role, rec in state.read_children(state_dir).items() if role != "host"} or children
    for role, rec in left.items():
        if state.child_alive(rec):
            _stop_child(rec)
            stopped.append(rec["pid"])
            print(f"stopped {role} (pid {rec['pid']}) left running by the host")
    state.remove(path)
    state.remove(state.children_path(state_dir))
    if not stopped:
        print("devhost is not running")
        return 0
    print(f"devhost stopped (pid {', '.join(map(str, sorted(stopped)))})")
    return 0


def status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    st = state.read_json(state.state_path(state_dir))
    if not isinstance(st, dict) or not state.pid_alive(st.get("pid")):
        print("devhost is not running")
        return 1
    az = st.get("azurite") or {}
    print(f"devhost running (pid {st['pid']}, mode {st.get('mode')}, app {st.get('app')})")
    print(f"  functions  http://127.0.0.1:{st['http_port']}/{st.get('route_prefix', 'api')}")
    print(f"  events     http://127.0.0.1:{st['fabric_port']}/api/events")
    if st.get("issuer"):
        print(f"  issuer     {st['issuer']}  (tokens: python -m devhost token --role reader|writer|admin)")
    if st.get("static"):
        print(f"  static     {st['static']['url']}  ({st['static']['dir']})")
    print(f"  azurite    ports {','.join(map(str, az.get('ports', [])))} "
          f"({'started by devhost' if az.get('started_by_us') else 'reused'})")
    print(f"  watching   {', '.join(st.get('watched_containers') or []) or '-'} "
          f"({st.get('announced_blobs', 0)} blob events)")
    journal = state.read_journal(state_dir)
    published: dict[str, int] = {}
    dead = 0
    for rec in journal:
        if rec.get("kind") == "published":
            t = rec["event"].get("eventType") or rec["event"].get("type") or "?"
            published[t] = published.get(t, 0) + 1
        elif rec.get("kind") == "deadlettered":
            dead += 1
    print(f"  events     {sum(published.values())} published, {dead} dead-lettered")
    for t, n in sorted(published.items()):
        print(f"    {n:6d}  {t}")
    fabric = st.get("fabric") or {}
    subs = sorted({k.split(":", 1)[1] for k in fabric if k.startswith(("delivered:", "deadlettered:"))})
    if subs:
        print("  subscriptions (this run):")
        for sub in subs:
            print(f"    {sub:<28} delivered {fabric.get('delivered:' + sub, 0)}  "
                  f"dead-lettered {fabric.get('deadlettered:' + sub, 0)}")
    print("  functions:")
    for f in st.get("functions", []):
        print(f"    {f['name']:<24} {f['detail']:<56} ok {f.get('succeeded', 0)}  failed {f.get('failed', 0)}")
    return 0


def key(args: argparse.Namespace) -> int:
    keys = state.load_keys(Path(args.state_dir).resolve())
    print(keys["events" if args.events else "function"])
    return 0
