"""The supervisor's loop over an in-memory engine: fast checks of its wiring."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from factories import supervisor_on
from fakes import FakeClock, FakeDocker
from helpers import wait_for

from agent import status
from agent.config import HealingSettings
from agent.errors import StoreUnavailable
from agent.healing.observe import Scope
from agent.model import (
    Action,
    Escalation,
    Finding,
    Health,
    Incident,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
    State,
)
from agent.store import IncidentQuery, MemoryStore
from agent.supervisor import Supervisor

PROJECT = {"com.docker.compose.project": "shop"}
BOOKS = (
    Playbook("restart-unhealthy", Match(frozenset({Signal.UNHEALTHY})), (Action("restart"),)),
    Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),)),
)


def labels(service: str, **extra: str) -> dict[str, str]:
    return {**PROJECT, "com.docker.compose.service": service, **extra}


def supervisor(
    fake: FakeDocker,
    store: MemoryStore | None = None,
    *,
    own_id: str | None = None,
    **options: object,
) -> Supervisor:
    values: dict[str, object] = {"interval": 0.2, **options}
    settings = HealingSettings(**values)  # type: ignore[arg-type]
    return supervisor_on(
        fake,
        BOOKS,
        store=store,
        healing=settings,
        scope=Scope(project="shop", own_id=own_id),  # type: ignore[arg-type]
        reconnect_delays=(0.05, 0.1),
    )


@pytest.fixture
def running() -> Iterator[list[Supervisor]]:
    started: list[Supervisor] = []
    yield started
    for s in started:
        s.stop()


def run_in_thread(s: Supervisor, running: list[Supervisor]) -> threading.Thread:
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    running.append(s)
    return thread


def test_a_healthy_cycle_costs_one_request_whatever_the_number_of_containers() -> None:
    for count in (5, 200):
        fake = FakeDocker()
        for n in range(count):
            fake.add(f"shop-web-{n}", labels("web"), health=Health.HEALTHY)
        report = supervisor(fake).run_once()
        assert report.containers == count
        assert fake.requests == ["list"]


def test_only_troubled_containers_are_inspected() -> None:
    fake = FakeDocker()
    for n in range(20):
        fake.add(f"shop-web-{n}", labels("web"))
    sick = fake.add("shop-api-1", labels("api"), health=Health.UNHEALTHY)
    report = supervisor(fake).run_once()
    assert fake.requests == ["list", "inspect", "restart"]
    assert [f.container.id for f in report.findings] == [sick.id]


def test_medic_never_acts_on_its_own_container_or_ignored_ones() -> None:
    fake = FakeDocker()
    me = fake.add("shop-medic-1", labels("medic"), state=State.EXITED, exit_code=1)
    fake.add("shop-db-1", labels("db", **{"medic.ignore": "true"}), state=State.EXITED, exit_code=1)
    report = supervisor(fake, own_id=me.id).run_once()
    assert report.containers == 0
    assert "start" not in fake.requests


def test_dry_run_decides_but_does_nothing_and_records_nothing() -> None:
    fake = FakeDocker()
    fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    report = supervisor(fake, store, dry_run=True).run_once()
    assert len(report.decisions) == 1
    assert report.results == []
    assert "start" not in fake.requests
    assert store.list_incidents() == []


def test_a_container_removed_between_list_and_inspect_is_skipped() -> None:
    class Vanishing(FakeDocker):
        def inspect(self, container_id: str) -> object:  # type: ignore[override]
            self.containers.pop(container_id, None)
            return super().inspect(container_id)

    fake = Vanishing()
    fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    fake.add("shop-api-1", labels("api"), state=State.EXITED, exit_code=2)
    report = supervisor(fake).run_once()
    assert report.error is None
    assert report.findings == []


def test_a_failing_store_does_not_stop_healing() -> None:
    class DownStore(MemoryStore):
        def record_finding(self, finding: Finding) -> Incident:
            raise StoreUnavailable("database is down")

    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    report = supervisor(fake, DownStore()).run_once()
    assert [r.ok for _, _, results in report.results for r in results] == [True]
    assert web.state is State.RUNNING


def test_events_trigger_healing_between_polls(running: list[Supervisor]) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), health=Health.HEALTHY)
    s = supervisor(fake, interval=3600)
    run_in_thread(s, running)
    wait_for(lambda: s.events_connected, timeout=5, message="events connected")
    web.health = Health.UNHEALTHY
    fake.emit(web, "health_status: unhealthy")
    wait_for(lambda: "restart" in fake.requests, timeout=5, message="restart after the event")
    assert fake.requests.count("list") == 1


def test_a_dropped_events_stream_is_reconnected_while_polling_goes_on(
    running: list[Supervisor],
) -> None:
    fake = FakeDocker()
    fake.refuse_events = 3
    s = supervisor(fake)
    run_in_thread(s, running)
    wait_for(lambda: s.events_connected, timeout=5, message="connected after refusals")
    assert fake.requests.count("events") == 4
    assert fake.requests.count("list") >= 1

    fake.drop_events()
    wait_for(lambda: fake.requests.count("events") == 5, timeout=5, message="reconnected")
    wait_for(lambda: s.events_connected, timeout=5, message="connected again")
    polls = fake.requests.count("list")
    wait_for(lambda: fake.requests.count("list") > polls, timeout=5, message="polls go on")


def test_a_persons_stop_seen_in_events_is_respected(running: list[Supervisor]) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"))
    s = supervisor(fake)
    run_in_thread(s, running)
    wait_for(lambda: s.events_connected, timeout=5, message="events connected")
    fake.stop(web.id, timeout=10, exit_code=137)
    fake.requests.clear()
    polls = fake.requests.count("list")
    wait_for(lambda: fake.requests.count("list") >= polls + 3, timeout=5, message="more polls")
    assert "start" not in fake.requests
    # Started again by the person, then crashed: that is trouble again.
    fake.start(web.id)
    fake.crash(web)
    wait_for(lambda: fake.requests.count("start") == 2, timeout=5, message="healed the crash")


def test_a_stop_medic_did_not_see_live_is_found_in_the_event_history() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"))
    api = fake.add("shop-api-1", labels("api"))
    fake.stop(web.id, timeout=10, exit_code=137)
    fake.crash(api, exit_code=137)
    report = supervisor(fake).run_once()
    assert [f.container.name for f in report.findings] == ["shop-api-1"]
    assert fake.requests.count("start") == 1


def test_open_incidents_and_backoff_survive_a_restart_of_medic() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    first = supervisor(fake, store)
    first.run_once()
    [incident] = store.active_incidents()
    store.set_status(incident.id, IncidentStatus.ESCALATED, at=incident.opened_at)
    fake.crash(web)

    again = supervisor(fake, store)
    report = again.run_once()
    assert [f.signal for f in report.findings] == [Signal.EXITED]
    assert report.results == []
    tracked = again.tracked[web.id]  # type: ignore[index]
    assert tracked.healing.circuit_open
    assert len(tracked.healing.attempts) == 1


def test_a_person_resolving_the_escalated_incident_turns_healing_back_on() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    s = supervisor(fake, store)
    s.run_once()
    [incident] = store.active_incidents()
    store.set_status(incident.id, IncidentStatus.ESCALATED, at=incident.opened_at)
    s2 = supervisor(fake, store)
    fake.crash(web)
    first = s2.run_once()
    assert [f.signal for f in first.findings] == [Signal.EXITED]
    assert first.results == []

    store.set_status(incident.id, IncidentStatus.RESOLVED, at=incident.opened_at, note="fixed")
    report = s2.run_once()
    assert [r.action.kind for _, _, rs in report.results for r in rs] == ["start"]
    assert len(store.list_incidents(IncidentQuery())) == 2


def test_a_reload_signal_does_not_make_the_next_crash_a_persons_stop(
    running: list[Supervisor],
) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"))
    s = supervisor(fake)
    run_in_thread(s, running)
    wait_for(lambda: s.events_connected, timeout=5, message="events connected")
    fake.emit(web, "kill", signal="1")
    fake.crash(web)
    wait_for(lambda: "start" in fake.requests, timeout=5, message="the crash healed")


def test_recovering_from_an_escalation_starts_a_fresh_streak() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    s = supervisor(fake, store, settle=0.0)
    s.run_once()
    [incident] = store.active_incidents()
    store.set_status(incident.id, IncidentStatus.ESCALATED, at=incident.opened_at)
    s = supervisor(fake, store, settle=0.0)
    assert s.tracked[web.id].healing.circuit_open  # type: ignore[index]
    s.run_once()  # running and healthy: recovered by itself
    assert store.active_incidents() == []
    assert s.tracked[web.id].healing.attempts == ()  # type: ignore[index]
    fake.crash(web)
    report = s.run_once()
    assert [r.action.kind for _, _, rs in report.results for r in rs] == ["start"]


def test_a_recreated_container_keeps_its_backoff_so_a_recreate_loop_still_escalates() -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", labels("web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    recreate = Playbook(
        "recreate-exited",
        Match(frozenset({Signal.EXITED})),
        (Action("recreate"),),
        escalation=Escalation(after_attempts=2, within=3600),
    )
    s = supervisor_on(fake, [recreate], store=store, clock=clock)
    [(_, _, [result])] = s.run_once().results
    assert result.ok and result.replaced_by is not None
    new = fake.containers[result.replaced_by]
    assert web.id not in fake.containers
    # The incident stays open and follows the new container; medic's memory moved too.
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.HEALING
    assert incident.container.id == new.id
    assert f"was recreated as {new.id[:12]}" in incident.evidence[-1].summary
    assert web.id not in s.tracked
    assert len(s.tracked[new.id].healing.attempts) == 1  # type: ignore[index]

    fake.crash(new)
    waiting = s.run_once()
    assert waiting.results == []  # backoff: the next attempt is 10 s after the first
    assert [type(d).__name__ for d in waiting.decisions] == ["Wait"]
    clock.advance(60)
    s.run_once()  # attempt 2, another recreate
    newest = next(c for c in fake.containers.values() if c.name == "shop-web-1")
    fake.crash(newest)
    escalated = s.run_once()
    assert [type(d).__name__ for d in escalated.decisions] == ["Escalate"]
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.ESCALATED
    assert len(incident.attempts) == 2


def test_a_burst_of_events_rebuilds_the_status_of_no_container_but_theirs(
    running: list[Supervisor], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rebuilding every container's status after each event made a burst on a large
    # host cost events times containers.
    fake = FakeDocker()
    for n in range(300):
        fake.add(f"shop-web-{n}", labels("web"))
    api = fake.add("shop-api-1", labels("api"))
    built: list[str] = []
    entry = status.container_entry

    def counted(view: status.ContainerView) -> dict[str, object]:
        built.append(view.container)
        return entry(view)

    monkeypatch.setattr(status, "container_entry", counted)
    s = supervisor(fake, interval=300)  # one poll, then only events
    run_in_thread(s, running)
    wait_for(lambda: len(s.status()) == 301 and s.events_connected, timeout=5, message="polled")
    built.clear()
    for _ in range(50):
        fake.emit(api, "kill", signal="28")  # SIGWINCH: the engine says so, nothing dies
    fake.crash(api)
    wait_for(lambda: "start" in fake.requests, timeout=5, message="the crash healed")
    wait_for(lambda: "shop-api-1" in built, timeout=5, message="api's status rebuilt")
    assert set(built) == {"shop-api-1"}
    assert len(s.status()) == 301
