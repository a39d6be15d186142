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

Several medics may watch one scope; one leads (agent/leader.py, docs/ha.md). The
switch is ``_acting``: a medic observes always (polls, events, what it knows of each
container, /status) and records, acts and escalates only while it leads. Taking the
lead restores what the store knows (backoff, streaks, open and escalated incidents,
attempts a former leader left running); standing by lets go of it. A write Postgres
refuses for a term that is over (``FencedOut``) makes the medic stand by at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import HealingSettings
from agent.engine.events import ENGINE_PING_INTERVAL, EVENT_RECONNECT_DELAYS, EngineLost, EventsPump
from agent.engine.gateway import DockerEvent, DockerGateway
from agent.errors import ContainerGone, DockerError, FencedOut
from agent.healing.act import InFlight, Touch
from agent.healing.decide import decide
from agent.healing.detect import CrashLoopRule, detect_in
from agent.healing.heal import Collect, Done, Healer, Parts
from agent.healing.history import History, Reaction, Slot, on_inspect
from agent.healing.observe import Scope, explain, look_again, poll, review_for_swarm
from agent.healing.recorder import EscalationHook, engine_account
from agent.healing.signals import Prober
from agent.healing.slots import Slots, Tracked
from agent.leader import Leader, Sole
from agent.metrics import Metrics
from agent.model import (
    AttemptStatus,
    ContainerId,
    ContainerSnapshot,
    Incident,
    Playbook,
    Signal,
)
from agent.notify import Notifier
from agent.status import (
    CycleReport,
    LoopView,
    StatusBoard,
    health_document,
    leadership_document,
)
from agent.store import IncidentStore

#: Seconds after the engine's last event within which a stop is taken for the engine's
#: own shutdown when the stream then drops (added to the stop timeout).
ENGINE_SHUTDOWN_MARGIN = 5.0

#: Messages handled after one the loop woke for, before /status is built again.
BATCH = 256


@dataclass(frozen=True)
class RoleChanged:
    """The leader's thread saw this medic take the lead or lose it."""


Message = DockerEvent | Done | Touch | EngineLost | RoleChanged

