"""The healing loop against a real Docker engine, with real containers.

Each test starts ``Supervisor.run`` on a thread, scoped to a compose project of
its own, with playbooks whose backoff is seconds instead of minutes. Where a test
claims medic left something alone, a control container in the same run proves
medic was awake and healing meanwhile.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from helpers import ComposeProject, healthcheck, logged, wait_for

from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.translate import parse_time
from agent.healing.observe import Scope
from agent.model import (
    Action,
    Attempt,
    AttemptStatus,
    Backoff,
    Escalation,
    Incident,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor

pytestmark = pytest.mark.docker

#: A process that stops promptly on SIGTERM and says it is up.
SERVE = "trap 'exit 0' TERM; rm -f /tmp/broken; while :; do sleep 0.2; done"
#: Healthy while /tmp/broken does not exist.
HEALTHY_UNLESS_BROKEN = "test ! -f /tmp/broken"

#: Runs until /tmp/crash appears, then exits with code 3 (once: the file is removed).
CRASH_ON_DEMAND = (
    "while :; do if [ -f /tmp/crash ]; then rm /tmp/crash; exit 3; fi; sleep 0.2; done"
)

FAST = Backoff(initial=1, factor=2, max=10, reset_after=600)


def book(
    name: str,
    signals: Sequence[Signal],
    action: Action,
    *,
    services: Sequence[str] = (),
    escalation: Escalation | None = None,
) -> Playbook:
    return Playbook(
        name=name,
        match=Match(signals=frozenset(signals), services=frozenset(services)),
        actions=(action,),
        backoff=FAST,
        escalation=escalation or Escalation(after_attempts=3, within=600),
    )


DEFAULT_BOOKS = (
    book("restart-unhealthy", [Signal.UNHEALTHY], Action("restart", timeout=2)),
    book("start-exited", [Signal.EXITED], Action("start")),
    book("back-off-crash-loop", [Signal.CRASH_LOOP], Action("start")),
)


@dataclass
class Medic:
    supervisor: Supervisor
    store: MemoryStore
    thread: threading.Thread

    def incidents(self, container: Any) -> list[Incident]:
        return [i for i in self.store.list_incidents() if i.container.id == container.id]

    def busy(self, container: Any) -> bool:
        return any(f.container.id == container.id for f in self.supervisor.in_flight())

    def attempts(self, container: Any) -> list[Attempt]:
        """The attempts that ended (an attempt is recorded as running when it starts)."""
        found = [
            a
            for i in self.incidents(container)
            for a in i.attempts
            if a.status is not AttemptStatus.RUNNING
        ]
        return sorted(found, key=lambda a: a.started_at)


@pytest.fixture
def start_medic(compose_project: ComposeProject) -> Iterator[Callable[..., Medic]]:
    running: list[Medic] = []

    def start(
        *, playbooks: Sequence[Playbook] = DEFAULT_BOOKS, interval: float = 1.0, **settings: Any
    ) -> Medic:
        options: dict[str, Any] = {"settle": 2.0, "crash_loop_window": 60.0, "workers": 4}
        options.update(settings)
        config = HealingSettings(interval=interval, **options)
        gateway = DockerSDKGateway.from_env(pool_size=8)
        store = MemoryStore()
        supervisor = Supervisor(
            healing=config,
            gateway=gateway,
            store=store,
            playbooks=playbooks,
            scope=Scope(project=compose_project.name),
        )
        thread = threading.Thread(target=supervisor.run, name="medic-under-test", daemon=True)
        thread.start()
        medic = Medic(supervisor, store, thread)
        running.append(medic)
        wait_for(lambda: supervisor.events_connected, timeout=10, message="events stream up")
        return medic

    yield start
    for medic in running:
        medic.supervisor.stop()
        medic.thread.join(timeout=30)
        assert not medic.thread.is_alive(), "medic did not stop within 30 s"


def started_at(container: Any) -> datetime:
    container.reload()
    started = parse_time(container.attrs["State"]["StartedAt"])
    assert started is not None
    return started


def health(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", "none"))


def break_health(container: Any) -> None:
    container.exec_run(["touch", "/tmp/broken"])


def test_unhealthy_container_is_restarted_and_becomes_healthy(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    web = compose_project.run(
        "web", command=["sh", "-c", SERVE], healthcheck=healthcheck(HEALTHY_UNLESS_BROKEN)
    )
    wait_for(lambda: health(web) == "healthy", timeout=20, message="web healthy at first")
    first_start = started_at(web)
    # A long poll interval: only the health_status event can bring medic in quickly.
    medic = start_medic(interval=300)

    break_health(web)
    wait_for(lambda: started_at(web) > first_start, timeout=30, message="web restarted")
    wait_for(lambda: health(web) == "healthy", timeout=20, message="web healthy again")

    [incident] = medic.incidents(web)
    assert incident.signal is Signal.UNHEALTHY
    assert incident.evidence[0].evidence["health_output"] is not None
    [attempt] = incident.attempts
    assert attempt.ok
    assert attempt.action.startswith("restart")
    assert attempt.playbook == "restart-unhealthy"
    # Healthy for the settle period (2 s): the incident resolves at the next look.
    wait_for(
        lambda: medic.incidents(web)[0].status is IncidentStatus.RESOLVED,
        timeout=20,
        message="incident resolved after the settle period",
    )


def test_container_that_exits_non_zero_is_started(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    medic = start_medic()
    # Exits with 3 the first time; stays up once started again.
    script = f"if [ -f /tmp/ran ]; then {SERVE}; fi; touch /tmp/ran; exit 3"
    worker = compose_project.run("worker", command=["sh", "-c", script])

    wait_for(lambda: len(medic.attempts(worker)) >= 1, timeout=30, message="a start attempt")
    worker.reload()
    wait_for(
        lambda: worker.reload() or worker.status == "running", timeout=10, message="worker running"
    )
    [incident] = medic.incidents(worker)
    assert incident.signal is Signal.EXITED
    assert incident.evidence[0].evidence["exit_code"] == 3
    [attempt] = incident.attempts
    assert attempt.ok and attempt.action == "start"


def test_crash_loop_backs_off_with_growing_delays_then_is_escalated_and_left_alone(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    medic = start_medic()
    crasher = compose_project.run("crasher", command=["sh", "-c", "sleep 0.5; exit 1"])

    wait_for(
        lambda: any(i.status is IncidentStatus.ESCALATED for i in medic.incidents(crasher)),
        timeout=60,
        message="the crash loop escalated",
    )
    attempts = medic.attempts(crasher)
    assert len(attempts) == 3
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    # Backoff 1 s then 2 s: never sooner, and growing.
    assert gaps[0] >= 0.95
    assert gaps[1] >= 1.95
    assert gaps[1] > gaps[0]
    signals = {i.signal for i in medic.incidents(crasher)}
    assert Signal.CRASH_LOOP in signals

    # Left alone: no more attempts, though it stays down and polls go on.
    cycles_before = medic.supervisor.last_cycle_at
    time.sleep(5)
    assert medic.supervisor.last_cycle_at != cycles_before
    assert len(medic.attempts(crasher)) == 3
    crasher.reload()
    assert crasher.status == "exited"


def test_a_persons_docker_stop_and_kill_are_respected(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    # No SIGTERM handler as PID 1: docker stop ends in SIGKILL, exit code 137.
    stubborn = ["sh", "-c", "while :; do sleep 0.2; done"]
    stopped = compose_project.run("stopped", command=stubborn)
    killed = compose_project.run("killed", command=stubborn)
    # Crashes with code 3 when told to, as a real bug would: not a person's doing.
    control = compose_project.run("control", command=["sh", "-c", CRASH_ON_DEMAND])
    medic = start_medic()

    stopped.stop(timeout=1)
    killed.kill()
    control.exec_run(["touch", "/tmp/crash"])

    wait_for(lambda: len(medic.attempts(control)) >= 1, timeout=30, message="control healed")
    time.sleep(3)  # several more polls
    for container in (stopped, killed):
        container.reload()
        assert container.status == "exited"
        assert container.attrs["State"]["ExitCode"] == 137
        assert medic.incidents(container) == []


def test_a_stop_made_while_medic_was_down_is_respected_from_the_event_history(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    stubborn = ["sh", "-c", "while :; do sleep 0.2; done"]
    stopped = compose_project.run("stopped", command=stubborn)
    crashed = compose_project.run("crashed", command=["sh", "-c", "sleep 1; exit 2"])
    stopped.stop(timeout=1)
    wait_for(
        lambda: crashed.reload() or crashed.status == "exited", timeout=10, message="crashed exited"
    )

    medic = start_medic()
    wait_for(lambda: len(medic.attempts(crashed)) >= 1, timeout=30, message="crash healed")
    time.sleep(2)
    stopped.reload()
    assert stopped.status == "exited"
    assert medic.incidents(stopped) == []


def test_a_stop_the_engine_no_longer_remembers_is_taken_for_a_crash_and_said_so(
    compose_project: ComposeProject, start_medic: Callable[..., Medic], log_lines: list[str]
) -> None:
    stubborn = ["sh", "-c", "while :; do sleep 0.2; done"]
    stopped = compose_project.run("stopped", command=stubborn)
    busy = compose_project.run("busy", command=stubborn)
    stopped.stop(timeout=1)
    # The engine keeps its last 256 events: each exec adds three (create, start, die).
    for _ in range(100):
        busy.exec_run(["true"])

    medic = start_medic()
    wait_for(lambda: medic.attempts(stopped), timeout=30, message="the stop healed as a crash")
    stopped.reload()
    assert stopped.status == "running"
    assert any(
        "event history no longer goes back" in line and stopped.name in line for line in log_lines
    )


def test_containers_of_other_projects_and_ignored_ones_are_never_touched(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    check = healthcheck(HEALTHY_UNLESS_BROKEN)
    command = ["sh", "-c", SERVE]
    outsider = compose_project.run(
        "web", command=command, healthcheck=check, project=f"{compose_project.name}-other"
    )
    ignored = compose_project.run(
        "ignored", command=command, healthcheck=check, labels={"medic.ignore": "true"}
    )
    control = compose_project.run("control", command=command, healthcheck=check)
    for c in (outsider, ignored, control):
        wait_for(lambda c=c: health(c) == "healthy", timeout=20, message="healthy at first")
    before = {c.id: started_at(c) for c in (outsider, ignored, control)}
    medic = start_medic()

    for c in (outsider, ignored, control):
        break_health(c)
    wait_for(
        lambda: started_at(control) > before[control.id], timeout=30, message="control restarted"
    )
    time.sleep(3)
    for c in (outsider, ignored):
        assert started_at(c) == before[c.id]
        assert health(c) == "unhealthy"
        assert medic.incidents(c) == []


def test_a_slow_stop_of_one_container_does_not_delay_healing_of_another(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    books = (
        book("slow", [Signal.UNHEALTHY], Action("restart", timeout=8), services=["slow"]),
        book("fast", [Signal.UNHEALTHY], Action("restart", timeout=1), services=["fast"]),
    )
    check = healthcheck(HEALTHY_UNLESS_BROKEN)
    # The slow one ignores SIGTERM, so its restart waits the whole 8 s stop timeout.
    slow = compose_project.run(
        "slow",
        command=["sh", "-c", "rm -f /tmp/broken; while :; do sleep 0.2; done"],
        healthcheck=check,
    )
    fast = compose_project.run("fast", command=["sh", "-c", SERVE], healthcheck=check)
    for c in (slow, fast):
        wait_for(lambda c=c: health(c) == "healthy", timeout=20, message="healthy at first")
    medic = start_medic(playbooks=books, interval=300)

    break_health(slow)
    wait_for(lambda: medic.busy(slow), timeout=20, message="slow restart under way")
    break_health(fast)
    wait_for(lambda: len(medic.attempts(fast)) == 1, timeout=20, message="fast healed")
    wait_for(lambda: len(medic.attempts(slow)) == 1, timeout=30, message="slow healed")

    [fast_attempt] = medic.attempts(fast)
    [slow_attempt] = medic.attempts(slow)
    assert slow_attempt.duration is not None and slow_attempt.duration >= 7
    assert fast_attempt.started_at > slow_attempt.started_at
    assert fast_attempt.finished_at is not None and slow_attempt.finished_at is not None
    assert fast_attempt.finished_at < slow_attempt.finished_at


def test_an_exec_action_runs_inside_the_container_and_its_output_is_kept(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    clear = Action("exec", command=("sh", "-c", "rm -f /tmp/broken && echo cleared"))
    books = (book("clear-broken-flag", [Signal.UNHEALTHY], clear),)
    web = compose_project.run(
        "web", command=["sh", "-c", SERVE], healthcheck=healthcheck(HEALTHY_UNLESS_BROKEN)
    )
    wait_for(lambda: health(web) == "healthy", timeout=20, message="web healthy at first")
    first_start = started_at(web)
    medic = start_medic(playbooks=books)

    break_health(web)
    wait_for(lambda: len(medic.attempts(web)) == 1, timeout=30, message="an exec attempt")
    wait_for(lambda: health(web) == "healthy", timeout=20, message="healthy without a restart")
    [attempt] = medic.attempts(web)
    assert attempt.ok
    assert attempt.output == "cleared"
    assert started_at(web) == first_start


def test_a_failing_exec_is_a_failed_attempt_with_its_exit_code(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    fail = Action("exec", command=("sh", "-c", "echo no such cache >&2; exit 7"))
    books = (book("clear-cache", [Signal.UNHEALTHY], fail),)
    web = compose_project.run(
        "web", command=["sh", "-c", SERVE], healthcheck=healthcheck(HEALTHY_UNLESS_BROKEN)
    )
    wait_for(lambda: health(web) == "healthy", timeout=20, message="web healthy at first")
    medic = start_medic(playbooks=books)
    break_health(web)
    wait_for(lambda: len(medic.attempts(web)) >= 1, timeout=30, message="an exec attempt")
    attempt = medic.attempts(web)[0]
    assert not attempt.ok
    assert attempt.error is not None
    assert "exit code 7" in attempt.error
    assert "no such cache" in attempt.error


def test_an_oom_killed_container_is_found_and_restarted(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    books = (book("restart-oom-killed", [Signal.OOM_KILLED], Action("restart")),)
    medic = start_medic(playbooks=books)
    # Grows a shell variable past the 16 MiB limit once; after the restart it just runs.
    hog = (
        "if [ -f /tmp/hogged ]; then while :; do sleep 0.2; done; fi; touch /tmp/hogged; "
        "x=a; while :; do x=$x$x; done"
    )
    eater = compose_project.run(
        "eater", command=["sh", "-c", hog], mem_limit="16m", memswap_limit="16m"
    )
    wait_for(lambda: len(medic.attempts(eater)) >= 1, timeout=60, message="a restart")
    [incident] = medic.incidents(eater)
    assert incident.signal is Signal.OOM_KILLED
    assert incident.evidence[0].evidence["exit_code"] == 137
    wait_for(lambda: eater.reload() or eater.status == "running", timeout=10, message="running")


# --- medic's own actions are never findings (issue 9) ------------------------------------

#: Ignores SIGTERM, so every stop medic makes ends in SIGKILL: exit code 137.
STUBBORN = 'rm -f /tmp/broken; trap "" TERM; while :; do sleep 1; done'


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    with logged("INFO") as lines:
        yield lines


def stubborn_web(compose_project: ComposeProject) -> Any:
    web = compose_project.run(
        "web", command=["sh", "-c", STUBBORN], healthcheck=healthcheck(HEALTHY_UNLESS_BROKEN)
    )
    wait_for(lambda: health(web) == "healthy", timeout=20, message="web healthy at first")
    return web


def test_restarting_a_container_that_ignores_sigterm_opens_no_exited_incident(
    compose_project: ComposeProject, start_medic: Callable[..., Medic], log_lines: list[str]
) -> None:
    web = stubborn_web(compose_project)
    books = (
        book("restart-unhealthy", [Signal.UNHEALTHY], Action("restart", timeout=1)),
        *DEFAULT_BOOKS[1:],
    )
    medic = start_medic(playbooks=books)
    break_health(web)
    wait_for(lambda: medic.attempts(web), timeout=30, message="a restart")
    wait_for(lambda: health(web) == "healthy", timeout=20, message="healthy after the restart")
    time.sleep(3)  # several polls and the late events of the kill

    [incident] = medic.incidents(web)
    assert incident.signal is Signal.UNHEALTHY
    [attempt] = incident.attempts
    assert attempt.ok and (attempt.duration or 0) >= 0.9  # the stop timeout ran out: SIGKILL
    assert not any("stopped by a person" in line for line in log_lines)


def test_recreating_a_container_that_ignores_sigterm_opens_no_exited_incident(
    compose_project: ComposeProject, start_medic: Callable[..., Medic], log_lines: list[str]
) -> None:
    web = stubborn_web(compose_project)
    books = (
        book("recreate-unhealthy", [Signal.UNHEALTHY], Action("recreate", timeout=1)),
        *DEFAULT_BOOKS[1:],
    )
    medic = start_medic(playbooks=books)
    break_health(web)
    [new] = wait_for(
        lambda: [c for c in compose_project.project_containers() if c.id != web.id],
        timeout=30,
        message="the new container",
    )
    # The incident follows the new container, its attempt with it.
    wait_for(lambda: medic.attempts(new), timeout=20, message="the recreate recorded")
    wait_for(lambda: health(new) == "healthy", timeout=20, message="the new one healthy")
    # One episode, one incident: it follows the new container and resolves once that
    # one has been healthy for the settle period (2 s).
    wait_for(
        lambda: [i for i in medic.store.list_incidents() if not i.is_active],
        timeout=20,
        message="the incident resolved after the new container settled",
    )
    time.sleep(3)

    everything = medic.store.list_incidents()
    assert [i.signal for i in everything] == [Signal.UNHEALTHY]
    [incident] = everything
    assert incident.container.id == new.id
    assert incident.status is IncidentStatus.RESOLVED
    assert incident.note is not None and incident.note.startswith("healthy for 2 s")
    assert any(f"was recreated as {new.id[:12]}" in e.summary for e in incident.evidence)
    [attempt] = incident.attempts
    assert attempt.ok and attempt.action.startswith("recreate")
    assert not any("stopped by a person" in line for line in log_lines)


def test_a_playbook_stop_action_leaves_the_container_stopped_without_an_incident_of_its_own(
    compose_project: ComposeProject, start_medic: Callable[..., Medic]
) -> None:
    web = stubborn_web(compose_project)
    books = (
        book("stop-unhealthy", [Signal.UNHEALTHY], Action("stop", timeout=1)),
        *DEFAULT_BOOKS[1:],
    )
    # A control that crashes proves medic keeps healing meanwhile.
    control = compose_project.run("control", command=["sh", "-c", CRASH_ON_DEMAND])
    medic = start_medic(playbooks=books)
    break_health(web)
    wait_for(lambda: medic.attempts(web), timeout=30, message="a stop")
    control.exec_run(["touch", "/tmp/crash"])
    wait_for(lambda: medic.attempts(control), timeout=30, message="control healed")
    time.sleep(4)  # several polls: start-exited must not fight the stop

    web.reload()
    assert web.status == "exited"
    assert web.attrs["State"]["ExitCode"] == 137
    [incident] = medic.incidents(web)
    assert incident.signal is Signal.UNHEALTHY
    assert [a.action for a in incident.attempts] == ["stop (stop timeout 1s)"]


def test_restart_dependents_spares_an_ignored_dependent_and_its_kills_are_medics_own(
    compose_project: ComposeProject, start_medic: Callable[..., Medic], log_lines: list[str]
) -> None:
    needs_db = {"com.docker.compose.depends_on": "db:service_started:false"}
    db = compose_project.run(
        "db", command=["sh", "-c", SERVE], healthcheck=healthcheck(HEALTHY_UNLESS_BROKEN)
    )
    api = compose_project.run("api", command=["sh", "-c", STUBBORN], labels=needs_db)
    quiet = compose_project.run(
        "quiet", command=["sh", "-c", SERVE], labels={**needs_db, "medic.ignore": "1"}
    )
    wait_for(lambda: health(db) == "healthy", timeout=20, message="db healthy at first")
    before = {c.name: started_at(c) for c in (db, api, quiet)}
    heal = Playbook(
        name="restart-dependents",
        match=Match(signals=frozenset({Signal.UNHEALTHY}), services=frozenset({"db"})),
        actions=(
            Action("restart_dependents", timeout=1),
            Action("exec", command=("rm", "-f", "/tmp/broken")),
        ),
        backoff=FAST,
    )
    medic = start_medic(playbooks=(heal, *DEFAULT_BOOKS[1:]))
    break_health(db)
    wait_for(lambda: len(medic.attempts(db)) == 2, timeout=30, message="dependents restarted")
    time.sleep(3)

    assert started_at(api) > before[api.name]
    assert started_at(quiet) == before[quiet.name]
    assert started_at(db) == before[db.name]
    api.reload()
    assert api.status == "running"
    assert medic.incidents(api) == []
    assert not any("stopped by a person" in line for line in log_lines)
