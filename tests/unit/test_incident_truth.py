"""The incident table says only what happened: issue 9's defects, on the honest fake.

Each test names the rule it pins. Time moves only through the injected clock,
except where a test runs the loop on a thread to see events and polls interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from factories import supervisor_on
from fakes import FakeClock, FakeDocker
from helpers import logged, wait_for

from agent.clock import SYSTEM_CLOCK
from agent.config import HealingSettings
from agent.errors import DockerServerError, DockerUnavailable
from agent.healing.act import Actor
from agent.healing.observe import Scope
from agent.healing.signals import ProbeOutcome, Prober
from agent.model import (
    Action,
    Backoff,
    ContainerId,
    Escalation,
    Finding,
    Health,
    Incident,
    IncidentStatus,
    LogRule,
    Match,
    Plan,
    Playbook,
    ProbeKind,
    ProbeRule,
    Signal,
    State,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor

PROJECT = {"com.docker.compose.project": "shop"}


def labels(service: str, **extra: str) -> dict[str, str]:
    return {**PROJECT, "com.docker.compose.service": service, **extra}


def book(name: str, signal: Signal, kind: str, **options: object) -> Playbook:
    return Playbook(name, Match(frozenset({signal})), (Action(kind),), **options)  # type: ignore[arg-type]


RESTART_UNHEALTHY = book("restart-unhealthy", Signal.UNHEALTHY, "restart")
START_EXITED = book("start-exited", Signal.EXITED, "start")
CRASH_LOOP = book("back-off-crash-loop", Signal.CRASH_LOOP, "start")


def medic(
    fake: FakeDocker,
    books: tuple[Playbook, ...] = (RESTART_UNHEALTHY, START_EXITED, CRASH_LOOP),
    store: MemoryStore | None = None,
    *,
    clock: FakeClock | None = None,
    **settings: object,
) -> Supervisor:
    options: dict[str, object] = {"interval": 0.1, **settings}
    return supervisor_on(
        fake,
        books,
        store=store,
        clock=clock or SYSTEM_CLOCK,
        healing=HealingSettings(**options),  # type: ignore[arg-type]
        reconnect_delays=(0.05,),
    )


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    with logged("WARNING") as lines:
        yield lines


@pytest.fixture
def running() -> Iterator[list[tuple[Supervisor, threading.Thread]]]:
    started: list[tuple[Supervisor, threading.Thread]] = []
    yield started
    for s, thread in started:
        s.stop()
        thread.join(timeout=10)


def run_in_thread(s: Supervisor, running: list[tuple[Supervisor, threading.Thread]]) -> None:
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    running.append((s, thread))
    wait_for(lambda: s.events_connected, timeout=5, message="events connected")


class Failing(Prober):
    def __init__(self) -> None:
        self.count = 0

    def probe(self, rule: ProbeRule, address: str) -> ProbeOutcome:
        self.count += 1
        return ProbeOutcome(False, "connection refused")


# --- defect 3: recovery is judged per signal -----------------------------------------------


def test_a_probe_that_keeps_failing_is_one_incident_that_escalates_not_a_flapping_series() -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    fake.add("shop-db-1", labels("db"))  # no HEALTHCHECK: Docker calls it healthy
    rule = ProbeRule(ProbeKind.TCP, 5432, failures=1)
    port = Playbook(
        "db-port",
        Match(frozenset({Signal.PROBE_FAILED}), probe=rule),
        (Action("restart"),),
        escalation=Escalation(after_attempts=3, within=3600),
    )
    store = MemoryStore()
    s = supervisor_on(
        fake,
        [port],
        store=store,
        clock=clock,
        healing=HealingSettings(settle=0.0),
        prober=Failing(),
    )
    for _ in range(8):
        s.run_once()
        clock.advance(120)

    [incident] = store.list_incidents()
    assert incident.signal is Signal.PROBE_FAILED
    assert incident.status is IncidentStatus.ESCALATED
    assert len(incident.attempts) == 3


def test_a_log_incident_resolves_only_after_its_window_passes_without_a_match() -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    db = fake.add("shop-db-1", labels("db"))
    rule = LogRule("slots are reserved", count=1, window=120)
    slots = Playbook(
        "db-slots",
        Match(frozenset({Signal.LOG_MATCH}), log=rule),
        (Action("restart"),),
    )
    store = MemoryStore()
    s = supervisor_on(fake, [slots], store=store, clock=clock, healing=HealingSettings(settle=10.0))
    fake.write_log(db, "FATAL: slots are reserved")
    s.run_once()  # found and restarted
    clock.advance(60)
    s.run_once()  # healthy, but the window since the restart has not gone by
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.HEALING
    clock.advance(75)
    s.run_once()  # the window went by without a match: the settle period starts
    clock.advance(11)
    s.run_once()
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.RESOLVED


# --- defect 4: attempts never go to a resolved incident ------------------------------------


def test_after_a_person_resolves_an_incident_the_next_attempt_opens_a_new_one() -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", labels("web"), health=Health.UNHEALTHY)
    store = MemoryStore()
    s = medic(fake, store=store, clock=clock)
    s.run_once()  # restarted: attempt 1 of the first incident
    [first] = store.list_incidents()
    store.set_status(first.id, IncidentStatus.RESOLVED, at=clock.now(), note="by hand: fixed")
    web.health = Health.UNHEALTHY  # the same trouble, with the very same evidence
    clock.advance(60)
    s.run_once()

    second = next(i for i in store.list_incidents() if i.id != first.id)
    assert len(store.get(first.id).attempts) == 1
    assert len(second.attempts) == 1
    assert second.is_active


# --- defect 6: every action ends with a result ------------------------------------------------


def test_an_action_that_raises_unexpectedly_is_a_failed_attempt_that_backs_off_and_escalates() -> (
    None
):
    clock = FakeClock()
    fake = FakeDocker(clock)
    fake.add("shop-web-1", labels("web"), health=Health.UNHEALTHY)
    fake.fail("restart", RuntimeError("the SDK broke"), times=10)
    store = MemoryStore()
    s = medic(fake, store=store, clock=clock)
    decisions = []
    for _ in range(5):
        decisions += [type(d).__name__ for d in s.run_once().decisions]
        clock.advance(60)

    [incident] = store.list_incidents()
    assert [a.ok for a in incident.attempts] == [False, False, False]
    assert all("the SDK broke" in (a.error or "") for a in incident.attempts)
    assert incident.status is IncidentStatus.ESCALATED
    assert decisions[:4] == ["Plan", "Plan", "Plan", "Escalate"]
    assert not any(t.history.busy for t in s.tracked.values())


# --- defect 7: engine times are compared only with engine times --------------------------


@pytest.mark.parametrize("skew", [-120.0, 120.0])
def test_medics_own_restart_is_not_a_persons_stop_when_the_engine_clock_is_off(
    skew: float,
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock, skew=skew)
    earlier = fake.engine_now() - timedelta(seconds=30)
    web = fake.add(
        "shop-web-1",
        labels("web"),
        health=Health.UNHEALTHY,
        started_at=earlier,
        health_checked_at=earlier + timedelta(seconds=20),
    )
    s = medic(fake, clock=clock)
    s.run_once()  # restart: kill, die, stop and start events at the engine's times
    clock.advance(30)
    fake.crash(web, exit_code=1)
    report = s.run_once()

    assert [f.signal for f in report.findings] == [Signal.EXITED]
    assert [r.action.kind for _, _, rs in report.results for r in rs] == ["start"]


# --- defect 8: status is published after every change -----------------------------------


def test_status_shows_a_resolved_incident_without_waiting_for_the_next_poll(
    running: list[tuple[Supervisor, threading.Thread]],
) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), health=Health.HEALTHY)
    s = medic(fake, interval=3600, settle=0.0)
    run_in_thread(s, running)
    wait_for(s.status, timeout=5, message="the first poll")
    web.health = Health.UNHEALTHY
    fake.emit(web, "health_status: unhealthy")
    wait_for(lambda: s.status()[0]["incidents"], timeout=5, message="the incident shown in status")
    wait_for(lambda: "restart" in fake.requests, timeout=5, message="restarted")
    fake.emit(web, "health_status: healthy")
    wait_for(lambda: not s.status()[0]["incidents"], timeout=5, message="resolved in status")
    assert fake.requests.count("list") == 1
    assert s.metrics.open_incidents._value.get() == 0


# --- defect 9: errors are not swallowed or hidden -------------------------------------------


def test_a_failed_event_history_read_is_a_warning_and_never_turns_a_persons_stop_into_a_crash(
    warnings: list[str],
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", labels("web"))
    fake.stop(web.id, timeout=10, exit_code=137)  # a person, before medic started
    fake.fail("past_events", DockerUnavailable("Reading past events: connection reset"))
    s = medic(fake, clock=clock)
    first = s.run_once()
    assert first.findings == []
    assert any("event history" in line for line in warnings)
    second = s.run_once()
    assert second.findings == []
    assert "start" not in fake.requests


def test_an_incident_gone_from_the_store_is_let_go_with_a_warning_and_the_attempt_kept(
    warnings: list[str],
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", labels("web"), health=Health.UNHEALTHY)
    store = MemoryStore()
    s = medic(fake, store=store, clock=clock)
    s.run_once()
    store._incidents.clear()  # someone emptied the table
    web.health = Health.UNHEALTHY
    clock.advance(60)
    s.run_once()

    [incident] = store.list_incidents()
    assert len(incident.attempts) == 1
    assert any("no longer in the incident store" in line for line in warnings)


def test_a_log_that_cannot_be_read_is_a_warning(warnings: list[str]) -> None:
    fake = FakeDocker()
    fake.add("shop-db-1", labels("db"))
    rule = LogRule("oops")
    slots = Playbook(
        "db-oops", Match(frozenset({Signal.LOG_MATCH}), log=rule), (Action("restart"),)
    )
    fake.fail("logs", DockerServerError("Reading the log: the Docker engine failed"))
    medic(fake, (slots,)).run_once()
    assert any("Could not read the log of shop-db-1" in line for line in warnings)


# --- defect 11: who stopped it, and one incident per episode ------------------------------


def test_containers_stopped_by_an_engine_shutdown_are_started_again(
    running: list[tuple[Supervisor, threading.Thread]],
) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"))
    s = medic(fake)
    run_in_thread(s, running)
    wait_for(s.status, timeout=5, message="the first poll")
    fake.engine_stopping()
    assert web.state is State.EXITED and web.exit_code == 143
    # While the engine is up, these events are exactly a person's docker stop.
    wait_for(lambda: s.status()[0]["stopped_by_person"], timeout=5, message="taken for a stop")
    fake.engine_restarted()
    wait_for(lambda: web.state is State.RUNNING, timeout=5, message="web started again")


def test_a_crash_loop_is_one_incident_whose_escalation_names_the_playbooks_used() -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    escalated: list[Incident] = []

    class Hook:
        def escalated(self, incident: Incident) -> None:
            escalated.append(incident)

    s = supervisor_on(fake, (START_EXITED, CRASH_LOOP), store=store, clock=clock, escalation=Hook())
    for _ in range(5):
        s.run_once()
        clock.advance(45)
        if web.state is State.RUNNING:
            fake.crash(web)

    [incident] = store.list_incidents()
    assert incident.signal is Signal.CRASH_LOOP
    assert incident.status is IncidentStatus.ESCALATED
    assert incident.note is not None
    assert "playbooks start-exited, back-off-crash-loop" in incident.note
    assert [i.id for i in escalated] == [incident.id]


# --- defect 5: one scope check, inside the actor ------------------------------------------


def test_restart_dependents_never_touches_medic_itself_or_an_ignored_container() -> None:
    fake = FakeDocker()
    needs_db = {"com.docker.compose.depends_on": "db:service_started:false"}
    db = fake.add("shop-db-1", labels("db"))
    api = fake.add("shop-api-1", labels("api", **needs_db))
    quiet = fake.add("shop-quiet-1", labels("quiet", **needs_db, **{"medic.ignore": "Yes"}))
    me = fake.add("shop-medic-1", labels("medic", **needs_db))
    actor = Actor(fake, scope=Scope(project="shop", own_id=ContainerId(me.id)))
    try:
        result = actor.run_action(fake.inspect(db.id).ref, Action("restart_dependents"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    restarted = [e.container_id for e in fake.history if e.action == "restart"]
    assert restarted == [api.id]
    assert quiet.id not in restarted and me.id not in restarted


def test_the_actor_refuses_a_plan_for_a_container_out_of_scope() -> None:
    fake = FakeDocker()
    other = fake.add("other-web-1", {"com.docker.compose.project": "other"})
    actor = Actor(fake, scope=Scope(project="shop"))
    plan_book = book("restart-unhealthy", Signal.UNHEALTHY, "restart")
    ref = fake.inspect(other.id).ref
    finding = Finding(ref, Signal.UNHEALTHY, "sick", fake.clock.now())
    try:
        [result] = actor.run_plan(ref, Plan(finding, plan_book, plan_book.actions, attempt=1))
    finally:
        actor.shutdown(timeout=1)
    assert not result.ok
    assert result.error is not None and "not in medic's scope" in result.error
    assert "restart" not in fake.requests


# --- defect 2: a recreate loop backs off and escalates ------------------------------------


def test_a_recreate_loop_backs_off_and_escalates_though_polls_run_during_each_recreate(
    running: list[tuple[Supervisor, threading.Thread]],
) -> None:
    class SlowRecreate(FakeDocker):
        """The new container is as broken as the old, and polls happen mid-recreate."""

        def __init__(self) -> None:
            super().__init__()
            self.inside = threading.Event()
            self.release = threading.Event()

        def recreate(
            self, container_id: str, *, timeout: float, network_mode: str | None = None
        ) -> ContainerId:
            new_id = super().recreate(container_id, timeout=timeout)
            self.containers[new_id].health = Health.UNHEALTHY
            self.inside.set()
            self.release.wait(10)
            return new_id

    fake = SlowRecreate()
    fake.add("shop-web-1", labels("web"), health=Health.UNHEALTHY)
    recreate = Playbook(
        "recreate-unhealthy",
        Match(frozenset({Signal.UNHEALTHY})),
        (Action("recreate"),),
        backoff=Backoff(initial=0.05),
        escalation=Escalation(after_attempts=2, within=3600),
    )
    store = MemoryStore()
    s = medic(fake, (recreate,), store, interval=0.05)
    run_in_thread(s, running)
    wait_for(fake.inside.is_set, timeout=5, message="the first recreate under way")
    polls = fake.requests.count("list")
    wait_for(lambda: fake.requests.count("list") >= polls + 3, timeout=5, message="more polls")
    [first] = store.list_incidents()
    assert first.is_active  # not resolved as gone while medic replaces it
    fake.release.set()

    wait_for(
        lambda: any(i.status is IncidentStatus.ESCALATED for i in store.list_incidents()),
        timeout=10,
        message="the recreate loop escalated",
    )
    incidents = store.list_incidents()
    assert sum(len(i.attempts) for i in incidents) == 2
    assert not any("is gone" in (i.note or "") for i in incidents)