#: Why an action is not started when this medic stopped leading meanwhile.
NOT_LEADING = "not started: this medic no longer leads its scope"


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
        leader: Leader | None = None,
    ) -> None:
        """``leader`` None: this medic is the only one of its scope and always leads."""
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
            gate=self._why_not_act,
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
        self._board: StatusBoard[Slot] = StatusBoard()
        self._shown: dict[Slot, tuple[str, Signal]] = {}
        self._next_poll = clock.now()
        self._leader: Leader = leader or Sole(since=self._started_at)
        self._leads = False
        self._term = self._leader.standing().term
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
        # A standby records nothing until it leads: its recorder holds no incident.
        self._recorder.stand_by()
        self._acting()  # the only medic of its scope takes over now, as before leases
        self._publish_role()

    # --- entry points ---------------------------------------------------------------------

    def run_once(self) -> CycleReport:
        """One poll cycle, with every action carried out before it returns. Where a lease
        decides, it is claimed first and this medic acts only if it holds it; the caller
        lets it go (``close_leadership``)."""
        self._leader.claim()
        return self._cycle(sync=True)

    def run(self, *, _iterations: int | None = None) -> None:
        """Poll and react to events until ``stop()``; ``_iterations`` bounds polls in tests."""
        interval = timedelta(seconds=self._healing.interval)
        events = threading.Thread(target=self._events.run, name="medic-events", daemon=True)
        events.start()
        self._recorder.supervising(self._scope, self._healing.interval, self._healing.dry_run)
        # The first claim before the first poll: a medic standing by never acts at all.
        self._leader.claim()
        self._leader.start(wake=lambda: self._inbox.put(RoleChanged()))
        self._next_poll = self._clock.now()
        try:
            while not self._stop.is_set():
                now = self._clock.now()
                if now >= self._next_poll:
                    if _iterations is not None:
                        if _iterations <= 0:
                            break
                        _iterations -= 1
                    self._cycle(sync=False)
                    self._next_poll = now + interval
                    continue
                for slot in self._slots.due(now):
                    self._check_now(slot)
                    self._publish()
                deadline = min([self._next_poll, *self._slots.wake_times()])
                timeout = max(0.0, min((deadline - self._clock.now()).total_seconds(), 1.0))
                try:
                    message = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    continue
                self._handle(message)
                self._drain(limit=BATCH)  # a burst of events is published once
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

    def leadership(self) -> dict[str, object]:
        """Whether this medic leads its scope or stands by, and since when; safe from
        any thread (/status, /readyz)."""
        return leadership_document(
            self._leader.standing(),
            scope=self._scope.describe(),
            holder=self._leader.holder,
            elected=self._leader.elected,
        )

    def status_document(self) -> dict[str, object]:
        """What /status serves: this medic's role and every supervised container."""
        return {"leadership": self.leadership(), "containers": self.status()}

    def close_leadership(self) -> None:
        """Stop claiming the lease and let it go, so a standby takes over at once."""
        self._leader.close()

    # --- leading and standing by ---------------------------------------------------------

    def _acting(self) -> bool:
        """The switch: medic observes always, and records, acts and escalates only while
        it leads its scope. Every path that would write or act asks here first, and a
        change of role is carried out here, on the decision thread."""
        leads = self._leader.holds()
        term = self._leader.standing().term
        if self._leads and (not leads or term != self._term):
            self._stand_by()
        if leads and not self._leads:
            self._take_over()
        return self._leads

    def _why_not_act(self) -> str | None:
        """Asked by the actor's workers right before each action: the leader's own clock
        may have run out since the decision was made."""
        return None if self._leader.holds() else NOT_LEADING

    def _take_over(self) -> None:
        """Lead: restore from the store what the former leader left (open and escalated
        incidents, the attempts that make up backoff and streaks, attempts it left
        running), so nothing it just did is done again and no escalation is forgotten;
        then poll at once."""
        self._leads, self._term = True, self._leader.standing().term
        self._recorder.take_over()
        with self._fenced():
            active = self._recorder.seed()
            self._interrupted(active)
            self._slots.seed(active)
        self._next_poll = self._clock.now()
        self._publish_role()

    def _stand_by(self) -> None:
        """Stand by: let go of every incident and of the healing state; keep what is
        observed. Actions already in flight finish; their attempts are not recorded."""
        if not self._leads:
            return
        self._leads = False
        self._recorder.stand_by()
        self._slots.stand_by()
        self._publish_role()
        self._publish()

    @contextmanager
    def _fenced(self) -> Iterator[None]:
        """Postgres refused a write of this medic's term: it stands by from now on."""
        try:
            yield
        except FencedOut as e:
            self._leader.fenced(e)
            self._stand_by()

    def _publish_role(self) -> None:
        standing = self._leader.standing()
        self.metrics.leader.set(1 if self._leads else 0)
        self.metrics.leader_since.set(standing.since.timestamp())
        self.metrics.lease_term.set(self._term.token if self._leads and self._term else 0)

    def _interrupted(self, incidents: Sequence[Incident]) -> None:
        """Attempts of this medic's scope that a previous medic started and never ended
        (it was killed while they ran, or lost the lead): recorded as interrupted, with
        what the engine says happened to the container since. Their start counts in the
        backoff like any attempt's (``Slots.seed``), so the action is not repeated
        before it says. This medic's own plans still in flight are not interrupted."""
        for incident in incidents:
            if self._actor.busy(incident.container.id):
                continue
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
                    attempt,
                    incident.container,
                    account=account,
                    found_at=self._clock.now(),
                    took_over=self._leader.elected,
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
        self._acting()  # a change of role takes effect before this poll is judged
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
        """observe → what medic knows (pure) → [while leading] detect → decide → record → act."""
        slot, tracked = self._slots.track(snapshot.ref)
        if tracked is None or tracked.history.busy:
            return slot  # an action is in flight: the container is not judged at all
        if not self._acting():
            # Standing by: observed, never judged. Deaths it did not see live are not
            # looked up in the engine's events: the leader's restarts look like a
            # person's stops from here, and the lookup is the leader's to make.
            self._slots.observed(
                slot, on_inspect(tracked.history, snapshot), snapshot, cleared=False
            )
            return slot
        grace, window = self._healing.manual_stop_grace, self._healing.crash_loop_window
        history = explain(self._gateway, tracked.history, snapshot, grace=grace, window=window)
        if history is None:
            return slot  # who stopped it is unknown: look again at the next poll
        if history is tracked.history and self._quiet(slot, tracked, snapshot):
            return slot
        with self._fenced():
            self._judge(slot, tracked, history, snapshot, sync=sync)
        return slot

    def _quiet(self, slot: Slot, tracked: Tracked, snapshot: ContainerSnapshot) -> bool:
        """A container at rest (``Tracked.at_rest``) with no incident and nothing watched.
        Most of a large host is this at every poll, so it is told apart before the
        judgement."""
        return (
            tracked.at_rest(snapshot)
            and self._recorder.held(slot) is None
            and not self._watcher.watching(snapshot.ref.id)
        )

    def _judge(
        self,
        slot: Slot,
        tracked: Tracked,
        history: History,
        snapshot: ContainerSnapshot,
        *,
        sync: bool,
    ) -> None:
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
            if self._acting():  # a standby sees the leader's restarts as stops too
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
            self._watcher.forget(tracked.ref.id)
            with self._fenced():
                self._recorder.resolve(slot, note=f"container {tracked.ref.name} is gone: {why}")

    def _publish(self) -> None:
        # Built on the loop thread after every change and swapped in whole: readers on
        # other threads (the HTTP server) never see the loop's state half-changed. Only
        # the slots that changed, or whose incident did, are built again.
        incidents = self._recorder.incidents()
        changed = self._slots.changed()
        shown, self._shown = self._shown, incidents
        changed.update(s for s in {*incidents, *shown} if incidents.get(s) != shown.get(s))
        if changed:
            views = {slot: self._slots.view(slot, incidents.get(slot)) for slot in changed}
            self._status = self._board.update(views)

    # --- the loop's plumbing -----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        if isinstance(message, Done):
            with self._fenced():
                self._healer.finish(message, collect=self._collect())
        elif isinstance(message, Touch):
            self._slots.touched(message.container, ended=message.ended, at=self._clock.now())
        elif isinstance(message, EngineLost):
            window = self._healing.stop_timeout + ENGINE_SHUTDOWN_MARGIN
            for ref in self._slots.engine_lost(message.last_event_at, window=window):
                if self._acting():
                    self._recorder.engine_stopped(ref)
        elif isinstance(message, RoleChanged):
            self._acting()
        else:
            self._on_event(message)

    def _drain(self, *, events: bool = True, limit: int | None = None) -> None:
        """Handle what is in the inbox now (in ``run_once`` the actor works on this
        thread, and at shutdown only finished plans and touches still matter); at most
        ``limit`` messages, so that a steady stream never holds the next poll back."""
        handled = 0
        while limit is None or handled < limit:
            handled += 1
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
        with self._fenced():
            self._healer.stopped(finished, abandoned)
        # Only now, with nothing of its own in flight, may another medic take the lead.
        self._leader.close()
        events.join(timeout=5)
        logger.info("medic stopped.")
