"""``python -m tools drill``: the disaster-recovery drill, locally (``make dr-drill``).

Two regions on this machine, each a complete stack: its own Azurite (the data account), its own
devhost running the same app (``function_app:app``) with its own event fabric, told apart only by
settings (``DICOMFLOW_REGION``, ``DICOMFLOW_PEER_REGION``, ``DicomPeerStorage``). Between them Azure
object replication, emulated as Azure does it (:mod:`tools.replication`: asynchronous, destination
containers read-only behind a proxy that answers writes with 409, no events for replicated blobs). One
identity for both: tokens of one issuer (the primary's development issuer; the secondary serves the
same signing key from its own issuer, so it validates tokens without the primary, as both regions
validate Entra ID tokens in Azure), no per-region secret.

The scenario (issues 13 and 22):

1. ingest ``--primary`` instances (default 300) in the primary region (blob upload to its inbox);
2. wait until object replication has copied them and the secondary's follower has indexed them;
3. the secondary answers QIDO (study, series and instance level), WADO-RS (instance, metadata,
   frames) for every one of them;
4. the primary is lost abruptly while ``--abrupt`` more instances (default 100) are being stored in it
   by STOW-RS, 8 at a time, and the secondary's follower is behind: a third of the way through, the
   secondary loses its link to the primary's change feed; two thirds of the way, the primary's host is
   killed (SIGKILL: requests in flight are cut, settle runs die half-way) and its storage stops
   (gracefully: storage in Azure is durable once a write is acknowledged, and Azurite's own data needs a
   clean stop). What object replication had copied by then is what the secondary can have;
5. the runbook's catch-up: ``python -m tools reindex --since follower`` on the secondary, until every
   replicated instance is found there by QIDO;
6. STOW-RS ``--outage`` more instances (default 50) to the secondary: archived and queryable there;
7. start the primary again (after at least :data:`OUTAGE_SECONDS` of outage): its ``/api/health`` answers 503
   ``catching up`` (the failback gate) until its follower has indexed the outage writes, and when it first
   answers 200 the primary serves every one of them; replication catches up in both directions; both
   regions hold everything.

It ends with two lines::

    DR drill: primary ingested 300; secondary served 300/300 QIDO, 300/300 WADO, 300/300 frames;
    outage writes 50/50; after recovery primary 350/350, secondary 350/350
    abrupt loss: replicated N, visible on secondary N/N after T s; outage writes 50/50; after recovery
    primary K/K, secondary K/K

``N``: abrupt-phase instances whose file was in the secondary's replica of the primary's archive when the
primary was lost (listed from the secondary's storage); ``T``: seconds from the loss until all of them
were found on the secondary; ``K``: every instance that exists after recovery (the first ingest, the
abrupt phase's instances the primary had received, the outage writes). Above them the drill reports
what was acknowledged (STOW-RS 200) but not replicated at the loss (the data-loss window while the
primary is down) and what was acknowledged but lost for good (expected 0: the primary's storage
survives a region outage and replicates when it returns).

Exit 0 when every fraction is whole and nothing acknowledged was lost. Everything runs in a temporary
folder (``--workdir`` keeps it) on free ports; nothing of the developer's own stack (``make up``) is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.ingest import follow
from shared.storage import layout
from tools import stack
from tools.replication import Link, Policy, ReadOnlyProxy, Replicator

HELP = ("the disaster-recovery drill: two local regions, object replication, the primary lost abruptly and "
        "brought back")
PRIMARY, SECONDARY = "primary", "secondary"
AUDIENCE = "api://devhost"
#: The primary's failback gate in the drill (DICOMFLOW_FAILBACK_MAX_LAG_SECONDS), below the outage.
GATE_SECONDS = 15
#: The shortest outage the drill plays: longer than the follower state's freshness window, so the returning
#: primary's state from before the loss is stale and the gate must wait for its follower to run.
OUTAGE_SECONDS = follow.STALE_SECONDS + 1
#: Azurite's development account (public; it opens only the local emulator).
_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(blob: int, queue: int, table: int) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={_ACCOUNT};AccountKey={_DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{_ACCOUNT};QueueEndpoint=http://127.0.0.1:{queue}/{_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{table}/{_ACCOUNT};")


class DrillError(RuntimeError):
    """A step could not be carried out (not a failed check: those are counted)."""


@dataclass
class Instance:
    path: Path
    study: str
    series: str
    sop: str
    pixels: bytes


def make_corpus(out: Path, *, studies: int, slices: int, seed: int) -> list[Instance]:
    """``studies`` small CT studies of ``slices`` instances (32x32, explicit VR little endian)."""
    import pydicom

    from tools.corpus import UidFactory, make_ct_series, make_patients, make_study

    uids = UidFactory(seed)
    out_list: list[Instance] = []
    for p in make_patients(studies, seed=seed):
        study = make_study(p, uids, f"dr{seed}", description="CT DR DRILL")
        for path in make_ct_series(out / f"s{p.index:03d}", study, uids, slices=slices, rows=32, cols=32):
            ds = pydicom.dcmread(path)
            out_list.append(Instance(path, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                                     str(ds.SOPInstanceUID), bytes(ds.PixelData)))
    return out_list


def split(total: int, per_study: int) -> tuple[int, int]:
    """(studies, slices) that give ``total`` instances in studies of about ``per_study``."""
    per_study = max(1, min(per_study, total))
    if total % per_study:
        per_study = next(n for n in range(per_study, 0, -1) if total % n == 0)
    return total // per_study, per_study


@dataclass
class Region:
    key: str
    peer: str
    root: Path
    ports: tuple[int, int, int] = (0, 0, 0)
    http_port: int = 0
    fabric_port: int = 0
    proxy_port: int = 0
    proxy: ReadOnlyProxy | None = None
    #: The link through which the *other* region reads this region's tables (its change feed).
    link_port: int = 0
    link: Link | None = None

    def take_ports(self, ports: list[int]) -> None:
        """Seven ports: Azurite (blob, queue, table), the host, its fabric, the read-only proxy, the link."""
        blob, queue, table, self.http_port, self.fabric_port, self.proxy_port, self.link_port = ports
        self.ports = (blob, queue, table)

    @property
    def state_dir(self) -> Path:
        return self.root / "devhost"

    @property
    def azurite_dir(self) -> Path:
        return self.root / "azurite"

    @property
    def storage(self) -> str:
        """The account itself (what object replication and the peer's follower use)."""
        return connection_string(*self.ports)

    @property
    def feed_storage(self) -> str:
        """What the other region's follower is given: this account's tables through the link."""
        return connection_string(self.ports[0], self.ports[1], self.link_port)

    @property
    def app_storage(self) -> str:
        """What the app is given: blobs through the read-only proxy, queues and tables direct."""
        assert self.proxy is not None
        return connection_string(self.proxy.port, self.ports[1], self.ports[2])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.fabric_port}/issuer"

    def containers(self) -> tuple[str, ...]:
        return layout.region_containers(self.key, [self.peer])

    def replica_containers(self) -> list[str]:
        return [layout.regional(c, self.peer) for c in layout.REGIONAL]


