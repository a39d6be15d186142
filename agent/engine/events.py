"""The Docker events stream, kept connected: what medic hears between polls.

A thread of its own reads the engine's events and hands each to the supervisor's
inbox. When the stream drops, the engine is asked (a ping) whether it is there: if
it is, the stream is subscribed again at once; if not, it is pinged every second and
the stream is back at the first answer, or as soon as a poll reaches the engine.
After an engine restart medic hears events again within about a second, and a
stream that drops while the engine still answers is retried with growing pauses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from loguru import logger

from agent.clock import Clock
from agent.codec import format_duration
from agent.engine.gateway import DockerEvent, DockerGateway, EventStream
from agent.errors import DockerError, DockerUnavailable
from agent.metrics import Metrics

#: Pauses before subscribing again when the engine answers but the events stream keeps
#: failing; the last one repeats. The first reconnect after a drop is at once.
EVENT_RECONNECT_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

#: Seconds between pings while the engine does not answer: the stream is back at most
#: this long after the engine is (a poll that reaches it reconnects it sooner).
ENGINE_PING_INTERVAL = 1.0

#: The granularity of the events thread's pauses: how soon it notices ``stop()`` or a
#: poll that found the engine back.
_PAUSE_STEP = 0.1


@dataclass(frozen=True)
class EngineLost:
    """The stream dropped after events were heard: the engine may be shutting down, and
    stops just before ``last_event_at`` may be its own, not a person's."""

    last_event_at: datetime


class EventsPump:
    """Reads the events stream on its own thread until ``stopping`` is set."""

    def __init__(
        self,
        *,
        gateway: DockerGateway,
        label_filter: str,
        deliver: Callable[[DockerEvent | EngineLost], None],
        stopping: threading.Event,
        clock: Clock,
        metrics: Metrics,
        interval: float,
        reconnect_delays: Sequence[float] = EVENT_RECONNECT_DELAYS,
        ping_interval: float = ENGINE_PING_INTERVAL,
    ) -> None:
        self._gateway = gateway
        self._label_filter = label_filter
        self._deliver = deliver
        self._stop = stopping
        self._clock = clock
        self._metrics = metrics
        self._interval = interval
        self._reconnect_delays = tuple(reconnect_delays) or (1.0,)
        self._ping_interval = ping_interval
        self._stream: EventStream | None = None
        self._stream_lock = threading.Lock()
        self._engine_back = threading.Event()
        self.connected = False
        """Whether the stream is connected right now; read from any thread."""

    def engine_answers(self) -> None:
        """A poll reached the engine: if the stream is away, reconnect it now."""
        if not self.connected:
            self._engine_back.set()

    def close(self) -> None:
        """Close the stream so that ``run`` returns (``stopping`` must be set first)."""
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()

    def _connected(self, value: bool) -> None:
        self.connected = value
        self._metrics.events_connected.set(1 if value else 0)

    def run(self) -> None:
        """Keep the events stream connected.

        When it drops, the engine is asked (a ping) whether it is there. If it is, the
        stream is subscribed again at once, and with growing pauses only while that
        keeps failing. If it is not, it is pinged every ``ping_interval`` seconds and
        the stream is back at the first ping it answers, or as soon as a poll reaches
        it: after an engine restart medic hears events again within about a second.
        """
        failures = 0  # subscriptions that failed in a row while the engine answered
        since: datetime | None = None
        while not self._stop.is_set():
            try:
                stream = self._gateway.events(self._label_filter, since=since)
                with self._stream_lock:
                    if self._stop.is_set():
                        stream.close()
                        return
                    self._stream = stream
                self._connected(True)
                if failures:
                    logger.info("Reconnected to the Docker events stream after {} tries.", failures)
                failures = 0
                for event in stream:
                    since = event.at
                    self._deliver(event)
                if not self._stop.is_set():
                    raise DockerUnavailable("the stream ended")
            except DockerError as e:
                was_connected = self.connected
                self._connected(False)
                with self._stream_lock:
                    dropped, self._stream = self._stream, None
                if dropped is not None:
                    dropped.close()  # its connection to the engine that went away
                if self._stop.is_set():
                    return
                if was_connected and since is not None:
                    self._deliver(EngineLost(since))
                if self._wait_for_engine(e):
                    failures = 0
                    continue
                delay = 0.0
                if failures:
                    delay = self._reconnect_delays[
                        min(failures - 1, len(self._reconnect_delays) - 1)
                    ]
                failures += 1
                logger.warning(
                    "The Docker events stream dropped ({}) while the engine answers; "
                    "reconnecting {}. Polling every {:g} s carries on meanwhile.",
                    e,
                    f"in {delay:g} s" if delay else "now",
                    self._interval,
                )
                self._pause(delay)
        self._connected(False)

    def _wait_for_engine(self, error: DockerError) -> bool:
        """False when the engine answers a ping now. Otherwise ping it every
        ``ping_interval`` seconds until it answers or a poll reaches it (or medic
        stops), saying once that it is away and once that it is back; True then."""
        try:
            self._gateway.ping(retry=False)
            return False
        except DockerError:
            pass
        away_since = self._clock.now()
        self._engine_back.clear()
        logger.warning(
            "The Docker engine does not answer ({}); medic asks it every {:g} s and reconnects "
            "the events stream as soon as it does. Polling every {:g} s carries on meanwhile.",
            error,
            self._ping_interval,
            self._interval,
        )
        while True:
            if self._pause(self._ping_interval, wake=self._engine_back):
                return True
            if self._engine_back.is_set():
                how = "a poll reached it"
                break
            try:
                self._gateway.ping(retry=False)
            except DockerError:
                continue
            how = "it answered a ping"
            break
        away = (self._clock.now() - away_since).total_seconds()
        logger.info(
            "The Docker engine is back after {} away ({}); medic reconnects the events stream now.",
            format_duration(away),
            how,
        )
        return True

    def _pause(self, seconds: float, *, wake: threading.Event | None = None) -> bool:
        """Wait ``seconds`` on the injected clock, cut short by ``wake``; True when medic
        is stopping."""
        deadline = self._clock.now() + timedelta(seconds=seconds)
        while not self._stop.is_set() and not (wake is not None and wake.is_set()):
            left = (deadline - self._clock.now()).total_seconds()
            if left <= 0:
                break
            self._clock.sleep(min(left, _PAUSE_STEP))
        return self._stop.is_set()
