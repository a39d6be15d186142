"""What medic knows of one container slot beyond a snapshot. Pure and frozen.

A snapshot says what a container looks like now; it cannot say how often it died
lately, whether a person stopped it, or whether the kill it shows was medic's own
doing. Docker's events and inspect output say so, and each is folded into a new
``History`` by one function here (``on_event``, ``on_inspect``, ``with_past_events``,
``action_started``, ``action_finished``, ``engine_stopped``), so every rule can be
tested without threads, a clock or an engine.

Two clocks, never mixed. Times that come from the engine (event times, a
container's ``StartedAt``/``FinishedAt``, health-check times) are compared only
with each other: deaths, a person's stop, and medic's own-action windows
(``OwnAction.after``/``until``). The host clock (``observed_at``, an action's
``started_at``) is used only for what medic itself schedules: settle periods,
backoff and wake times. A remote ``DOCKER_HOST`` or Docker Desktop whose clock is
off by minutes therefore cannot turn medic's own restart into a crash.

The history belongs to the container *slot* (compose project, service and the
container's name, which a recreate keeps), not to one container id: when medic
recreates a container the new one inherits the slot's history the moment the
action starts, so a recreate loop still counts as one streak.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from agent.model import ContainerRef, ContainerSnapshot, State, task_slot_name

#: Two deaths closer than this are the same death seen twice (event and inspect).
SAME_DEATH = timedelta(seconds=1)

#: ``docker kill -s HUP`` and friends ask a process to reload, not to stop: such a kill
#: does not make the next death a person's doing. Docker reports the signal's number.
RELOAD_SIGNALS = frozenset({"1", "10", "12", "28", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH"})

#: How many of medic's past actions a history keeps: enough for late events of the
#: last few actions, and a bound for a daemon that runs for months.
KEPT_ACTIONS = 8

#: How many deaths a history keeps at most (only those within the crash-loop window
#: of the newest one count anyway).
KEPT_DEATHS = 32


@dataclass(frozen=True)
class Slot:
    """Where a container sits in its stack; a recreated container takes the same slot.

    Replicas of one service (``web-1``, ``web-2``) are different slots: they have
    different names, and a recreate keeps the name. A Swarm task's slot is its
    service's slot (``shop_web.1``, or ``shop_web.<node id>`` for a global service):
    the task Swarm starts in place of a failed one takes the same slot, though its
    container has a new name.
    """

    project: str | None
    service: str | None
    name: str

    @classmethod
    def of(cls, ref: ContainerRef) -> Slot:
        if ref.swarm is not None:
            return cls(ref.project, ref.service, ref.swarm.slot_name)
        # A task container read back from the store has no labels, only its name.
        return cls(ref.project, ref.service, task_slot_name(ref.name) or ref.name)


@dataclass(frozen=True)
class OwnAction:
    """One plan medic carried out (or is carrying out) on this slot.

    ``after`` and ``until`` are engine times: the newest engine time medic knew of
    before the action started, and when the action's effects on the container were
    over (its next start, or its stop when the action left it stopped). The end is
    learned from the engine, never from the host's clock: from the container's next
    ``start`` (or ``stop``) event, or from the next inspect (``StartedAt`` or
    ``FinishedAt``). Until then a finished window stays open.
    ``started_at`` is the host's time, for backoff and log lines only.
    """

    started_at: datetime
    after: datetime | None
    stops: bool
    leaves_stopped: bool = False
    finished: bool = False
    until: datetime | None = None
    by_plan: bool = True
    """False for a container an action touched on the way (a dependent, say)."""

    def covers(self, at: datetime) -> bool:
        """Whether an engine time falls in this action's window: medic's own doing."""
        if not self.stops:
            return False
        if self.after is not None and at <= self.after:
            return False
        if not self.finished or self.until is None:
            return True
        # A stop's die and stop events are stamped just after the FinishedAt they cause.
        margin = SAME_DEATH if self.leaves_stopped else timedelta(0)
        return at <= self.until + margin


class Reaction(StrEnum):
    """What an event asks of the supervisor."""

    NOTHING = "nothing"
    CHECK = "check"
    """Look at the container now (inspect and check), not at the next poll."""
    CHECK_IF_TROUBLED = "check_if_troubled"
    """Look now only if it has an open incident (recovery starts its settle period)."""
    STOPPED_BY_PERSON = "stopped_by_person"
    GONE = "gone"


@dataclass(frozen=True)
class History:
    """What medic learned of one container slot from events and inspect output."""

    container: ContainerRef
    deaths: tuple[datetime, ...] = ()
    kill_at: datetime | None = None
    stopped_by_person: bool = False
    stopped_at: datetime | None = None
    stopped_by_medic: bool = False
    actions: tuple[OwnAction, ...] = ()
    engine_seen: datetime | None = None
    healthy_since: datetime | None = None

    @property
    def slot(self) -> Slot:
        return Slot.of(self.container)

    @property
    def busy(self) -> bool:
        """Whether one of medic's actions on this slot is in flight."""
        return any(not a.finished for a in self.actions)

    @property
    def acted_until(self) -> datetime | None:
        """The engine time by which medic's finished actions were over, as far as known.

        An action that neither stops nor starts the container (exec) has no engine
        time of its own: the newest engine time known before it stands in, so a
        health status from a check before it is still taken for stale.
        """
        ends = [a.until or a.after for a in self.actions if a.finished]
        known = [t for t in ends if t is not None]
        return max(known) if known else None

    @property
    def open_ended(self) -> bool:
        """Whether a finished action still waits for the engine to say when it ended."""
        return any(a.finished and a.until is None and a.stops for a in self.actions)

    def by_own_action(self, at: datetime) -> bool:
        """Whether the engine time ``at`` falls in one of medic's own-action windows."""
        return any(a.covers(at) for a in self.actions)

    def known_death(self, at: datetime) -> bool:
        return any(abs(at - d) <= SAME_DEATH for d in self.deaths)


