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
from agent.decide import after_attempt, after_healthy, decide
from agent.detect import CrashLoopRule, detect, health_is_stale
from agent.docker_gateway import DockerEvent, DockerGateway, EventStream
from agent.errors import ContainerGone, DockerError, DockerUnavailable
from agent.history import History, Reaction, Slot
from agent.metrics import Metrics
from agent.model import (
    ActionKind,
    ActionResult,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Decision,
    Escalate,
    Finding,
    HealingState,
    Plan,
    Playbook,
    Skip,
    State,
    Wait,
)
from agent.notify import Notifier
from agent.observe import Scope, poll
from agent.recorder import EscalationHook, Recorder, gravest
from agent.signals import Prober, SocketProber
from agent.status import ContainerView, LoopView, health_document, status_document
from agent.store import IncidentStore
from agent.watch import Watcher

#: Pauses before reconnecting a dropped events stream; the last one repeats.
EVENT_RECONNECT_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

#: Seconds after the engine's last event within which a stop is taken for the engine's
#: own shutdown when the stream then drops (added to the stop timeout).
ENGINE_SHUTDOWN_MARGIN = 5.0

#: Former container ids a slot remembers (late events of recreated containers).
KEPT_FORMER_IDS = 4


@dataclass(frozen=True)
class Tracked:
    """What the decision thread holds for one container slot; replaced whole."""

    history: History
    healing: HealingState = field(default_factory=HealingState)
    used: tuple[str, ...] = ()
    wake_at: datetime | None = None
    state: str = ""
    health: str = ""
    said: str = ""
    former: tuple[ContainerId, ...] = ()

    @property
    def ref(self) -> ContainerRef:
        return self.history.container


@dataclass(frozen=True)
class _Done:
    flight: InFlight
    results: list[ActionResult]


