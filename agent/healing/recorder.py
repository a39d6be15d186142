"""Incidents into the store, notifications about them, and their metrics.

The supervisor decides; the recorder writes down what was decided and tells
people. It holds, per container slot, the incident of the current failure
episode: one incident per container and episode, whatever signals it shows. A
container medic recreates or rebuilds continues its slot's episode: the incident
follows the new container (``moved``) and is not resolved until that one settles.
Findings reach it only after ``decide`` has seen them, so what medic's own
actions cause never becomes an incident.

One error policy for the store, because the store must never stop healing:

* ``StoreError`` (Postgres away, a query refused): logged as an error naming what
  was being written, and healing goes on. The spooling store keeps the change
  on disk meanwhile, so nothing is lost.
* ``IncidentNotFound``: the incident medic held is no longer in the store (deleted
  by hand, or the store was replaced). That is not swallowed: it is logged as a
  warning naming the incident, medic lets go of the id, and the next finding or
  attempt opens a new incident instead of writing to one that does not exist.
* ``SpoolError``: Postgres is away *and* the spool cannot be written, so this change
  is lost. Healing goes on (a full disk must not stop medic from restarting a
  crashed database), but each loss is logged as an error that says what to fix,
  and counted in ``lost_changes`` and the ``medic_store_lost_changes_total`` metric.

* ``FencedOut``: Postgres refused the write because this medic's lease term is over
  (docs/ha.md). That is not swallowed either: it goes up to the supervisor, which
  stands by. A recorder standing by (``stand_by``) holds no incident and writes
  nothing, and tells nobody, until ``take_over``.

Escalation plugs in here behind one call: an ``EscalationHook`` given to the
constructor is called once for each incident right after it is stored as
escalated (on the decision thread; the hook must hand long work to a thread of
its own).

The notify action of a playbook runs on a worker thread: ``announce`` reads
nothing of the decision thread's state, only the values it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Protocol, TypeVar

from loguru import logger
from prometheus_client import Counter

from agent.clock import Clock
from agent.errors import FencedOut, StoreError
from agent.healing import actions
from agent.healing.history import Slot
from agent.metrics import Metrics
from agent.model import (
    SEVERITY,
    Action,
    ActionResult,
    Attempt,
    AttemptId,
    AttemptStatus,
    ContainerRef,
    ContainerSnapshot,
    Escalate,
    Finding,
    Health,
    Incident,
    IncidentId,
    IncidentStatus,
    Plan,
    Signal,
    State,
)
from agent.notify import Notification, NotificationKind, Notifier
from agent.scope import Scope
from agent.store import IncidentStore, new_id
from agent.store.base import IncidentNotFound
from agent.store.spool import SpoolError

R = TypeVar("R")


class EscalationHook(Protocol):
    """Told about each incident medic escalated, right after it is stored as escalated."""

    def escalated(self, incident: Incident) -> None: ...


def gravest(signals: Iterable[Signal]) -> Signal:
    """The most severe of an episode's signals: what its incident is called."""
    return min(signals, key=SEVERITY.index)


def evidence_key(finding: Finding) -> str:
    """Tells a finding's evidence from the previous one's: repeats are not stored again."""
    return f"{finding.signal}|{finding.summary}|{sorted(finding.evidence.items())}"


def engine_account(
    started_at: datetime, snapshot: ContainerSnapshot | None, *, unknown: str | None = None
) -> str:
    """What the engine says happened to a container since an attempt began at
    ``started_at`` (host time; the container's times are the engine's, so the words
    "before" and "after" assume the two clocks roughly agree). ``snapshot`` None: the
    container is gone, or (``unknown``) the engine could not be asked."""
    if snapshot is None:
        if unknown is not None:
            return f"the engine could not be asked what happened to the container since ({unknown})"
        return "the engine no longer has the container"

    def when(at: datetime) -> str:
        side = "after" if at > started_at else "before"
        return f"{at:%H:%M:%S} ({side} the attempt began)"

    said = [f"the engine says the container is {snapshot.state}"]
    if snapshot.health is not Health.NONE:
        said[0] += f" and {snapshot.health}"
    said.append(f"restart count {snapshot.restart_count}")
    if snapshot.finished_at is not None:
        code = "" if snapshot.exit_code is None else f" with exit code {snapshot.exit_code}"
        said.append(f"it last stopped at {when(snapshot.finished_at)}{code}")
    if snapshot.started_at is not None:
        said.append(f"it last started at {when(snapshot.started_at)}")
    text = ", ".join(said)
    restarted = snapshot.started_at is not None and snapshot.started_at > started_at
    if snapshot.state is State.RUNNING and restarted:
        return f"{text}: the action most likely completed"
    if not restarted and (snapshot.finished_at is None or snapshot.finished_at <= started_at):
        return f"{text}: nothing it shows happened after the attempt began"
    return text


