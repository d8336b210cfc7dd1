"""``python -m tools upload PATH...``: put files into the inbox and report what became of each.

1. Uploads every file (folders recursively) in parallel to the inbox container (``dicom-inbox``)
   with a progress bar in bytes. Files are streamed from disk (``upload_blob`` gets the open file and
   its length; big files go up in blocks with ``max_concurrency``): a 1 GiB file is never read into
   memory.
2. Waits, bounded by ``--timeout``, until each blob has an outcome, polling
   ``GET <base-url>/ingest/status?blob=<name>`` (a bearer token, or a function key), with a second
   progress bar; then prints counts by state and, for quarantined files, the file, the reason code
   and the message.

Blob names keep the path relative to the argument (a folder argument keeps its own name, a file
argument is just its name) and get a short random suffix before the extension, so uploading the
same file twice gives two distinct blobs (two ingests, the second a ``duplicate``)::

    upload corpus/         corpus/good/p01/ct/IM0001.dcm  ->  corpus/good/p01/ct/IM0001~3fa9c2d1.dcm
    upload a/DICOMDIR      DICOMDIR                        ->  DICOMDIR~0b7e55aa

Where things are found (first that answers): ``--connection-string``, the running devhost's state
(``.devhost/state.json``, read by :mod:`tools.stack`), the ``DicomStorage`` setting, the default local
Azurite (``UseDevelopmentStorage=true``). The credential: ``--key`` (a bearer token, sent as
``Authorization: Bearer``, or a Functions key, sent as ``x-functions-key``), else a token with the writer
role from the running devhost's issuer. The status URL: ``--base-url``, else the running devhost's HTTP
port and route prefix, else ``http://127.0.0.1:7071/api``.

Exit code 0 when every file was uploaded and (unless ``--no-wait``) every blob has an outcome
(archived, duplicate, updated or quarantined: a quarantined file is an answer, and it is listed);
1 when an upload failed, the wait timed out, or the stack could not be reached; 2 for bad arguments.

From code (demo, tests): :func:`upload_and_wait` runs the same flow without printing; :func:`summarize`
makes the table.

Libraries: azure-storage-blob for uploads (its chunking and parallelism), aiohttp for polling
(one keep-alive session, bounded concurrency), tqdm for progress.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from shared.config import STORAGE_CONNECTION, Settings
from shared.ingest.states import FINAL
from shared.storage.layout import INBOX
from tools import stack

HELP = "upload DICOM files/folders to the inbox and wait for each outcome"
DEFAULT_BASE_URL = "http://127.0.0.1:7071/api"
#: States with an outcome (shared/ingest/states.py); "pending" and "unknown" mean "ask again".
FINAL_STATES = frozenset(str(s) for s in FINAL)
DEFAULT_EXCLUDES = ("manifest.json", ".*")
#: Files above this go up in blocks, several at a time.
BLOCK_UPLOAD_THRESHOLD = 64 * 1024 * 1024
STACK_HINT = stack.STACK_HINT
DEV_STORAGE = "UseDevelopmentStorage=true"


class UploadError(RuntimeError):
    """Nothing can be uploaded (bad path, storage unreachable); the message says what to do."""


# --- planning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadItem:
    path: Path
    blob_name: str
    size: int


def blob_name_for(relative: PurePosixPath, token: str) -> str:
    """``dir/name.ext`` -> ``dir/name~<token>.ext`` (no extension: ``name~<token>``)."""
    name = relative.name
    stem, dot, ext = name.rpartition(".")
    unique = f"{stem}~{token}.{ext}" if dot and stem else f"{name}~{token}"
    return str(relative.with_name(unique))


def plan_uploads(paths: Sequence[Path], *, excludes: Sequence[str] = DEFAULT_EXCLUDES,
                 token: Callable[[], str] = lambda: secrets.token_hex(4)) -> list[UploadItem]:
    """Every file under ``paths`` with its blob name; raises :class:`UploadError` for a missing path."""
    items: list[UploadItem] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            base = path.resolve()
            top = PurePosixPath(base.name or "upload")
            for f in sorted(base.rglob("*")):
                rel = f.relative_to(base)
                if not f.is_file() or any(fnmatch.fnmatch(part, pat) for part in rel.parts for pat in excludes):
                    continue
                items.append(UploadItem(f, blob_name_for(top / PurePosixPath(rel.as_posix()), token()),
                                        f.stat().st_size))
        elif path.is_file():
            items.append(UploadItem(path, blob_name_for(PurePosixPath(path.name), token()), path.stat().st_size))
        else:
            raise UploadError(f"{given}: no such file or folder. Give files or folders to upload.")
    return items


# --- where the stack is ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    connection_string: str
    base_url: str
    key: str | None
    source: str  # where the connection came from, for messages


def resolve_target(args: argparse.Namespace, env: dict[str, str] | None = None) -> Target:
    env = dict(os.environ) if env is None else env
    state_dir = Path(args.state_dir)
    local = stack.find_local(state_dir)
    conn, source = args.connection_string, "--connection-string"
    if not conn and local is not None and local.storage:
        conn, source = local.storage, f"devhost state in {state_dir}"
    if not conn:
        conn, source = Settings.from_env(env).storage.connection_string, STORAGE_CONNECTION
    if not conn:
        conn, source = DEV_STORAGE, "default Azurite (127.0.0.1:10000)"
    base_url = args.base_url or (local.base_url if local is not None else None)
    key = args.key
    if not key and local is not None:
        key = stack.local_token(state_dir, roles=("writer",), user="upload")
    return Target(str(conn), str(base_url or DEFAULT_BASE_URL).rstrip("/"), key, source)


# --- uploading ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    item: UploadItem
    uploaded: bool = False
    error: str | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        if not self.uploaded:
            return "upload-failed"
        return str(self.status.get("state") or "not-asked")


def _container_client(conn: str, container: str, **kwargs: Any) -> Any:
    from azure.storage.blob import ContainerClient

    return ContainerClient.from_connection_string(conn, container, **kwargs)


def check_storage(conn: str, container: str, source: str) -> None:
    """Fail fast (no retries) when storage does not answer; create the container if missing."""
    from azure.core.exceptions import AzureError, ResourceExistsError

    client = _container_client(conn, container, retry_total=0, connection_timeout=5, read_timeout=10)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    except AzureError as exc:
        endpoint = getattr(client, "url", "?").rsplit("/", 1)[0]
        raise UploadError(
            f"Cannot reach blob storage at {endpoint} (connection from {source}): {type(exc).__name__}. {STACK_HINT}"
        ) from None
    finally:
        client.close()


def upload_all(items: Sequence[UploadItem], conn: str, container: str, *, workers: int = 8,
               progress: bool = True) -> list[Outcome]:
    """Upload in parallel; one :class:`Outcome` per item, errors recorded (never raised)."""
    from azure.core.exceptions import AzureError
    from tqdm import tqdm

    client = _container_client(conn, container, max_single_put_size=BLOCK_UPLOAD_THRESHOLD)
    outcomes = [Outcome(item) for item in items]
    lock = threading.Lock()
    bar = tqdm(total=sum(i.size for i in items), unit="B", unit_scale=True, unit_divisor=1024, desc="upload",
               disable=not progress, leave=False)

    def one(outcome: Outcome) -> None:
        item = outcome.item
        sent = 0

        def hook(current: int, _total: int | None) -> None:
            nonlocal sent
            with lock:
                if current > sent:
                    bar.update(current - sent)
                    sent = current

        try:
            with item.path.open("rb") as f:
                client.upload_blob(item.blob_name, f, length=item.size, overwrite=False,
                                   max_concurrency=4 if item.size > BLOCK_UPLOAD_THRESHOLD else 1,
                                   progress_hook=hook)
            outcome.uploaded = True
        except (AzureError, OSError) as exc:
            outcome.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        with lock:
            bar.update(max(0, item.size - sent))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for fut in as_completed([pool.submit(one, o) for o in outcomes]):
                fut.result()
    finally:
        bar.close()
        client.close()
    return outcomes


# --- waiting for outcomes ---------------------------------------------------------------------------



class StatusError(RuntimeError):
    """The status endpoint refuses us for a reason that waiting will not fix."""


async def _poll(base_url: str, names: Sequence[str], *, key: str | None, timeout: float, concurrency: int,
                interval: float, on_final: Callable[[str], None],
                unreachable_grace: float = 10.0) -> dict[str, dict[str, Any]]:
    import aiohttp

    results: dict[str, dict[str, Any]] = {}
    pending = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout
    headers = stack.auth_headers(key)
    url = f"{base_url}/ingest/status"
    sem = asyncio.Semaphore(max(1, concurrency))
    unreachable: list[str] = []
    request_timeout = aiohttp.ClientTimeout(total=min(10.0, max(timeout, 0.1)))

    async with aiohttp.ClientSession(headers=headers, timeout=request_timeout) as session:

        async def ask(name: str) -> None:
            async with sem:
                if time.monotonic() >= deadline:
                    return
                body: Any = None
                status = 0
                try:
                    async with session.get(url, params={"blob": name}) as resp:
                        status = resp.status
                        if status in (401, 403):
                            raise StatusError(
                                f"{url} refused the credential (HTTP {status}). Pass --key with a token "
                                "('python -m devhost token --role writer') or an accepted function key."
                            )
                        body = await resp.json(content_type=None) if status in (200, 404) else None
                except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                    unreachable.append(type(exc).__name__)
                    return
                except ValueError:  # not JSON: not our endpoint
                    body = None
                if isinstance(body, dict) and body.get("state"):
                    results[name] = body
                    if body["state"] in FINAL_STATES:
                        on_final(name)
                else:
                    unreachable.append(f"HTTP {status} without an ingest status")

        wait = interval
        down_since: float | None = None
        while pending and time.monotonic() < deadline:
            unreachable.clear()
            asked = len(pending)
            await asyncio.gather(*(ask(n) for n in pending))
            pending = [n for n in pending if results.get(n, {}).get("state") not in FINAL_STATES]
            if unreachable and len(unreachable) == asked:
                # Nobody answers: give a starting host a little while, then say what to do.
                now = time.monotonic()
                down_since = down_since if down_since is not None else now
                if now - down_since >= min(unreachable_grace, timeout):
                    raise StatusError(f"No usable answer from {url} ({unreachable[0]}). {STACK_HINT}")
            else:
                down_since = None
            if pending:
                await asyncio.sleep(max(0.0, min(wait, deadline - time.monotonic())))
                wait = min(wait * 1.5, 2.0)
    return results


def wait_for_outcomes(base_url: str, names: Sequence[str], *, key: str | None, timeout: float,
                      concurrency: int = 8, interval: float = 0.25, progress: bool = True,
                      unreachable_grace: float = 10.0) -> dict[str, dict[str, Any]]:
    """Poll until every name has a final state or ``timeout`` s passed; the last answer per name.

    Raises :class:`StatusError` if the key is refused or the endpoint never answers.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(set(names)), unit="file", desc="ingest", disable=not progress, leave=False)
    try:
        return asyncio.run(_poll(base_url, names, key=key, timeout=timeout, concurrency=concurrency,
                                 interval=interval, on_final=lambda _name: bar.update(1),
                                 unreachable_grace=unreachable_grace))
    finally:
        bar.close()


