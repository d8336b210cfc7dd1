"""A stand-in for an Event Grid topic for integration tests: a loopback HTTP server that
accepts what the real ``azure-eventgrid`` publisher sends (key header, CloudEvents
batches) and keeps the events. End-to-end tests use the devhost's event fabric."""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EventSink:
    def __init__(self) -> None:
        self.key = secrets.token_urlsafe(16)
        self.events: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.requests = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("aeg-sas-key") != sink.key:
                    self.send_response(401)
                    self.end_headers()
                    return
                with sink._lock:
                    sink.requests += 1
                    sink.raw.append(body)
                    sink.events.extend(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def do_GET(self) -> None:
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/api/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> EventSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("type") == kind]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()
            self.raw.clear()
            self.requests = 0
