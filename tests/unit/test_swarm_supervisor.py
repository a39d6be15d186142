"""medic on Swarm tasks, end to end on the honest fake: one episode per service slot,
healing through the service, never a restart of a task container.

The fake keeps a service's tasks as a manager does (tests/fakes.py): a new task of a
slot is a new container with a new id and name, ``swarm_replaces`` is a restart
policy at work, ``force_update`` replaces each slot's task.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from factories import supervisor_on
from fakes import FakeClock, FakeContainer, FakeDocker, FakeService
from helpers import logged

from agent.config import HealingSettings, Settings
from agent.engine.gateway import SwarmRestart
from agent.errors import ConfigError
from agent.healing import history as hist
from agent.healing.act import Actor
from agent.healing.history import History, Reaction
from agent.healing.observe import resolve_scope
from agent.healing.slots import Slots
from agent.model import (
    Action,
    ContainerRef,
    Finding,
    Health,
    IncidentStatus,
    Match,
    Plan,
    Playbook,
    Signal,
    State,
)
from agent.scope import Scope
from agent.store import MemoryStore
from agent.store.base import Identity
from agent.supervisor import Supervisor

START_EXITED = Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),))
RESTART_UNHEALTHY = Playbook(
    "restart-unhealthy", Match(frozenset({Signal.UNHEALTHY})), (Action("restart"),)
)
CRASH_LOOP = Playbook(
    "back-off-crash-loop", Match(frozenset({Signal.CRASH_LOOP})), (Action("start"),)
)

#: What medic must never ask of the engine for a task container.
CONTAINER_REQUESTS = {"restart", "start", "stop", "recreate"}


@pytest.fixture
def infos() -> Iterator[list[str]]:
    with logged("INFO") as lines:
        yield lines


class Stack:
    """A stack "shop" with one service "web" on the fake engine, and medic on it."""

    def __init__(self, restart: SwarmRestart, *, settle: float = 30.0) -> None:
        self.clock = FakeClock()
        self.fake = FakeDocker(self.clock)
        self.store = MemoryStore()
        self.web: FakeService = self.fake.add_service("web", stack="shop", restart=restart)
        self.first = self.fake.add_task(self.web)
        self.medic: Supervisor = supervisor_on(
            self.fake,
            [START_EXITED, RESTART_UNHEALTHY, CRASH_LOOP],
            store=self.store,
            clock=self.clock,
            scope=Scope(project=None, stack="shop"),
            healing=HealingSettings(settle=settle),
        )

    def incidents(self) -> list[object]:
        return list(self.store.list_incidents())

    def current(self) -> FakeContainer:
        running = [c for c in self.fake.containers.values() if c.state is State.RUNNING]
        [newest] = sorted(running, key=lambda c: c.created_at or self.clock.now())[-1:]
        return newest

    def container_requests(self) -> set[str]:
        return CONTAINER_REQUESTS & set(self.fake.requests)


def test_a_task_swarm_replaces_is_one_incident_that_follows_the_new_task_and_medic_never_acts(
    infos: list[str],
) -> None:
    stack = Stack(SwarmRestart.ANY)
    fake = stack.fake
    fake.crash(stack.first)
    report = stack.medic.run_once()
    [finding] = report.findings
    assert finding.signal is Signal.EXITED
    assert report.results == []
    assert any("restart policy (condition any)" in line for line in infos)

    second = fake.swarm_replaces(stack.first)
    stack.medic.run_once()
    fake.crash(second)
    third = fake.swarm_replaces(second)
    stack.medic.run_once()
    fake.crash(third)
    stack.medic.run_once()

    [incident] = stack.store.list_incidents()
    assert incident.container.id == third.id  # it followed Swarm's tasks
    assert incident.container.service == "web" and incident.container.project == "shop"
    assert incident.attempts == ()
    assert stack.container_requests() == set()
    assert "force_update" not in fake.requests
    assert any("stays open for it" in line for line in infos)
    assert any("Swarm replaced task" in e.summary for e in incident.evidence)


def test_a_task_swarm_will_not_restart_is_healed_by_forced_updates_as_one_episode() -> None:
    stack = Stack(SwarmRestart.NONE)
    fake, clock = stack.fake, stack.clock
    task = stack.first
    for attempt in range(1, 4):
        fake.crash(task)
        fake.task_failed(task)
        report = stack.medic.run_once()
        [(_, plan, [result])] = report.results
        assert plan.actions == (Action("force_update"),)
        assert result.ok, result.error
        assert f"update counter {attempt}" in result.output
        assert stack.web.force_update == attempt
        task = stack.current()
        assert task.name.startswith("shop_web.1.") and task.id != stack.first.id
        clock.advance(plan.playbook.backoff.delay(attempt) + 1)
        stack.medic.run_once()  # the new task runs: no finding, the backoff counts on

    fake.crash(task)
    fake.task_failed(task)
    report = stack.medic.run_once()
    assert report.results == []
    [incident] = stack.store.list_incidents()
    assert incident.status is IncidentStatus.ESCALATED
    assert [a.action for a in incident.attempts] == ["force_update"] * 3
    assert stack.container_requests() == set()


def test_a_task_swarm_shut_down_on_purpose_opens_no_incident() -> None:
    stack = Stack(SwarmRestart.ANY)
    fake = stack.fake
    # A rolling update, stop first: the old task is stopped and shut down before the
    # new one starts. A busybox-like process killed by SIGTERM exits 143.
    fake.swarm_stops(stack.first)
    report = stack.medic.run_once()
    assert report.findings == []
    assert stack.incidents() == []
    fake.add_task(stack.web)
    stack.medic.run_once()
    assert stack.incidents() == []
    assert stack.container_requests() == set()


def test_on_a_worker_medic_records_the_incident_and_says_it_cannot_update_the_service(
    infos: list[str],
) -> None:
    stack = Stack(SwarmRestart.NONE)
    stack.fake.manager = False
    stack.fake.crash(stack.first)
    report = stack.medic.run_once()
    assert report.results == []
    assert len(stack.incidents()) == 1
    assert any(
        "medic cannot read Swarm service shop_web" in line and "not a Swarm manager" in line
        for line in infos
    )
    assert stack.container_requests() == set()


def test_an_unhealthy_task_swarm_fails_and_replaces_is_one_incident_resolved_once_well() -> None:
    stack = Stack(SwarmRestart.ANY, settle=30.0)
    fake, clock = stack.fake, stack.clock
    stack.first.health = Health.UNHEALTHY
    stack.medic.run_once()
    # Swarm fails an unhealthy task and starts another in its slot.
    fake.swarm_stops(stack.first, desired="failed")
    new = fake.swarm_replaces(stack.first)
    stack.medic.run_once()
    clock.advance(31)
    stack.medic.run_once()
    [incident] = stack.store.list_incidents()
    assert incident.status is IncidentStatus.RESOLVED
    assert incident.container.id == new.id  # it resolved on the task that is well
    assert stack.container_requests() == set()


def test_a_playbook_naming_a_task_restart_directly_is_refused_by_the_actor() -> None:
    stack = Stack(SwarmRestart.ANY)
    ref = ContainerRef.from_labels(stack.first.id, stack.first.name, stack.first.labels)
    actor = Actor(stack.fake, workers=1, clock=stack.clock)
    finding = Finding(ref, Signal.LOG_MATCH, "log", stack.clock.now())
    [result] = actor.run_plan(ref, Plan(finding, RESTART_UNHEALTHY, (Action("restart"),), 1))
    assert not result.ok
    assert result.error is not None
    assert "medic does not restart" in result.error and "a Swarm task" in result.error
    assert stack.container_requests() == set()
    compose = ContainerRef(ref.id, "shop-web-1", "shop", "web")
    [forced] = actor.run_plan(
        compose, Plan(finding, RESTART_UNHEALTHY, (Action("force_update"),), 1)
    )
    assert forced.error is not None and "is no Swarm task" in forced.error
    actor.shutdown(timeout=1)


# --- history and slots: Swarm's stops, and older tasks' late events ------------------------------


def test_swarms_kill_of_a_task_is_a_death_never_a_persons_stop() -> None:
    stack = Stack(SwarmRestart.ANY)
    ref = ContainerRef.from_labels(stack.first.id, stack.first.name, stack.first.labels)
    at = stack.clock.now()
    history = History(ref)
    for kind in ("kill", "die"):
        history, reaction = hist.on_event(
            history,
            kind=kind,
            at=at,
            signal="15",
            grace=300,
            window=300,
            orchestrated=True,
        )
    assert reaction is Reaction.CHECK
    assert not history.stopped_by_person
    assert history.deaths == (at,)


def test_only_a_starting_task_takes_its_slot_over_and_old_tasks_late_events_are_ignored() -> None:
    stack = Stack(SwarmRestart.ANY)
    fake = stack.fake

    def ref(c: FakeContainer) -> ContainerRef:
        return ContainerRef.from_labels(c.id, c.name, c.labels)

    def event(c: FakeContainer, kind: str) -> Reaction:
        at = stack.clock.now()
        return slots.event(ref(c), kind=kind, at=at, detail="", signal=None, grace=1, window=1)[1]

    slots = Slots()
    slot, _ = slots.track(ref(stack.first))
    fake.crash(stack.first)
    unseen = fake.swarm_replaces(stack.first)  # a task medic never saw (it was down)
    fake.crash(unseen)
    newest = fake.swarm_replaces(unseen)

    assert event(newest, "start") is Reaction.CHECK_IF_TROUBLED
    assert slots[slot].ref.id == newest.id
    # Late events of a task older than the slot's current one, which the slot never
    # knew (its die, Swarm removing its container by the task history limit), are
    # not the slot's present: they neither take it over nor count.
    for kind in ("die", "destroy"):
        assert event(unseen, kind) is Reaction.NOTHING
        assert slots[slot].ref.id == newest.id
    assert slots[slot].history.deaths == ()
    assert event(newest, "die") is Reaction.CHECK


# --- scope and identity ---------------------------------------------------------------------


def test_medic_deployed_in_a_stack_supervises_that_stack_and_keeps_its_incidents_apart() -> None:
    fake = FakeDocker()
    medic_service = fake.add_service("medic", stack="ops")
    me = fake.add_task(medic_service)
    scope = resolve_scope(None, fake, own_id=me.id)  # type: ignore[arg-type]
    assert (scope.stack, scope.project) == ("ops", None)
    assert resolve_scope(None, fake, own_id=None, stack="shop").stack == "shop"
    assert Identity("ENGINE", stack="shop").scope == "stack=shop@ENGINE"
    assert Identity("ENGINE", project="shop").scope == "project=shop@ENGINE"
    with pytest.raises(ConfigError, match="not both"):
        Settings(project="shop", stack="shop")