class Drill:
    def __init__(self, workdir: Path, *, primary: int = 300, outage: int = 50, abrupt: int = 100,
                 per_study: int = 10, timeout: float = 600.0, log: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.n_primary, self.n_outage, self.n_abrupt = primary, outage, abrupt
        self.per_study = per_study
        self.timeout = timeout
        self.log = log
        self.a = Region(PRIMARY, SECONDARY, workdir / PRIMARY)
        self.b = Region(SECONDARY, PRIMARY, workdir / SECONDARY)
        self.replicator: Replicator | None = None
        self.token = ""
        self.results: dict[str, Any] = {}
        #: The instances of each phase (``first``, ``abrupt``, ``later``) and, of the abrupt phase, those the
        #: primary received (acknowledged, or in flight and archived from its inbox after it returned).
        self.corpus: dict[str, list[Instance]] = {}
        self.arrived: set[str] = set()
        #: Seconds the primary took to start the first time (its restart is timed by it).
        self.started = 0.0

    # -- regions --------------------------------------------------------------------------------------
    def _devhost(self, *argv: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devhost", *argv], cwd=stack.ROOT, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def up(self, r: Region, *, ready_path: str | None = "/api/health") -> None:
        peer = self.b if r is self.a else self.a
        env = {
            "DicomStorage": r.app_storage,
            "DICOMFLOW_REGION": r.key,
            "DICOMFLOW_PEER_REGION": r.peer,
            "DicomPeerStorage": peer.feed_storage,
            # One identity for both regions: the primary's issuer, whose signing key each region serves itself.
            "DICOMFLOW_AUTH_ISSUER": self.a.issuer,
            "DICOMFLOW_AUTH_AUDIENCE": AUDIENCE,
            "DICOMFLOW_AUTH_JWKS_URI": "{devhost:issuer}/jwks",
            "DICOMFLOW_STABLE_AGE_SECONDS": "2",
            "DICOMFLOW_SETTLE_DELAY_SECONDS": "1",
            "DICOMFLOW_STOW_WAIT_SECONDS": "60",
        }
        if r is self.a:  # the region Front Door prefers returns only once caught up (infra sets it there too)
            env["DICOMFLOW_FAILBACK_MAX_LAG_SECONDS"] = str(GATE_SECONDS)
        argv = ["up", "--detach", "--settings", str(stack.ROOT / "local.settings.example.json"),
                "--events", str(stack.ROOT / "infra" / "events.json"),
                "--http-port", str(r.http_port), "--fabric-port", str(r.fabric_port),
                "--azurite-ports", ",".join(map(str, r.ports)), "--azurite-dir", str(r.azurite_dir),
                "--state-dir", str(r.state_dir), "--timeout", "150"]
        if ready_path:
            argv += ["--ready-path", ready_path]
        for k, v in env.items():
            argv += ["--env", f"{k}={v}"]
        done = self._devhost(*argv)
        if done.returncode != 0:
            log_tail = (r.state_dir / "devhost.log").read_text(errors="replace")[-1500:] if (
                r.state_dir / "devhost.log").exists() else ""
            raise DrillError(f"region {r.key} did not start: {done.stderr.strip()[-800:]} {log_tail}")
        self._create_containers(r)

    def start(self, r: Region) -> None:
        r.proxy = ReadOnlyProxy(r.ports[0], r.replica_containers(), port=r.proxy_port).start()
        r.link = Link(r.ports[2], port=r.link_port).start()
        self.up(r)

    def down(self, r: Region) -> None:
        self._devhost("down", "--state-dir", str(r.state_dir), timeout=120)

    def kill(self, r: Region) -> None:
        """The region is lost abruptly: its host is killed (SIGKILL: requests in flight cut, runs half-done),
        then its storage stops (gracefully, as Azure storage keeps what it acknowledged)."""
        st = stack.read_state(r.state_dir)
        pid = st.get("pid") if isinstance(st, dict) else None
        if isinstance(pid, int):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.down(r)

    def _create_containers(self, r: Region) -> None:
        """What infra creates: the region's containers and its peer's replication destinations."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(r.storage)
        for name in r.containers():
            try:
                service.create_container(name)
            except ResourceExistsError:
                pass

    def _mint(self) -> str:
        done = self._devhost("token", "--state-dir", str(self.a.state_dir), "--issuer", self.a.issuer,
                             "--role", "reader", "--role", "writer", "--minutes", "240", "--user", "dr-drill")
        if done.returncode != 0 or not done.stdout.strip():
            raise DrillError(f"no token from the primary's issuer: {done.stderr.strip()}")
        return done.stdout.strip()

    def client(self, r: Region) -> Any:
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(url=f"{r.base_url}/dicomweb", headers={"Authorization": f"Bearer {self.token}"})

    # -- checks -----------------------------------------------------------------------------------------
    def found(self, r: Region, instances: Sequence[Instance]) -> set[str]:
        """SOP Instance UIDs found by QIDO in ``r`` at every level: the study (by UID), its series, its instance."""
        from requests import HTTPError, RequestException

        by_study: dict[str, list[Instance]] = {}
        for i in instances:
            by_study.setdefault(i.study, []).append(i)
        client = self.client(r)

        def study_found(study: str) -> set[str]:
            try:
                if not client.search_for_studies(search_filters={"StudyInstanceUID": study}):
                    return set()
                series = {s["0020000E"]["Value"][0] for s in client.search_for_series(study_instance_uid=study)}
                sops = {o["00080018"]["Value"][0] for o in client.search_for_instances(study_instance_uid=study)}
            except (HTTPError, RequestException):
                return set()
            return {i.sop for i in by_study[study] if i.series in series and i.sop in sops}

        with ThreadPoolExecutor(max_workers=8) as pool:
            return set().union(*pool.map(study_found, by_study)) if by_study else set()

    def wait_found(self, r: Region, instances: Sequence[Instance], what: str, timeout: float) -> set[str]:
        deadline = time.monotonic() + timeout
        want = {i.sop for i in instances}
        got: set[str] = set()
        while time.monotonic() < deadline:
            got = self.found(r, instances)
            if got >= want:
                return got
            time.sleep(2.0)
        self.log(f"  {what}: {len(got & want)} of {len(want)} after {timeout:.0f} s")
        return got

    def wado(self, r: Region, instances: Sequence[Instance]) -> tuple[int, int]:
        """(instances served whole with their metadata, instances whose frame 1 is their pixel data)."""
        client = self.client(r)

        def one(i: Instance) -> tuple[bool, bool]:
            try:
                ds = client.retrieve_instance(i.study, i.series, i.sop)
                meta = client.retrieve_instance_metadata(i.study, i.series, i.sop)
                whole = (str(ds.SOPInstanceUID) == i.sop and bytes(ds.PixelData) == i.pixels
                         and meta.get("00080018", {}).get("Value") == [i.sop])
                frames = client.retrieve_instance_frames(i.study, i.series, i.sop, frame_numbers=[1])
                return whole, len(frames) == 1 and bytes(frames[0]) == i.pixels
            except Exception:  # noqa: BLE001 - a failed retrieve is a failed check, counted
                return False, False

        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(one, instances))
        return sum(w for w, _ in got), sum(f for _, f in got)

    def stow(self, r: Region, instances: Sequence[Instance], batch: int = 10) -> int:
        """STOW-RS in batches; the number of instances the region answered as stored."""
        import pydicom
        from requests import HTTPError

        client = self.client(r)
        stored = 0
        for start in range(0, len(instances), batch):
            part = instances[start:start + batch]
            try:
                answer = client.store_instances([pydicom.dcmread(i.path) for i in part])
            except HTTPError as exc:
                self.log(f"  STOW-RS answered {exc.response.status_code if exc.response is not None else '?'}")
                continue
            # dicomweb-client returns the STOW-RS response as a dataset: the Referenced SOP Sequence lists
            # what was stored, the Failed SOP Sequence what was not.
            refs = answer.get("ReferencedSOPSequence") or []
            stored += sum(1 for ref in refs if str(ref.ReferencedSOPInstanceUID) in {i.sop for i in part})
        return stored

    # -- the abrupt loss ---------------------------------------------------------------------------------
    def stow_while_lost(self, r: Region, instances: Sequence[Instance], *, cut_at: int, kill_at: int
                        ) -> tuple[set[str], float]:
        """STOW-RS ``instances`` to ``r`` one per request, 8 at a time; when ``cut_at`` are acknowledged the
        other region loses its link to ``r``'s change feed, when ``kill_at`` are, ``r`` is lost (:meth:`kill`)
        with requests still in flight. Returns the acknowledged SOP Instance UIDs and when the loss was done
        (``time.monotonic()``)."""
        import pydicom
        from requests import RequestException

        acked: set[str] = set()
        lock = threading.Lock()
        cut, kill = threading.Event(), threading.Event()

        def one(i: Instance) -> None:
            if kill.is_set():
                return
            client = self.client(r)
            client.set_http_retry_params(retry=False)  # its retries would only wait on a region that is gone
            try:
                answer = client.store_instances([pydicom.dcmread(i.path)])
            except (RequestException, OSError):
                return  # cut off by the loss: not acknowledged
            refs = answer.get("ReferencedSOPSequence") or []
            if any(str(ref.ReferencedSOPInstanceUID) == i.sop for ref in refs):
                with lock:
                    acked.add(i.sop)
                    n = len(acked)
                if n >= cut_at:
                    cut.set()
                if n >= kill_at:
                    kill.set()

        pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stow-in-flight")
        futures = [pool.submit(one, i) for i in instances]
        deadline = time.monotonic() + self.timeout

        def until(event: threading.Event) -> bool:
            """Wait for ``event``; False if every request ended (or time ran out) before it."""
            while not event.wait(0.05):
                if all(f.done() for f in futures) or time.monotonic() > deadline:
                    return event.is_set()
            return True

        if until(cut) and r.link is not None:
            r.link.cut()  # the other region's follower reads r's change feed through r's link
            self.log(f"  {len(acked)} acknowledged: the {r.peer}'s link to the {r.key}'s change feed is cut "
                     "(its follower falls behind)")
        if not until(kill):
            self.log(f"  only {len(acked)} of {len(instances)} acknowledged before every request ended")
        with lock:
            at_kill = len(acked)
        in_flight = sum(1 for f in futures if f.running())
        self.kill(r)
        lost_at = time.monotonic()
        self.log(f"  {at_kill} acknowledged, {in_flight} request(s) in flight: the primary is lost (host killed, "
                 "storage stopped)")
        kill.set()
        pool.shutdown(wait=True, cancel_futures=True)
        return acked, lost_at

    def replica_sops(self, r: Region, container: str, instances: Sequence[Instance]) -> set[str]:
        """SOP Instance UIDs of ``instances`` whose file is in ``container`` of ``r``'s account, listed there."""
        from azure.storage.blob import BlobServiceClient

        wanted = {layout.instance_path(i.study, i.series, i.sop): i.sop for i in instances}
        client = BlobServiceClient.from_connection_string(r.storage).get_container_client(container)
        return {wanted[b.name] for b in client.list_blobs() if b.name in wanted}

    def inbox_sops(self, r: Region, instances: Sequence[Instance]) -> set[str]:
        """SOP Instance UIDs of ``instances`` whose STOW-RS part reached ``r``'s inbox (ingest takes it from
        there, after a restart too)."""
        from azure.storage.blob import BlobServiceClient

        sops = {i.sop for i in instances}
        client = BlobServiceClient.from_connection_string(r.storage).get_container_client(layout.INBOX)
        return {sop for b in client.list_blobs(name_starts_with="stow/")
                if (sop := b.name.rsplit("/", 1)[-1].split("-", 1)[-1].removesuffix(".dcm")) in sops}

    def catch_up(self, r: Region) -> list[str]:
        """The runbook's step: ``python -m tools reindex --since follower`` against region ``r``."""
        from tools.cli import main as tools_main

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = tools_main(["reindex", "--connection-string", r.app_storage, "--region", r.key,
                               "--peer-region", r.peer, "--since", "follower", "--quiet"])
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        if code != 0:
            raise DrillError(f"reindex --since follower failed in {r.key}: {' / '.join(lines[-3:])}")
        return lines

    def watch_gate(self, r: Region, timeout: float, *, expect: Sequence[Instance] = ()
                   ) -> tuple[dict[str, Any] | None, float, int]:
        """Poll ``r``'s /api/health until it answers 200: the first 503 body seen (None if none), how long the
        health endpoint kept the region out, and how many of ``expect`` QIDO found there right then (what
        Front Door would have served on failback)."""
        import requests

        t0 = time.monotonic()
        first: dict[str, Any] | None = None
        while time.monotonic() - t0 < timeout:
            try:
                got = requests.get(f"{r.base_url}/health", timeout=10)
            except requests.RequestException:
                time.sleep(0.5)
                continue
            if got.status_code == 200:
                held = time.monotonic() - t0
                return first, held, len(self.found(r, expect))
            if first is None and got.status_code == 503:
                first = got.json()
            time.sleep(0.5)
        raise DrillError(f"{r.key}'s /api/health did not answer 200 within {timeout:.0f} s (last: {first})")

    # -- the scenario -------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        from tools.upload import upload_and_wait

        t0 = time.monotonic()
        self.log(f"== Corpus: {self.n_primary} + {self.n_abrupt} + {self.n_outage} instances in {self.workdir}")
        first = make_corpus(self.workdir / "corpus" / "primary", studies=split(self.n_primary, self.per_study)[0],
                            slices=split(self.n_primary, self.per_study)[1], seed=1301)
        abrupt = make_corpus(self.workdir / "corpus" / "abrupt", studies=split(self.n_abrupt, self.per_study)[0],
                             slices=split(self.n_abrupt, self.per_study)[1], seed=1303)
        later = make_corpus(self.workdir / "corpus" / "outage", studies=split(self.n_outage, self.per_study)[0],
                            slices=split(self.n_outage, self.per_study)[1], seed=1302)
        everything = first + later
        self.corpus = {"first": first, "abrupt": abrupt, "later": later}
        a, b = self.a, self.b
        # Every port of both regions at once, so none is handed out twice (each region's settings name the
        # other's storage, so all are fixed before either starts; a restart keeps them).
        ports = stack.procs.free_ports(14)
        a.take_ports(ports[:7])
        b.take_ports(ports[7:])
        self.log("== Two regions: Azurite + devhost + event fabric each (free ports)")
        t_start = time.monotonic()
        self.start(a)
        self.started = time.monotonic() - t_start
        self.b.state_dir.mkdir(parents=True, exist_ok=True)  # one signing key: the secondary's issuer serves it too
        shutil.copyfile(a.state_dir / "issuer-keys.json", b.state_dir / "issuer-keys.json")
        self.start(b)
        self.token = self._mint()
        self.replicator = Replicator([
            Policy("primary->secondary", a.storage, b.storage, tuple(layout.regional(c, PRIMARY)
                                                                     for c in layout.REGIONAL)),
            Policy("secondary->primary", b.storage, a.storage, tuple(layout.regional(c, SECONDARY)
                                                                     for c in layout.REGIONAL)),
        ], interval=0.5).start()

        self.log(f"== 1. Ingest {len(first)} instances in the primary (upload to its inbox)")
        outcomes = upload_and_wait([self.workdir / "corpus" / "primary"], connection_string=a.storage,
                                   base_url=a.base_url, key=self.token, timeout=self.timeout)
        ingested = sum(1 for o in outcomes if (o.status or {}).get("state") in ("archived", "updated"))
        self.results["ingested"] = ingested
        self.log(f"  {ingested} archived")

        self.log("== 2. Replication to the secondary; its follower indexes what arrives")
        self.replicator.wait_caught_up("primary->secondary", self.timeout)
        self.wait_found(b, first, "secondary index", self.timeout)
        self.log("== 3. The secondary serves them: QIDO (all levels), WADO-RS (instance, metadata, frames)")
        self.results["qido"] = len(self.found(b, first))
        self.results["wado"], self.results["frames"] = self.wado(b, first)
        self.log(f"  QIDO {self.results['qido']}, WADO {self.results['wado']}, frames {self.results['frames']}")

        self.log(f"== 4. The primary region is lost abruptly while STOW-RS stores {len(abrupt)} more there")
        n = len(abrupt)
        acked, lost_at = self.stow_while_lost(a, abrupt, cut_at=max(1, n // 3), kill_at=max(1, 2 * n // 3))
        self.replicator.wait_source_lost("primary->secondary", 30)
        replicated = self.replica_sops(b, layout.regional(layout.ARCHIVE, PRIMARY), abrupt)
        reached = [i for i in abrupt if i.sop in replicated]
        visible_at_loss = self.found(b, reached)
        self.results.update(acknowledged=len(acked), replicated=len(replicated),
                            visible_at_loss=len(visible_at_loss))
        self.log(f"  replicated to the secondary by then: {len(replicated)}; found there by QIDO at that moment: "
                 f"{len(visible_at_loss)} (the follower was behind)")

        self.log("== 5. Runbook: the secondary catches up without the primary (reindex --since follower)")
        for line in self.catch_up(b):
            self.log(f"  {line}")
        visible = self.wait_found(b, reached, "secondary catch-up", self.timeout)
        self.results["visible"] = len(visible & replicated)
        self.results["visible_seconds"] = round(time.monotonic() - lost_at, 1)
        self.log(f"  {self.results['visible']}/{len(replicated)} found on the secondary, "
                 f"{self.results['visible_seconds']} s after the loss")

        self.log(f"== 6. STOW-RS {len(later)} instances to the secondary during the outage")
        stored = self.stow(b, later)
        queryable = self.found(b, later)
        self.results["outage"] = min(stored, len(queryable))
        self.log(f"  {stored} stored, {len(queryable)} queryable in the secondary")

        self.log("== 7. The primary comes back: gated until caught up; replication and both followers catch up")
        # The outage lasts at least OUTAGE_SECONDS (shorter ones are caught up by the follower's next run and not
        # gated): the primary's start is timed to end then (it took `started` seconds the first time), and its
        # health is not asked before.
        back_at = lost_at + OUTAGE_SECONDS
        wait = back_at - self.started - time.monotonic()
        if wait > 0:
            self.log(f"  (the primary stays lost {back_at - time.monotonic():.0f} s more: outages shorter than "
                     f"{OUTAGE_SECONDS:.0f} s are caught up by its follower's next run and not gated)")
            time.sleep(wait)
        if a.link is not None:
            a.link.restore()
        self.up(a, ready_path=None)
        time.sleep(max(0.0, back_at - time.monotonic()))
        gate, gated, served = self.watch_gate(a, self.timeout, expect=later)
        self.results.update(gate=gate, gate_seconds=round(gated, 1), served_at_failback=served)
        self.log("  the primary's /api/health answered " + (
            f"503 {gate.get('status')!r} (behind {gate.get('behind_seconds')} s) for {gated:.1f} s, then 200"
            if gate else "200 at once") + f"; it then served {served}/{len(later)} outage writes")
        self.replicator.wait_caught_up("secondary->primary", self.timeout)
        self.replicator.wait_caught_up("primary->secondary", self.timeout)
        arrived = self.inbox_sops(a, abrupt) | acked | replicated
        batch = [i for i in abrupt if i.sop in arrived]
        self.arrived = {i.sop for i in batch}
        total = everything + batch
        self.results["primary_after"] = len(self.wait_found(a, everything, "primary after recovery", self.timeout))
        self.results["secondary_after"] = len(self.wait_found(b, everything, "secondary after recovery",
                                                              self.timeout))
        found_a = self.wait_found(a, total, "primary after recovery (all)", self.timeout)
        found_b = self.wait_found(b, total, "secondary after recovery (all)", self.timeout)
        self.results.update(total=len(total), total_primary=len(found_a), total_secondary=len(found_b))
        lost = acked - (found_a & found_b)
        unreplicated = acked - replicated
        self.results["acknowledged_lost"] = len(lost)
        self.results["acknowledged_unreplicated"] = len(unreplicated)
        self.log(f"  acknowledged by the primary (STOW-RS 200): {len(acked)}; of those not yet replicated when it "
                 f"was lost: {len(unreplicated)} (replication is asynchronous: the secondary lacked them until the "
                 f"primary returned); acknowledged but lost for good: {len(lost)} (an acknowledged write is in the "
                 "primary's storage, which outlives the region's outage and replicates when it returns; only the "
                 "loss of that storage itself, which Azure's RA-GZRS makes unlikely, would lose them)")
        self.results["refused_writes"] = (a.proxy.refused if a.proxy else 0) + (b.proxy.refused if b.proxy else 0)
        self.results["seconds"] = round(time.monotonic() - t0, 1)
        return self.results

    def summary(self) -> str:
        r, n, m = self.results, self.n_primary, self.n_outage
        return (f"DR drill: primary ingested {r.get('ingested', 0)}; secondary served {r.get('qido', 0)}/{n} QIDO, "
                f"{r.get('wado', 0)}/{n} WADO, {r.get('frames', 0)}/{n} frames; "
                f"outage writes {r.get('outage', 0)}/{m}; "
                f"after recovery primary {r.get('primary_after', 0)}/{n + m}, "
                f"secondary {r.get('secondary_after', 0)}/{n + m}")

    def abrupt_summary(self) -> str:
        r, m = self.results, self.n_outage
        n, k = r.get("replicated", 0), r.get("total", 0)
        return (f"abrupt loss: replicated {n}, visible on secondary {r.get('visible', 0)}/{n} after "
                f"{r.get('visible_seconds', 0)} s; outage writes {r.get('outage', 0)}/{m}; "
                f"after recovery primary {r.get('total_primary', 0)}/{k}, secondary {r.get('total_secondary', 0)}/{k}")

    def passed(self) -> bool:
        r, n, m = self.results, self.n_primary, self.n_outage
        return (r.get("ingested") == n and r.get("qido") == r.get("wado") == r.get("frames") == n
                and r.get("outage") == m and r.get("primary_after") == r.get("secondary_after") == n + m
                and r.get("visible") == r.get("replicated") and r.get("acknowledged_lost") == 0
                and r.get("served_at_failback") == m
                and r.get("total_primary") == r.get("total_secondary") == r.get("total"))

    def close(self) -> None:
        if self.replicator is not None:
            self.replicator.stop()
        for r in (self.a, self.b):
            if (r.state_dir / "state.json").exists():
                self.down(r)
            if r.proxy is not None:
                r.proxy.stop()
            if r.link is not None:
                r.link.stop()

    def __enter__(self) -> Drill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--primary", type=int, default=300, help="instances ingested in the primary (default 300)")
    parser.add_argument("--outage", type=int, default=50, help="instances written during the outage (default 50)")
    parser.add_argument("--abrupt", type=int, default=100,
                        help="instances stored in the primary while it is lost (default 100)")
    parser.add_argument("--per-study", type=int, default=10, help="instances per study (default 10)")
    parser.add_argument("--timeout", type=float, default=600.0, help="most seconds any one step waits")
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")


def run(args: argparse.Namespace) -> int:
    if args.primary < 1 or args.outage < 1 or args.abrupt < 3:
        print("drill: --primary and --outage must be at least 1, --abrupt at least 3", file=sys.stderr)
        return 2
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="dr-drill-")
    workdir = Path(args.workdir) if args.workdir else Path(tmp.name)  # type: ignore[union-attr]
    drill = Drill(workdir, primary=args.primary, outage=args.outage, abrupt=args.abrupt, per_study=args.per_study,
                  timeout=args.timeout)
    try:
        with drill:
            drill.run()
    except DrillError as exc:
        print(f"drill: {exc}", file=sys.stderr)
        print(drill.summary())
        print(drill.abrupt_summary())
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        print(json.dumps(drill.results))
    print(drill.summary())
    print(drill.abrupt_summary())
    return 0 if drill.passed() else 1
