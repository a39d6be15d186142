"""What counts as trouble: the rules in agent/healing/detect.py."""

from __future__ import annotations

from dataclasses import replace

from factories import at, snapshot

from agent.healing.detect import CrashLoopRule, detect
from agent.model import Finding, Health, Signal, State


def signals(findings: list[Finding]) -> list[Signal]:
    return [f.signal for f in findings]


def test_healthy_and_plain_running_containers_show_nothing() -> None:
    assert detect(snapshot(health=Health.HEALTHY)) == []
    assert detect(snapshot(health=Health.NONE)) == []
    assert detect(snapshot(health=Health.STARTING)) == []


def test_unhealthy_keeps_the_health_check_output_as_evidence() -> None:
    [found] = detect(snapshot(health=Health.UNHEALTHY))
    assert found.signal is Signal.UNHEALTHY
    assert found.evidence["health_output"] == "exit 1: connection refused"
    assert found.evidence["failing_streak"] == 3
    assert "3 times in a row" in found.summary


def test_exit_code_0_is_a_finished_job_not_trouble() -> None:
    assert detect(snapshot(state=State.EXITED, exit_code=0)) == []


def test_non_zero_exit_is_exited() -> None:
    [found] = detect(snapshot(state=State.EXITED, exit_code=3))
    assert found.signal is Signal.EXITED
    assert found.evidence["exit_code"] == 3
    assert "exited with code 3" in found.summary


def test_oom_killed_exit_is_oom_killed_not_exited() -> None:
    assert signals(detect(snapshot(state=State.EXITED, exit_code=137, oom_killed=True))) == [
        Signal.OOM_KILLED
    ]


def test_dead_container_is_dead() -> None:
    assert signals(detect(snapshot(state=State.DEAD, exit_code=1))) == [Signal.DEAD]


def test_a_container_a_person_stopped_is_left_alone() -> None:
    stopped = snapshot(state=State.EXITED, exit_code=137)
    deaths = [at(-30), at(-20), at(-10)]
    assert detect(stopped, deaths=deaths, stopped_by_person=True) == []


def test_three_deaths_in_five_minutes_is_a_crash_loop() -> None:
    down = snapshot(state=State.EXITED, exit_code=1)
    two = [at(-100), at(-50)]
    assert signals(detect(down, deaths=two)) == [Signal.EXITED]
    three = [at(-290), at(-100), at(-50)]
    assert signals(detect(down, deaths=three)) == [Signal.CRASH_LOOP, Signal.EXITED]


def test_deaths_outside_the_window_do_not_make_a_crash_loop() -> None:
    down = snapshot(state=State.EXITED, exit_code=1)
    deaths = [at(-400), at(-100), at(-50)]
    assert signals(detect(down, deaths=deaths)) == [Signal.EXITED]
    wider = CrashLoopRule(deaths=3, window=600)
    assert Signal.CRASH_LOOP in signals(detect(down, deaths=deaths, crash_loop=wider))


def test_a_container_that_is_up_and_healthy_again_is_not_a_crash_loop() -> None:
    deaths = [at(-30), at(-20), at(-10)]
    assert detect(snapshot(health=Health.HEALTHY), deaths=deaths) == []
    restarting = snapshot(state=State.RESTARTING)
    assert signals(detect(restarting, deaths=deaths)) == [Signal.CRASH_LOOP]


def test_an_unhealthy_status_older_than_medics_last_action_is_not_a_finding() -> None:
    sick = replace(snapshot(health=Health.UNHEALTHY), health_checked_at=at(-5))
    assert detect(sick, acted_at=at(-10)) != []  # checked after the action: still broken
    assert detect(sick, acted_at=at(-1)) == []  # checked before it: wait for the next check
    assert detect(sick) != []
