"""The long-running loop: poll, react to events, decide, act, record.

One decision thread owns every piece of per-container state. Three things feed
it through a single inbox: the poll timer (every ``interval`` seconds), the Docker
events thread (a death, an OOM kill, a failed health check, a person's ``docker
stop``), and the worker pool reporting finished actions. Because only this thread
reads and writes the state, there are no locks around it, and because actions
run on the pool, a slow one delays no other container.

What the snapshot alone cannot tell, this module learns from events: how often a
container died lately (for crash loops), and whether a person stopped it (manual
stops are respected). Deaths caused by medic's own restarts are not counted.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from loguru import logger

from agent.act import Actor, InFlight
from agent.config import Settings
from agent.decide import after_attempt, after_healthy, decide
from agent.detect import CrashLoopRule, detect, health_is_stale
from agent.docker_gateway import DockerEvent, DockerGateway, EventStream
from agent.errors import ContainerGone, DockerError, DockerUnavailable, StoreError
from agent.metrics import Metrics
from agent.model import (
    Action,
    ActionResult,
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Decision,
    Escalate,
    Finding,
    HealingState,
    IncidentId,
    IncidentStatus,
    LogRule,
    Plan,
    Playbook,
    ProbeRule,
    Signal,
    Skip,
    State,
    Wait,
)
from agent.notify import Notification, NotificationKind, Notifier
from agent.observe import Scope, poll
from agent.signals import Prober, SocketProber, log_finding, log_hits, probe_finding
from agent.store import IncidentStore, new_id

R = TypeVar("R")

#: Pauses before reconnecting a dropped events stream; the last one repeats.
EVENT_RECONNECT_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

#: Two deaths closer than this are the same death seen twice (event and inspect).
SAME_DEATH = timedelta(seconds=1)

#: ``docker kill -s HUP`` and friends ask a process to reload, not to stop: such a kill
#: does not make the next death a person's doing. Docker reports the signal's number.
RELOAD_SIGNALS = frozenset({"1", "10", "12", "28", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stops(event: DockerEvent) -> bool:
    """Whether the event is a person stopping the container (not a reload signal)."""
    if event.kind == "stop":
        return True
    return event.kind == "kill" and event.attributes.get("signal") not in RELOAD_SIGNALS


@dataclass
class Tracked:
    """What the decision thread remembers about one container."""

    ref: ContainerRef
    healing: HealingState = field(default_factory=HealingState)
    deaths: list[datetime] = field(default_factory=list)
    last_kill_at: datetime | None = None
    stopped_by_person: bool = False
    healthy_since: datetime | None = None
    own_actions: list[list[datetime | None]] = field(default_factory=list)
    wake_at: datetime | None = None
    incidents: dict[Signal, IncidentId] = field(default_factory=dict)
    last_evidence: dict[Signal, str] = field(default_factory=dict)
    last_said: str = ""
    escalated_at: datetime | None = None
    acted_at: datetime | None = None
    state: str = ""
    health: str = ""
    log_since: datetime | None = None
    log_hits: dict[str, list[datetime]] = field(default_factory=dict)
    log_last: dict[str, str] = field(default_factory=dict)
    probe_failures: dict[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Done:
    flight: InFlight
    results: list[ActionResult]


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
        actor: Actor | None = None,
        now: Callable[[], datetime] = _utcnow,
        reconnect_delays: Sequence[float] = EVENT_RECONNECT_DELAYS,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        prober: Prober | None = None,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._store = store
        self._playbooks = tuple(playbooks)
        # Only these make medic read logs or probe ports; without them that costs nothing.
        self._watching = tuple(p for p in self._playbooks if p.match.log or p.match.probe)
        self._prober = prober or SocketProber()
        self._scope = scope
        self._now = now
        self._reconnect_delays = tuple(reconnect_delays)
        self._notifier = notifier
        self._actor = actor or Actor(
            gateway,
            workers=settings.workers,
            stop_timeout=settings.stop_timeout,
            now=now,
            announce=self._announce if notifier is not None else None,
        )
        self._rule = CrashLoopRule(settings.crash_loop_deaths, settings.crash_loop_window)
        self._tracked: dict[ContainerId, Tracked] = {}
        self._inbox: queue.Queue[DockerEvent | _Done] = queue.Queue()
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._stream: EventStream | None = None
        self._stream_lock = threading.Lock()
        self.metrics = metrics or Metrics()
        self._events_connected = False
        self._started_at = now()
        self._status: tuple[dict[str, object], ...] = ()
        self.last_cycle_at: datetime | None = None
        self._report: CycleReport | None = None
        self._seed_from_store()

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
        next_poll = self._now()
        try:
            while not self._stop.is_set():
                now = self._now()
                if now >= next_poll:
                    if _iterations is not None:
                        if _iterations <= 0:
                            break
                        _iterations -= 1
                    self._cycle(sync=False)
                    next_poll = now + interval
                    continue
                self._wake_due(now)
                deadline = min([next_poll, *self._wake_times()])
                timeout = max(0.0, min((deadline - self._now()).total_seconds(), 1.0))
                try:
                    message = self._inbox.get(timeout=timeout)
                except queue.Empty:
                    continue
                self._handle(message)
        finally:
            self._shutdown(events)

    def stop(self, reason: str | None = None) -> None:
        """Ask ``run`` to finish within a second; safe from a signal handler.

        Only an Event is set here: a signal handler runs on the main thread, which may
        be inside the inbox's or the logger's lock at that moment, so taking either
        could deadlock. ``run`` notices, logs ``reason`` and does the shutdown work.
        """
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
        if self._notifier is not None:
            self._notifier.close()

    def in_flight(self) -> list[InFlight]:
        """Plans being carried out right now; safe from any thread."""
        return self._actor.in_flight()

    @property
    def tracked(self) -> dict[ContainerId, Tracked]:
        """The per-container memory; read it only when ``run`` is not running."""
        return self._tracked

    # --- the cycle ------------------------------------------------------------------------

    def _cycle(self, *, sync: bool) -> CycleReport:
        report = CycleReport(started_at=self._now())
        self._report = report
        clock = time.monotonic()
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
            if not self._settings.dry_run:
                self._store_call(partial(self._store.record_observations, snapshots))
            seen = {s.ref.id for s in snapshots}
            # Only what was known before this list can be missing from it: a container
            # that took another's place during the cycle (recreate) is not gone.
            known = set(self._tracked)
            if self._watching:
                self._watch(snapshots)
            for snapshot in snapshots:
                self._check(snapshot, sync=sync)
            for cid in known - seen:
                gone = self._tracked.get(cid)
                if gone is not None:
                    self._forget(gone, "it no longer exists")
        finally:
            self._report = None
        self.last_cycle_at = report.started_at
        self.metrics.cycles.inc()
        self.metrics.cycle_seconds.observe(time.monotonic() - clock)
        self.metrics.containers.set(report.containers)
        self.metrics.open_incidents.set(sum(len(t.incidents) for t in self._tracked.values()))
        self._publish_status()
        return report

    def _publish_status(self) -> None:
        # Built on the loop thread and swapped in whole: readers on other threads
        # (the HTTP server) never see the loop's state half-changed.
        busy = {f.container.id for f in self._actor.in_flight()}
        self._status = tuple(
            {
                "container": t.ref.name,
                "service": t.ref.service,
                "state": t.state,
                "health": t.health,
                "incidents": [
                    {"id": iid, "signal": str(signal)} for signal, iid in t.incidents.items()
                ],
                "attempts_in_streak": len(t.healing.attempts),
                "next_look_at": t.wake_at.isoformat() if t.wake_at else None,
                "circuit": "open" if t.healing.circuit_open else "closed",
                "stopped_by_person": t.stopped_by_person,
                "action_in_flight": t.ref.id in busy,
            }
            for t in sorted(self._tracked.values(), key=lambda t: t.ref.name)
        )

    def status(self) -> list[dict[str, object]]:
        """Every supervised container as of the last poll; safe from any thread."""
        return [dict(entry) for entry in self._status]

    def health(self) -> tuple[bool, dict[str, object]]:
        """Alive when the last poll finished within three intervals (or medic just started)."""
        now = self._now()
        limit = timedelta(seconds=3 * self._settings.interval)
        last = self.last_cycle_at
        alive = (now - (last or self._started_at)) <= limit
        return alive, {
            "status": "ok" if alive else "stalled",
            "last_cycle_at": last.isoformat() if last else None,
            "interval_seconds": self._settings.interval,
            "events_stream": "connected" if self.events_connected else "disconnected",
            "actions_in_flight": len(self._actor.in_flight()),
        }

    def _check(self, snapshot: ContainerSnapshot, *, sync: bool = False) -> None:
        tracked = self._track(snapshot.ref)
        now = snapshot.observed_at
        tracked.state, tracked.health = str(snapshot.state), str(snapshot.health)
        if snapshot.detailed:
            self._learn_from_inspect(tracked, snapshot)
        if snapshot.state is State.RUNNING and tracked.stopped_by_person:
            tracked.stopped_by_person = False
        if snapshot.is_healthy:
            self._healthy(tracked, now)
        else:
            tracked.healthy_since = None
        if tracked.healing.circuit_open:
            self._check_cleared_by_person(tracked, now)

        findings = detect(
            snapshot,
            deaths=tracked.deaths,
            stopped_by_person=tracked.stopped_by_person,
            crash_loop=self._rule,
            acted_at=tracked.acted_at,
        )
        if self._watching and snapshot.state is State.RUNNING:
            findings.extend(self._watch_findings(tracked, snapshot))
        if health_is_stale(snapshot, tracked.acted_at) and snapshot.health_checked_at:
            # Look again just after the next health check has had its say.
            interval = timedelta(seconds=(snapshot.health_interval or 30.0) + 0.5)
            next_check = max(snapshot.health_checked_at + interval, now + timedelta(seconds=0.5))
            if tracked.wake_at is None or tracked.wake_at > next_check:
                tracked.wake_at = next_check
        if not findings:
            return
        for finding in findings:
            self.metrics.findings.labels(signal=str(finding.signal)).inc()
        if self._report is not None:
            self._report.findings.extend(findings)
        for finding in findings:
            self._record_finding(tracked, finding)
        state = replace(tracked.healing, busy=self._actor.busy(tracked.ref.id))
        decision = decide(
            findings, labels=snapshot.labels, state=state, playbooks=self._playbooks, now=now
        )
        if decision is None:
            return
        if self._report is not None:
            self._report.decisions.append(decision)
        self._apply(tracked, decision, sync=sync)

    def _watch(self, snapshots: Sequence[ContainerSnapshot]) -> None:
        """Read logs and run probes for the containers a log or probe playbook applies to."""
        probes: list[tuple[Tracked, Playbook, ProbeRule, str]] = []
        for snapshot in snapshots:
            if snapshot.state is not State.RUNNING or self._actor.busy(snapshot.ref.id):
                continue
            books = [p for p in self._watching if p.match.applies_to(snapshot.ref, snapshot.labels)]
            if not books:
                continue
            tracked = self._track(snapshot.ref)
            rules = [(p.name, p.match.log) for p in books if p.match.log is not None]
            if rules:
                self._read_log(tracked, rules)
            for p in books:
                if p.match.probe is not None and snapshot.ip_addresses:
                    probes.append((tracked, p, p.match.probe, snapshot.ip_addresses[0]))
        if not probes:
            return
        outcomes = self._prober.probe_all([(rule, ip) for _, _, rule, ip in probes])
        for (tracked, book, _, _), outcome in zip(probes, outcomes, strict=True):
            if outcome.ok:
                tracked.probe_failures.pop(book.name, None)
            else:
                count, _ = tracked.probe_failures.get(book.name, (0, ""))
                tracked.probe_failures[book.name] = (count + 1, outcome.detail)

    def _read_log(self, tracked: Tracked, rules: Sequence[tuple[str, LogRule]]) -> None:
        now = self._now()
        since = tracked.log_since or now - timedelta(seconds=max(r.window for _, r in rules))
        try:
            lines = self._gateway.logs(tracked.ref.id, since=since)
        except DockerError as e:
            logger.debug("Could not read the log of {}: {}.", tracked.ref.label, e)
            return
        # Docker's "since" is inclusive: drop what the last look already counted.
        lines = [line for line in lines if line[0] > since]
        tracked.log_since = lines[-1][0] if lines else since
        for name, rule in rules:
            hits, last = log_hits(rule, lines, earlier=tracked.log_hits.get(name, []), now=now)
            tracked.log_hits[name] = hits
            if last is not None:
                tracked.log_last[name] = last

    def _watch_findings(self, tracked: Tracked, snapshot: ContainerSnapshot) -> list[Finding]:
        found: list[Finding] = []
        for book in self._watching:
            if not book.match.applies_to(snapshot.ref, snapshot.labels):
                continue
            if book.match.log is not None:
                finding = log_finding(
                    snapshot.ref,
                    book.match.log,
                    hits=tracked.log_hits.get(book.name, []),
                    last_line=tracked.log_last.get(book.name),
                    now=snapshot.observed_at,
                )
                if finding is not None:
                    found.append(finding)
            if book.match.probe is not None and book.name in tracked.probe_failures:
                failures, detail = tracked.probe_failures[book.name]
                finding = probe_finding(
                    snapshot.ref,
                    book.match.probe,
                    failures=failures,
                    detail=detail,
                    now=snapshot.observed_at,
                )
                if finding is not None:
                    found.append(finding)
        return found

    def _check_now(self, tracked: Tracked) -> None:
        """Inspect one container and check it, between polls."""
        try:
            snapshot = self._gateway.inspect(tracked.ref.id)
        except ContainerGone:
            self._forget(tracked, "it no longer exists")
            return
        except DockerError as e:
            logger.warning(
                "Could not inspect {}: {}. The next poll looks again.", tracked.ref.label, e
            )
            return
        if not self._scope.includes(snapshot.ref.id, snapshot.labels):
            return
        self._check(snapshot)

    # --- what snapshots and events teach --------------------------------------------------

    def _track(self, ref: ContainerRef) -> Tracked:
        tracked = self._tracked.get(ref.id)
        if tracked is None:
            tracked = Tracked(ref=ref)
            self._tracked[ref.id] = tracked
        elif tracked.ref != ref and ref.name:
            tracked.ref = ref
        return tracked

    def _learn_from_inspect(self, tracked: Tracked, snapshot: ContainerSnapshot) -> None:
        """Count a death the events stream did not report (it may have been down)."""
        if snapshot.state not in (State.EXITED, State.DEAD, State.RESTARTING):
            return
        died = snapshot.finished_at
        if died is None or self._known_death(tracked, died) or self._by_own_action(tracked, died):
            return
        if tracked.stopped_by_person:
            return
        if snapshot.state is State.EXITED and self._stopped_by_person_before(tracked, snapshot):
            return
        self._note_death(tracked, died)

    def _stopped_by_person_before(self, tracked: Tracked, snapshot: ContainerSnapshot) -> bool:
        """Ask the engine's event history whether a person stopped this container."""
        died = snapshot.finished_at
        assert died is not None
        since = died - timedelta(seconds=self._settings.manual_stop_grace)
        if snapshot.started_at is not None:
            since = max(since, snapshot.started_at)
        try:
            history = self._gateway.past_events(
                tracked.ref.id, since=since, until=died + SAME_DEATH
            )
        except DockerError as e:
            logger.debug("Could not read past events of {}: {}.", tracked.ref.label, e)
            return False
        for event in history:
            if _stops(event) and not self._by_own_action(tracked, event.at):
                self._mark_stopped_by_person(tracked, event)
                return True
        return False

    def _known_death(self, tracked: Tracked, at: datetime) -> bool:
        return any(abs(at - d) <= SAME_DEATH for d in tracked.deaths)

    def _note_death(self, tracked: Tracked, at: datetime) -> None:
        if self._known_death(tracked, at):
            return
        horizon = self._now() - timedelta(seconds=self._settings.crash_loop_window)
        tracked.deaths = [d for d in tracked.deaths if d >= horizon]
        tracked.deaths.append(at)
        tracked.deaths.sort()

    def _by_own_action(self, tracked: Tracked, at: datetime) -> bool:
        for started, finished in tracked.own_actions:
            assert started is not None
            if started <= at and (finished is None or at <= finished):
                return True
        return False

    def _mark_stopped_by_person(self, tracked: Tracked, event: DockerEvent) -> None:
        if not tracked.stopped_by_person:
            how = "docker stop" if event.kind == "stop" else "docker stop or kill"
            logger.info(
                "{} was stopped by a person ({} at {:%H:%M:%S}); medic leaves it stopped "
                "until it is started again.",
                tracked.ref.label,
                how,
                tracked.last_kill_at or event.at,
            )
        tracked.stopped_by_person = True
        tracked.wake_at = None

    def _healthy(self, tracked: Tracked, now: datetime) -> None:
        if tracked.healthy_since is None:
            tracked.healthy_since = now
        tracked.healing = after_healthy(
            tracked.healing, healthy_since=tracked.healthy_since, now=now
        )
        if not (tracked.incidents or tracked.healing.circuit_open):
            return
        settles_at = tracked.healthy_since + timedelta(seconds=self._settings.settle)
        if now >= settles_at:
            self._resolve(tracked, now, note=None)
        elif tracked.wake_at is None or tracked.wake_at > settles_at:
            # Look again when the settle period is over, not only at the next poll.
            tracked.wake_at = settles_at

    def _on_event(self, event: DockerEvent) -> None:
        if not self._scope.includes(event.container_id, event.attributes):
            return
        tracked = self._track(event.ref)
        kind = event.kind
        ours = self._by_own_action(tracked, event.at)
        if kind == "kill" and not _stops(event):
            return
        if kind in ("kill", "stop"):
            if not ours:
                tracked.last_kill_at = event.at
                if kind == "stop":
                    self._mark_stopped_by_person(tracked, event)
            return
        if kind == "die":
            grace = timedelta(seconds=self._settings.manual_stop_grace)
            if not ours and tracked.last_kill_at and event.at - tracked.last_kill_at <= grace:
                self._mark_stopped_by_person(tracked, event)
                return
            if not ours:
                self._note_death(tracked, event.at)
            self._check_now(tracked)
        elif kind == "start":
            tracked.stopped_by_person = False
            tracked.last_kill_at = None
            if tracked.incidents and not ours:
                self._check_now(tracked)
        elif kind == "destroy" and not ours:
            # During medic's own recreate the old container is removed on purpose; the
            # finished action hands its memory to the new container instead.
            self._forget(tracked, "it was removed")
        elif kind == "oom" or (kind == "health_status" and event.detail == "unhealthy"):
            self._check_now(tracked)
        elif kind == "health_status" and event.detail == "healthy" and tracked.incidents:
            # Recovery starts the settle period; only containers with incidents care.
            self._check_now(tracked)

    # --- acting on decisions ----------------------------------------------------------------

    def _apply(self, tracked: Tracked, decision: Decision, *, sync: bool) -> None:
        if isinstance(decision, Plan):
            self._start_plan(tracked, decision, sync=sync)
        elif isinstance(decision, Wait):
            tracked.wake_at = decision.until
            self._say(
                tracked,
                f"{decision.finding.summary} Waiting until {decision.until:%H:%M:%S} before "
                f"the next attempt by playbook {decision.playbook.name} ({decision.reason}).",
            )
        elif isinstance(decision, Escalate):
            self._escalate(tracked, decision)
        elif isinstance(decision, Skip):
            self._say(
                tracked,
                f"{decision.finding.summary} No action: {decision.reason}.",
                level="DEBUG" if "still running" in decision.reason else "INFO",
            )

    def _say(self, tracked: Tracked, message: str, *, level: str = "INFO") -> None:
        """Log a waiting or skipping sentence once, not at every poll."""
        if message != tracked.last_said:
            tracked.last_said = message
            logger.bind(container=tracked.ref.name).log(level, message)

    def _start_plan(self, tracked: Tracked, plan: Plan, *, sync: bool) -> None:
        steps = ", then ".join(a.describe() for a in plan.actions)
        if self._settings.dry_run:
            self._say(
                tracked,
                f"{plan.finding.summary} Dry run: would {steps} "
                f"(playbook {plan.playbook.name}, attempt {plan.attempt}).",
            )
            return
        tracked.last_said = ""
        logger.bind(container=tracked.ref.name).info(
            "{} Healing it by playbook {}, attempt {}: {}.",
            plan.finding.summary,
            plan.playbook.name,
            plan.attempt,
            steps,
        )
        window: list[datetime | None] = [self._now(), None]
        tracked.own_actions = [
            w
            for w in tracked.own_actions
            if w[1] is None or self._now() - w[1] < timedelta(minutes=10)
        ]
        # The kill, die and stop events of an action that stops the container carry the
        # engine's timestamp, taken while medic's request was in progress, so they fall in
        # this window; a death after it is the container's own.
        if any(a.stops_container() for a in plan.actions):
            tracked.own_actions.append(window)
        if sync:
            flight = InFlight(tracked.ref, plan, self._now())
            self._finish(_Done(flight, self._actor.run_plan(tracked.ref, plan)))
            return
        submitted = self._actor.submit(
            tracked.ref, plan, lambda flight, results: self._inbox.put(_Done(flight, results))
        )
        if not submitted and window in tracked.own_actions:
            tracked.own_actions.remove(window)

    def _finish(self, done: _Done) -> None:
        flight = done.flight
        plan = flight.plan
        tracked = self._track(flight.container)
        now = self._now()
        tracked.acted_at = now
        # What was read or probed before the action says nothing about after it.
        tracked.log_hits.clear()
        tracked.log_last.clear()
        tracked.probe_failures.clear()
        tracked.log_since = now
        for window in tracked.own_actions:
            if window[1] is None:
                window[1] = now
        tracked.healing = after_attempt(
            tracked.healing, at=flight.started_at, playbook=plan.playbook
        )
        incident_id = tracked.incidents.get(plan.finding.signal)
        if self._report is not None:
            self._report.results.append((flight.container, plan, done.results))
        for result in done.results:
            outcome = "ok" if result.ok else "error"
            self.metrics.actions.labels(kind=str(result.action.kind), outcome=outcome).inc()
            if incident_id is not None:
                self._record_attempt(incident_id, plan, result)
        replaced = next((r.replaced_by for r in done.results if r.replaced_by), None)
        if replaced is not None:
            tracked = self._hand_over(tracked, replaced, now)
        failed = next((r for r in done.results if not r.ok), None)
        delay = plan.playbook.backoff.delay(len(tracked.healing.attempts))
        tracked.wake_at = now + timedelta(seconds=delay)
        took = sum(r.duration for r in done.results)
        if failed is None:
            logger.bind(container=flight.container.name).info(
                "Healed {} with {} in {:.1f} s (attempt {} by playbook {}); medic checks it "
                "again at {:%H:%M:%S}.",
                flight.container.label,
                ", ".join(r.action.describe() for r in done.results),
                took,
                plan.attempt,
                plan.playbook.name,
                tracked.wake_at,
            )
        else:
            logger.bind(container=flight.container.name).warning(
                "Could not {} {}: {} (attempt {} by playbook {}). The next attempt is not "
                "before {:%H:%M:%S}.",
                failed.action.describe(),
                flight.container.label,
                failed.error,
                plan.attempt,
                plan.playbook.name,
                tracked.wake_at,
            )

    def _hand_over(self, tracked: Tracked, new_id: ContainerId, now: datetime) -> Tracked:
        """The container was recreated: its backoff and attempt streak go to the new one,
        so a recreate loop still backs off and escalates. Its incidents end here, with a
        note; if the trouble persists, the new container gets incidents of its own."""
        old = tracked.ref
        new = replace(old, id=new_id)
        if tracked.incidents:
            self._resolve(
                tracked,
                now,
                note=f"{old.name} was recreated as {new.short_id}; medic watches the new one",
            )
        self._tracked.pop(old.id, None)
        tracked.ref = new
        tracked.own_actions = []
        self._tracked[new_id] = tracked
        logger.bind(container=old.name).info(
            "{} is now container {}; its backoff and attempts carry over.", old.label, new.short_id
        )
        return tracked

    def _escalate(self, tracked: Tracked, decision: Escalate) -> None:
        now = self._now()
        self.metrics.escalations.inc()
        tracked.healing = replace(tracked.healing, circuit_open=True)
        tracked.escalated_at = now
        tracked.wake_at = None
        ids = [incident_id[:8] for incident_id in tracked.incidents.values()]
        for incident_id in tracked.incidents.values():
            self._store_call(
                partial(
                    self._store.set_status,
                    incident_id,
                    IncidentStatus.ESCALATED,
                    at=now,
                    note=decision.reason,
                )
            )
        for signal, incident_id in tracked.incidents.items():
            self._notify(
                NotificationKind.ESCALATED,
                incident_id,
                ref=tracked.ref,
                signal=signal,
                title=f"medic escalated: {tracked.ref.service or tracked.ref.name} "
                f"still shows {signal}",
                body=f"{decision.reason}. Automatic healing of {tracked.ref.name} is paused "
                "until it recovers or a person resolves the incident (medic incidents resolve "
                f"{incident_id[:8]}).",
            )
        logger.bind(container=tracked.ref.name).warning(
            "Escalating {}: {}. Automatic healing of {} is paused until it recovers by itself "
            "or a person resolves incident {}.",
            tracked.ref.label,
            decision.reason,
            tracked.ref.label,
            ", ".join(ids) or "(none recorded)",
        )

    def _check_cleared_by_person(self, tracked: Tracked, now: datetime) -> None:
        """A person resolving every escalated incident closes the circuit."""
        if not tracked.incidents:
            return
        active = self._store_call(lambda: self._store.active_incidents(tracked.ref.id))
        if active is None:
            return
        still = {i.id for i in active}
        if not any(iid in still for iid in tracked.incidents.values()):
            tracked.incidents.clear()
            tracked.last_evidence.clear()
            tracked.healing = HealingState()
            logger.bind(container=tracked.ref.name).info(
                "A person resolved the escalated incidents of {}; automatic healing is on again.",
                tracked.ref.label,
            )

    def _resolve(self, tracked: Tracked, now: datetime, *, note: str | None) -> None:
        attempts = len(tracked.healing.attempts)
        for signal, incident_id in list(tracked.incidents.items()):
            self._store_call(
                partial(
                    self._store.set_status, incident_id, IncidentStatus.RESOLVED, at=now, note=note
                )
            )
            logger.bind(container=tracked.ref.name, incident=incident_id).info(
                "Incident {} ({} on {}) is resolved: {}.",
                incident_id[:8],
                signal,
                tracked.ref.label,
                note
                or f"healthy for {self._settings.settle:g} s after {attempts} attempt"
                f"{'s' if attempts != 1 else ''}",
            )
            self._notify(
                NotificationKind.RESOLVED,
                incident_id,
                ref=tracked.ref,
                signal=signal,
                title=f"medic: {tracked.ref.service or tracked.ref.name} recovered from {signal}",
                body=f"Incident {incident_id[:8]} is resolved: "
                + (note or f"healthy for {self._settings.settle:g} s after {attempts} attempt(s)")
                + ".",
            )
        if tracked.healing.circuit_open:
            logger.bind(container=tracked.ref.name).info(
                "{} recovered; automatic healing of it is on again.", tracked.ref.label
            )
            # A fresh start, as when a person resolves it: the old streak would
            # escalate the next failure before a single attempt.
            tracked.healing = HealingState()
        tracked.incidents.clear()
        tracked.last_evidence.clear()
        tracked.last_said = ""

    def _forget(self, tracked: Tracked, why: str) -> None:
        if tracked.incidents:
            self._resolve(tracked, self._now(), note=f"container {tracked.ref.name} is gone: {why}")
        self._tracked.pop(tracked.ref.id, None)

    # --- the store, which must never stop healing -------------------------------------------

    def _record_finding(self, tracked: Tracked, finding: Finding) -> None:
        if self._settings.dry_run:
            return
        fingerprint = f"{finding.summary}|{sorted(finding.evidence.items())}"
        if tracked.last_evidence.get(finding.signal) == fingerprint:
            return
        incident = self._store_call(lambda: self._store.record_finding(finding))
        if incident is None:
            return
        tracked.last_evidence[finding.signal] = fingerprint
        if finding.signal not in tracked.incidents:
            logger.bind(container=tracked.ref.name, incident=incident.id).info(
                "Incident {} opened: {}", incident.id[:8], finding.summary
            )
            details = [f"{k}: {v}" for k, v in finding.evidence.items() if v is not None]
            self._notify(
                NotificationKind.OPENED,
                incident.id,
                ref=tracked.ref,
                signal=finding.signal,
                title=f"medic: {tracked.ref.service or tracked.ref.name} shows {finding.signal}",
                body="\n".join([finding.summary, *details, f"Incident {incident.id[:8]}."]),
            )
        tracked.incidents[finding.signal] = incident.id

    def _record_attempt(self, incident_id: IncidentId, plan: Plan, result: ActionResult) -> None:
        attempt = Attempt(
            id=AttemptId(new_id()),
            incident_id=incident_id,
            playbook=plan.playbook.name,
            action=result.action.describe(),
            started_at=result.started_at,
            finished_at=result.finished_at,
            ok=result.ok,
            error=result.error,
            output=result.output,
        )
        self._store_call(lambda: self._store.record_attempt(attempt))

    def _notify(
        self,
        kind: NotificationKind,
        incident_id: IncidentId,
        *,
        ref: ContainerRef,
        signal: Signal,
        title: str,
        body: str,
        dedupe: str = "",
    ) -> None:
        """Queue a notification; the notifier sends it off the healing path."""
        if self._notifier is None:
            return
        fingerprint = f"{ref.project or '-'}/{ref.service or ref.name}/{signal}"
        note = Notification(kind, incident_id, fingerprint, title, body, self._now(), dedupe)
        self._notifier.send(note)

    def _announce(self, container: ContainerRef, plan: Plan, action: Action) -> None:
        """A playbook's notify action; runs on a worker thread, the queue is thread-safe."""
        tracked = self._tracked.get(container.id)
        incident_id = tracked.incidents.get(plan.finding.signal, "") if tracked else ""
        text = action.message or f"medic is healing {container.label}."
        self._notify(
            NotificationKind.PLAYBOOK,
            IncidentId(incident_id or f"{container.id}/{plan.finding.signal}"),
            ref=container,
            signal=plan.finding.signal,
            title=f"medic: {text}",
            body=f"{plan.finding.summary}\nPlaybook {plan.playbook.name}, attempt {plan.attempt}.",
            dedupe=f"attempt-{plan.attempt}",
        )

    def _record_abandoned(self, flight: InFlight) -> None:
        """An action cut short by medic stopping is still an attempt, and a failed one."""
        tracked = self._tracked.get(flight.container.id)
        incident_id = tracked.incidents.get(flight.plan.finding.signal) if tracked else None
        if incident_id is None:
            return
        now = self._now()
        for action in flight.plan.actions[:1]:
            result = ActionResult(
                action=action,
                ok=False,
                started_at=flight.started_at,
                finished_at=now,
                error="abandoned: medic stopped while the action was still running",
            )
            self._record_attempt(incident_id, flight.plan, result)

    def _store_call(self, fn: Callable[[], R]) -> R | None:
        try:
            return fn()
        except StoreError as e:
            logger.error("The incident store failed: {}. Healing goes on.", e)
            return None

    def _seed_from_store(self) -> None:
        """Pick up open incidents, backoff and open circuits from before a restart."""
        active = self._store_call(self._store.active_incidents) or []
        for incident in active:
            tracked = self._track(incident.container)
            tracked.incidents[incident.signal] = incident.id
            starts = sorted(
                {a.started_at for a in incident.attempts} | set(tracked.healing.attempts)
            )
            tracked.healing = replace(
                tracked.healing,
                attempts=tuple(sorted(starts)),
                circuit_open=tracked.healing.circuit_open
                or incident.status is IncidentStatus.ESCALATED,
            )

    # --- the loop's plumbing -----------------------------------------------------------------

    def _handle(self, message: DockerEvent | _Done) -> None:
        if isinstance(message, _Done):
            self._finish(message)
        else:
            self._on_event(message)

    def _wake_times(self) -> Iterable[datetime]:
        return [t.wake_at for t in self._tracked.values() if t.wake_at is not None]

    def _wake_due(self, now: datetime) -> None:
        for tracked in list(self._tracked.values()):
            if tracked.wake_at is not None and tracked.wake_at <= now:
                tracked.wake_at = None
                self._check_now(tracked)

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
                self.events_connected = False
                if self._stop.is_set():
                    return
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
            if isinstance(message, _Done):
                self._finish(message)
        for flight in finished:
            logger.info("Finished healing {} before stopping.", flight.container.label)
        for flight in abandoned:
            self._record_abandoned(flight)
            logger.warning(
                "Abandoned healing {} ({}): it was still running when medic stopped.",
                flight.container.label,
                ", ".join(a.describe() for a in flight.plan.actions),
            )
        events.join(timeout=5)
        logger.info("medic stopped.")