def _seen(history: History, *times: datetime | None) -> datetime | None:
    known = [t for t in (history.engine_seen, *times) if t is not None]
    return max(known) if known else None


def stops(kind: str, signal: str | None) -> bool:
    """Whether an event is a stop or kill that ends the process (not a reload signal)."""
    if kind == "stop":
        return True
    return kind == "kill" and signal not in RELOAD_SIGNALS


def note_death(history: History, at: datetime, *, window: float) -> History:
    """Count a death, keeping only those within ``window`` seconds of the newest."""
    if history.known_death(at):
        return history
    deaths = sorted((*history.deaths, at))
    horizon = deaths[-1] - timedelta(seconds=window)
    kept = tuple(d for d in deaths if d >= horizon)[-KEPT_DEATHS:]
    return replace(history, deaths=kept)


def stopped_by_person(history: History, at: datetime) -> History:
    return replace(history, stopped_by_person=True, stopped_at=at, stopped_by_medic=False)


def on_event(
    history: History,
    *,
    kind: str,
    at: datetime,
    detail: str = "",
    signal: str | None = None,
    grace: float,
    window: float,
    orchestrated: bool = False,
) -> tuple[History, Reaction]:
    """Fold one Docker event (engine time ``at``) into the history.

    ``grace``: a death this many seconds after a person's kill is that person's doing.
    ``window``: the crash-loop window, for pruning deaths. ``orchestrated``: the
    container is a Swarm task, whose stops and kills are Swarm's (or a person's that
    Swarm takes for a failure): never a person's stop for medic to respect, so its
    deaths count, and the review against its service says what to do.
    """
    if kind in ("start", "stop"):
        history = _ended_by_event(history, kind, at)
    ours = history.by_own_action(at)
    history = replace(history, engine_seen=_seen(history, at))
    if kind == "kill" and not stops(kind, signal):
        return history, Reaction.NOTHING
    if kind in ("kill", "stop"):
        if ours or orchestrated:
            return history, Reaction.NOTHING
        history = replace(history, kill_at=at)
        if kind == "stop":
            return stopped_by_person(history, at), Reaction.STOPPED_BY_PERSON
        return history, Reaction.NOTHING
    if kind == "die":
        if ours:
            return history, Reaction.NOTHING
        if history.kill_at is not None and at - history.kill_at <= timedelta(seconds=grace):
            return stopped_by_person(history, history.kill_at), Reaction.STOPPED_BY_PERSON
        return note_death(history, at, window=window), Reaction.CHECK
    if kind == "start":
        history = replace(
            history, stopped_by_person=False, stopped_by_medic=False, kill_at=None, stopped_at=None
        )
        return history, (Reaction.NOTHING if ours else Reaction.CHECK_IF_TROUBLED)
    if kind == "destroy":
        return history, (Reaction.NOTHING if ours else Reaction.GONE)
    if kind == "oom" or (kind == "health_status" and detail == "unhealthy"):
        return history, Reaction.CHECK
    if kind == "health_status" and detail == "healthy":
        return history, Reaction.CHECK_IF_TROUBLED
    return history, Reaction.NOTHING


