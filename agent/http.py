"""medic's HTTP server in ``medic run``: uvicorn serving agent/web/app.py on a thread.

It serves /healthz, /readyz, /metrics and /status always, and the review console and
its API when MEDIC_UI_TOKEN is set (agent/web/). The port is bound before the thread
starts, so a port in use is an error at start-up, not a line lost in a thread; port 0
picks a free one (``port`` says which). The health endpoints read state the supervisor
publishes and never touch Docker or the database; the console reads the incident
store, off the event loop, in uvicorn's thread pool.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn
from loguru import logger
from prometheus_client import CollectorRegistry

from agent.web.app import Check, build_app
from agent.web.console import Console


class _QuietServer(uvicorn.Server):
    """uvicorn's server, looking at its clock once a second instead of ten times: the
    tick only refreshes the Date header (to the second) and checks for a stop, and an
    idle medic should cost next to nothing. Stopping takes up to a second longer."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864_000  # on_tick refreshes the date every 10th
            await asyncio.sleep(1.0)


class StatusServer:
    """The health endpoints, and the console when given one, on one port."""

    def __init__(
        self,
        *,
        health: Check,
        ready: Check,
        registry: CollectorRegistry,
        status: Callable[[], Any] | None = None,
        console: Console | None = None,
        host: str = "0.0.0.0",  # it must answer from outside medic's own container
        port: int = 8080,
    ) -> None:
        app = build_app(
            health=health, ready=ready, registry=registry, status=status, console=console
        )
        self._console = console is not None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,  # probes every few seconds would drown the real log lines
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=3,
        )
        self._server = _QuietServer(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="medic-http",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        self._thread.start()
        if self._console:
            logger.info(
                "Serving the review console, its API, /healthz, /readyz and /metrics on port {}.",
                self.port,
            )
        else:
            logger.info(
                "Serving /healthz, /readyz and /metrics on port {} (the review console is off: "
                "set MEDIC_UI_TOKEN to turn it on).",
                self.port,
            )

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._socket.close()
