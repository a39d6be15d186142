"""/healthz, /readyz, /metrics and /status for ``medic run``.

/healthz says whether the loop is alive (the last poll finished within three
intervals) and whether the events stream is connected; a Docker HEALTHCHECK or an
orchestrator restarts medic when it is not. /readyz says whether incidents are
being recorded: the database answers, or the local spool is taking the writes.
/metrics is Prometheus text. /status is what ``medic status`` shows: each
container with its incidents, backoff and circuit state. The server runs on a
daemon thread of its own and reads state the supervisor publishes; it never
touches Docker or the database.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, dict[str, object]]]


class StatusServer:
    """A small HTTP server for health, readiness and metrics."""

    def __init__(
        self,
        *,
        health: Check,
        ready: Check,
        registry: CollectorRegistry,
        status: Callable[[], list[dict[str, object]]] | None = None,
        host: str = "0.0.0.0",  # it must answer from outside medic's own container
        port: int = 8080,
    ) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # probes every few seconds would drown the real log lines

        self._health = health
        self._ready = ready
        self._status = status
        self._registry = registry
        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="medic-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()
        logger.info("Serving /healthz, /readyz and /metrics on port {}.", self.port)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            body = generate_latest(self._registry)
            self._reply(request, 200, body, CONTENT_TYPE_LATEST)
        elif path == "/status" and self._status is not None:
            payload = json.dumps({"containers": self._status()}, default=str).encode()
            self._reply(request, 200, payload, "application/json")
        elif path in ("/healthz", "/readyz"):
            check = self._health if path == "/healthz" else self._ready
            try:
                ok, detail = check()
            except Exception as e:  # a failing check is an unhealthy answer, not a crash
                ok, detail = False, {"status": "error", "error": str(e)}
            payload = json.dumps(detail, default=str).encode()
            self._reply(request, 200 if ok else 503, payload, "application/json")
        else:
            self._reply(request, 404, b'{"error": "not found"}', "application/json")

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
