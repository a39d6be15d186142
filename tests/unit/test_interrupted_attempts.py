"""An attempt is recorded when it starts and completed when it ends, so a medic killed
in between leaves a trace; the next medic records it as interrupted and counts it.

The real crash (a `medic run` killed with SIGKILL mid-restart, Postgres and the engine
real) is in tests/integration/test_crash_mid_action.py; these are the rules.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fakes import FakeClock, FakeDocker
from store_fakes import FlakyDatabase

from agent.codec import attempt_from_dict, attempt_to_dict
from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.healing.recorder import engine_account
from agent.model import (
    Action,
    Attempt,
    AttemptId,
    AttemptStatus,
    Backoff,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Finding,
    Health,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
    State,
)
from agent.store import MemoryStore
from agent.store.spool import SpoolingStore
from agent.supervisor import Supervisor

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
WEB = ContainerRef(ContainerId("c" * 64), "shop-web-1", "shop", "web")
LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
RESTART = Playbook(
    "restart-unhealthy",
    Match(frozenset({Signal.UNHEALTHY})),
    (Action("restart", timeout=30),),
    backoff=Backoff(initial=60, factor=2, max=300, reset_after=600),
)


def started(incident_id: str, at: datetime = T0) -> Attempt:
    return Attempt(
        id=AttemptId("a" * 32),
        incident_id=incident_id,  # type: ignore[arg-type]
        playbook="restart-unhealthy",
        action="restart (stop timeout 30s)",
        started_at=at,
        finished_at=None,
        ok=False,
        status=AttemptStatus.RUNNING,
    )


def ended(attempt: Attempt, *, ok: bool = True) -> Attempt:
    return replace(
        attempt,
        status=AttemptStatus.FINISHED,
        finished_at=attempt.started_at + timedelta(seconds=31),
        ok=ok,
    )


def finding(ref: ContainerRef = WEB, at: datetime = T0) -> Finding:
    return Finding(ref, Signal.UNHEALTHY, "shop-web-1 is unhealthy.", observed_at=at)


# --- the codec and the stores -------------------------------------------------------------


def test_a_running_attempt_goes_through_json_with_no_end_and_an_older_line_is_finished() -> None:
    attempt = started("i" * 32)
    doc = json.loads(json.dumps(attempt_to_dict(attempt)))
    assert doc["status"] == "running" and doc["finished_at"] is None
    assert attempt_from_dict(doc) == attempt
    older = {k: v for k, v in attempt_to_dict(ended(attempt)).items() if k != "status"}
    assert attempt_from_dict(json.loads(json.dumps(older))).status is AttemptStatus.FINISHED


def test_the_end_of_an_attempt_completes_its_start_and_nothing_changes_it_again() -> None:
    store = MemoryStore()
    incident = store.record_finding(finding())
    attempt = started(incident.id)
    store.record_attempt(attempt)
    assert store.get(incident.id).status is IncidentStatus.HEALING
    assert [a.status for a in store.get(incident.id).attempts] == [AttemptStatus.RUNNING]

    store.record_attempt(ended(attempt))
    store.record_attempt(attempt)  # the start replayed after the end
    store.record_attempt(replace(ended(attempt, ok=False), error="replayed"))

    [kept] = store.get(incident.id).attempts
    assert kept == ended(attempt)


def test_a_start_and_end_spooled_while_postgres_is_away_reach_it_as_one_finished_attempt(
    tmp_path: Path,
) -> None:
    database = FlakyDatabase()
    store = SpoolingStore(database, state_dir=tmp_path, retry_delays=(3600,))
    incident = store.record_finding(finding())
    database.down = True
    attempt = started(incident.id)
    store.record_attempt(attempt)
    store.record_attempt(ended(attempt))
    assert store.pending_changes() == 2

    database.down = False
    assert store.replay()
    # A replay repeated from the start (a crash half-way through) changes nothing.
    for line in (tmp_path / "spool.jsonl").read_text().splitlines():
        assert json.loads(line)["op"]
    store.close()
    assert database.rows.get(incident.id).attempts == (ended(attempt),)


# --- what the engine says happened since --------------------------------------------------


def snapshot(**state: object) -> ContainerSnapshot:
    values: dict[str, object] = {
        "ref": WEB,
        "labels": LABELS,
        "image": "busybox",
        "state": State.RUNNING,
        "health": Health.NONE,
        "exit_code": None,
        "observed_at": T0 + timedelta(seconds=50),
        "detailed": True,
        **state,
    }
    return ContainerSnapshot(**values)  # type: ignore[arg-type]


def test_the_engine_account_says_whether_the_container_started_again_after_the_attempt() -> None:
    again = snapshot(
        started_at=T0 + timedelta(seconds=31),
        finished_at=T0 + timedelta(seconds=30),
        exit_code=None,
        restart_count=0,
    )
    text = engine_account(T0, again)
    assert "running" in text and "restart count 0" in text
    assert "last stopped at 12:00:30 (after the attempt began)" in text
    assert text.endswith("the action most likely completed")

    untouched = snapshot(started_at=T0 - timedelta(hours=1), health=Health.UNHEALTHY)
    text = engine_account(T0, untouched)
    assert "running and unhealthy" in text
    assert text.endswith("nothing it shows happened after the attempt began")

    stopped = snapshot(
        state=State.EXITED,
        exit_code=137,
        started_at=T0 - timedelta(hours=1),
        finished_at=T0 + timedelta(seconds=30),
    )
    text = engine_account(T0, stopped)
    assert "exited" in text and "with exit code 137" in text
    assert "most likely completed" not in text and "nothing it shows" not in text

    assert engine_account(T0, None) == "the engine no longer has the container"
    assert "could not be asked" in engine_account(T0, None, unknown="connection refused")


# --- a medic that starts after one was killed mid-action ------------------------------------


def test_a_medic_started_after_a_crash_records_the_attempt_interrupted_and_waits_its_backoff() -> (
    None
):
    clock = FakeClock(T0)
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", LABELS, health=Health.UNHEALTHY, term_exit_code=None)
    ref = replace(WEB, id=ContainerId(web.id))
    store = MemoryStore()
    # What the killed medic left: the incident, and its restart recorded as running.
    incident = store.record_finding(finding(ref))
    store.record_attempt(started(incident.id))
    clock.advance(5)

    s = Supervisor(
        healing=HealingSettings(),
        gateway=fake,
        store=store,
        playbooks=(RESTART,),
        scope=Scope(project="shop"),
        clock=clock,
    )
    [attempt] = store.get(incident.id).attempts
    assert attempt.status is AttemptStatus.INTERRUPTED
    assert attempt.finished_at is None and not attempt.ok
    assert attempt.error is not None and "medic stopped before it ended" in attempt.error
    assert "the engine says the container is running and unhealthy" in attempt.output

    # Still unhealthy, but the interrupted restart counts: no new one for 60 s.
    report = s.run_once()
    assert "restart" not in fake.requests
    assert [type(d).__name__ for d in report.decisions] == ["Wait"]
    clock.advance(50)
    s.run_once()
    assert "restart" not in fake.requests

    clock.advance(10)
    s.run_once()
    assert fake.requests.count("restart") == 1
    attempts = store.get(incident.id).attempts
    assert [a.status for a in attempts] == [AttemptStatus.INTERRUPTED, AttemptStatus.FINISHED]
    assert s.tracked[ContainerId(web.id)].healing.attempts == (T0, T0 + timedelta(seconds=65))


def test_a_plan_is_recorded_as_running_before_its_action_starts() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", LABELS, health=Health.UNHEALTHY)
    store = MemoryStore()
    seen: list[list[AttemptStatus]] = []

    original = fake.restart

    def restart(container_id: str, *, timeout: float) -> None:
        seen.append([a.status for i in store.list_incidents() for a in i.attempts])
        original(container_id, timeout=timeout)

    fake.restart = restart  # type: ignore[method-assign]
    Supervisor(
        healing=HealingSettings(),
        gateway=fake,
        store=store,
        playbooks=(RESTART,),
        scope=Scope(project="shop"),
    ).run_once()
    assert seen == [[AttemptStatus.RUNNING]]
    [incident] = store.list_incidents()
    assert [a.status for a in incident.attempts] == [AttemptStatus.FINISHED]
    assert incident.container.id == web.id
