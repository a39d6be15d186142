"""Two real `medic run` processes on one compose project: one acts, the other stands by.

Real parts only: the engine runs the container, Postgres (a database of its own)
holds the lease and the incidents, and both medics are started as an operator starts
them. Each break makes the container unhealthy (its health check fails once
/tmp/broken exists; a start removes it); the playbook restarts it. Restarts are
counted from the engine's own events, streamed from before the first break (the
engine keeps only its last 256 events), never from medic's logs or timing.

Which medic leads is read from the lease row: its holder names the process
(``host:pid:random``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import ComposeProject, health_status, healthcheck, wait_for
from medic_process import medic_env, start

from agent.store.postgres import run_migrations

pytestmark = pytest.mark.docker

#: Poll interval of both medics: a lease of 3 s, claimed every 0.5 s, acted on for 2.5 s.
INTERVAL = 2

#: Generous for a loaded two-core machine; nothing here measures speed.
TIMEOUT = 90

PLAYBOOK = textwrap.dedent(
    """
    version: 1
    playbooks:
      - name: restart-unhealthy
        match:
          signals: [unhealthy]
        actions:
          - restart: {timeout: 2s}
        backoff: {initial: 2s, factor: 2, max: 4s, reset_after: 10m}
        escalate: {after_attempts: 100, within: 1h}
    """
)

#: Healthy until /tmp/broken exists; every start removes it.
WEB = "rm -f /tmp/broken; while :; do sleep 0.2; done"


class Events:
    """The engine's events for one container, streamed on a thread from now on."""

    def __init__(self, client: Any, container_id: str) -> None:
        self.actions: list[str] = []
        self._stream = client.api.events(
            filters={"type": "container", "container": [container_id]}, decode=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                self.actions.append(str(event.get("Action") or event.get("status")))
        except Exception:  # the stream is closed under the reader at the end
            return

    def count(self, action: str) -> int:
        return sum(1 for a in list(self.actions) if a == action)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=10)


@contextmanager
def engine_events(client: Any, container_id: str) -> Iterator[Events]:
    events = Events(client, container_id)
    try:
        yield events
    finally:
        events.close()


def lease(url: str) -> tuple[str, int] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT holder, token FROM leases").fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def leader_pid(url: str) -> int | None:
    held = lease(url)
    return None if held is None else int(held[0].split(":")[1])


