"""Carrying out a plan: one action after another, on a pool of workers.

Each container has at most one plan in flight: ``submit`` refuses a second one.
Containers are healed in parallel, so a container that takes its whole stop
timeout delays nobody else. Temporary Docker errors are retried inside the
gateway (tenacity); what reaches here is a final outcome, captured as an
``ActionResult`` rather than raised.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from loguru import logger

from agent.docker_gateway import DockerGateway
from agent.errors import ActionError, MedicError
from agent.model import Action, ActionKind, ActionResult, ContainerId, ContainerRef, Plan

T = TypeVar("T")

#: How much of a command's output an attempt keeps: the end, where errors are.
OUTPUT_EXCERPT = 2000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def excerpt(text: str, limit: int = OUTPUT_EXCERPT) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


@dataclass(frozen=True)
class InFlight:
    """A plan being carried out right now."""

    container: ContainerRef
    plan: Plan
    started_at: datetime


class _DaemonPool:
    """A fixed number of daemon worker threads.

    Not ``ThreadPoolExecutor``: its workers are joined when the interpreter exits, so a
    restart abandoned at shutdown (its stop timeout still running in the engine) would
    hold ``medic run`` open long after it said it stopped.
    """

    def __init__(self, workers: int) -> None:
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"medic-act-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)

    def shutdown(self) -> None:
        """Cancel what has not started; running work is left to finish or be abandoned."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)


class Actor:
    """Runs plans through the gateway, never two at once on one container."""

    def __init__(
        self,
        gateway: DockerGateway,
        *,
        workers: int = 4,
        stop_timeout: float = 10.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._gateway = gateway
        self._stop_timeout = stop_timeout
        self._now = now
        self._pool = _DaemonPool(workers)
        self._lock = threading.Lock()
        self._in_flight: dict[ContainerId, tuple[InFlight, Future[list[ActionResult]]]] = {}

    def run_action(self, container: ContainerRef, action: Action) -> ActionResult:
        """Carry out one action and say how it went; never raises a MedicError."""
        started = self._now()
        clock = time.monotonic()
        output = ""
        error: str | None = None
        try:
            output = self._dispatch(container, action)
        except MedicError as e:
            error = str(e)
        finished = self._now()
        # The wall clock may be stepped during a long action; the monotonic span is honest.
        finished = max(finished, started)
        elapsed = time.monotonic() - clock
        logger.debug("{} on {} took {:.2f} s.", action.describe(), container.label, elapsed)
        return ActionResult(
            action=action,
            ok=error is None,
            started_at=started,
            finished_at=finished,
            error=error,
            output=excerpt(output),
        )

    def run_plan(self, container: ContainerRef, plan: Plan) -> list[ActionResult]:
        """Every action of the plan in order, stopping at the first that fails."""
        results: list[ActionResult] = []
        for action in plan.actions:
            result = self.run_action(container, action)
            results.append(result)
            if not result.ok:
                break
        return results

    def submit(
        self,
        container: ContainerRef,
        plan: Plan,
        on_done: Callable[[InFlight, list[ActionResult]], None],
    ) -> bool:
        """Start the plan on a worker; False (and nothing done) if one is in flight."""
        with self._lock:
            if container.id in self._in_flight:
                return False
            flight = InFlight(container, plan, self._now())
            future = self._pool.submit(partial(self.run_plan, container, plan))
            self._in_flight[container.id] = (flight, future)

        def finished(f: Future[list[ActionResult]]) -> None:
            with self._lock:
                self._in_flight.pop(container.id, None)
            if f.cancelled():
                return
            error = f.exception()
            if error is not None:
                # run_plan turns every MedicError into a result, so this is a bug.
                logger.opt(exception=error).error(
                    "Healing {} failed unexpectedly: {}.", container.label, error
                )
                return
            on_done(flight, f.result())

        future.add_done_callback(finished)
        return True

    def busy(self, container_id: ContainerId) -> bool:
        with self._lock:
            return container_id in self._in_flight

    def in_flight(self) -> list[InFlight]:
        with self._lock:
            return [flight for flight, _ in self._in_flight.values()]

    def shutdown(self, timeout: float) -> tuple[list[InFlight], list[InFlight]]:
        """Wait up to ``timeout`` s for in-flight plans: (finished, abandoned)."""
        with self._lock:
            pending = dict(self._in_flight)
        done, not_done = wait_futures([f for _, f in pending.values()], timeout=timeout)
        finished = [flight for flight, f in pending.values() if f in done]
        abandoned = [flight for flight, f in pending.values() if f in not_done]
        self._pool.shutdown()
        return finished, abandoned

    def _dispatch(self, container: ContainerRef, action: Action) -> str:
        cid = container.id
        stop_timeout = action.timeout if action.timeout is not None else self._stop_timeout
        if action.kind is ActionKind.RESTART:
            self._gateway.restart(cid, timeout=stop_timeout)
            return ""
        if action.kind is ActionKind.START:
            self._gateway.start(cid)
            return ""
        if action.kind is ActionKind.STOP:
            self._gateway.stop(cid, timeout=stop_timeout)
            return ""
        if action.kind is ActionKind.EXEC:
            result = self._gateway.exec(
                cid, action.command, user=action.user, timeout=action.timeout
            )
            if result.exit_code != 0:
                code = (
                    "no exit code" if result.exit_code is None else f"exit code {result.exit_code}"
                )
                raise ActionError(
                    f"{action.describe()} ended with {code}: {excerpt(result.output, 300)}"
                )
            return result.output
        raise ActionError(f"medic does not know how to {action.kind}")  # pragma: no cover