# --- summary ----------------------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """A path as the user sees it: relative to the current folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summarize(outcomes: Iterable[Outcome], *, waited: bool) -> tuple[str, bool]:
    """The summary table and whether everything is accounted for (the exit status)."""
    outcomes = list(outcomes)
    counts: Counter[str] = Counter()
    for o in outcomes:
        state = o.state
        if waited and o.uploaded and state not in FINAL_STATES:
            state = f"timed out ({state})"
        elif not waited and o.uploaded:
            state = "uploaded"
        counts[state] += 1
    lines = [f"{len(outcomes)} file(s):"]
    width = max((len(s) for s in counts), default=5)
    for state, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {state:<{width}}  {n:>6}")
    quarantined = [o for o in outcomes if o.state == "quarantined"]
    if quarantined:
        lines.append("Quarantined:")
        wf = max(len(_shown(o.item.path)) for o in quarantined)
        wr = max(len(str(o.status.get("reason") or "?")) for o in quarantined)
        for o in sorted(quarantined, key=lambda o: str(o.item.path)):
            reason = o.status.get("reason") or "?"
            lines.append(f"  {_shown(o.item.path):<{wf}}  {reason:<{wr}}  {o.status.get('message') or ''}")
    failed = [o for o in outcomes if not o.uploaded]
    if failed:
        lines.append("Upload failed (run the same command again for these files):")
        for o in failed:
            lines.append(f"  {_shown(o.item.path)}  {o.error}")
    late = [o for o in outcomes if waited and o.uploaded and o.state not in FINAL_STATES]
    if late:
        lines.append(
            f"{len(late)} blob(s) have no outcome yet. Ask later with 'GET /api/ingest/status?blob=<name>', "
            "wait longer with --timeout, or check the host's log ('python -m devhost status')."
        )
        for o in late[:10]:
            lines.append(f"  {o.item.blob_name}")
        if len(late) > 10:
            lines.append(f"  ... and {len(late) - 10} more")
    ok = not failed and not late
    return "\n".join(lines), ok