def resolved(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM incidents WHERE status = 'resolved'").fetchone()
    return int(row[0]) if row else 0


def lines(log: Path, text: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if text in line]


class Pair:
    """Two medics on the project: ``first`` started first (and so leads), then ``second``."""

    def __init__(
        self,
        tmp_path: Path,
        url: str,
        project: ComposeProject,
        processes: list[subprocess.Popen[bytes]],
    ) -> None:
        playbooks = tmp_path / "playbooks.yml"
        playbooks.write_text(PLAYBOOK)
        run_migrations(url)  # so the test can read the lease row from the start
        self.url = url
        self.logs = {name: tmp_path / f"medic-{name}.log" for name in ("first", "second")}

        def run(name: str) -> subprocess.Popen[bytes]:
            env = medic_env(
                state=tmp_path / name,
                url=url,
                project=project.name,
                playbooks=playbooks,
                MEDIC_INTERVAL=str(INTERVAL),
                MEDIC_SETTLE="2",
            )
            return start(processes, [sys.executable, "-m", "agent", "run"], env, self.logs[name])

        self.first = run("first")
        wait_for(
            lambda: self.first.poll() is not None or leader_pid(url) == self.first.pid,
            timeout=TIMEOUT,
            message="the first medic leading",
        )
        self.second = run("second")
        wait_for(
            lambda: self.second.poll() is not None or lines(self.logs["second"], "stands by"),
            timeout=TIMEOUT,
            message="the second medic standing by",
        )
        self.alive()

    def alive(self) -> None:
        for name, process in (("first", self.first), ("second", self.second)):
            if process.poll() is not None:
                raise AssertionError(f"medic {name} exited:\n{self.logs[name].read_text()}")


def broken_web(project: ComposeProject, client: Any) -> Any:
    web = project.run(
        "web",
        command=["sh", "-c", WEB],
        healthcheck=healthcheck("test ! -f /tmp/broken"),
        init=True,
    )
    wait_for(lambda: health_status(web) == "healthy", timeout=TIMEOUT, message="web healthy")
    return web


def break_and_heal(web: Any, events: Events, pair: Pair, n: int) -> None:
    """Break web for the ``n``th time; wait for its ``n``th restart and for medic to
    resolve the incident (so the next break is an episode of its own)."""
    web.exec_run(["touch", "/tmp/broken"])
    wait_for(lambda: events.count("restart") >= n, timeout=TIMEOUT, message=f"restart {n}")
    wait_for(lambda: health_status(web) == "healthy", timeout=TIMEOUT, message="healthy again")
    wait_for(lambda: resolved(pair.url) >= n, timeout=TIMEOUT, message=f"incident {n} resolved")
    pair.alive()


@dataclass
class Scene:
    """A service broken on demand, the engine's own events about it, and two medics."""

    web: Any
    events: Events
    pair: Pair


@pytest.fixture
def scene(
    tmp_path: Path,
    compose_project: ComposeProject,
    docker_client: Any,
    postgres_url: str,
    processes: list[subprocess.Popen[bytes]],
) -> Iterator[Scene]:
    web = broken_web(compose_project, docker_client)
    with engine_events(docker_client, web.id) as events:
        yield Scene(web, events, Pair(tmp_path, postgres_url, compose_project, processes))


def test_two_medics_restart_a_broken_service_once_per_break(
    scene: Scene, postgres_url: str
) -> None:
    web, events, pair = scene.web, scene.events, scene.pair
    for n in (1, 2, 3):
        break_and_heal(web, events, pair, n)
    time.sleep(3 * INTERVAL)  # room for a second restart, if any medic made one
    assert events.count("restart") == 3
    pair.alive()
    # One medic healed each break (the first, unless this machine starved it of its
    # lease meanwhile, which moves the healing, never doubles it).
    healing = [lines(log, "Healing it by playbook") for log in pair.logs.values()]
    assert sum(map(len, healing)) == 3
    assert sum(len(lines(log, " opened: ")) for log in pair.logs.values()) == 3
    with psycopg.connect(postgres_url) as conn:
        attempts = conn.execute("SELECT status, ok FROM attempts").fetchall()
    assert attempts == [("finished", True)] * 3


def test_a_killed_leader_is_followed_by_the_standby_which_heals_the_next_break(
    scene: Scene, postgres_url: str
) -> None:
    web, events, pair = scene.web, scene.events, scene.pair
    break_and_heal(web, events, pair, 1)

    pair.first.send_signal(signal.SIGKILL)
    pair.first.wait(timeout=30)
    killed = time.monotonic()
    web.exec_run(["touch", "/tmp/broken"])
    wait_for(lambda: events.count("restart") >= 2, timeout=TIMEOUT, message="restart 2")
    healed_after = time.monotonic() - killed
    wait_for(lambda: health_status(web) == "healthy", timeout=TIMEOUT, message="healthy")
    time.sleep(3 * INTERVAL)
    assert events.count("restart") == 2
    assert pair.second.poll() is None, pair.logs["second"].read_text()
    assert leader_pid(postgres_url) == pair.second.pid
    held = lease(postgres_url)
    assert held is not None and held[1] == 2  # the second term: one takeover
    [took_over] = lines(pair.logs["second"], "medic leads")
    assert "lease term 2" in took_over
    assert len(lines(pair.logs["second"], "Healing it by playbook")) == 1
    # For the record (not asserted: this machine may be loaded): the promise is two
    # intervals from the kill to the heal.
    print(f"healed {healed_after:.1f} s after the leader was killed (interval {INTERVAL} s)")


def test_a_paused_leader_resumes_as_a_standby_and_steps_down_in_one_line(
    scene: Scene, postgres_url: str
) -> None:
    web, events, pair = scene.web, scene.events, scene.pair
    pair.first.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: leader_pid(postgres_url) == pair.second.pid,
            timeout=TIMEOUT,
            message="the second medic taking the lease over",
        )
        break_and_heal(web, events, pair, 1)
        # Broken again as the old leader resumes: both see it; only one may act.
        web.exec_run(["touch", "/tmp/broken"])
    finally:
        pair.first.send_signal(signal.SIGCONT)
    wait_for(lambda: events.count("restart") >= 2, timeout=TIMEOUT, message="restart 2")
    wait_for(
        lambda: lines(pair.logs["first"], "stepped down"),
        timeout=TIMEOUT,
        message="the resumed medic saying it stepped down",
    )
    wait_for(lambda: health_status(web) == "healthy", timeout=TIMEOUT, message="healthy")
    time.sleep(3 * INTERVAL)
    assert events.count("restart") == 2
    pair.alive()
    first = pair.logs["first"]
    [stepped] = lines(first, "stepped down")
    assert "It stands by and takes no action" in stepped
    assert lines(first, "Healing it by playbook") == []
    assert lines(first, " opened: ") == []
    assert leader_pid(postgres_url) == pair.second.pid
    assert len(lines(pair.logs["second"], "Healing it by playbook")) == 2