@dataclass(frozen=True)
class _EngineLost:
    last_event_at: datetime


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
        self._inbox: queue.Queue[DockerEvent | _Done | Touch | _EngineLost] = queue.Queue()
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
        self._slots: dict[Slot, Tracked] = {}
        self._ids: dict[ContainerId, Slot] = {}
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._stream: EventStream | None = None
        self._stream_lock = threading.Lock()
        self._events_connected = False
        self._started_at = clock.now()
        self.last_cycle_at: datetime | None = None
        self._report: CycleReport | None = None
        self._status: tuple[dict[str, object], ...] = ()
        self._seed()

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
                wakes = [t.wake_at for t in self._slots.values() if t.wake_at is not None]
                deadline = min([next_poll, *wakes])
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
        return {t.ref.id: t for t in self._slots.values()}

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
            self._watcher.look(snapshots, skip=self._busy_id)
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

    def _check(self, snapshot: ContainerSnapshot, *, sync: bool = False) -> Slot | None:
        slot = self._slot_for(snapshot)
        tracked = self._slots.get(slot) if slot is not None else None
        if slot is None or tracked is None or tracked.history.busy:
            return slot  # an action is in flight: the container is not judged at all
        history = self._learn(tracked.history, snapshot)
        if history is None:
            return slot
        tracked = self._put(slot, self._observed(tracked, history, snapshot))
        findings = self._findings(tracked, snapshot)
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
            self._apply(slot, decision, snapshot, sync=sync)
        return slot

    def _observed(self, tracked: Tracked, history: History, snap: ContainerSnapshot) -> Tracked:
        healing = tracked.healing
        if history.healthy_since is not None:
            healing = after_healthy(
                healing, healthy_since=history.healthy_since, now=snap.observed_at
            )
        if healing.circuit_open and self._recorder.cleared_by_person(history.slot):
            healing, tracked = HealingState(), replace(tracked, used=())
        state, health = str(snap.state), str(snap.health)
        return replace(tracked, history=history, healing=healing, state=state, health=health)

    def _findings(self, tracked: Tracked, snapshot: ContainerSnapshot) -> list[Finding]:
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
                self._resolved(slot, held is not None)
                return
            wake = lifecycle.earliest(wake, settled.at)
        if wake is not None:
            self._put(slot, replace(tracked, wake_at=lifecycle.earliest(tracked.wake_at, wake)))

    def _resolved(self, slot: Slot, had_incident: bool) -> None:
        tracked = self._slots[slot]
        attempts = len(tracked.healing.attempts)
        plural = "s" if attempts != 1 else ""
        note = f"healthy for {self._settings.settle:g} s after {attempts} attempt{plural}"
        if had_incident:
            self._recorder.resolve(slot, note=note)
        if tracked.healing.circuit_open:
            logger.bind(container=tracked.ref.name).info(
                "{} recovered; automatic healing of it is on again.", tracked.ref.label
            )
            # A fresh start, as when a person resolves it: the old streak would escalate
            # the next failure before a single attempt.
            tracked = replace(tracked, healing=HealingState(), used=())
        self._put(slot, replace(tracked, said=""))

    # --- what snapshots and events teach --------------------------------------------------

    def _slot_for(self, snapshot: ContainerSnapshot) -> Slot | None:
        """The slot a snapshot belongs to; None for a container a recreate left behind."""
        ref = snapshot.ref
        slot = self._ids.get(ref.id) or Slot.of(ref)
        tracked = self._slots.get(slot)
        if tracked is None:
            tracked = self._put(slot, Tracked(History(ref)))
        elif tracked.ref.id != ref.id:
            if ref.id in tracked.former:
                return None
            if not tracked.history.busy:
                # Another container took the slot (recreated outside medic).
                tracked = self._moved(slot, tracked, ref)
        return slot

    def _learn(self, history: History, snapshot: ContainerSnapshot) -> History | None:
        """The history after this snapshot; None when it cannot tell who stopped it."""
        history = hist.on_inspect(history, snapshot)
        window = self._settings.crash_loop_window
        died = hist.unexplained_death(history, snapshot) if snapshot.detailed else None
        if died is None:
            return history
        if snapshot.state is not State.EXITED:
            return hist.note_death(history, died, window=window)
        since = died - timedelta(seconds=self._settings.manual_stop_grace)
        if snapshot.started_at is not None:
            since = max(since, snapshot.started_at)
        try:
            past = self._gateway.past_events(
                snapshot.ref.id, since=since, until=died + hist.SAME_DEATH
            )
        except DockerError as e:
            logger.bind(container=snapshot.ref.name).warning(
                "Could not read the event history of {} to tell whether a person stopped it "
                "({}); medic leaves it as it is and looks again at the next poll.",
                snapshot.ref.label,
                e,
            )
            return None
        events = tuple((e.kind, e.at, e.attributes.get("signal")) for e in past)
        history, by_person = hist.with_past_events(history, died, events, window=window)
        if by_person:
            self._stopped_by_person(history)
        return history

    def _on_event(self, event: DockerEvent) -> None:
        if not self._scope.includes(event.container_id, event.attributes):
            return
        slot = self._ids.get(event.container_id) or Slot.of(event.ref)
        tracked = self._slots.get(slot) or self._put(slot, Tracked(History(event.ref)))
        if event.container_id != tracked.ref.id:
            if event.container_id in tracked.former or tracked.history.busy:
                return  # a container medic replaced, or the one replacing it mid-action
            tracked = self._moved(slot, tracked, event.ref)
        history, reaction = hist.on_event(
            tracked.history,
            kind=event.kind,
            at=event.at,
            detail=event.detail,
            signal=event.attributes.get("signal"),
            grace=self._settings.manual_stop_grace,
            window=self._settings.crash_loop_window,
        )
        was_stopped = tracked.history.stopped_by_person
        tracked = self._put(slot, replace(tracked, history=history))
        if reaction is Reaction.STOPPED_BY_PERSON:
            if not was_stopped:
                self._stopped_by_person(history)
            self._put(slot, replace(tracked, wake_at=None))
        elif tracked.history.busy:
            return
        elif reaction is Reaction.GONE:
            self._forget(slot, "it was removed")
        elif reaction is Reaction.CHECK or (
            reaction is Reaction.CHECK_IF_TROUBLED and self._recorder.held(slot) is not None
        ):
            self._check_now(slot)

    def _on_touch(self, touch: Touch) -> None:
        """An action is about to stop or replace a container, or is done with it."""
        slot = self._ids.get(touch.container.id) or Slot.of(touch.container)
        tracked = self._slots.get(slot) or self._put(slot, Tracked(History(touch.container)))
        if touch.ended:
            history = hist.touch_ended(tracked.history)
        elif not tracked.history.busy:
            now = self._clock.now()
            history = hist.action_started(tracked.history, at=now, stops=True, by_plan=False)
        else:
            return
        self._put(slot, replace(tracked, history=history))

    def _on_engine_lost(self, message: _EngineLost) -> None:
        window = self._settings.stop_timeout + ENGINE_SHUTDOWN_MARGIN
        for slot, tracked in list(self._slots.items()):
            history = hist.engine_stopped(
                tracked.history, last_event_at=message.last_event_at, window=window
            )
            if history is not tracked.history:
                self._put(slot, replace(tracked, history=history))
                logger.bind(container=tracked.ref.name).info(
                    "{} was stopped just before the Docker engine went away: that was the "
                    "engine shutting down, not a person, so medic heals it if it stays down.",
                    tracked.ref.label,
                )

    def _stopped_by_person(self, history: History) -> None:
        logger.bind(container=history.container.name).info(
            "{} was stopped by a person (docker stop or kill at {:%H:%M:%S}); medic leaves it "
            "stopped until it is started again.",
            history.container.label,
            history.stopped_at or history.kill_at,
        )

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

    def _apply(
        self, slot: Slot, decision: Decision, snapshot: ContainerSnapshot, *, sync: bool
    ) -> None:
        tracked = self._slots[slot]
        if isinstance(decision, Plan):
            self._start_plan(slot, decision, snapshot, sync=sync)
        elif isinstance(decision, Wait):
            self._put(slot, replace(tracked, wake_at=decision.until))
            self._say(
                slot,
                f"{decision.finding.summary} Waiting until {decision.until:%H:%M:%S} before "
                f"the next attempt by playbook {decision.playbook.name} ({decision.reason}).",
            )
        elif isinstance(decision, Escalate):
            healing = replace(tracked.healing, circuit_open=True)
            self._put(slot, replace(tracked, healing=healing, wake_at=None))
            self._recorder.escalate(slot, decision)
        elif isinstance(decision, Skip):
            self._say(slot, f"{decision.finding.summary} No action: {decision.reason}.")

    def _say(self, slot: Slot, message: str) -> None:
        """Log a waiting or skipping sentence once, not at every poll."""
        tracked = self._slots[slot]
        if message != tracked.said:
            self._put(slot, replace(tracked, said=message))
            logger.bind(container=tracked.ref.name).info(message)

    def _start_plan(
        self, slot: Slot, plan: Plan, snapshot: ContainerSnapshot, *, sync: bool
    ) -> None:
        tracked = self._slots[slot]
        steps = ", then ".join(a.describe() for a in plan.actions)
        if self._settings.dry_run:
            self._say(
                slot,
                f"{plan.finding.summary} Dry run: would {steps} "
                f"(playbook {plan.playbook.name}, attempt {plan.attempt}).",
            )
            return
        logger.bind(container=tracked.ref.name).info(
            "{} Healing it by playbook {}, attempt {}: {}.",
            plan.finding.summary,
            plan.playbook.name,
            plan.attempt,
            steps,
        )
        now = self._clock.now()
        history = hist.action_started(
            tracked.history,
            at=now,
            stops=any(a.stops_container() for a in plan.actions),
            leaves_stopped=_leaves_stopped(plan),
        )
        self._put(slot, replace(tracked, history=history, said="", wake_at=None))
        held = self._recorder.held(slot)
        announce = None
        if self._recorder.notifies:
            incident_id = held.incident_id if held is not None else ""
            announce = partial(self._recorder.announce, incident_id=incident_id)
        if sync:
            results = self._actor.run_plan(
                tracked.ref, plan, labels=snapshot.labels, announce=announce
            )
            self._drain_touches()
            self._finish(_Done(InFlight(tracked.ref, plan, now), results))
            return
        submitted = self._actor.submit(
            tracked.ref,
            plan,
            lambda flight, results: self._inbox.put(_Done(flight, results)),
            labels=snapshot.labels,
            announce=announce,
        )
        if not submitted:
            self._put(slot, tracked)

    def _finish(self, done: _Done) -> None:
        flight, plan, results = done.flight, done.flight.plan, done.results
        slot = self._ids.get(flight.container.id) or Slot.of(flight.container)
        tracked = self._slots.get(slot) or Tracked(History(flight.container))
        ok = all(r.ok for r in results)
        history = hist.action_finished(tracked.history, ok=ok)
        healing = after_attempt(tracked.healing, at=flight.started_at, playbook=plan.playbook)
        used = (*[u for u in tracked.used if u != plan.playbook.name], plan.playbook.name)
        tracked = self._put(slot, replace(tracked, history=history, healing=healing, used=used))
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
            self._recorder.resolve(
                slot,
                note=f"{flight.container.name} was recreated as {new.short_id}; "
                "medic watches the new one",
            )
            tracked = self._moved(slot, tracked, new)
            logger.bind(container=new.name).info(
                "{} is now container {}; its backoff and attempts carry over.",
                new.label,
                new.short_id,
            )
        delay = plan.playbook.backoff.delay(len(tracked.healing.attempts))
        wake_at = self._clock.now() + timedelta(seconds=delay)
        self._put(slot, replace(tracked, wake_at=wake_at))
        _log_outcome(flight, results, wake_at)

    def _moved(self, slot: Slot, tracked: Tracked, ref: ContainerRef) -> Tracked:
        former = (*tracked.former, tracked.ref.id)[-KEPT_FORMER_IDS:]
        for old in set(tracked.former) - set(former):
            self._ids.pop(old, None)
        history = hist.moved_to(tracked.history, ref)
        return self._put(slot, replace(tracked, history=history, former=former))

    def _forget(self, slot: Slot, why: str) -> None:
        tracked = self._slots.pop(slot, None)
        if tracked is None:
            return
        self._recorder.resolve(slot, note=f"container {tracked.ref.name} is gone: {why}")
        self._watcher.forget(tracked.ref.id)
        for cid in (tracked.ref.id, *tracked.former):
            self._ids.pop(cid, None)

    def _put(self, slot: Slot, tracked: Tracked) -> Tracked:
        self._slots[slot] = tracked
        self._ids[tracked.ref.id] = slot
        return tracked

    def _busy_id(self, container_id: ContainerId) -> bool:
        slot = self._ids.get(container_id)
        return slot is not None and slot in self._slots and self._slots[slot].history.busy

    def _seed(self) -> None:
        """Pick up open incidents, backoff and open circuits from before a restart."""
        for incident in self._recorder.seed():
            slot = Slot.of(incident.container)
            tracked = self._slots.get(slot) or Tracked(History(incident.container))
            starts = {a.started_at for a in incident.attempts} | set(tracked.healing.attempts)
            escalated = incident.status.value == "escalated"
            healing = replace(
                tracked.healing,
                attempts=tuple(sorted(starts)),
                circuit_open=tracked.healing.circuit_open or escalated,
            )
            used = tuple(dict.fromkeys(a.playbook for a in incident.attempts))
            self._put(slot, replace(tracked, healing=healing, used=used))

    def _publish(self) -> None:
        # Built on the loop thread after every change and swapped in whole: readers on
        # other threads (the HTTP server) never see the loop's state half-changed.
        views = []
        for slot, t in self._slots.items():
            held = self._recorder.held(slot)
            incidents = ((held.incident_id, str(gravest(held.signals))),) if held else ()
            views.append(
                ContainerView(
                    t.ref.name,
                    t.ref.service,
                    t.state,
                    t.health,
                    incidents,
                    len(t.healing.attempts),
                    t.wake_at,
                    t.healing.circuit_open,
                    t.history.stopped_by_person,
                    t.history.busy,
                )
            )
        self._status = status_document(views)

    # --- the loop's plumbing -----------------------------------------------------------------

    def _handle(self, message: DockerEvent | _Done | Touch | _EngineLost) -> None:
        if isinstance(message, _Done):
            self._finish(message)
        elif isinstance(message, Touch):
            self._on_touch(message)
        elif isinstance(message, _EngineLost):
            self._on_engine_lost(message)
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
        for slot, tracked in list(self._slots.items()):
            if tracked.wake_at is not None and tracked.wake_at <= now:
                self._put(slot, replace(tracked, wake_at=None))
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
            slot = self._ids.get(flight.container.id) or Slot.of(flight.container)
            self._recorder.abandoned(slot, flight.plan, started_at=flight.started_at)
            logger.warning(
                "Abandoned healing {} ({}): it was still running when medic stopped.",
                flight.container.label,
                ", ".join(a.describe() for a in flight.plan.actions),
            )
        events.join(timeout=5)
        logger.info("medic stopped.")


def _leaves_stopped(plan: Plan) -> bool:
    """Whether the plan's last action that changes whether the container runs is a stop."""
    changes = [a for a in plan.actions if a.stops_container() or a.kind is ActionKind.START]
    return bool(changes) and changes[-1].kind is ActionKind.STOP


def _log_outcome(flight: InFlight, results: list[ActionResult], wake_at: datetime) -> None:
    plan = flight.plan
    failed = next((r for r in results if not r.ok), None)
    log = logger.bind(container=flight.container.name)
    if failed is None:
        log.info(
            "Healed {} with {} in {:.1f} s (attempt {} by playbook {}); medic checks it "
            "again at {:%H:%M:%S}.",
            flight.container.label,
            ", ".join(r.action.describe() for r in results),
            sum(r.duration for r in results),
            plan.attempt,
            plan.playbook.name,
            wake_at,
        )
    else:
        log.warning(
            "Could not {} {}: {} (attempt {} by playbook {}). The next attempt is not "
            "before {:%H:%M:%S}.",
            failed.action.describe(),
            flight.container.label,
            failed.error,
            plan.attempt,
            plan.playbook.name,
            wake_at,
        )