def _ended_by_event(history: History, kind: str, at: datetime) -> History:
    """The container's next start ends medic's window (its stop, for a stop action, and
    a later start of a container medic left stopped ends it before that start)."""

    def end(a: OwnAction) -> OwnAction:
        if a.until is not None or not a.stops or (a.after is not None and at <= a.after):
            return a
        if (kind == "stop") == a.leaves_stopped:
            return replace(a, until=at)
        if kind == "start" and a.leaves_stopped and a.finished:
            # Started again after medic's stop (by a person): that start is not medic's.
            return replace(a, until=history.engine_seen or at - timedelta(microseconds=1))
        return a

    return replace(history, actions=tuple(end(a) for a in history.actions))


def _ended_by_inspect(history: History, snapshot: ContainerSnapshot) -> History:
    """An inspect after medic's action says when the engine was done with it."""

    def end(a: OwnAction) -> OwnAction:
        if not a.finished or a.until is not None or not a.stops:
            return a
        after = [
            t
            for t in (snapshot.started_at, snapshot.finished_at)
            if t is not None and (a.after is None or t > a.after)
        ]
        if not after:
            return replace(a, until=a.after or snapshot.started_at or snapshot.finished_at)
        started = snapshot.started_at
        if not a.leaves_stopped and started is not None and (a.after is None or started > a.after):
            # Its start after the action ends the window: a death after that is its own.
            return replace(a, until=started)
        return replace(a, until=max(after))

    return replace(history, actions=tuple(end(a) for a in history.actions))


def unexplained_death(history: History, snapshot: ContainerSnapshot) -> datetime | None:
    """The death an inspect shows that no event explained, if any.

    The events stream may have been down, or medic not running: such a death is
    either a crash or a person's stop, and only the engine's event history can say
    which (``with_past_events``).
    """
    if snapshot.state not in (State.EXITED, State.DEAD, State.RESTARTING):
        return None
    died = snapshot.finished_at
    if died is None or history.known_death(died) or history.by_own_action(died):
        return None
    if history.stopped_by_person or history.stopped_by_medic:
        return None
    return died


def on_inspect(history: History, snapshot: ContainerSnapshot) -> History:
    """Fold what one snapshot shows into the history (``observed_at`` is host time)."""
    if snapshot.detailed and history.open_ended:
        history = _ended_by_inspect(history, snapshot)
    seen = _seen(history, snapshot.started_at, snapshot.finished_at, snapshot.health_checked_at)
    if history.container != snapshot.ref or history.engine_seen != seen:
        history = replace(history, container=snapshot.ref, engine_seen=seen)
    if snapshot.state is State.RUNNING and (history.stopped_by_person or history.stopped_by_medic):
        history = replace(
            history, stopped_by_person=False, stopped_by_medic=False, kill_at=None, stopped_at=None
        )
    if snapshot.is_healthy:
        if history.healthy_since is None:
            history = replace(history, healthy_since=snapshot.observed_at)
    elif history.healthy_since is not None:
        history = replace(history, healthy_since=None)
    return history


