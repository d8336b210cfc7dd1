"""The association acceptor: ``python -m gateway`` (settings from the environment, shared/config.py).

Who may talk to it: the called AE title must be ours (``DICOMFLOW_GATEWAY_AE_TITLE``, default
DICOMFLOW), the calling AE title must be on ``DICOMFLOW_GATEWAY_ALLOWED_AE_TITLES`` when that is
set (else A-ASSOCIATE-RJ), and the peer's address must be in ``DICOMFLOW_GATEWAY_ALLOWED_NETWORKS``
when that is set (else the connection is closed before any PDU). With a certificate configured
the port speaks DICOM TLS only: a plain TCP association fails the handshake. Beyond loopback it
listens only with a calling AE allow-list or mutual TLS (it refuses to start otherwise, naming the
settings). Limits: at most ``MAX_ASSOCIATIONS`` at once (more are rejected, transient), PDUs of
``MAX_PDU_BYTES``, data sets of ``MAX_STORE_BYTES`` (gateway/spool.py), and ``TIMEOUT_SECONDS`` for
the ACSE, DIMSE and network (idle) timers and the TLS handshake. The handshake runs on the
connection's own thread, not the accepting one, so a client that connects and says nothing delays
no one else; at most ``MAX_ASSOCIATIONS`` handshakes are pending at once (more connections are
closed at once).

Logs: one line per association (calling AE, address, outcome) and per operation (UIDs, sizes,
counts); pynetdicom's own logging is kept at WARNING and its identifier dumps are off, so no
patient data reaches the log.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import tempfile
import threading
from functools import partial
from pathlib import Path
from typing import Any, cast

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from gateway import find, retrieve, store
from gateway.app import Gateway
from gateway.commitment import STORAGE_COMMITMENT, Commitment
from gateway.spool import Spool, SpoolError
from gateway.tls import server_context
from shared.config import GatewaySettings, Settings, get_settings

log = logging.getLogger("gateway")

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
)


def _quiet_pynetdicom() -> None:
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # Received data sets go to a temporary file as they arrive (store.py uploads that file).
    _config.STORE_RECV_CHUNKED_DATASET = True


class GatewayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server plus a source-network allow-list and a bounded TLS handshake that
    runs on the connection's thread (pynetdicom's own runs it on the accepting thread)."""

    networks: tuple[Any, ...] = ()
    handshake_timeout: float = 30.0
    handshakes: threading.BoundedSemaphore | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.networks:
            host = ipaddress.ip_address(address[0].split("%")[0])
            if not any(host in net for net in self.networks):
                log.warning("Connection from %s refused: not in DICOMFLOW_GATEWAY_ALLOWED_NETWORKS", address[0])
                client.close()
                raise OSError("source address not allowed")  # socketserver drops the request
        return client, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """On the connection's own thread: the TLS handshake (bounded in time and in how many wait at
        once), then pynetdicom's association."""
        if self.ssl_context is not None:
            request = self._handshake(request, client_address)
            if request is None:
                return
        super().process_request_thread(request, client_address)

    def _handshake(self, client: socket.socket, address: tuple[str, int]) -> socket.socket | None:
        assert self.ssl_context is not None
        gate = self.handshakes
        if gate is not None and not gate.acquire(blocking=False):
            log.warning("Connection from %s closed: too many TLS handshakes pending", address[0])
            client.close()
            return None
        try:
            client.settimeout(self.handshake_timeout)
            secure = self.ssl_context.wrap_socket(client, server_side=True)
            secure.settimeout(None)
            return secure
        except (OSError, ValueError) as exc:
            log.warning("TLS handshake with %s failed (%s): plain TCP, an untrusted client or no answer within "
                        "DICOMFLOW_GATEWAY_TIMEOUT_SECONDS", address[0], type(exc).__name__)
            client.close()
            return None
        finally:
            if gate is not None:
                gate.release()


