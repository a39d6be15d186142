"""medic heals through a Postgres outage, and every incident and attempt is stored once.

The supervisor runs on a thread against a real Docker engine and records through
``SpoolingStore(PostgresStore)`` into a Postgres container of the test's own,
which the test stops while a container fails and is healed, then starts again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from helpers import ComposeProject, wait_for
from store_contract import T0, a_diagnosis, a_fix, open_incident

from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.healing.observe import Scope
from agent.model import (
    Action,
    Attempt,
    AttemptStatus,
    Backoff,
    DiagnosisSource,
    Escalation,
    Finding,
    FixStatus,
    Incident,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
)
from agent.store.base import Identity
from agent.store.postgres import PostgresStore, run_migrations
from agent.store.spool import SpoolingStore
from agent.supervisor import Supervisor

if TYPE_CHECKING:
    from pgfixtures import PostgresServer


pytestmark = pytest.mark.docker

#: Runs until /tmp/crash appears, then exits with code 3; started again, it runs on.
CRASH_ON_DEMAND = (
    "while :; do if [ -f /tmp/crash ]; then rm /tmp/crash; exit 3; fi; sleep 0.2; done"
)

START_EXITED = Playbook(
    name="start-exited",
    match=Match(signals=frozenset({Signal.EXITED})),
    actions=(Action("start"),),
    backoff=Backoff(initial=1, factor=2, max=10, reset_after=600),
    escalation=Escalation(after_attempts=20, within=600),
)


class RecordingStore(SpoolingStore):
    """The spooling store, noting what the supervisor was told, to compare with Postgres."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.incident_ids: list[str] = []
        self.attempt_ids: list[str] = []
        super().__init__(*args, **kwargs)

    def record_finding(self, finding: Finding) -> Incident:
        incident = super().record_finding(finding)
        if incident.id not in self.incident_ids:
            self.incident_ids.append(incident.id)
        return incident

    def record_attempt(self, attempt: Attempt) -> None:
        super().record_attempt(attempt)
        if attempt.status is not AttemptStatus.RUNNING:  # its end, not its start
            self.attempt_ids.append(attempt.id)


@dataclass
class Medic:
    supervisor: Supervisor
    store: RecordingStore
    thread: threading.Thread
    gateway: DockerSDKGateway
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.supervisor.stop()
        self.thread.join(timeout=30)
        self.store.close()
        self.gateway.close()
        assert not self.thread.is_alive(), "medic did not stop within 30 s"


@pytest.fixture
def medics() -> Iterator[list[Medic]]:
    running: list[Medic] = []
    yield running
    for medic in running:
        medic.stop()


def start_medic(
    running: list[Medic],
    *,
    project: str,
    url: str,
    state_dir: Path,
    playbooks: Sequence[Playbook] = (START_EXITED,),
) -> Medic:
    # Crashes made on purpose, one after another, are not a crash loop here.
    settings = HealingSettings(interval=1.0, settle=2.0, crash_loop_deaths=10)
    store = RecordingStore(PostgresStore(url), state_dir=state_dir, retry_delays=(0.3, 0.6, 1.0))
    gateway = DockerSDKGateway.from_env(pool_size=8)
    supervisor = Supervisor(
        healing=settings,
        gateway=gateway,
        store=store,
        playbooks=playbooks,
        scope=Scope(project=project),
    )
    thread = threading.Thread(target=supervisor.run, name="medic-under-test", daemon=True)
    medic = Medic(supervisor, store, thread, gateway)
    running.append(medic)
    thread.start()
    wait_for(lambda: supervisor.events_connected, timeout=10, message="events stream up")
    return medic


def crash_and_wait_until_healed(medic: Medic, container: Any, incidents_before: int) -> str:
    """Make the container exit with 3; wait until medic healed it and resolved the incident."""
    container.exec_run(["touch", "/tmp/crash"])
    wait_for(
        lambda: len(medic.store.incident_ids) > incidents_before,
        timeout=30,
        message="a new incident",
    )
    incident_id = medic.store.incident_ids[-1]
    wait_for(
        lambda: medic.store.get(incident_id).status is IncidentStatus.RESOLVED,
        timeout=30,
        message=f"incident {incident_id[:8]} resolved",
    )
    container.reload()
    assert container.status == "running"
    return incident_id


def count(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode()).fetchall()


