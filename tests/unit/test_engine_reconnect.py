"""After the Docker engine is away, the events stream is back within a ping interval.

On the honest fake: the engine refuses every request while it is down, and the
supervisor's events thread waits on the injected clock, so the tests read when
each ping and each subscription happened on that clock instead of timing them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from fakes import FakeClock, FakeDocker
from helpers import wait_for
from loguru import logger

from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.model import Action, Match, Playbook, Signal
from agent.store import MemoryStore
from agent.supervisor import Supervisor

PROJECT = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
BOOKS = (Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),)),)


def medic(
    fake: FakeDocker,
    clock: FakeClock | None = None,
    *,
    ping_interval: float = 1.0,
    **settings: object,
) -> Supervisor:
    return Supervisor(
        healing=HealingSettings(**settings),  # type: ignore[arg-type]
        gateway=fake,
        store=MemoryStore(),
        playbooks=BOOKS,
        scope=Scope(project="shop"),
        ping_interval=ping_interval,
        **({"clock": clock} if clock is not None else {}),  # type: ignore[arg-type]
    )


@pytest.fixture
def running() -> Iterator[list[tuple[Supervisor, threading.Thread]]]:
    started: list[tuple[Supervisor, threading.Thread]] = []
    yield started
    for s, thread in started:
        s.stop()
        thread.join(timeout=10)


@pytest.fixture
def lines() -> Iterator[list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    sink = logger.add(
        lambda m: seen.append((m.record["level"].name, str(m.record["message"]))), level="INFO"
    )
    yield seen
    logger.remove(sink)


def start(s: Supervisor, running: list[tuple[Supervisor, threading.Thread]]) -> None:
    thread = threading.Thread(target=s.run, daemon=True)
    thread.start()
    running.append((s, thread))
    wait_for(lambda: s.events_connected, timeout=5, message="events connected")
    wait_for(lambda: s.last_cycle_at, timeout=5, message="the first poll")


def after(fake: FakeDocker, mark: int, at: datetime) -> list[tuple[str, float]]:
    """The requests made after the first ``mark``, with their clock time in seconds
    after ``at``."""
    return [(kind, (when - at).total_seconds()) for kind, when in fake.timeline[mark:]]


def test_the_stream_is_back_at_the_first_ping_the_restarted_engine_answers(
    running: list[tuple[Supervisor, threading.Thread]], lines: list[tuple[str, str]]
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    fake.add("shop-web-1", PROJECT)
    s = medic(fake, clock, interval=3600)
    start(s, running)
    down_at, mark = clock.now(), len(fake.timeline)

    fake.engine_down(for_seconds=7.5)

    wait_for(lambda: fake.requests.count("events") == 2, timeout=5, message="reconnected")
    wait_for(lambda: s.events_connected, timeout=5, message="connected again")
    seen = after(fake, mark, down_at)
    # Pinged at once, then every second; the ping at 8 s is the first the engine
    # answers, and the stream is subscribed again right then (not after a backoff
    # of 1 + 2 + 4 + 8 s).
    assert seen == [*(("ping", float(t)) for t in range(9)), ("events", 8.0)]
    said = [(level, text) for level, text in lines if "Docker engine" in text]
    assert [level for level, _ in said] == ["WARNING", "INFO"]
    assert "asks it every 1 s" in said[0][1]
    assert "back after 8 s away (it answered a ping)" in said[1][1]


def test_a_poll_that_reaches_the_engine_reconnects_the_stream_at_once(
    running: list[tuple[Supervisor, threading.Thread]], lines: list[tuple[str, str]]
) -> None:
    fake = FakeDocker()
    fake.add("shop-web-1", PROJECT)
    # Pings far apart: only the poll can be what finds the engine back.
    s = medic(fake, interval=0.2, ping_interval=3600)
    start(s, running)

    fake.engine_down()
    wait_for(lambda: "ping" in fake.requests, timeout=5, message="the engine was pinged")
    wait_for(lambda: any("does not answer" in t for _, t in lines), timeout=5, message="warning")
    subscriptions = fake.requests.count("events")
    fake.engine_up()

    wait_for(lambda: s.events_connected, timeout=5, message="connected again")
    assert fake.requests.count("ping") == 1
    assert fake.requests.count("events") == subscriptions + 1
    ping = fake.requests.index("ping")
    assert "list" in fake.requests[ping : fake.requests.index("events", ping)]
    assert any("a poll reached it" in text for _, text in lines)


def test_a_dropped_stream_of_an_engine_that_answers_is_subscribed_again_at_once(
    lines: list[tuple[str, str]], running: list[tuple[Supervisor, threading.Thread]]
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    s = medic(fake, clock, interval=3600)
    start(s, running)
    dropped_at, mark = clock.now(), len(fake.timeline)
    fake.refuse_events = 2
    fake.drop_events()

    wait_for(lambda: fake.requests.count("events") == 4, timeout=5, message="subscribed again")
    wait_for(lambda: s.events_connected, timeout=5, message="connected again")
    # The first try is at once; only a subscription that keeps failing while the
    # engine answers waits, 1 s then 2 s.
    seen = after(fake, mark, dropped_at)
    pings = [("ping", 0.0), ("ping", 0.0), ("ping", 1.0)]
    subscriptions = [("events", 0.0), ("events", 1.0), ("events", 3.0)]
    assert seen == [item for pair in zip(pings, subscriptions, strict=True) for item in pair]
    assert not any("does not answer" in text for _, text in lines)
    assert clock.now() - dropped_at == timedelta(seconds=3)