def build_ae(cfg: GatewaySettings) -> AE:
    ae = AE(ae_title=cfg.ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = list(cfg.allowed_ae_titles)
    ae.maximum_associations = cfg.max_associations
    ae.maximum_pdu_size = cfg.max_pdu_bytes
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = cfg.timeout_seconds
    syntaxes = list(AllTransferSyntaxes)
    # Storage: every storage SOP class, every transfer syntax pydicom knows (stored as received). The SCU and
    # SCP roles are both accepted so a C-GET requester's storage contexts (it is the SCP there) are agreed.
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        ae.add_supported_context(cx.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
    ae.add_supported_context(Verification)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class)
    ae.add_supported_context(STORAGE_COMMITMENT)
    return ae


class Service:
    """The running gateway: ``start()`` binds the port, ``stop()`` ends every association."""

    def __init__(self, settings: Settings) -> None:
        _quiet_pynetdicom()
        self.gw = Gateway.from_settings(settings)
        self.cfg = settings.gateway
        self.ae = build_ae(self.cfg)
        self.commitment = Commitment(self.gw)
        self.spool = Spool(spool_folder(self.cfg), self.cfg.max_store_bytes)
        self.server: GatewayServer | None = None

    def handlers(self) -> list[Any]:
        gw = self.gw

        def opened(event: Any) -> None:
            assoc = event.assoc
            log.info("Association assoc=%s from %s (%s:%s) accepted, %d context(s)", store.association_id(assoc),
                     assoc.requestor.ae_title, assoc.requestor.address, assoc.requestor.port,
                     len(assoc.accepted_contexts))

        def rejected(event: Any) -> None:
            assoc = event.assoc
            log.warning("Association from %s (%s) rejected: calling/called AE title not allowed or too many "
                        "associations", assoc.requestor.ae_title, assoc.requestor.address)

        def ended(event: Any, how: str) -> None:
            log.info("Association assoc=%s %s", store.association_id(event.assoc), how)

        def closed(event: Any) -> None:
            left = self.spool.release(event.assoc)  # a data set that never arrived whole, a handler that raised
            if left:
                log.info("Association assoc=%s: %d unfinished data set(s) removed", store.association_id(event.assoc),
                         left)

        return [
            (evt.EVT_ACCEPTED, opened), (evt.EVT_REJECTED, rejected),
            (evt.EVT_RELEASED, partial(ended, how="released")), (evt.EVT_ABORTED, partial(ended, how="aborted")),
            (evt.EVT_CONN_CLOSE, closed),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
            (evt.EVT_C_STORE, partial(store.handle_store, gw=gw, spool=self.spool)),
            (evt.EVT_C_FIND, partial(find.handle_find, gw=gw)),
            (evt.EVT_C_MOVE, partial(retrieve.handle_move, gw=gw)),
            (evt.EVT_C_GET, partial(retrieve.handle_get, gw=gw)),
            (evt.EVT_N_ACTION, self.commitment.handle_n_action),
        ]

    def start(self) -> GatewayServer:
        self.spool.start()
        server = cast(GatewayServer, self.ae.make_server(
            (self.cfg.host, self.cfg.port), ssl_context=server_context(self.cfg), evt_handlers=self.handlers(),
            server_class=GatewayServer))
        server.networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.cfg.allowed_networks)
        server.handshake_timeout = self.cfg.timeout_seconds
        server.handshakes = threading.BoundedSemaphore(self.cfg.max_associations)
        thread = threading.Thread(target=server.serve_forever, name="gateway-acceptor", daemon=True)
        thread.start()
        self.ae._servers.append(server)
        self.server = server
        log.info("DICOM gateway %s listening on %s:%d (%s; calling AEs: %s; networks: %s; max %d associations)",
                 self.cfg.ae_title, self.cfg.host, server.server_address[1], "TLS" if self.cfg.tls else "plain TCP",
                 ",".join(self.cfg.allowed_ae_titles) or "any", ",".join(self.cfg.allowed_networks) or "any",
                 self.cfg.max_associations)
        return server

    def stop(self) -> None:
        self.ae.shutdown()
        self.commitment.close()
        self.spool.stop()
        log.info("DICOM gateway stopped")


def spool_folder(cfg: GatewaySettings) -> Path:
    return Path(cfg.spool_dir) if cfg.spool_dir else Path(tempfile.gettempdir()) / f"dicomflow-gateway-{cfg.port}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = get_settings()
    try:
        settings.require_storage()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    exposed = settings.gateway.exposure_problem()
    if exposed:
        log.error("%s", exposed)
        return 2
    service = Service(settings)
    try:
        service.start()
    except SpoolError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("Cannot listen on %s:%d (%s): is another gateway running? Set DICOMFLOW_GATEWAY_PORT.",
                  settings.gateway.host, settings.gateway.port, exc.strerror or exc)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    service.stop()
    return 0
