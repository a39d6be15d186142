"""The long-running loop: the poll timer, the inbox, a graceful stop.

One decision thread owns every piece of per-container state. Four things feed it
through a single inbox: the poll timer (every ``interval`` seconds), the Docker
events thread (agent/engine/events.py keeps the stream connected), the actor reporting
the containers an action touches, and the actor's workers reporting finished plans.
Because only this thread reads and writes the state, there are no locks around it;
actions run on the pool, so a slow one delays no other container.

The check of one container is the flow in docs/architecture.md: observe, what medic knows
of it (agent/healing/history.py, pure), detect, decide, record (agent/healing/recorder.py), act.
A container with an action in flight is not judged at all, and what medic's own
actions do to containers falls in own-action windows, so it is never a finding.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import HealingSettings
from agent.engine.events import ENGINE_PING_INTERVAL, EVENT_RECONNECT_DELAYS, EngineLost, EventsPump
from agent.engine.gateway import DockerEvent, DockerGateway
from agent.errors import ContainerGone, DockerError
from agent.healing.act import InFlight, Touch
from agent.healing.decide import decide
from agent.healing.detect import CrashLoopRule, detect_in
from agent.healing.heal import Collect, Done, Healer, Parts
from agent.healing.history import Reaction, Slot
from agent.healing.observe import Scope, explain, look_again, poll, review_for_swarm
from agent.healing.recorder import EscalationHook, engine_account
from agent.healing.signals import Prober
from agent.healing.slots import Slots, Tracked
from agent.metrics import Metrics
from agent.model import AttemptStatus, ContainerId, ContainerSnapshot, Incident, Playbook
from agent.notify import Notifier
from agent.status import CycleReport, LoopView, health_document, status_document
from agent.store import IncidentStore

#: Seconds after the engine's last event within which a stop is taken for the engine's
#: own shutdown when the stream then drops (added to the stop timeout).
ENGINE_SHUTDOWN_MARGIN = 5.0


Message = DockerEvent | Done | Touch | EngineLost


class Supervisor:
    """Watches one scope of containers and heals them by playbooks."""

    def __init__(
        self,
        *,
        healing: HealingSettings,
        gateway: DockerGateway,
        store: IncidentStore,
        playbooks: Sequence[Playbook],
        scope: Scope,
        clock: Clock = SYSTEM_CLOCK,
        reconnect_delays: Sequence[float] = EVENT_RECONNECT_DELAYS,
        ping_interval: float = ENGINE_PING_INTERVAL,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        prober: Prober | None = None,
        escalation: EscalationHook | None = None,
    ) -> None:
        self._healing = healing
        self._gateway = gateway
        self._playbooks = tuple(playbooks)
        self._scope = scope
        self._clock = clock
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue[Message] = queue.Queue()
        parts = Parts.build(
            healing=healing,
            gateway=gateway,
            store=store,
            playbooks=self._playbooks,
            scope=scope,
            clock=clock,
            metrics=self.metrics,
            notifier=notifier,
            prober=prober,
            escalation=escalation,
            touch=self._inbox.put,
        )
        self._actor, self._recorder, self._watcher = parts.actor, parts.recorder, parts.watcher
        self._rule = CrashLoopRule(healing.crash_loop_deaths, healing.crash_loop_window)
        self._slots = Slots()
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._events = EventsPump(
            gateway=gateway,
            label_filter=scope.label_filter,
            deliver=self._inbox.put,
            stopping=self._stop,
            clock=clock,
            metrics=self.metrics,
            interval=healing.interval,
            reconnect_delays=reconnect_delays,
            ping_interval=ping_interval,
        )
        self._started_at = clock.now()
        self.last_cycle_at: datetime | None = None
        self._report: CycleReport | None = None
        self._status: tuple[dict[str, object], ...] = ()
        active = self._recorder.seed()
        self._interrupted(active)
        self._slots.seed(active)
        self._healer = Healer(
            slots=self._slots,
            actor=self._actor,
            recorder=self._recorder,
            watcher=self._watcher,
            metrics=self.metrics,
            clock=clock,
            dry_run=healing.dry_run,
            settle=healing.settle,
            done=self._inbox.put,
            drain=self._drain,
        )

    # --- entry points ---------------------------------------------------------------------

    def run_once(self) -> CycleReport:
        """One poll cycle, with every action carried out before it returns."""
        return self._cycle(sync=True)

    def run(self, *, _iterations: int | None = None) -> None:
        """Poll and react to events until ``stop()``; ``_iterations`` bounds polls in tests."""
        interval = timedelta(seconds=self._healing.interval)
        events = threading.Thread(target=self._events.run, name="medic-events", daemon=True)
        events.start()
        self._recorder.supervising(self._scope, self._healing.interval, self._healing.dry_run)
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
                for slot in self._slots.due(now):
                    self._check_now(slot)
                    self._publish()
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
        return self._events.connected

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
        loop = (self._started_at, self.last_cycle_at, self._healing.interval)
        view = LoopView(*loop, self._events.connected, len(self._actor.in_flight()))
        return health_document(view, now=self._clock.now())

    def _interrupted(self, incidents: Sequence[Incident]) -> None:
        """Attempts of this medic's scope that a previous medic started and never ended
        (it was killed while they ran): recorded as interrupted, with what the engine
        says happened to the container since. Their start counts in the backoff like
        any attempt's (``Slots.seed``), so the action is not repeated before it says."""
        for incident in incidents:
            for attempt in incident.attempts:
                if attempt.status is not AttemptStatus.RUNNING:
                    continue
                snapshot: ContainerSnapshot | None = None
                unknown: str | None = None
                try:
                    snapshot = self._gateway.inspect(incident.container.id)
                except ContainerGone:
                    pass
                except DockerError as e:
                    unknown = str(e)
                account = engine_account(attempt.started_at, snapshot, unknown=unknown)
                self._recorder.interrupted(
                    attempt, incident.container, account=account, found_at=self._clock.now()
                )

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
        self._events.engine_answers()  # the events thread reconnects now if it was away
        try:
            report.containers = len(snapshots)
            self._recorder.observations(snapshots)
            known = set(self._slots)
            self._watcher.look(snapshots, skip=self._slots.busy)
            seen = {self._check(snapshot, sync=sync) for snapshot in snapshots}
            for slot in self._slots.idle(known - seen):
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
        grace, window = self._healing.manual_stop_grace, self._healing.crash_loop_window
        history = explain(self._gateway, tracked.history, snapshot, grace=grace, window=window)
        if history is None:
            return slot  # who stopped it is unknown: look again at the next poll
        cleared = tracked.healing.circuit_open and self._recorder.cleared_by_person(slot)
        tracked = self._slots.observed(slot, history, snapshot, cleared=cleared)
        findings = detect_in(snapshot, tracked.history, self._rule)
        findings += self._watcher.findings(snapshot)
        tracked = self._slots.judged(
            slot, troubled=bool(findings), healthy=snapshot.is_healthy, at=self._clock.now()
        )
        decision = decide(
            findings,
            labels=snapshot.labels,
            state=tracked.healing,
            playbooks=self._playbooks,
            now=self._clock.now(),
            used=tracked.used,
        )
        decision, findings = review_for_swarm(self._gateway, decision, findings)
        if self._report is not None:
            self._report.add(findings, decision)
        self._recorder.record(slot, findings)
        self._healer.settle(slot, snapshot, findings)
        if decision is not None:
            self._healer.act(slot, decision, snapshot, sync=sync, collect=self._collect())
        return slot

    def _collect(self) -> Collect | None:
        report = self._report
        return None if report is None else lambda *result: report.results.append(result)

    # --- events -----------------------------------------------------------------------------

    def _on_event(self, event: DockerEvent) -> None:
        if not self._scope.includes(event.container_id, event.attributes):
            return
        slot, reaction = self._slots.event(
            event.ref,
            kind=event.kind,
            at=event.at,
            detail=event.detail,
            signal=event.attributes.get("signal"),
            grace=self._healing.manual_stop_grace,
            window=self._healing.crash_loop_window,
        )
        if reaction is Reaction.STOPPED_BY_PERSON:
            history = self._slots[slot].history
            self._recorder.stopped_by_person(history.container, history.stopped_at)
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
            snapshot = look_again(self._gateway, self._scope, tracked.ref)
        except ContainerGone:
            if not tracked.history.busy:
                self._forget(slot, "it no longer exists")
            return
        if snapshot is not None:
            self._check(snapshot)

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
        if isinstance(message, Done):
            self._healer.finish(message, collect=self._collect())
        elif isinstance(message, Touch):
            self._slots.touched(message.container, ended=message.ended, at=self._clock.now())
        elif isinstance(message, EngineLost):
            window = self._healing.stop_timeout + ENGINE_SHUTDOWN_MARGIN
            for ref in self._slots.engine_lost(message.last_event_at, window=window):
                self._recorder.engine_stopped(ref)
        else:
            self._on_event(message)

    def _drain(self, *, events: bool = True) -> None:
        """Handle what is in the inbox now (in ``run_once`` the actor works on this
        thread, and at shutdown only finished plans and touches still matter)."""
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if events or isinstance(message, Done | Touch):
                self._handle(message)

    def _shutdown(self, events: threading.Thread) -> None:
        if self._stop_reason:
            logger.info("{}; medic is stopping.", self._stop_reason)
        self._stop.set()
        self._events.close()
        self._recorder.waiting(len(self._actor.in_flight()), self._healing.stop_timeout)
        finished, abandoned = self._actor.shutdown(timeout=self._healing.stop_timeout)
        self._drain(events=False)
        self._healer.stopped(finished, abandoned)
        events.join(timeout=5)
        logger.info("medic stopped.")
