"""Backoff, circuit breaker and playbook choice: the rules in agent/healing/decide.py."""

from __future__ import annotations

from dataclasses import replace

from factories import at, finding, playbook

from agent.healing.decide import (
    after_attempt,
    after_healthy,
    after_relapse,
    decide,
    select_playbook,
)
from agent.model import (
    Backoff,
    Escalate,
    Escalation,
    HealingState,
    Plan,
    Relapse,
    Signal,
    Skip,
    Wait,
)


def test_backoff_doubles_from_10s_and_caps_at_5_minutes() -> None:
    delays = [Backoff().delay(n) for n in range(1, 9)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert Backoff().delay(0) == 0


def test_first_attempt_is_immediate() -> None:
    book = playbook()
    decision = decide([finding()], labels={}, state=HealingState(), playbooks=[book], now=at(0))
    assert isinstance(decision, Plan)
    assert decision.attempt == 1
    assert decision.playbook is book


def test_no_finding_means_no_decision() -> None:
    assert decide([], labels={}, state=HealingState(), playbooks=[playbook()], now=at(0)) is None


def test_crash_loop_backs_off_10s_20s_40s_then_escalates() -> None:
    book = playbook(
        "back-off-crash-loop",
        (Signal.CRASH_LOOP,),
        kind="start",
        escalation=Escalation(after_attempts=4, within=1800),
    )
    state = HealingState()
    now = at(0)
    waited: list[float] = []
    for _ in range(4):
        decision = decide(
            [finding(Signal.CRASH_LOOP)], labels={}, state=state, playbooks=[book], now=now
        )
        if isinstance(decision, Wait):
            waited.append((decision.until - now).total_seconds())
            # Nothing happens before the backoff is over, however often medic looks.
            early = decide(
                [finding(Signal.CRASH_LOOP)],
                labels={},
                state=state,
                playbooks=[book],
                now=decision.until - (decision.until - now) / 2,
            )
            assert isinstance(early, Wait)
            now = decision.until
            decision = decide(
                [finding(Signal.CRASH_LOOP)], labels={}, state=state, playbooks=[book], now=now
            )
        assert isinstance(decision, Plan)
        state = after_attempt(state, at=now, playbook=book)
    assert waited == [10, 20, 40]
    last = decide([finding(Signal.CRASH_LOOP)], labels={}, state=state, playbooks=[book], now=now)
    assert isinstance(last, Escalate)
    assert "4 attempts" in last.reason


def test_escalates_after_3_attempts_in_30_minutes_by_default() -> None:
    book = playbook()
    state = HealingState(attempts=(at(0), at(10), at(30)))
    decision = decide([finding()], labels={}, state=state, playbooks=[book], now=at(70))
    assert isinstance(decision, Escalate)


def test_an_escalation_after_attempts_that_healed_nothing_says_it_still_shows_the_signal() -> None:
    state = HealingState(attempts=(at(0), at(10), at(30)))
    decision = decide([finding()], labels={}, state=state, playbooks=[playbook()], now=at(70))
    assert isinstance(decision, Escalate)
    assert not decision.relapsing
    assert decision.reason == (
        "shop-web-1 (service web) still shows unhealthy after 3 attempts by playbook "
        "restart-unhealthy within 30 min"
    )


def test_an_escalation_after_attempts_that_each_healed_says_how_long_the_heals_lasted() -> None:
    state = HealingState(attempts=(at(0), at(40), at(100)))
    for start, lasted in ((at(0), 12.0), (at(40), 39.2), (at(100), 8.0)):
        state = after_relapse(state, attempt=start, lasted=lasted)
    decision = decide([finding()], labels={}, state=state, playbooks=[playbook()], now=at(160))
    assert isinstance(decision, Escalate)
    assert decision.relapsing
    assert decision.reason == (
        "shop-web-1 (service web) was healed 3 times by playbook restart-unhealthy and "
        "failed again within 40 s each time (within 30 min)"
    )


def test_an_escalation_says_still_shows_when_one_of_the_attempts_did_not_heal() -> None:
    relapses = (Relapse(at(0), 12.0), Relapse(at(40), 20.0))  # the third never healed
    state = HealingState(attempts=(at(0), at(40), at(100)), relapses=relapses)
    decision = decide([finding()], labels={}, state=state, playbooks=[playbook()], now=at(160))
    assert isinstance(decision, Escalate)
    assert not decision.relapsing
    assert "still shows unhealthy after 3 attempts" in decision.reason


def test_relapses_are_forgotten_with_the_streak() -> None:
    state = after_relapse(HealingState(attempts=(at(0),)), attempt=at(0), lasted=5.0)
    assert after_healthy(state, healthy_since=at(20), now=at(620)).relapses == ()


def test_attempts_older_than_the_window_do_not_escalate() -> None:
    book = playbook(escalation=Escalation(after_attempts=3, within=60))
    state = HealingState(attempts=(at(0), at(10), at(30)))
    decision = decide([finding()], labels={}, state=state, playbooks=[book], now=at(500))
    assert isinstance(decision, Plan)
    assert decision.attempt == 4


def test_open_circuit_takes_no_action() -> None:
    state = HealingState(circuit_open=True)
    decision = decide([finding()], labels={}, state=state, playbooks=[playbook()], now=at(0))
    assert isinstance(decision, Skip)
    assert "escalated" in decision.reason


def test_never_two_actions_on_one_container_at_once() -> None:
    state = HealingState(busy=True)
    decision = decide([finding()], labels={}, state=state, playbooks=[playbook()], now=at(0))
    assert isinstance(decision, Skip)
    assert "still running" in decision.reason


def test_streak_is_forgotten_after_10_minutes_healthy() -> None:
    state = HealingState(attempts=(at(0), at(10)), reset_after=600)
    assert after_healthy(state, healthy_since=at(20), now=at(619)).attempts == state.attempts
    assert after_healthy(state, healthy_since=at(20), now=at(620)).attempts == ()


def test_reset_after_comes_from_the_playbook_of_the_last_attempt() -> None:
    book = playbook(backoff=Backoff(reset_after=42))
    state = after_attempt(HealingState(), at=at(0), playbook=book)
    assert state.reset_after == 42
    assert not state.busy


def test_most_severe_finding_with_a_playbook_is_acted_on() -> None:
    unhealthy = playbook("restart-unhealthy", (Signal.UNHEALTHY,))
    exited = playbook("start-exited", (Signal.EXITED,), kind="start")
    decision = decide(
        [finding(Signal.UNHEALTHY), finding(Signal.EXITED), finding(Signal.CRASH_LOOP)],
        labels={},
        state=HealingState(),
        playbooks=[unhealthy, exited],
        now=at(0),
    )
    assert isinstance(decision, Plan)
    assert decision.playbook is exited
    assert decision.finding.signal is Signal.EXITED


def test_finding_no_playbook_handles_is_skipped_with_the_reason() -> None:
    decision = decide(
        [finding(Signal.OOM_KILLED)],
        labels={},
        state=HealingState(),
        playbooks=[playbook()],
        now=at(0),
    )
    assert isinstance(decision, Skip)
    assert "oom_killed" in decision.reason


def test_pinned_playbook_wins_when_it_handles_the_signal() -> None:
    first = playbook("restart-unhealthy")
    pinned = playbook("gentle", kind="exec")
    chosen = select_playbook(finding(), {"medic.playbook": "gentle"}, [first, pinned])
    assert chosen is pinned


def test_pinned_playbook_that_does_not_handle_the_signal_falls_back() -> None:
    first = playbook("restart-unhealthy")
    pinned = playbook("for-exits", (Signal.EXITED,))
    assert select_playbook(finding(), {"medic.playbook": "for-exits"}, [first, pinned]) is first
    assert select_playbook(finding(), {"medic.playbook": "nope"}, [first]) is first


def test_playbook_limited_to_services_ignores_others() -> None:
    only_db = playbook(services=frozenset({"db"}))
    assert select_playbook(finding(), {}, [only_db]) is None
    web = replace(only_db, match=replace(only_db.match, services=frozenset({"web"})))
    assert select_playbook(finding(), {}, [web]) is web