# --- the whole flow, for other code (demo, tests) ------------------------------------------------------


def upload_and_wait(paths: Sequence[Path], *, connection_string: str, base_url: str = DEFAULT_BASE_URL,
                    key: str | None = None, container: str = INBOX, workers: int = 8, wait: bool = True,
                    timeout: float = 300.0, excludes: Sequence[str] = DEFAULT_EXCLUDES,
                    progress: bool = False) -> list[Outcome]:
    """The command without printing: plan, upload, and (``wait``) attach each blob's last status.

    Raises :class:`UploadError` when nothing could be uploaded (bad path, storage unreachable) and
    :class:`StatusError` when the status endpoint refuses the key or never answers. Pass the result
    to :func:`summarize` for the table and the verdict.
    """
    items = plan_uploads(paths, excludes=excludes)
    check_storage(connection_string, container, "the given connection string")
    outcomes = upload_all(items, connection_string, container, workers=workers, progress=progress)
    names = [o.item.blob_name for o in outcomes if o.uploaded]
    if wait and names:
        statuses = wait_for_outcomes(base_url, names, key=key, timeout=timeout, progress=progress)
        for o in outcomes:
            o.status = statuses.get(o.item.blob_name, {})
    return outcomes


# --- the command ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (recursive)")
    parser.add_argument("--container", default=INBOX, help=f"target container (default {INBOX})")
    parser.add_argument("--workers", type=int, default=8, help="parallel uploads (default 8)")
    parser.add_argument("--no-wait", action="store_true", help="upload only; do not wait for outcomes")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="seconds to wait for every outcome after the upload (default 300)")
    parser.add_argument("--base-url", default=None,
                        help=f"the app's HTTP base including /api (default: devhost state, else {DEFAULT_BASE_URL})")
    parser.add_argument("--key", default=None,
                        help="bearer token or function key (default: a writer token of the running devhost)")
    parser.add_argument("--state-dir", type=Path, default=stack.DEFAULT_STATE_DIR,
                        help="the local devhost's state folder (default .devhost)")
    parser.add_argument("--connection-string", default=None,
                        help=f"storage connection (default: devhost state, {STORAGE_CONNECTION}, local Azurite)")
    parser.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                        help="skip files/folders matching GLOB inside folders (repeatable; default: "
                             + ", ".join(DEFAULT_EXCLUDES) + ")")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1 or args.timeout < 0:
        print("upload: --workers must be at least 1 and --timeout not negative.", file=sys.stderr)
        return 2
    progress = not args.quiet and sys.stderr.isatty()
    try:
        items = plan_uploads(args.paths, excludes=tuple(args.exclude) if args.exclude else DEFAULT_EXCLUDES)
    except UploadError as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 2
    if not items:
        print("upload: no files found under the given paths (check --exclude).", file=sys.stderr)
        return 2
    target = resolve_target(args)
    try:
        check_storage(target.connection_string, args.container, target.source)
    except UploadError as exc:
        print(f"upload: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    outcomes = upload_all(items, target.connection_string, args.container, workers=args.workers, progress=progress)
    sent = [o for o in outcomes if o.uploaded]
    total = sum(o.item.size for o in sent)
    print(f"Uploaded {len(sent)}/{len(outcomes)} file(s), {total / 2**20:.1f} MiB in "
          f"{time.monotonic() - started:.1f} s to container {args.container}.")
    waited = not args.no_wait and bool(sent)
    if waited:
        try:
            statuses = wait_for_outcomes(target.base_url, [o.item.blob_name for o in sent], key=target.key,
                                         timeout=args.timeout, progress=progress)
        except StatusError as exc:
            print(summarize(outcomes, waited=False)[0])
            print(f"upload: {exc}", file=sys.stderr)
            return 1
        for o in sent:
            o.status = statuses.get(o.item.blob_name, {})
    text, ok = summarize(outcomes, waited=waited)
    print(text)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools upload", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
