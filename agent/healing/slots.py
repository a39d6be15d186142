"""The decision thread's memory of container slots. Pure: no I/O, no clock of its own.

Which container id sits in which slot (agent/healing/history.py explains slots), and per
slot one frozen ``Tracked`` record: its history, its healing state (backoff and
circuit), the playbooks of its current streak, when to look again. Every change
replaces a record whole; ``views`` turns them into what /status shows.

A container id a recreate replaced stays known to its slot for a while
(``KEPT_FORMER_IDS``), so late events of the old container are recognised and a
container left behind under its ``-replaced-`` name is never judged on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from agent.healing import actions
from agent.healing import history as hist
from agent.healing.decide import after_attempt, after_healthy, after_relapse
from agent.healing.history import History, Reaction, Slot
from agent.model import (
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    HealingState,
    Incident,
    IncidentStatus,
    Plan,
    Signal,
)
from agent.status import ContainerView

#: Former container ids a slot remembers (late events of recreated containers).
KEPT_FORMER_IDS = 4


@dataclass(frozen=True)
class Tracked:
    """What the decision thread holds for one container slot; replaced whole."""

    history: History
    healing: HealingState = field(default_factory=HealingState)
    used: tuple[str, ...] = ()
    """Playbooks whose attempts make up the current streak, in order of first use."""
    wake_at: datetime | None = None
    state: str = ""
    health: str = ""
    said: str = ""
    former: tuple[ContainerId, ...] = ()
    well_since: datetime | None = None
    """When medic first saw the container well (healthy, no findings) after the streak's
    last attempt, until it fails again (host time)."""

    @property
    def ref(self) -> ContainerRef:
        return self.history.container

    def at_rest(self, snapshot: ContainerSnapshot) -> bool:
        """Whether ``snapshot`` shows the slot as it was last seen, healthy, by the list
        call, with no healing under way: judging it again would find, decide and change
        nothing, unless an incident is held or its logs or probe are watched (which
        the supervisor knows). An inspect snapshot is always judged: its health check
        time may call for a second look after an action."""
        return (
            snapshot.is_healthy
            and not snapshot.detailed
            and self.state == snapshot.state
            and self.health == snapshot.health
            and not self.healing.attempts
            and not self.healing.circuit_open
            and self.wake_at is None
        )


class Slots:
    """Every slot medic tracks, and which container id sits in which."""

    def __init__(self) -> None:
        self._slots: dict[Slot, Tracked] = {}
        self._ids: dict[ContainerId, Slot] = {}
        # Kept up to date by put and pop, so that the loop's work per event does not
        # grow with the number of containers: the slots with a wake time, and those
        # changed since /status was last built.
        self._wakes: dict[Slot, datetime] = {}
        self._changed: set[Slot] = set()

    def __getitem__(self, slot: Slot) -> Tracked:
        return self._slots[slot]

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots))

    def get(self, slot: Slot) -> Tracked | None:
        return self._slots.get(slot)

    def of(self, ref: ContainerRef) -> Slot:
        """The slot a container belongs to: by its id when known, else by name."""
        return self._ids.get(ref.id) or Slot.of(ref)

    def put(self, slot: Slot, tracked: Tracked) -> Tracked:
        self._slots[slot] = tracked
        self._ids[tracked.ref.id] = slot
        self._changed.add(slot)
        if tracked.wake_at is None:
            self._wakes.pop(slot, None)
        else:
            self._wakes[slot] = tracked.wake_at
        return tracked

    def update(self, slot: Slot, **changes: object) -> Tracked:
        return self.put(slot, replace(self._slots[slot], **changes))  # type: ignore[arg-type]

    def track(self, ref: ContainerRef, *, takes_over: bool = True) -> tuple[Slot, Tracked | None]:
        """The slot of a container seen in a snapshot or event, tracked from now on.

        None for a container a recreate left behind, and for the one replacing it
        while medic's recreate is still in flight: neither is judged on its own.
        ``takes_over`` False: a container the slot does not know yet does not take it
        over either (None): a Swarm slot's event of a task older than its current one.
        """
        slot = self.of(ref)
        tracked = self._slots.get(slot)
        if tracked is None:
            return slot, self.put(slot, Tracked(History(ref)))
        if tracked.ref.id == ref.id:
            return slot, tracked
        if ref.id in tracked.former or tracked.history.busy or not takes_over:
            return slot, None
        # Another container took the slot (recreated outside medic): it carries on.
        return slot, self.moved(slot, ref)

    def moved(self, slot: Slot, ref: ContainerRef) -> Tracked:
        """The slot's container was replaced by ``ref``; the slot's memory carries over."""
        tracked = self._slots[slot]
        former = (*tracked.former, tracked.ref.id)[-KEPT_FORMER_IDS:]
        for old in set(tracked.former) - set(former):
            self._ids.pop(old, None)
        history = hist.moved_to(tracked.history, ref)
        return self.put(slot, replace(tracked, history=history, former=former))

    def pop(self, slot: Slot) -> Tracked | None:
        tracked = self._slots.pop(slot, None)
        if tracked is not None:
            for cid in (tracked.ref.id, *tracked.former):
                self._ids.pop(cid, None)
            self._wakes.pop(slot, None)
            self._changed.add(slot)
        return tracked

    def busy(self, container_id: ContainerId) -> bool:
        slot = self._ids.get(container_id)
        tracked = self._slots.get(slot) if slot is not None else None
        return tracked is not None and tracked.history.busy

    def by_container_id(self) -> dict[ContainerId, Tracked]:
        return {t.ref.id: t for t in self._slots.values()}

    def idle(self, slots: Iterable[Slot]) -> list[Slot]:
        """Those of ``slots`` still tracked with no action in flight."""
        return [s for s in slots if s in self._slots and not self._slots[s].history.busy]

    def due(self, now: datetime) -> list[Slot]:
        """The slots whose next look is due; their wake time is cleared."""
        due = [s for s, at in self._wakes.items() if at <= now]
        for slot in due:
            self.update(slot, wake_at=None)
        return due

    def wake_times(self) -> list[datetime]:
        return list(self._wakes.values())

    # --- state changes ---------------------------------------------------------------------

    def observed(
        self, slot: Slot, history: History, snapshot: ContainerSnapshot, *, cleared: bool
    ) -> Tracked:
        """A snapshot was folded into the history; ``cleared``: a person resolved the
        escalated incident, so healing starts afresh."""
        tracked = self._slots[slot]
        healing = tracked.healing
        if history.healthy_since is not None:
            now = snapshot.observed_at
            healing = after_healthy(healing, healthy_since=history.healthy_since, now=now)
        used = tracked.used
        if cleared:
            healing, used = HealingState(), ()
        state, health = str(snapshot.state), str(snapshot.health)
        if (history, healing, used, state, health) == (
            tracked.history,
            tracked.healing,
            tracked.used,
            tracked.state,
            tracked.health,
        ):
            return tracked  # a healthy container seen again: nothing to replace
        return self.put(
            slot,
            replace(
                tracked, history=history, healing=healing, used=used, state=state, health=health
            ),
        )

    def recovered(self, slot: Slot) -> Tracked:
        """The slot's trouble is over: a recovery from escalation starts a fresh streak
        (the old one would escalate the next failure before a single attempt)."""
        tracked = self._slots[slot]
        if tracked.healing.circuit_open:
            tracked = replace(tracked, healing=HealingState(), used=())
        return self.put(slot, replace(tracked, said=""))

    def judged(self, slot: Slot, *, troubled: bool, healthy: bool, at: datetime) -> Tracked:
        """What the last attempt of the streak did: whether medic saw the container well
        after it (``healthy`` and not ``troubled``) and, once it is ``troubled`` again,
        how long that lasted (a relapse, for the words of an escalation)."""
        tracked = self._slots[slot]
        healing = tracked.healing
        if not healing.attempts:
            return tracked
        last = max(healing.attempts)
        if any(r.attempt == last for r in healing.relapses):
            return tracked  # what follows a relapse is no longer that attempt's doing
        if tracked.well_since is None:
            if healthy and not troubled:
                return self.put(slot, replace(tracked, well_since=at))
            return tracked
        if not troubled:
            return tracked
        lasted = max(0.0, (at - tracked.well_since).total_seconds())
        healing = after_relapse(healing, attempt=last, lasted=lasted)
        return self.put(slot, replace(tracked, healing=healing, well_since=None))

    def plan_started(self, slot: Slot, plan: Plan, *, at: datetime) -> Tracked:
        tracked = self._slots[slot]
        history = hist.action_started(
            tracked.history,
            at=at,
            stops=any(actions.stops_container(a) for a in plan.actions),
            leaves_stopped=actions.leaves_stopped(plan),
        )
        return self.put(
            slot, replace(tracked, history=history, said="", wake_at=None, well_since=None)
        )

    def plan_finished(self, slot: Slot, plan: Plan, *, started_at: datetime, ok: bool) -> Tracked:
        tracked = self._slots[slot]
        history = hist.action_finished(tracked.history, ok=ok)
        healing = after_attempt(tracked.healing, at=started_at, playbook=plan.playbook)
        used = (*[u for u in tracked.used if u != plan.playbook.name], plan.playbook.name)
        return self.put(
            slot,
            replace(tracked, history=history, healing=healing, used=used, well_since=None),
        )

    def event(
        self,
        ref: ContainerRef,
        *,
        kind: str,
        at: datetime,
        detail: str,
        signal: str | None,
        grace: float,
        window: float,
    ) -> tuple[Slot, Reaction]:
        """Fold one Docker event into its slot's history (agent/history.on_event).

        STOPPED_BY_PERSON is returned only when the container was not already taken as
        stopped; nothing but that is asked while an action is in flight. A Swarm task
        takes over its slot by starting (Swarm's new task in place of the old one);
        the late events of an older task of the slot are not its present.
        """
        orchestrated = ref.swarm is not None
        slot, tracked = self.track(ref, takes_over=not orchestrated or kind == "start")
        if tracked is None:
            return slot, Reaction.NOTHING  # a container medic replaced, or its replacement
        history, reaction = hist.on_event(
            tracked.history,
            kind=kind,
            at=at,
            detail=detail,
            signal=signal,
            grace=grace,
            window=window,
            orchestrated=orchestrated,
        )
        stopped = reaction is Reaction.STOPPED_BY_PERSON
        self.put(
            slot, replace(tracked, history=history, wake_at=None if stopped else tracked.wake_at)
        )
        if stopped:
            return slot, Reaction.NOTHING if tracked.history.stopped_by_person else reaction
        return slot, Reaction.NOTHING if history.busy else reaction

    def touched(self, ref: ContainerRef, *, ended: bool, at: datetime) -> None:
        """An action stops or replaces this container (a dependent, or the one a recreate
        replaces), or is done with it: its window opens before the engine's events."""
        slot = self.of(ref)
        tracked = self._slots.get(slot) or self.put(slot, Tracked(History(ref)))
        if ended:
            history = hist.touch_ended(tracked.history)
        elif not tracked.history.busy:
            history = hist.action_started(tracked.history, at=at, stops=True, by_plan=False)
        else:
            return
        self.put(slot, replace(tracked, history=history))

    def engine_lost(self, last_event_at: datetime, *, window: float) -> list[ContainerRef]:
        """The events stream dropped: stops just before it were the engine shutting down."""
        reverted = []
        for slot, tracked in list(self._slots.items()):
            history = hist.engine_stopped(
                tracked.history, last_event_at=last_event_at, window=window
            )
            if history is not tracked.history:
                self.put(slot, replace(tracked, history=history))
                reverted.append(tracked.ref)
        return reverted

    def stand_by(self) -> None:
        """Another medic leads: forget backoff, streaks, circuits and wake times (they
        come back from the store when this one leads again); keep what was observed."""
        for slot, tracked in list(self._slots.items()):
            self.put(
                slot,
                replace(
                    tracked,
                    healing=HealingState(),
                    used=(),
                    wake_at=None,
                    said="",
                    well_since=None,
                ),
            )

    def seed(self, incidents: Iterable[Incident]) -> None:
        """Backoff and open circuits from the active incidents a previous medic left."""
        for incident in incidents:
            slot = Slot.of(incident.container)
            tracked = self._slots.get(slot) or Tracked(History(incident.container))
            starts = {a.started_at for a in incident.attempts} | set(tracked.healing.attempts)
            healing = replace(
                tracked.healing,
                attempts=tuple(sorted(starts)),
                circuit_open=tracked.healing.circuit_open
                or incident.status is IncidentStatus.ESCALATED,
            )
            used = (*tracked.used, *(a.playbook for a in incident.attempts))
            self.put(slot, replace(tracked, healing=healing, used=tuple(dict.fromkeys(used))))

    def changed(self) -> set[Slot]:
        """The slots put or popped since the last call (what /status must rebuild)."""
        changed, self._changed = self._changed, set()
        return changed

    def view(self, slot: Slot, held: tuple[str, Signal] | None) -> ContainerView | None:
        """What /status shows of a slot (None once it is gone); ``held``: its active
        incident and the signal it goes by."""
        t = self._slots.get(slot)
        if t is None:
            return None
        return ContainerView(
            container=t.ref.name,
            service=t.ref.service,
            state=t.state,
            health=t.health,
            incidents=((held[0], str(held[1])),) if held else (),
            attempts_in_streak=len(t.healing.attempts),
            next_look_at=t.wake_at,
            circuit_open=t.healing.circuit_open,
            stopped_by_person=t.history.stopped_by_person,
            action_in_flight=t.history.busy,
        )