def test_an_outage_in_the_middle_of_a_run_loses_and_duplicates_nothing(
    compose_project: ComposeProject,
    own_postgres: PostgresServer,
    medics: list[Medic],
    tmp_path: Path,
) -> None:
    url = own_postgres.url()
    run_migrations(url)
    worker = compose_project.run("worker", command=["sh", "-c", CRASH_ON_DEMAND], stop_timeout=1)
    medic = start_medic(medics, project=compose_project.name, url=url, state_dir=tmp_path)

    before = crash_and_wait_until_healed(medic, worker, 0)
    assert count(url, "SELECT status FROM incidents") == [("resolved",)]

    own_postgres.docker.stop(timeout=10)
    during = [crash_and_wait_until_healed(medic, worker, 1)]
    during.append(crash_and_wait_until_healed(medic, worker, 2))
    assert not medic.store.reachable
    # Opened, attempt, resolved: three changes per incident wait.
    assert medic.store.pending_changes() >= 6
    assert len((tmp_path / "spool.jsonl").read_text().splitlines()) >= 6

    own_postgres.docker.start()
    wait_for(
        lambda: medic.store.pending_changes() == 0,
        timeout=60,
        message="the spool written to Postgres",
    )
    medic.stop()

    seen_incidents = medic.store.incident_ids
    seen_attempts = medic.store.attempt_ids
    assert seen_incidents == [before, *during]
    assert len(seen_attempts) == 3
    stored_incidents = count(url, "SELECT id, status FROM incidents ORDER BY opened_at")
    assert stored_incidents == [(i, "resolved") for i in seen_incidents]
    stored_attempts = count(url, "SELECT id, incident_id, ok FROM attempts ORDER BY started_at")
    assert [a[0] for a in stored_attempts] == seen_attempts
    assert [a[1] for a in stored_attempts] == seen_incidents
    assert all(ok for _, _, ok in stored_attempts)
    # Each incident's status changes, exactly once each: resolved.
    assert count(
        url, "SELECT incident_id, count(*) FROM incident_status_changes GROUP BY 1 ORDER BY 1"
    ) == sorted((i, 1) for i in seen_incidents)
    assert (tmp_path / "spool.jsonl").read_text() == ""


def medic_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MEDIC_DATABASE_URL": url},
        check=False,
    )


def test_a_person_resolving_an_escalated_incident_turns_healing_back_on(
    compose_project: ComposeProject,
    own_postgres: PostgresServer,
    medics: list[Medic],
    tmp_path: Path,
) -> None:
    url = own_postgres.url()
    run_migrations(url)
    give_up_at_once = Playbook(
        name="start-exited",
        match=Match(signals=frozenset({Signal.EXITED})),
        actions=(Action("start"),),
        backoff=Backoff(initial=1, factor=1, max=1, reset_after=600),
        escalation=Escalation(after_attempts=1, within=600),
    )
    worker = compose_project.run("worker", command=["sh", "-c", "sleep 0.3; exit 3"])
    medic = start_medic(
        medics,
        project=compose_project.name,
        url=url,
        state_dir=tmp_path,
        playbooks=(give_up_at_once,),
    )
    wait_for(
        lambda: count(url, "SELECT status FROM incidents") == [("escalated",)],
        timeout=30,
        message="the incident escalated",
    )
    [(incident_id,)] = count(url, "SELECT id FROM incidents")
    attempts_when_escalated = len(medic.store.attempt_ids)

    done = medic_cli(
        "incidents", "resolve", incident_id[:8], "--note", "looked at it", "--by", "ops", url=url
    )
    assert done.returncode == 0, done.stderr
    assert f"Incident {incident_id[:8]}" in done.stdout

    # medic notices at its next look and heals the container again: a new incident.
    wait_for(
        lambda: len(medic.store.attempt_ids) > attempts_when_escalated,
        timeout=30,
        message="medic acting on the container again",
    )
    medic.stop()
    statuses = count(url, "SELECT id, status, note FROM incidents ORDER BY opened_at")
    assert statuses[0] == (incident_id, "resolved", "by hand (ops): looked at it")
    assert len(statuses) == 2
    assert worker.id == count(url, "SELECT DISTINCT container_id FROM incidents")[0][0]


def test_a_diagnosis_and_a_fix_decision_made_while_postgres_is_away_reach_it_after(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = own_postgres.url()
    run_migrations(url)
    me = Identity(engine_id="TEST:ENGINE", project="shop")
    store = SpoolingStore(
        PostgresStore(url, identity=me),
        state_dir=tmp_path,
        retry_delays=(0.3, 0.6, 1.0),
        identity=me,
    )
    try:
        incident = open_incident(store)
        store.set_status(incident, IncidentStatus.ESCALATED, at=T0)
        rules = a_diagnosis(incident, "d-rules", source=DiagnosisSource.RULES, model=None)
        store.record_diagnosis(rules)
        proposed = a_fix(incident, "f-1", "d-rules")
        store.record_fix(proposed)

        own_postgres.docker.stop(timeout=10)
        llm = a_diagnosis(incident, "d-llm", created_at=T0 + timedelta(minutes=1))
        store.record_diagnosis(llm)
        approved = replace(
            proposed,
            status=FixStatus.APPROVED,
            decided_at=T0 + timedelta(minutes=2),
            decided_by="ada",
        )
        store.update_fix(approved)
        assert not store.reachable
        assert store.pending_changes() == 2
        # While Postgres is away, medic answers from what it holds.
        assert store.get_fix("f-1") == approved
        assert [d.id for d in store.diagnoses(incident)] == ["d-rules", "d-llm"]

        own_postgres.docker.start()
        wait_for(
            lambda: store.pending_changes() == 0,
            timeout=60,
            message="the spool written to Postgres",
        )
    finally:
        store.close()
    assert count(url, "SELECT id, source FROM diagnoses ORDER BY created_at") == [
        ("d-rules", "rules"),
        ("d-llm", "llm"),
    ]
    assert count(url, "SELECT id, status, decided_by FROM fixes") == [("f-1", "approved", "ada")]
    assert (tmp_path / "spool.jsonl").read_text() == ""
    reread = PostgresStore(url)
    try:
        assert reread.get_fix("f-1") == approved
        assert reread.diagnoses(incident) == [rules, llm]
    finally:
        reread.close()