def notification_key(ref: ContainerRef, signal: Signal) -> str:
    """Groups notifications for the rate limit: one service and signal, across ids."""
    return f"{ref.project or '-'}/{ref.service or ref.name}/{signal}"


@dataclass(frozen=True)
class Held:
    """The incident of a slot's current failure episode, as medic holds it."""

    incident_id: IncidentId
    container: ContainerRef
    signals: frozenset[Signal]
    escalated: bool = False
    evidence: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Recorded:
    """What recording a container's findings did: the episode's incident, if any."""

    incident_id: IncidentId | None
    opened: bool = False


class Recorder:
    """Writes incidents and attempts, sends notifications, keeps incident metrics."""

    def __init__(
        self,
        *,
        store: IncidentStore,
        clock: Clock,
        metrics: Metrics,
        notifier: Notifier | None = None,
        escalation: EscalationHook | None = None,
        dry_run: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._notifier = notifier
        self._escalation = escalation
        self._dry_run = dry_run
        self._held: dict[Slot, Held] = {}
        self._running: dict[Slot, Attempt] = {}
        """The attempt recorded as running for each slot's plan in flight."""
        self._acting = True
        self.lost_changes = 0
        self._lost = Counter(
            "medic_store_lost_changes_total",
            "Incident changes lost because neither Postgres nor the spool could take them.",
            registry=metrics.registry,
        )

    # --- leading and standing by ---------------------------------------------------------

    def stand_by(self) -> None:
        """Another medic leads: let go of every incident, and write nothing from now on."""
        self._acting = False
        self._held.clear()
        self._running.clear()
        self._publish()

    def take_over(self) -> None:
        """This medic leads: it records again (``seed`` brings back the incidents)."""
        self._acting = True

    # --- reading -----------------------------------------------------------------------

    def held(self, slot: Slot) -> Held | None:
        return self._held.get(slot)

    def incidents(self) -> dict[Slot, tuple[str, Signal]]:
        """Each slot's active incident and the signal it goes by, for /status."""
        return {slot: (h.incident_id, gravest(h.signals)) for slot, h in self._held.items()}

    def seed(self) -> list[Incident]:
        """The active incidents a previous medic left, now held again."""
        active = self._call("reading the active incidents", self._store.active_incidents) or []
        for incident in active:
            slot = Slot.of(incident.container)
            held = self._held.get(slot)
            signals = frozenset({incident.signal}) | (held.signals if held else frozenset())
            self._held[slot] = Held(
                incident.id,
                incident.container,
                signals,
                escalated=incident.status is IncidentStatus.ESCALATED,
            )
        self._publish()
        return active

    def cleared_by_person(self, slot: Slot) -> bool:
        """Whether a person resolved the slot's incident; medic then lets go of it."""
        held = self._held.get(slot)
        if held is None:
            return False
        active = self._call(
            f"reading the incidents of {held.container.label}",
            lambda: self._store.active_incidents(held.container.id),
        )
        if active is None or any(i.id == held.incident_id for i in active):
            return False
        self._held.pop(slot, None)
        self._publish()
        logger.bind(container=held.container.name, incident=held.incident_id).info(
            "A person resolved incident {} of {}; automatic healing of it is on again.",
            held.incident_id[:8],
            held.container.label,
        )
        return True

    # --- writing -----------------------------------------------------------------------

    def observations(self, snapshots: Sequence[ContainerSnapshot]) -> None:
        if not self._dry_run:
            self._call("recording observations", lambda: self._store.record_observations(snapshots))

    def record(self, slot: Slot, findings: Sequence[Finding]) -> Recorded:
        """Add the findings (already seen by ``decide``) to the slot's incident."""
        held = self._held.get(slot)
        if not findings:
            return Recorded(held.incident_id if held else None)
        held = self.follow(slot, findings[0].container)
        opened = False
        for finding in findings:
            self._metrics.findings.labels(signal=str(finding.signal)).inc()
            if self._dry_run:
                continue
            key = evidence_key(finding)
            if held is not None and key in held.evidence:
                continue
            incident = self._call(
                f"recording {finding.signal} of {finding.container.label}",
                partial(self._store.record_finding, finding),
            )
            if incident is None:
                continue
            if held is None or held.incident_id != incident.id:
                opened = True
                held = Held(incident.id, finding.container, frozenset({finding.signal}))
                self._opened(incident, finding)
            held = replace(
                held,
                container=finding.container,
                signals=held.signals | {finding.signal},
                # Only the latest evidence of each signal is remembered: a bound.
                evidence=frozenset(
                    {k for k in held.evidence if not k.startswith(f"{finding.signal}|")} | {key}
                ),
            )
            self._held[slot] = held
        self._publish()
        return Recorded(held.incident_id if held else None, opened=opened)

    def started(self, slot: Slot, plan: Plan, *, at: datetime) -> None:
        """Record the plan's attempt as running before it starts, so that a medic killed
        while it runs leaves a trace the next one finds (``interrupted``)."""
        if self._dry_run:
            return
        incident_id = self._active_incident(slot, plan.finding)
        if incident_id is None:
            return
        attempt = Attempt(
            id=AttemptId(new_id()),
            incident_id=incident_id,
            playbook=plan.playbook.name,
            action=", then ".join(actions.describe(a) for a in plan.actions),
            started_at=at,
            finished_at=None,
            ok=False,
            status=AttemptStatus.RUNNING,
        )

        def write() -> bool:
            self._store.record_attempt(attempt)
            return True

        if self._call(f"recording the start of an attempt on incident {incident_id[:8]}", write):
            self._running[slot] = attempt

    def attempt(self, slot: Slot, plan: Plan, results: Sequence[ActionResult]) -> None:
        """Record the plan's results as attempts of the slot's incident; the first
        completes the attempt recorded as running when the plan started.

        If a person resolved the incident meanwhile (or it is gone from the store),
        the attempts belong to a new incident for the same finding, never to a
        closed one.
        """
        running = self._running.pop(slot, None)
        if self._dry_run or not results:
            return
        incident_id = self._active_incident(slot, plan.finding)
        if incident_id is None:
            return
        for index, result in enumerate(results):
            attempt = Attempt(
                id=running.id if running is not None and index == 0 else AttemptId(new_id()),
                incident_id=incident_id,
                playbook=plan.playbook.name,
                action=actions.describe(result.action),
                started_at=result.started_at,
                finished_at=result.finished_at,
                ok=result.ok,
                error=result.error,
                output=result.output,
            )
            self._call(
                f"recording an attempt on incident {incident_id[:8]}",
                partial(self._store.record_attempt, attempt),
                slot=slot,
            )

    def _active_incident(self, slot: Slot, finding: Finding) -> IncidentId | None:
        held = self._held.get(slot)
        if held is not None:
            try:
                current = self._store.get(held.incident_id)
            except IncidentNotFound as e:
                logger.bind(container=held.container.name).warning(
                    "Incident {} of {} is no longer in the incident store ({}); the attempt "
                    "goes to a new incident.",
                    held.incident_id[:8],
                    held.container.label,
                    e,
                )
            except StoreError as e:
                # Cannot tell; the spool keeps the attempt with the incident medic holds.
                logger.error(
                    "The incident store failed while reading incident {}: {}. Healing goes on.",
                    held.incident_id[:8],
                    e,
                )
                return held.incident_id
            else:
                if current.is_active:
                    return held.incident_id
                logger.bind(container=held.container.name).info(
                    "Incident {} of {} was resolved while medic was acting on it; the attempt "
                    "goes to a new incident.",
                    held.incident_id[:8],
                    held.container.label,
                )
            self._held.pop(slot, None)
        return self.record(slot, [finding]).incident_id

    def escalate(self, slot: Slot, decision: Escalate) -> None:
        """Mark the slot's incident escalated, tell people, and call the escalation hook."""
        self._metrics.escalations.inc()
        held = self._held.get(slot)
        ref = decision.finding.container
        if held is None or self._dry_run:
            logger.bind(container=ref.name).warning(
                "Escalating {}: {}. Automatic healing of it is paused until it recovers by "
                "itself or a person resolves its incident.",
                ref.label,
                decision.reason,
            )
            return
        self._held[slot] = replace(held, escalated=True)
        incident = self._call(
            f"escalating incident {held.incident_id[:8]}",
            lambda: self._store.set_status(
                held.incident_id,
                IncidentStatus.ESCALATED,
                at=self._clock.now(),
                note=decision.reason,
            ),
            slot=slot,
        )
        logger.bind(container=ref.name, incident=held.incident_id).warning(
            "Escalating {}: {}. Automatic healing of {} is paused until it recovers by itself "
            "or a person resolves incident {} (medic incidents resolve {}).",
            ref.label,
            decision.reason,
            ref.label,
            held.incident_id[:8],
            held.incident_id[:8],
        )
        self._notify(
            NotificationKind.ESCALATED,
            held.incident_id,
            ref=ref,
            signal=decision.finding.signal,
            title=f"medic escalated: {ref.service or ref.name} "
            + (
                f"fails again after each heal, now {decision.finding.signal}"
                if decision.relapsing
                else f"still shows {decision.finding.signal}"
            ),
            body=f"{decision.reason}. Automatic healing of {ref.name} is paused until it "
            "recovers or a person resolves the incident (medic incidents resolve "
            f"{held.incident_id[:8]}).",
        )
        if incident is not None and self._escalation is not None:
            try:
                self._escalation.escalated(incident)
            except Exception as e:  # a broken hook must not stop healing
                logger.opt(exception=e).error(
                    "The escalation of incident {} failed: {}. Healing goes on; the incident "
                    "stays escalated.",
                    held.incident_id[:8],
                    e,
                )
        self._publish()

    def resolve(self, slot: Slot, *, note: str) -> None:
        """Resolve the slot's incident with ``note`` saying why, and tell people."""
        held = self._held.pop(slot, None)
        if held is None:
            return
        self._publish()
        if self._dry_run:
            return
        self._call(
            f"resolving incident {held.incident_id[:8]}",
            lambda: self._store.set_status(
                held.incident_id, IncidentStatus.RESOLVED, at=self._clock.now(), note=note
            ),
        )
        signals = ", ".join(sorted(held.signals))
        logger.bind(container=held.container.name, incident=held.incident_id).info(
            "Incident {} ({} on {}) is resolved: {}.",
            held.incident_id[:8],
            signals,
            held.container.label,
            note,
        )
        ref = held.container
        self._notify(
            NotificationKind.RESOLVED,
            held.incident_id,
            ref=ref,
            signal=gravest(held.signals),
            title=f"medic: {ref.service or ref.name} recovered from {signals}",
            body=f"Incident {held.incident_id[:8]} is resolved: {note}.",
        )

    def moved(self, slot: Slot, container: ContainerRef, *, note: str) -> None:
        """medic replaced the slot's container (a recreate or a rebuild): the episode goes
        on, so its incident stays open and follows the new container, with ``note``."""
        held = self._held.get(slot)
        if held is None:
            logger.bind(container=container.name).info(
                "{} is now container {}; its backoff and attempts carry over.",
                container.label,
                container.short_id,
            )
            return
        self._held[slot] = replace(held, container=container)
        if not self._dry_run:
            self._call(
                f"moving incident {held.incident_id[:8]} to container {container.short_id}",
                lambda: self._store.move_incident(
                    held.incident_id, container, at=self._clock.now(), note=note
                ),
                slot=slot,
            )
        logger.bind(container=container.name, incident=held.incident_id).info(
            "{} is now container {}; incident {} stays open for it, and its backoff and "
            "attempts carry over.",
            container.label,
            container.short_id,
            held.incident_id[:8],
        )

    def follow(self, slot: Slot, container: ContainerRef) -> Held | None:
        """The slot's incident, moved to ``container`` when that is a new task Swarm put in
        the slot: the episode goes on in it, so the incident follows it (and resolves on
        it) rather than a second one being opened."""
        held = self._held.get(slot)
        if held is None or container.swarm is None or held.container.id == container.id:
            return held
        self.moved(
            slot,
            container,
            note=f"Swarm replaced task {held.container.name} by {container.name} in slot "
            f"{container.swarm.slot_name}; the episode goes on in the new task",
        )
        return self._held.get(slot)

    def interrupted(
        self,
        attempt: Attempt,
        container: ContainerRef,
        *,
        account: str,
        found_at: datetime,
        took_over: bool = False,
    ) -> None:
        """An attempt a previous medic started and never ended (it was killed meanwhile,
        or lost the lead): recorded as interrupted, with ``account``, what the engine
        says happened since. ``took_over``: this medic found it when it took the lease."""
        when = "this medic took the lead of its scope" if took_over else "medic started again"
        ended = replace(
            attempt,
            status=AttemptStatus.INTERRUPTED,
            finished_at=None,
            ok=False,
            error=f"medic stopped before it ended; found at {found_at:%Y-%m-%d %H:%M:%S} UTC "
            f"when {when}",
            output=account,
        )
        self._call(
            f"recording the interrupted attempt {attempt.id[:8]} on incident "
            f"{attempt.incident_id[:8]}",
            partial(self._store.record_attempt, ended),
        )
        logger.bind(container=container.name, incident=attempt.incident_id).warning(
            "The attempt to {} {} (incident {}, playbook {}, started at {:%H:%M:%S}) was "
            "interrupted: medic stopped before it ended. {}. It counts in the backoff, so "
            "medic does not act on {} again before the backoff says so.",
            attempt.action,
            container.label,
            attempt.incident_id[:8],
            attempt.playbook,
            attempt.started_at,
            account[:1].upper() + account[1:],
            container.label,
        )

    def abandoned(self, slot: Slot, plan: Plan, *, started_at: datetime) -> None:
        """An action cut short by medic stopping is still an attempt, and a failed one."""
        if plan.actions:
            result = ActionResult(
                action=plan.actions[0],
                ok=False,
                started_at=started_at,
                finished_at=max(self._clock.now(), started_at),
                error="abandoned: medic stopped while the action was still running",
            )
            self.attempt(slot, plan, [result])

    def announce(
        self, container: ContainerRef, plan: Plan, action: Action, *, incident_id: str
    ) -> None:
        """A playbook's notify action. Runs on a worker thread: it uses only its arguments
        and the notifier's thread-safe queue."""
        text = action.text("message") or f"medic is healing {container.label}."
        self._notify(
            NotificationKind.PLAYBOOK,
            IncidentId(incident_id or f"{container.id}/{plan.finding.signal}"),
            ref=container,
            signal=plan.finding.signal,
            title=f"medic: {text}",
            body=f"{plan.finding.summary}\nPlaybook {plan.playbook.name}, attempt {plan.attempt}.",
            dedupe=f"attempt-{plan.attempt}",
        )

    # --- the sentences of the healing loop -----------------------------------------------

    @staticmethod
    def supervising(scope: Scope, interval: float, dry_run: bool) -> None:
        dry = " in dry-run mode: it says what it would do and does nothing"
        logger.info(
            "medic is supervising {} every {:g} s{}.",
            scope.describe(),
            interval,
            dry if dry_run else "",
        )

    @staticmethod
    def waiting(in_flight: int, timeout: float) -> None:
        if in_flight:
            logger.info(
                "medic is stopping; waiting up to {:g} s for {} action(s) in flight.",
                timeout,
                in_flight,
            )

    @staticmethod
    def outcome(
        container: ContainerRef, plan: Plan, results: Sequence[ActionResult], wake_at: datetime
    ) -> None:
        """Say how a plan went, and when medic looks again."""
        failed = next((r for r in results if not r.ok), None)
        log = logger.bind(container=container.name)
        if failed is None:
            log.info(
                "Healed {} with {} in {:.1f} s (attempt {} by playbook {}); medic checks it "
                "again at {:%H:%M:%S}.",
                container.label,
                ", ".join(actions.describe(r.action) for r in results),
                sum(r.duration for r in results),
                plan.attempt,
                plan.playbook.name,
                wake_at,
            )
        else:
            log.warning(
                "Could not {} {}: {} (attempt {} by playbook {}). The next attempt is not "
                "before {:%H:%M:%S}.",
                actions.describe(failed.action),
                container.label,
                failed.error,
                plan.attempt,
                plan.playbook.name,
                wake_at,
            )

    @staticmethod
    def healing(plan: Plan) -> None:
        steps = ", then ".join(actions.describe(a) for a in plan.actions)
        logger.bind(container=plan.finding.container.name).info(
            "{} Healing it by playbook {}, attempt {}: {}.",
            plan.finding.summary,
            plan.playbook.name,
            plan.attempt,
            steps,
        )

    @staticmethod
    def stopped_by_person(ref: ContainerRef, at: datetime | None) -> None:
        logger.bind(container=ref.name).info(
            "{} was stopped by a person (docker stop or kill at {:%H:%M:%S}); medic leaves it "
            "stopped until it is started again.",
            ref.label,
            at,
        )

    @staticmethod
    def engine_stopped(ref: ContainerRef) -> None:
        logger.bind(container=ref.name).info(
            "{} was stopped just before the Docker engine went away: that was the engine "
            "shutting down, not a person, so medic heals it if it stays down.",
            ref.label,
        )

    @staticmethod
    def recovered(ref: ContainerRef) -> None:
        logger.bind(container=ref.name).info(
            "{} recovered; automatic healing of it is on again.", ref.label
        )

    @property
    def notifies(self) -> bool:
        return self._notifier is not None

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()

    # --- plumbing ----------------------------------------------------------------------

    def _opened(self, incident: Incident, finding: Finding) -> None:
        ref = finding.container
        logger.bind(container=ref.name, incident=incident.id).info(
            "Incident {} opened: {}", incident.id[:8], finding.summary
        )
        details = [f"{k}: {v}" for k, v in finding.evidence.items() if v is not None]
        self._notify(
            NotificationKind.OPENED,
            incident.id,
            ref=ref,
            signal=finding.signal,
            title=f"medic: {ref.service or ref.name} shows {finding.signal}",
            body="\n".join([finding.summary, *details, f"Incident {incident.id[:8]}."]),
        )

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
        if self._notifier is None or not self._acting:
            return
        key = notification_key(ref, signal)
        note = Notification(kind, incident_id, key, title, body, self._clock.now(), dedupe)
        self._notifier.send(note)

    def _publish(self) -> None:
        self._metrics.open_incidents.set(len(self._held))

    def _call(self, what: str, fn: Callable[[], R], *, slot: Slot | None = None) -> R | None:
        """Run one store call under the error policy in the module docstring; none while
        standing by."""
        if not self._acting:
            return None
        try:
            return fn()
        except FencedOut:
            raise
        except IncidentNotFound as e:
            held = self._held.pop(slot, None) if slot is not None else None
            logger.warning(
                "The incident store has no such incident while {}: {}. medic lets go of it{}; "
                "the next finding opens a new incident.",
                what,
                e,
                f" ({held.incident_id[:8]} of {held.container.label})" if held else "",
            )
            self._publish()
            return None
        except SpoolError as e:
            self.lost_changes += 1
            self._lost.inc()
            logger.error(
                "An incident change was lost while {}: Postgres is unreachable and {}. Free "
                "space or fix the permissions of MEDIC_STATE_DIR; healing goes on.",
                what,
                e,
            )
            return None
        except StoreError as e:
            logger.error("The incident store failed while {}: {}. Healing goes on.", what, e)
            return None
