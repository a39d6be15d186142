"""The long-running loop: the poll timer, the events pump, the inbox, a graceful stop.

One decision thread owns every piece of per-container state. Four things feed it
through a single inbox: the poll timer (every ``interval`` seconds), the Docker
events thread, the actor reporting the containers an action touches, and the
actor's workers reporting finished plans. Because only this thread reads and
writes the state, there are no locks around it; actions run on the pool, so a
slow one delays no other container.

The check of one container is the flow in DESIGN.md: observe, what medic knows
of it (agent/history.py, pure), detect, decide, record (agent/recorder.py), act.
A container with an action in flight is not judged at all, and what medic's own
actions do to containers falls in own-action windows, so it is never a finding.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial

from loguru import logger

from agent import history as hist
from agent import lifecycle
from agent.act import Actor, InFlight, Touch
from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import Settings
from agent.decide import decide
from agent.detect import CrashLoopRule, detect, health_is_stale
from agent.docker_gateway import DockerEvent, DockerGateway, EventStream
from agent.errors import ContainerGone, DockerError, DockerUnavailable
from agent.history import History, Reaction, Slot
from agent.metrics import Metrics
from agent.model import (
    ActionResult,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Decision,
    Escalate,
    Finding,
    Plan,
    Playbook,
    Skip,
    Wait,
)
from agent.notify import Notifier
from agent.observe import Scope, explain, poll
from agent.recorder import EscalationHook, Recorder
from agent.signals import Prober, SocketProber
from agent.slots import Slots, Tracked
from agent.status import LoopView, health_document, status_document
from agent.store import IncidentStore
from agent.watch import Watcher

#: Pauses before reconnecting a dropped events stream; the last one repeats.
EVENT_RECONNECT_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

#: Seconds after the engine's last event within which a stop is taken for the engine's
#: own shutdown when the stream then drops (added to the stop timeout).
ENGINE_SHUTDOWN_MARGIN = 5.0


@dataclass(frozen=True)
class _Done:
    flight: InFlight
    results: list[ActionResult]


@dataclass(frozen=True)
class _EngineLost:
    last_event_at: datetime


Message = DockerEvent | _Done | Touch | _EngineLost


@dataclass
class CycleReport:
    """What one poll cycle saw, decided and did; ``medic once`` prints it."""

    started_at: datetime
    containers: int = 0
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    results: list[tuple[ContainerRef, Plan, list[ActionResult]]] = field(default_factory=list)
    error: str | None = None


class Supervisor:
    """Watches one scope of containers and heals them by playbooks."""

    def __init__(
        self,
        *,
        settings: Settings,
        gateway: DockerGateway,
        store: IncidentStore,
        playbooks: Sequence[Playbook],
        scope: Scope,
        clock: Clock = SYSTEM_CLOCK,
        reconnect_delays: Sequence[float] = EVENT_RECONNECT_DELAYS,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        prober: Prober | None = None,
        escalation: EscalationHook | None = None,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._playbooks = tuple(playbooks)
        self._scope = scope
        self._clock = clock
        self._reconnect_delays = tuple(reconnect_delays)
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._actor = Actor(
            gateway,
            workers=settings.workers,
            stop_timeout=settings.stop_timeout,
            clock=clock,
            scope=scope,
            touch=self._inbox.put,
        )
        self._recorder = Recorder(
            store=store,
            clock=clock,
            metrics=self.metrics,
            notifier=notifier,
            escalation=escalation,
            dry_run=settings.dry_run,
        )
        self._watcher = Watcher(
            gateway=gateway, playbooks=self._playbooks, prober=prober or SocketProber(), clock=clock
        )
        self._rule = CrashLoopRule(settings.crash_loop_deaths, settings.crash_loop_window)
        self._slots = Slots()
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._stream: EventStream | None = None
        self._stream_lock = threading.Lock()
        self._events_connected = False
        self._started_at = clock.now()
        self.last_cycle_at: datetime | None = None
        self._report: CycleReport | None = None
        self._status: tuple[dict[str, object], ...] = ()
        self._slots.seed(self._recorder.seed())

    # --- entry points ---------------------------------------------------------------------

    def run_once(self) -> CycleReport:
        """One poll cycle, with every action carried out before it returns."""
        return self._cycle(sync=True)

    def run(self, *, _iterations: int | None = None) -> None:
        """Poll and react to events until ``stop()``; ``_iterations`` bounds polls in tests."""
        interval = timedelta(seconds=self._settings.interval)
        events = threading.Thread(target=self._events_loop, name="medic-events", daemon=True)
        events.start()
        dry = " in dry-run mode: it says what it would do and does nothing"
        logger.info(
            "medic is supervising {} every {:g} s{}.",
            self._scope.describe(),
            self._settings.interval,
            dry if self._settings.dry_run else "",
        )
        next_poll = self._clock.now()
        try:
            while not self._stop.is_set():
                now = self._clock.now()
                if now >= next_poll:
                    if _iterations is not None:
                        if _iterations <= 0:
                            break
                        _iterations -= 1
                    self._cycle(sync=False)
                    next_poll = now + interval
                    continue
                self._wake_due(now)
                deadline = min([next_poll, *self._slots.wake_times()])
                timeout = max(0.0, min((deadline - self._clock.now()).total_seconds(), 1.0))
                try:
                    message = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    continue
                self._handle(message)
                self._publish()
        finally:
            self._shutdown(events)

    def stop(self, reason: str | None = None) -> None:
        """Ask ``run`` to finish within a second; safe from a signal handler (only an
        Event is set: the main thread may hold the inbox's or the logger's lock)."""
        self._stop_reason = reason
        self._stop.set()

    @property
    def events_connected(self) -> bool:
        """Whether the Docker events stream is connected right now."""
        return self._events_connected

    @events_connected.setter
    def events_connected(self, value: bool) -> None:
        self._events_connected = value
        self.metrics.events_connected.set(1 if value else 0)

    def close_notifier(self) -> None:
        """Send what notifications are queued (briefly) before medic exits."""
        self._recorder.close()

    def in_flight(self) -> list[InFlight]:
        """Plans being carried out right now; safe from any thread."""
        return self._actor.in_flight()

    @property
    def tracked(self) -> dict[ContainerId, Tracked]:
        """The per-container memory by current container id; read it only when ``run``
        is not running."""
        return self._slots.by_container_id()

    def status(self) -> list[dict[str, object]]:
        """Every supervised container as of the last change; safe from any thread."""
        return [dict(entry) for entry in self._status]

    def health(self) -> tuple[bool, dict[str, object]]:
        view = LoopView(
            self._started_at,
            self.last_cycle_at,
            self._settings.interval,
            self.events_connected,
            len(self._actor.in_flight()),
        )
        return health_document(view, now=self._clock.now())

    # --- the cycle and the check of one container ----------------------------------------

    def _cycle(self, *, sync: bool) -> CycleReport:
        report = self._report = CycleReport(started_at=self._clock.now())
        started = time.monotonic()
        try:
            snapshots = poll(self._gateway, self._scope)
        except DockerError as e:
            report.error = str(e)
            self.metrics.cycle_errors.inc()
            logger.warning("Could not list containers: {}. medic tries again at the next poll.", e)
            self._report = None
            return report
        try:
            report.containers = len(snapshots)
            self._recorder.observations(snapshots)
            known = set(self._slots)
            self._watcher.look(snapshots, skip=self._slots.busy)
            seen = {self._check(snapshot, sync=sync) for snapshot in snapshots}
            for slot in known - seen:
                tracked = self._slots.get(slot)
                if tracked is not None and not tracked.history.busy:
                    self._forget(slot, "it no longer exists")
        finally:
            self._report = None
        self.last_cycle_at = report.started_at
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(time.monotonic() - started)
        self.metrics.containers.set(report.containers)
        self._publish()
        return report

    def _check(self, snapshot: ContainerSnapshot, *, sync: bool = False) -> Slot:
        """observe → what medic knows (pure) → detect → decide → record → act."""
        slot, tracked = self._slots.track(snapshot.ref)
        if tracked is None or tracked.history.busy:
            return slot  # an action is in flight: the container is not judged at all
        grace, window = self._settings.manual_stop_grace, self._settings.crash_loop_window
        history = explain(self._gateway, tracked.history, snapshot, grace=grace, window=window)
        if history is None:
            return slot  # who stopped it is unknown: look again at the next poll
        cleared = tracked.healing.circuit_open and self._recorder.cleared_by_person(slot)
        tracked = self._slots.observed(slot, history, snapshot, cleared=cleared)
        findings = self._detect(tracked, snapshot)
        decision = decide(
            findings,
            labels=snapshot.labels,
            state=tracked.healing,
            playbooks=self._playbooks,
            now=self._clock.now(),
            used=tracked.used,
        )
        self._record(slot, findings, decision)
        self._settle(slot, snapshot, findings)
        if decision is not None:
            self._act(slot, decision, snapshot, sync=sync)
        return slot

    def _detect(self, tracked: Tracked, snapshot: ContainerSnapshot) -> list[Finding]:
        history = tracked.history
        findings = detect(
            snapshot,
            deaths=history.deaths,
            stopped_by_person=history.stopped_by_person,
            stopped_by_medic=history.stopped_by_medic,
            crash_loop=self._rule,
            acted_at=history.acted_until,
        )
        return findings + self._watcher.findings(snapshot)

    def _record(self, slot: Slot, findings: list[Finding], decision: Decision | None) -> None:
        if self._report is not None:
            self._report.findings.extend(findings)
            if decision is not None:
                self._report.decisions.append(decision)
        if findings:
            self._recorder.record(slot, findings)

    def _settle(self, slot: Slot, snapshot: ContainerSnapshot, findings: list[Finding]) -> None:
        """Resolve the slot's incident once every signal it showed is clear for the settle
        period; otherwise look again when it could be."""
        tracked, held = self._slots[slot], self._recorder.held(slot)
        now = self._clock.now()
        stale = health_is_stale(snapshot, tracked.history.acted_until)
        wake = lifecycle.health_recheck_at(snapshot, stale=stale, now=now)
        if not findings and (held is not None or tracked.healing.circuit_open):
            clear = lifecycle.Clear(
                healthy_since=tracked.history.healthy_since,
                probe_ok_since=self._watcher.probe_ok_since(snapshot.ref.id),
                log_quiet_at=self._watcher.log_quiet_at(snapshot),
            )
            signals = held.signals if held is not None else frozenset()
            settled = lifecycle.settle(signals, clear, now=now, period=self._settings.settle)
            if settled.resolved:
                attempts = len(tracked.healing.attempts)
                self._recorder.resolve(
                    slot,
                    note=f"healthy for {self._settings.settle:g} s after {attempts} "
                    f"attempt{'s' if attempts != 1 else ''}",
                )
                if tracked.healing.circuit_open:
                    self._recorder.recovered(tracked.ref)
                self._slots.recovered(slot)
                return
            wake = lifecycle.earliest(wake, settled.at)
        if wake is not None:
            self._slots.update(slot, wake_at=lifecycle.earliest(tracked.wake_at, wake))

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, event: DockerEvent) -> None:
        if not self._scope.includes(event.container_id, event.attributes):
            return
        slot, tracked = self._slots.track(event.ref)
        if tracked is None:
            return  # a container medic replaced, or the one replacing it mid-action
        history, reaction = hist.on_event(
            tracked.history,
            kind=event.kind,
            at=event.at,
            detail=event.detail,
            signal=event.attributes.get("signal"),
            grace=self._settings.manual_stop_grace,
            window=self._settings.crash_loop_window,
        )
        self._slots.update(slot, history=history)
        if reaction is Reaction.STOPPED_BY_PERSON:
            if not tracked.history.stopped_by_person:
                self._recorder.stopped_by_person(history.container, history.stopped_at)
            self._slots.update(slot, wake_at=None)
        elif history.busy:
            return
        elif reaction is Reaction.GONE:
            self._forget(slot, "it was removed")
        elif reaction is Reaction.CHECK or (
            reaction is Reaction.CHECK_IF_TROUBLED and self._recorder.held(slot) is not None
        ):
            self._check_now(slot)

    def _check_now(self, slot: Slot) -> None:
        """Inspect one container and check it, between polls."""
        tracked = self._slots[slot]
        try:
            snapshot = self._gateway.inspect(tracked.ref.id)
        except ContainerGone:
            if not tracked.history.busy:
                self._forget(slot, "it no longer exists")
            return
        except DockerError as e:
            logger.warning(
                "Could not inspect {}: {}. The next poll looks again.", tracked.ref.label, e
            )
            return
        if self._scope.includes(snapshot.ref.id, snapshot.labels):
            self._check(snapshot)

    # --- acting on decisions ----------------------------------------------------------------

    def _act(self, slot: Slot, decision: Decision, snap: ContainerSnapshot, *, sync: bool) -> None:
        if isinstance(decision, Plan):
            self._start_plan(slot, decision, snap, sync=sync)
        elif isinstance(decision, Wait):
            self._slots.update(slot, wake_at=decision.until)
            self._say(
                slot,
                f"{decision.finding.summary} Waiting until {decision.until:%H:%M:%S} before "
                f"the next attempt by playbook {decision.playbook.name} ({decision.reason}).",
            )
        elif isinstance(decision, Escalate):
            healing = replace(self._slots[slot].healing, circuit_open=True)
            self._slots.update(slot, healing=healing, wake_at=None)
            self._recorder.escalate(slot, decision)
        elif isinstance(decision, Skip):
            self._say(slot, f"{decision.finding.summary} No action: {decision.reason}.")

    def _say(self, slot: Slot, message: str) -> None:
        """Log a waiting or skipping sentence once, not at every poll."""
        tracked = self._slots[slot]
        if message != tracked.said:
            self._slots.update(slot, said=message)
            logger.bind(container=tracked.ref.name).info(message)

    def _start_plan(self, slot: Slot, plan: Plan, snap: ContainerSnapshot, *, sync: bool) -> None:
        if self._settings.dry_run:
            steps = ", then ".join(a.describe() for a in plan.actions)
            self._say(
                slot,
                f"{plan.finding.summary} Dry run: would {steps} "
                f"(playbook {plan.playbook.name}, attempt {plan.attempt}).",
            )
            return
        self._recorder.healing(plan)
        before = self._slots[slot]
        now = self._clock.now()
        ref = self._slots.plan_started(slot, plan, at=now).ref
        held = self._recorder.held(slot)
        announce = None
        if self._recorder.notifies:
            incident_id = held.incident_id if held is not None else ""
            announce = partial(self._recorder.announce, incident_id=incident_id)
        if sync:
            results = self._actor.run_plan(ref, plan, labels=snap.labels, announce=announce)
            self._drain_touches()
            self._finish(_Done(InFlight(ref, plan, now), results))
            return
        done = partial(self._on_done)
        if not self._actor.submit(ref, plan, done, labels=snap.labels, announce=announce):
            self._slots.put(slot, before)

    def _on_done(self, flight: InFlight, results: list[ActionResult]) -> None:
        """Called on a worker thread: hand the outcome to the decision thread."""
        self._inbox.put(_Done(flight, results))

    def _finish(self, done: _Done) -> None:
        flight, plan, results = done.flight, done.flight.plan, done.results
        slot = self._slots.of(flight.container)
        if self._slots.get(slot) is None:
            self._slots.put(slot, Tracked(History(flight.container)))
        ok = all(r.ok for r in results)
        tracked = self._slots.plan_finished(slot, plan, started_at=flight.started_at, ok=ok)
        if self._report is not None:
            self._report.results.append((flight.container, plan, results))
        for result in results:
            outcome = "ok" if result.ok else "error"
            self.metrics.actions.labels(kind=str(result.action.kind), outcome=outcome).inc()
        self._recorder.attempt(slot, plan, results)
        self._watcher.reset(flight.container.id)
        replaced = next((r.replaced_by for r in results if r.replaced_by), None)
        if replaced is not None:
            new = replace(flight.container, id=replaced)
            was = f"{flight.container.name} was recreated as {new.short_id}"
            self._recorder.resolve(slot, note=f"{was}; medic watches the new one")
            tracked = self._slots.moved(slot, new)
            self._recorder.replaced(new)
        delay = plan.playbook.backoff.delay(len(tracked.healing.attempts))
        wake_at = self._clock.now() + timedelta(seconds=delay)
        self._slots.update(slot, wake_at=wake_at)
        self._recorder.outcome(flight.container, plan, results, wake_at)

    def _forget(self, slot: Slot, why: str) -> None:
        tracked = self._slots.pop(slot)
        if tracked is not None:
            self._recorder.resolve(slot, note=f"container {tracked.ref.name} is gone: {why}")
            self._watcher.forget(tracked.ref.id)

    def _publish(self) -> None:
        # Built on the loop thread after every change and swapped in whole: readers on
        # other threads (the HTTP server) never see the loop's state half-changed.
        self._status = status_document(self._slots.views(self._recorder.incidents()))

    # --- the loop's plumbing -----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, _Done):
            self._finish(message)
        elif isinstance(message, Touch):
            self._slots.touched(message.container, ended=message.ended, at=self._clock.now())
        elif isinstance(message, _EngineLost):
            window = self._settings.stop_timeout + ENGINE_SHUTDOWN_MARGIN
            for ref in self._slots.engine_lost(message.last_event_at, window=window):
                self._recorder.engine_stopped(ref)
        else:
            self._on_event(message)

    def _drain_touches(self) -> None:
        """In ``run_once`` the actor works on this thread: apply what it reported."""
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(message)

    def _wake_due(self, now: datetime) -> None:
        for slot in self._slots:
            tracked = self._slots.get(slot)
            if tracked is not None and tracked.wake_at is not None and tracked.wake_at <= now:
                self._slots.update(slot, wake_at=None)
                self._check_now(slot)
                self._publish()

    def _events_loop(self) -> None:
        failures = 0
        since: datetime | None = None
        while not self._stop.is_set():
            try:
                stream = self._gateway.events(self._scope.label_filter, since=since)
                with self._stream_lock:
                    if self._stop.is_set():
                        stream.close()
                        return
                    self._stream = stream
                self.events_connected = True
                if failures:
                    logger.info("Reconnected to the Docker events stream after {} tries.", failures)
                failures = 0
                for event in stream:
                    since = event.at
                    self._inbox.put(event)
                if not self._stop.is_set():
                    raise DockerUnavailable("the stream ended")
            except DockerError as e:
                was_connected, self.events_connected = self.events_connected, False
                if self._stop.is_set():
                    return
                if was_connected and since is not None:
                    self._inbox.put(_EngineLost(since))
                delay = self._reconnect_delays[min(failures, len(self._reconnect_delays) - 1)]
                failures += 1
                logger.warning(
                    "The Docker events stream dropped ({}); reconnecting in {:g} s. Polling "
                    "every {:g} s carries on meanwhile.",
                    e,
                    delay,
                    self._settings.interval,
                )
                self._stop.wait(delay)
        self.events_connected = False

    def _shutdown(self, events: threading.Thread) -> None:
        if self._stop_reason:
            logger.info("{}; medic is stopping.", self._stop_reason)
        self._stop.set()
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()
        in_flight = self._actor.in_flight()
        if in_flight:
            logger.info(
                "medic is stopping; waiting up to {:g} s for {} action(s) in flight.",
                self._settings.stop_timeout,
                len(in_flight),
            )
        finished, abandoned = self._actor.shutdown(timeout=self._settings.stop_timeout)
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, _Done | Touch):
                self._handle(message)
        for flight in finished:
            logger.info("Finished healing {} before stopping.", flight.container.label)
        for flight in abandoned:
            slot = self._slots.of(flight.container)
            self._recorder.abandoned(slot, flight.plan, started_at=flight.started_at)
            logger.warning(
                "Abandoned healing {} ({}): it was still running when medic stopped.",
                flight.container.label,
                ", ".join(a.describe() for a in flight.plan.actions),
            )
        events.join(timeout=5)
        logger.info("medic stopped.")