def with_past_events(
    history: History,
    died: datetime,
    events: tuple[tuple[str, datetime, str | None], ...],
    *,
    window: float,
) -> tuple[History, bool]:
    """Explain a death from the engine's recorded events ``(kind, at, signal)``.

    Returns the new history and whether a person stopped the container: a stop or
    kill before the death that was not medic's own. Otherwise the death counts.

    The engine keeps only its last 256 events (of every container together), and
    none across its own restarts, so the events may no longer reach back to the
    death (``reaches_death``). Then no stop is found and the death counts as a
    crash: medic errs on the side of healing, rather than leave a crashed container
    down because its history is gone.
    """
    for kind, at, signal in events:
        if stops(kind, signal) and not history.by_own_action(at):
            return stopped_by_person(replace(history, kill_at=at), at), True
    return note_death(history, died, window=window), False


def reaches_death(events: tuple[tuple[str, datetime, str | None], ...], died: datetime) -> bool:
    """Whether the engine's recorded events still hold the ``die`` of the death at
    ``died``. When they do, the ``stop`` a ``docker stop`` records just after it is
    there too; when they do not, the engine has dropped that part of its history."""
    return any(kind == "die" and abs(at - died) <= SAME_DEATH for kind, at, _ in events)


def action_started(
    history: History,
    *,
    at: datetime,
    stops: bool,
    leaves_stopped: bool = False,
    by_plan: bool = True,
) -> History:
    """medic starts a plan (host time ``at``), or an action of a plan on another
    container touches this one (``by_plan`` False): the container is not judged until
    it ends, and what it does to the container falls in this window."""
    action = OwnAction(
        started_at=at,
        after=history.engine_seen,
        stops=stops,
        leaves_stopped=leaves_stopped,
        by_plan=by_plan,
    )
    kept = history.actions[-(KEPT_ACTIONS - 1) :]
    return replace(history, actions=(*kept, action), healthy_since=None)


def action_finished(history: History, *, ok: bool) -> History:
    """medic's plan ended. Its window stays open until the engine says when the action
    was over (``_ended_by_event``, ``_ended_by_inspect``), unless it already did."""
    actions = tuple(a if a.finished else replace(a, finished=True) for a in history.actions)
    left_stopped = ok and any(
        a.leaves_stopped for a in history.actions if not a.finished and a.stops
    )
    return replace(
        history, actions=actions, stopped_by_medic=history.stopped_by_medic or left_stopped
    )


def touch_ended(history: History) -> History:
    """An action of another container's plan is done with this one (a dependent)."""
    actions = tuple(
        a if a.finished or a.by_plan else replace(a, finished=True) for a in history.actions
    )
    return replace(history, actions=actions)


def moved_to(history: History, container: ContainerRef) -> History:
    """medic recreated the slot's container: the new one carries the slot's history."""
    return replace(
        history,
        container=container,
        stopped_by_person=False,
        stopped_by_medic=False,
        kill_at=None,
        stopped_at=None,
        healthy_since=None,
    )


def engine_stopped(history: History, *, last_event_at: datetime, window: float) -> History:
    """The engine went away: a stop seen shortly before was its shutdown, not a person.

    When the Docker engine shuts down it sends SIGTERM to every container, and the
    events look exactly like ``docker stop``. A person's stop within ``window``
    seconds (engine time) of the stream's last event is taken back, so a container
    without a restart policy is started again once the engine is back.
    """
    if not history.stopped_by_person or history.stopped_at is None:
        return history
    if last_event_at - history.stopped_at > timedelta(seconds=window):
        return history
    return replace(history, stopped_by_person=False, kill_at=None, stopped_at=None)
