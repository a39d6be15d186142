"""log_match and probe_failed on a real engine: real logs, real ports."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from helpers import ComposeProject, wait_for

from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.healing.observe import Scope
from agent.model import (
    Action,
    Attempt,
    AttemptStatus,
    Incident,
    LogRule,
    Match,
    Playbook,
    ProbeKind,
    ProbeRule,
    Signal,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor

pytestmark = pytest.mark.docker

#: Logs the error every 0.3 s the first time; once restarted it stays quiet.
NOISY = (
    "trap 'exit 0' TERM; if [ -f /tmp/ran ]; then while :; do sleep 0.2; done; fi; "
    "touch /tmp/ran; while :; do echo 'FATAL: remaining connection slots are reserved'; "
    "sleep 0.3; done"
)
#: Serves HTTP on 8080 and has no HEALTHCHECK; killing httpd breaks it until a restart.
SERVER = (
    "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && httpd -p 8080 -h /tmp/www; "
    "trap 'exit 0' TERM; while :; do sleep 0.2; done"
)


class Running:
    def __init__(self, project: str, book: Playbook) -> None:
        self.store = MemoryStore()
        self.supervisor = Supervisor(
            healing=HealingSettings(interval=1.0, settle=1.0),
            gateway=DockerSDKGateway.from_env(),
            store=self.store,
            playbooks=[book],
            scope=Scope(project=project),
        )
        self.thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.thread.start()

    def incidents(self, container_id: str) -> list[Incident]:
        return [i for i in self.store.list_incidents() if i.container.id == container_id]

    def attempts(self, container_id: str) -> list[Attempt]:
        """The attempts that have ended: one is recorded as running when it starts."""
        return [
            a
            for i in self.incidents(container_id)
            for a in i.attempts
            if a.status is not AttemptStatus.RUNNING
        ]


@pytest.fixture
def medic(compose_project: ComposeProject) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        running.supervisor.stop()
        running.thread.join(timeout=30)


def test_an_error_logged_three_times_gets_the_container_restarted(
    compose_project: ComposeProject, medic: list[Running]
) -> None:
    rule = LogRule("remaining connection slots are reserved", count=3, window=60)
    book = Playbook(
        "db-slots",
        Match(frozenset({Signal.LOG_MATCH}), services=frozenset({"db"}), log=rule),
        (Action("restart", timeout=2),),
    )
    db = compose_project.run("db", command=["sh", "-c", NOISY])
    running = Running(compose_project.name, book)
    medic.append(running)
    wait_for(lambda: running.attempts(db.id), timeout=30, message="a restart")
    [incident] = running.incidents(db.id)
    assert incident.signal is Signal.LOG_MATCH
    assert incident.evidence[0].evidence["last_line"] == (
        "FATAL: remaining connection slots are reserved"
    )
    [attempt] = running.attempts(db.id)
    assert attempt.ok and attempt.action.startswith("restart")


def test_a_port_that_stops_answering_gets_the_container_restarted(
    compose_project: ComposeProject, medic: list[Running]
) -> None:
    rule = ProbeRule(ProbeKind.HTTP, 8080, "/", timeout=1, failures=2)
    book = Playbook(
        "web-port",
        Match(frozenset({Signal.PROBE_FAILED}), probe=rule),
        (Action("restart", timeout=2),),
    )
    web = compose_project.run("web", command=["sh", "-c", SERVER])
    running = Running(compose_project.name, book)
    medic.append(running)
    # Answering: a few polls pass without a finding.
    registry = running.supervisor.metrics.registry
    wait_for(
        lambda: (registry.get_sample_value("medic_cycles_total") or 0) >= 3,
        timeout=20,
        message="three polls",
    )
    assert running.incidents(web.id) == []

    web.exec_run(["killall", "httpd"])
    wait_for(lambda: running.attempts(web.id), timeout=30, message="a restart")
    # On a loaded machine a probe may also miss httpd while it starts again, which can
    # open a second incident after the first resolved; the first is the one to read.
    first = min(running.incidents(web.id), key=lambda i: i.opened_at)
    assert first.signal is Signal.PROBE_FAILED
    assert first.evidence[0].evidence["failures"] == 2
    assert first.attempts[0].ok
    wait_for(
        lambda: all(i.status.value == "resolved" for i in running.incidents(web.id)),
        timeout=30,
        message="answering again after the restart",
    )
