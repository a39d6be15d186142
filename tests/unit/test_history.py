"""What medic knows of a container slot: the pure rules in agent/healing/history.py and
agent/healing/lifecycle.py, without threads, clocks or an engine."""

from __future__ import annotations

from dataclasses import replace

from factories import REF, at, snapshot

from agent.healing import history as hist
from agent.healing import lifecycle
from agent.healing.history import History, Reaction, Slot
from agent.model import ContainerId, Health, Signal, State

GRACE, WINDOW = 300.0, 300.0


def event(h: History, kind: str, seconds: float, **extra: str) -> tuple[History, Reaction]:
    return hist.on_event(
        h,
        kind=kind,
        at=at(seconds),
        detail=extra.get("detail", ""),
        signal=extra.get("signal"),
        grace=GRACE,
        window=WINDOW,
    )


def test_a_kill_then_death_not_by_medic_is_a_persons_stop() -> None:
    h, _ = event(History(REF), "kill", 0, signal="15")
    h, reaction = event(h, "die", 1)
    assert reaction is Reaction.STOPPED_BY_PERSON
    assert h.stopped_by_person and h.deaths == ()


def test_a_reload_signal_is_not_a_stop_and_a_crash_after_it_counts() -> None:
    h, reaction = event(History(REF), "kill", 0, signal="1")
    assert reaction is Reaction.NOTHING
    h, reaction = event(h, "die", 1)
    assert reaction is Reaction.CHECK
    assert h.deaths == (at(1),)


def test_what_falls_in_medics_window_is_never_a_death_or_a_persons_stop() -> None:
    h = replace(History(REF), engine_seen=at(0))
    h = hist.action_started(h, at=at(1000), stops=True)  # host time: never compared
    assert h.busy
    for kind in ("kill", "die", "stop"):
        h, reaction = event(h, kind, 5, signal="9")
        assert reaction is Reaction.NOTHING
    h, _ = event(h, "start", 6)
    h = hist.action_finished(h, ok=True)
    assert not h.busy and h.deaths == () and not h.stopped_by_person
    assert h.acted_until == at(6)  # the start event ended the window
    h, reaction = event(h, "die", 30)  # after the window: the container's own
    assert reaction is Reaction.CHECK and h.deaths == (at(30),)


def test_a_finished_window_waits_for_the_engine_to_say_when_it_ended() -> None:
    h = replace(History(REF), engine_seen=at(0))
    h = hist.action_finished(hist.action_started(h, at=at(0), stops=True), ok=True)
    assert h.by_own_action(at(50))  # no start seen yet: late events are still medic's
    crashed = replace(
        snapshot(state=State.EXITED, exit_code=1), started_at=at(10), finished_at=at(40)
    )
    h = hist.on_inspect(h, crashed)
    assert h.acted_until == at(10)
    assert h.by_own_action(at(9)) and not h.by_own_action(at(40))
    assert hist.unexplained_death(h, crashed) == at(40)


def test_a_stop_action_leaves_the_container_stopped_by_medic_until_it_runs_again() -> None:
    h = replace(History(REF), engine_seen=at(0))
    h = hist.action_started(h, at=at(0), stops=True, leaves_stopped=True)
    h, _ = event(h, "kill", 1, signal="15")
    h, _ = event(h, "die", 2)
    h = hist.action_finished(h, ok=True)
    assert h.stopped_by_medic and not h.stopped_by_person
    h, reaction = event(h, "start", 60)
    assert reaction is Reaction.CHECK_IF_TROUBLED
    assert not h.stopped_by_medic


def test_a_dependent_touched_by_another_plan_gets_a_window_of_its_own() -> None:
    h = replace(History(REF), engine_seen=at(0))
    h = hist.action_started(h, at=at(0), stops=True, by_plan=False)
    h, reaction = event(h, "kill", 1, signal="15")
    h, reaction = event(h, "die", 2)
    assert reaction is Reaction.NOTHING and not h.stopped_by_person
    h = hist.touch_ended(h)
    assert not h.busy


def test_deaths_are_counted_against_each_other_and_pruned_by_the_window() -> None:
    h = History(REF)
    for seconds in (0, 100, 200, 600):
        h = hist.note_death(h, at(seconds), window=WINDOW)
    assert h.deaths == (at(600),)
    h = hist.note_death(h, at(600.5), window=WINDOW)  # the same death, seen twice
    assert h.deaths == (at(600),)


def test_an_engine_shutdown_takes_back_the_stops_just_before_the_stream_dropped() -> None:
    h, _ = event(History(REF), "kill", 0, signal="15")
    h, _ = event(h, "die", 1)
    assert h.stopped_by_person
    long_before = hist.engine_stopped(h, last_event_at=at(100), window=15)
    assert long_before.stopped_by_person
    assert not hist.engine_stopped(h, last_event_at=at(3), window=15).stopped_by_person


def test_a_recreate_keeps_the_slot_and_its_streak() -> None:
    h = hist.note_death(History(REF), at(0), window=WINDOW)
    new = replace(REF, id=ContainerId("d" * 64))
    moved = hist.moved_to(h, new)
    assert moved.container == new and moved.deaths == h.deaths
    assert Slot.of(new) == Slot.of(REF)


def test_each_signal_recovers_its_own_way() -> None:
    clear = lifecycle.Clear(healthy_since=at(0), probe_ok_since=None, log_quiet_at=at(200))
    assert lifecycle.clear_since([Signal.EXITED], clear) == at(0)
    assert lifecycle.clear_since([Signal.PROBE_FAILED], clear) is None
    assert lifecycle.clear_since([Signal.LOG_MATCH, Signal.UNHEALTHY], clear) == at(200)
    settled = lifecycle.settle([Signal.LOG_MATCH], clear, now=at(230), period=60)
    assert not settled.resolved and settled.at == at(260)
    assert lifecycle.settle([Signal.LOG_MATCH], clear, now=at(260), period=60).resolved
    down = replace(clear, healthy_since=None)
    assert lifecycle.clear_since([Signal.LOG_MATCH], down) is None


def test_a_stale_health_status_is_looked_at_again_after_the_next_check() -> None:
    sick = replace(snapshot(health=Health.UNHEALTHY), health_interval=5.0)
    assert lifecycle.health_recheck_at(sick, stale=True, now=at(0)) == at(5.5)
    assert lifecycle.health_recheck_at(sick, stale=False, now=at(0)) is None


def test_an_event_history_that_no_longer_reaches_the_death_counts_it_as_a_crash() -> None:
    # The engine keeps its last 256 events, dropping the oldest first: on a busy host a
    # person's stop a minute ago may be gone from it. With nothing to say otherwise,
    # the death is a crash.
    stop = (("kill", at(9), "15"), ("die", at(10), None), ("stop", at(10.001), None))
    h, by_person = hist.with_past_events(History(REF), at(10), stop, window=WINDOW)
    assert by_person and h.stopped_by_person
    assert hist.reaches_death(stop, at(10))

    # The oldest dropped: the stop recorded just after the death still says a person.
    h, by_person = hist.with_past_events(History(REF), at(10), stop[2:], window=WINDOW)
    assert by_person

    # All of it dropped: taken for a crash, and known to be a guess.
    h, by_person = hist.with_past_events(History(REF), at(10), (), window=WINDOW)
    assert not by_person and not h.stopped_by_person
    assert h.deaths == (at(10),)
    assert not hist.reaches_death((), at(10))
