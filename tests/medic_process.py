"""Running medic as a real process, and what such tests share.

Tests that crash medic (SIGKILL) or watch it escalate start ``python -m agent`` as a
child with an environment of their own; they record every child in ``processes``
(a fixture in conftest.py) so that none outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Small numbers, so that medic escalates within seconds: two starts, one second apart.
QUICK_PLAYBOOK = """\
version: 1
defaults:
  backoff: {initial: 1s, factor: 2, max: 2s, reset_after: 10m}
  escalate: {after_attempts: 2, within: 10m}
playbooks:
  - name: start-again
    match: {signals: [exited, crash_loop]}
    actions: [start]
"""


def medic_env(
    *, state: Path, url: str, project: str, playbooks: Path, **extra: str
) -> dict[str, str]:
    """This process's environment without its MEDIC_ settings, plus a quick medic's:
    a 1 s poll, no HTTP server, the given state folder, database, project and
    playbooks, and ``extra`` (``MEDIC_SETTLE="2"``, say)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIC_")}
    env.update(
        MEDIC_STATE_DIR=str(state),
        MEDIC_DATABASE_URL=url,
        MEDIC_PROJECT=project,
        MEDIC_PLAYBOOKS=str(playbooks),
        MEDIC_INTERVAL="1",
        MEDIC_HTTP_PORT="0",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def start(
    started: list[subprocess.Popen[bytes]], args: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start ``args`` in the checkout with its output appended to ``log``."""
    with log.open("ab") as out:
        process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    started.append(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, as ``docker stop`` sends it, then SIGKILL if ``process`` has not exited
    within ``timeout`` seconds; its exit code (negative when a signal ended it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=30)


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An apprise ``json://`` URL on 127.0.0.1 and the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_port}/medic", received
    finally:
        server.shutdown()
        server.server_close()
