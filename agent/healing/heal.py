"""What the decision thread does with a decision, a plan's outcome, and recovery.

A ``Plan`` opens medic's own-action window on the slot and goes to the actor (on
a worker, or on this thread for ``medic once``); its outcome comes back through
the supervisor's inbox and becomes attempts, backoff and the next look. A
``Wait`` schedules that look, an ``Escalate`` opens the circuit, a ``Skip`` is
said once. ``settle`` resolves an incident once every signal it showed has been
clear for the settle period (agent/healing/lifecycle.py). Everything here runs on the
decision thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial

from loguru import logger

from agent.clock import Clock
from agent.config import HealingSettings
from agent.engine.gateway import DockerGateway
from agent.errors import FencedOut
from agent.healing import actions, lifecycle
from agent.healing.act import Actor, InFlight, Touch
from agent.healing.detect import health_is_stale
from agent.healing.history import History, Slot
from agent.healing.recorder import EscalationHook, Recorder
from agent.healing.signals import Prober, SocketProber
from agent.healing.slots import Slots, Tracked
from agent.healing.watch import Watcher
from agent.metrics import Metrics
from agent.model import (
    ActionResult,
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
from agent.scope import Scope
from agent.store import IncidentStore


@dataclass(frozen=True)
class Parts:
    """The collaborators of one supervisor, wired to each other."""

    actor: Actor
    recorder: Recorder
    watcher: Watcher

    @classmethod
    def build(
        cls,
        *,
        healing: HealingSettings,
        gateway: DockerGateway,
        store: IncidentStore,
        playbooks: Sequence[Playbook],
        scope: Scope,
        clock: Clock,
        metrics: Metrics,
        notifier: Notifier | None,
        prober: Prober | None,
        escalation: EscalationHook | None,
        touch: Callable[[Touch], None],
        gate: Callable[[], str | None] | None = None,
    ) -> Parts:
        actor = Actor(
            gateway,
            workers=healing.workers,
            stop_timeout=healing.stop_timeout,
            clock=clock,
            scope=scope,
            touch=touch,
            gate=gate,
        )
        recorder = Recorder(
            store=store,
            clock=clock,
            metrics=metrics,
            notifier=notifier,
            escalation=escalation,
            dry_run=healing.dry_run,
        )
        watcher = Watcher(
            gateway=gateway, playbooks=playbooks, prober=prober or SocketProber(), clock=clock
        )
        return cls(actor, recorder, watcher)


@dataclass(frozen=True)
class Done:
    """A plan's outcome, handed from a worker to the decision thread."""

    flight: InFlight
    results: list[ActionResult]


#: Where ``medic once`` collects what was done: (container, plan, results).
Collect = Callable[[ContainerRef, Plan, list[ActionResult]], None]


