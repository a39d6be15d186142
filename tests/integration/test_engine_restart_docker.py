"""After a real Docker engine restarts, the events stream is back at the first ping.

The shared engine must not be restarted, so this test starts a second ``dockerd`` of
its own (own data root, exec root, pid file, socket and bridge; no iptables),
points a supervisor at it, stops the engine and starts it again. The log must show
one warning when the engine went away, one line when it was back, and no backoff
pause in between; the time to reconnect is printed, not asserted.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_for
from loguru import logger

from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.errors import DockerError
from agent.healing.observe import Scope
from agent.store import MemoryStore
from agent.supervisor import Supervisor

pytestmark = pytest.mark.docker

DOCKERD = shutil.which("dockerd")


class OwnEngine:
    """A dockerd of this test's own, which it may stop and start at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        # Interface names are at most 15 characters.
        self.bridge = f"medic{root.name[-8:]}"

    def start(self) -> None:
        assert DOCKERD is not None
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [
                DOCKERD,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "dockerd.pid"),
                "-H",
                self.host,
                # A bridge of its own. Never ``--bridge none``: an engine started so
                # deletes the host's docker0, which the shared engine's containers use.
                "--bridge",
                self.bridge,
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self.answers, timeout=60, interval=0.1, message="the test's own dockerd")

    def answers(self) -> bool:
        try:
            gateway = DockerSDKGateway.from_env({"DOCKER_HOST": self.host})
            try:
                gateway.ping(retry=False)
            finally:
                gateway.close()
        except DockerError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None


@pytest.fixture
def engine() -> Iterator[OwnEngine]:
    if DOCKERD is None or os.geteuid() != 0:
        pytest.skip("needs dockerd and root to run a Docker engine of the test's own")
    # A short path: a unix socket's path must fit in 108 bytes.
    root = Path(f"/tmp/medic-engine-{uuid.uuid4().hex[:8]}")
    root.mkdir()
    own = OwnEngine(root)
    shared_bridge = Path("/sys/class/net/docker0")
    had_shared_bridge = shared_bridge.exists()
    # The engine gives the bridge an address of its choosing, as it does docker0.
    subprocess.run(["ip", "link", "add", own.bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "link", "set", own.bridge, "up"], check=True)
        own.start()
        yield own
    finally:
        own.stop()
        subprocess.run(["ip", "link", "delete", own.bridge], check=False)
        shutil.rmtree(root, ignore_errors=True)
    # The shared engine's containers need their bridge after this test too.
    assert shared_bridge.exists() or not had_shared_bridge, "the test's engine removed docker0"


# docker-py's UnixHTTPConnection.connect does not close its socket when the connect
# fails (no socket file while the engine is away); the garbage collector closes it and
# Python warns. That is the library's, and no descriptor is kept.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_events_stream_is_back_at_the_first_ping_after_the_engine_restarts(
    engine: OwnEngine,
) -> None:
    lines: list[tuple[float, str, str]] = []
    sink = logger.add(
        lambda m: lines.append(
            (time.monotonic(), m.record["level"].name, str(m.record["message"]))
        ),
        level="INFO",
    )
    gateway = DockerSDKGateway.from_env(
        {"DOCKER_HOST": engine.host}, retry_attempts=1, retry_max_delay=0.5
    )
    project = f"medic-engine-{uuid.uuid4().hex[:8]}"
    s = Supervisor(
        healing=HealingSettings(interval=300),
        gateway=gateway,
        store=MemoryStore(),
        playbooks=(),
        scope=Scope(project=project),
    )
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: s.events_connected, timeout=30, message="events connected")
        wait_for(lambda: s.last_cycle_at, timeout=30, message="the first poll")

        engine.stop()
        wait_for(lambda: not s.events_connected, timeout=30, message="the stream dropped")
        wait_for(
            lambda: any("does not answer" in text for _, _, text in lines),
            timeout=30,
            message="the engine seen away",
        )
        time.sleep(3)  # away for a few pings
        engine.start()
        back_at = time.monotonic()
        wait_for(lambda: s.events_connected, timeout=30, interval=0.05, message="reconnected")
        connected_at = time.monotonic()
    finally:
        s.stop()
        thread.join(timeout=30)
        logger.remove(sink)
        gateway.close()
        gc.collect()  # the sockets docker-py left behind are closed within this test

    said = [(level, text) for _, level, text in lines if "Docker engine" in text]
    assert [level for level, text in said if "does not answer" in text] == ["WARNING"]
    [(level, back)] = [(level, text) for level, text in said if "is back after" in text]
    assert level == "INFO" and "(it answered a ping)" in back
    # No backoff pause between the engine's return and the reconnect.
    assert not any("reconnecting in" in text for _, _, text in lines)
    print(f"The events stream was back {connected_at - back_at:.2f} s after dockerd answered.")
