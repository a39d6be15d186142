"""A `medic run` killed with SIGKILL in the middle of a restart leaves the attempt on
record, and the medic started right after records it as interrupted and waits its
backoff instead of restarting again.

Everything is real: the engine, Postgres (a database of its own), and two `medic run`
processes. The container's shell is PID 1 without a SIGTERM handler, so it ignores
SIGTERM and the restart waits the playbook's whole stop timeout before the engine
kills it: medic is killed while that restart is in flight. Whether a second restart
was issued is read from the engine's own events (each restart sends one SIGTERM),
not from timing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import ComposeProject, healthcheck, wait_for
from medic_process import ROOT, medic_env, start

pytestmark = pytest.mark.docker


#: The engine's restart waits this long for the SIGTERM-ignoring shell, then kills it.
STOP_TIMEOUT = 15

PLAYBOOK = textwrap.dedent(
    f"""
    version: 1
    playbooks:
      - name: restart-unhealthy
        match:
          signals: [unhealthy]
        actions:
          - restart: {{timeout: {STOP_TIMEOUT}s}}
        backoff: {{initial: 2m, factor: 2, max: 5m, reset_after: 10m}}
        escalate: {{after_attempts: 100, within: 1h}}
    """
)

#: PID 1 without a trap: SIGTERM is ignored. Healthy until /tmp/broken exists; a start
#: (the restart's) makes it healthy again.
IGNORES_SIGTERM = "rm -f /tmp/broken; while :; do sleep 0.2; done"


def attempts(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, finished_at, ok, error, output, incident_id FROM attempts"
        ).fetchall()


def incident_status(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT status FROM incidents").fetchall()]


def sigterms(client: Any, container_id: str, *, since: float) -> int:
    """SIGTERMs the engine sent the container since ``since``: one per restart."""
    events = client.api.events(
        since=since,
        until=time.time(),
        filters={"type": "container", "container": [container_id], "event": ["kill"]},
        decode=True,
    )
    return sum(1 for e in events if e.get("Actor", {}).get("Attributes", {}).get("signal") == "15")


def test_a_medic_killed_mid_restart_is_followed_by_one_that_records_it_and_waits(
    tmp_path: Path,
    postgres_url: str,
    compose_project: ComposeProject,
    docker_client: Any,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    web = compose_project.run(
        "web",
        command=["sh", "-c", IGNORES_SIGTERM],
        healthcheck=healthcheck("test ! -f /tmp/broken"),
    )
    wait_for(
        lambda: (
            docker_client.api.inspect_container(web.id)["State"]["Health"]["Status"] == "healthy"
        ),
        timeout=30,
        message="web healthy at first",
    )
    first_start = docker_client.api.inspect_container(web.id)["State"]["StartedAt"]
    playbooks = tmp_path / "playbooks.yml"
    playbooks.write_text(PLAYBOOK)
    env = medic_env(
        state=tmp_path / "state",
        url=postgres_url,
        project=compose_project.name,
        playbooks=playbooks,
        MEDIC_SETTLE="2",
    )
    since = time.time()

    first_log = tmp_path / "medic-1.log"
    first = start(processes, [sys.executable, "-m", "agent", "run"], env, first_log)
    wait_for(
        lambda: first.poll() is not None or "medic is supervising" in first_log.read_text(),
        timeout=60,
        message="the first medic supervising",
    )
    web.exec_run(["touch", "/tmp/broken"])
    wait_for(
        lambda: first.poll() is not None or [a[0] for a in attempts(postgres_url)] == ["running"],
        timeout=60,
        message="the restart recorded as running",
    )
    assert first.poll() is None, first_log.read_text()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # The engine carries on with the restart medic asked for: it is still waiting out
    # the stop timeout, and the container has not been started again.
    assert docker_client.api.inspect_container(web.id)["State"]["StartedAt"] == first_start

    second_log = tmp_path / "medic-2.log"
    second = start(processes, [sys.executable, "-m", "agent", "run"], env, second_log)
    wait_for(
        lambda: (
            second.poll() is not None or [a[0] for a in attempts(postgres_url)] == ["interrupted"]
        ),
        timeout=60,
        message="the attempt recorded as interrupted",
    )
    [(status, finished_at, ok, error, output, incident_id)] = attempts(postgres_url)
    assert (status, finished_at, ok) == ("interrupted", None, False)
    assert "medic stopped before it ended" in error
    assert "the engine says the container is running" in output
    assert "was interrupted" in second_log.read_text()

    # The engine's restart ends (SIGKILL after the stop timeout, then a start); the
    # container is healthy again and the second medic resolves the incident.
    wait_for(
        lambda: docker_client.api.inspect_container(web.id)["State"]["StartedAt"] != first_start,
        timeout=STOP_TIMEOUT + 30,
        message="the engine's restart to finish",
    )
    wait_for(
        lambda: second.poll() is not None or incident_status(postgres_url) == ["resolved"],
        timeout=60,
        message="the incident resolved by the second medic",
    )
    assert second.poll() is None, second_log.read_text()
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, second_log.read_text()

    # One restart in all: the second medic issued none of its own.
    assert sigterms(docker_client, web.id, since=since) == 1
    assert [a[0] for a in attempts(postgres_url)] == ["interrupted"]
    shown = subprocess.run(
        [sys.executable, "-m", "agent", "incidents", "show", incident_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "end unknown" in shown.stdout
    assert "interrupted: medic stopped before it ended" in shown.stdout