class Healer:
    """Carries out decisions for container slots, and takes back their outcomes."""

    def __init__(
        self,
        *,
        slots: Slots,
        actor: Actor,
        recorder: Recorder,
        watcher: Watcher,
        metrics: Metrics,
        clock: Clock,
        dry_run: bool,
        settle: float,
        done: Callable[[Done], None],
        drain: Callable[[], None],
    ) -> None:
        self._slots = slots
        self._actor = actor
        self._recorder = recorder
        self._watcher = watcher
        self._metrics = metrics
        self._clock = clock
        self._dry_run = dry_run
        self._settle = settle
        self._done = done
        self._drain = drain

    def act(
        self,
        slot: Slot,
        decision: Decision,
        snapshot: ContainerSnapshot,
        *,
        sync: bool,
        collect: Collect | None,
    ) -> None:
        if isinstance(decision, Plan):
            self._start(slot, decision, snapshot, sync=sync, collect=collect)
        elif isinstance(decision, Wait):
            self._slots.update(slot, wake_at=decision.until)
            self.say(
                slot,
                f"{decision.finding.summary} Waiting until {decision.until:%H:%M:%S} before "
                f"the next attempt by playbook {decision.playbook.name} ({decision.reason}).",
            )
        elif isinstance(decision, Escalate):
            healing = replace(self._slots[slot].healing, circuit_open=True)
            self._slots.update(slot, healing=healing, wake_at=None)
            self._recorder.escalate(slot, decision)
        elif isinstance(decision, Skip):
            self.say(slot, f"{decision.finding.summary} No action: {decision.reason}.")

    def say(self, slot: Slot, message: str) -> None:
        """Log a waiting or skipping sentence once, not at every poll."""
        tracked = self._slots[slot]
        if message != tracked.said:
            self._slots.update(slot, said=message)
            logger.bind(container=tracked.ref.name).info(message)

    def _start(
        self,
        slot: Slot,
        plan: Plan,
        snapshot: ContainerSnapshot,
        *,
        sync: bool,
        collect: Collect | None,
    ) -> None:
        if self._dry_run:
            steps = ", then ".join(actions.describe(a) for a in plan.actions)
            self.say(
                slot,
                f"{plan.finding.summary} Dry run: would {steps} "
                f"(playbook {plan.playbook.name}, attempt {plan.attempt}).",
            )
            return
        before = self._slots[slot]
        now = self._clock.now()
        ref = self._slots.plan_started(slot, plan, at=now).ref
        # Written before the action starts: a medic killed while it runs leaves a trace.
        # Refused (FencedOut) when this medic's lease term is over: then nothing starts,
        # and nothing is said to start.
        try:
            self._recorder.started(slot, plan, at=now)
        except FencedOut:
            self._slots.put(slot, before)
            raise
        self._recorder.healing(plan)
        held = self._recorder.held(slot)
        announce = None
        if self._recorder.notifies:
            incident_id = held.incident_id if held is not None else ""
            announce = partial(self._recorder.announce, incident_id=incident_id)
        if sync:
            results = self._actor.run_plan(ref, plan, labels=snapshot.labels, announce=announce)
            self._drain()
            self.finish(Done(InFlight(ref, plan, now), results), collect=collect)
            return

        def done(flight: InFlight, results: list[ActionResult]) -> None:
            self._done(Done(flight, results))  # on a worker: through the inbox

        if not self._actor.submit(ref, plan, done, labels=snapshot.labels, announce=announce):
            self._slots.put(slot, before)
            refused = ActionResult(
                action=plan.actions[0],
                ok=False,
                started_at=now,
                finished_at=now,
                error="not started: another plan was in flight on this container",
            )
            self._recorder.attempt(slot, plan, [refused])

    def finish(self, done: Done, *, collect: Collect | None) -> None:
        """A plan ended: attempts recorded, backoff counted, the next look scheduled."""
        flight, plan, results = done.flight, done.flight.plan, done.results
        slot = self._slots.of(flight.container)
        if self._slots.get(slot) is None:
            self._slots.put(slot, Tracked(History(flight.container)))
        ok = all(r.ok for r in results)
        tracked = self._slots.plan_finished(slot, plan, started_at=flight.started_at, ok=ok)
        if collect is not None:
            collect(flight.container, plan, results)
        for result in results:
            outcome = "ok" if result.ok else "error"
            self._metrics.actions.labels(kind=str(result.action.kind), outcome=outcome).inc()
        self._recorder.attempt(slot, plan, results)
        self._watcher.reset(flight.container.id)
        replaced = next((r.replaced_by for r in results if r.replaced_by), None)
        if replaced is not None:
            # The same failure episode goes on in the new container: its incident stays
            # open, and resolves only once the new container has settled.
            new = replace(flight.container, id=replaced)
            old = flight.container
            self._recorder.moved(
                slot,
                new,
                note=f"{old.name} ({old.short_id}) was recreated as {new.short_id}; "
                "medic watches the new one",
            )
            tracked = self._slots.moved(slot, new)
            self._watcher.forget(flight.container.id)
        delay = plan.playbook.backoff.delay(len(tracked.healing.attempts))
        wake_at = self._clock.now() + timedelta(seconds=delay)
        self._slots.update(slot, wake_at=wake_at)
        self._recorder.outcome(flight.container, plan, results, wake_at)

    def settle(self, slot: Slot, snapshot: ContainerSnapshot, findings: list[Finding]) -> None:
        """Resolve the slot's incident once every signal it showed is clear for the settle
        period; otherwise look again when it could be."""
        tracked, held = self._slots[slot], self._recorder.follow(slot, snapshot.ref)
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
            settled = lifecycle.settle(signals, clear, now=now, period=self._settle)
            if settled.resolved:
                attempts = len(tracked.healing.attempts)
                self._recorder.resolve(
                    slot,
                    note=f"healthy for {self._settle:g} s after {attempts} "
                    f"attempt{'s' if attempts != 1 else ''}",
                )
                if tracked.healing.circuit_open:
                    self._recorder.recovered(tracked.ref)
                self._slots.recovered(slot)
                return
            wake = lifecycle.earliest(wake, settled.at)
        if wake is not None:
            self._slots.update(slot, wake_at=lifecycle.earliest(tracked.wake_at, wake))

    def stopped(self, finished: list[InFlight], abandoned: list[InFlight]) -> None:
        """medic stopped: plans cut short are failed attempts, and said so."""
        for flight in finished:
            logger.info("Finished healing {} before stopping.", flight.container.label)
        for flight in abandoned:
            slot = self._slots.of(flight.container)
            self._recorder.abandoned(slot, flight.plan, started_at=flight.started_at)
            logger.warning(
                "Abandoned healing {} ({}): it was still running when medic stopped.",
                flight.container.label,
                ", ".join(actions.describe(a) for a in flight.plan.actions),
            )
