"""The /status and /healthz documents, built by pure functions from frozen views,
and the report of one cycle that ``medic once`` prints.

After every change (a poll, an event, a finished action, a person resolving an
incident) the decision thread builds a ``ContainerView`` of each container that
changed, and ``StatusBoard`` swaps the finished tuple in whole; readers on other
threads (the HTTP server) only ever see a complete one, and never read the decision
thread's state.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Generic, TypeVar

from agent.leadership import Standing
from agent.model import ActionResult, ContainerRef, Decision, Finding, Plan

K = TypeVar("K", bound=Hashable)


@dataclass
class CycleReport:
    """What one poll cycle saw, decided and did; ``medic once`` prints it."""

    started_at: datetime
    containers: int = 0
    findings: list[Finding] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    results: list[tuple[ContainerRef, Plan, list[ActionResult]]] = field(default_factory=list)
    error: str | None = None

    def add(self, findings: Iterable[Finding], decision: Decision | None) -> None:
        self.findings.extend(findings)
        if decision is not None:
            self.decisions.append(decision)


@dataclass(frozen=True)
class ContainerView:
    """One supervised container as ``medic status`` shows it."""

    container: str
    service: str | None
    state: str
    health: str
    incidents: tuple[tuple[str, str], ...]
    """(incident id, signal) of the container's active incident, if any."""
    attempts_in_streak: int
    next_look_at: datetime | None
    circuit_open: bool
    stopped_by_person: bool
    action_in_flight: bool


def container_entry(v: ContainerView) -> dict[str, object]:
    """One container as /status serves it under ``containers``."""
    return {
        "container": v.container,
        "service": v.service,
        "state": v.state,
        "health": v.health,
        "incidents": [{"id": iid, "signal": signal} for iid, signal in v.incidents],
        "attempts_in_streak": v.attempts_in_streak,
        "next_look_at": v.next_look_at.isoformat() if v.next_look_at else None,
        "circuit": "open" if v.circuit_open else "closed",
        "stopped_by_person": v.stopped_by_person,
        "action_in_flight": v.action_in_flight,
    }


class StatusBoard(Generic[K]):
    """Every container of /status, by name, rebuilt only where a slot changed.

    A change costs the slots it touched, not every container: rebuilding the whole
    list after each event made a burst of events on a large host cost events times
    containers (a project of 1,000 containers restarting sends some 5,000 events).
    """

    def __init__(self) -> None:
        self._entries: dict[K, dict[str, object]] = {}
        self.document: tuple[dict[str, object], ...] = ()

    def update(self, views: Mapping[K, ContainerView | None]) -> tuple[dict[str, object], ...]:
        """Replace the entries of the slots in ``views`` (None: the slot is gone)."""
        if not views:
            return self.document
        for key, view in views.items():
            if view is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = container_entry(view)
        self.document = tuple(sorted(self._entries.values(), key=itemgetter("container")))
        return self.document


@dataclass(frozen=True)
class LoopView:
    """What /healthz needs of the loop."""

    started_at: datetime
    last_cycle_at: datetime | None
    interval: float
    events_connected: bool
    actions_in_flight: int


def health_document(view: LoopView, *, now: datetime) -> tuple[bool, dict[str, object]]:
    """Alive when the last poll finished within three intervals (or medic just started)."""
    limit = timedelta(seconds=3 * view.interval)
    alive = (now - (view.last_cycle_at or view.started_at)) <= limit
    return alive, {
        "status": "ok" if alive else "stalled",
        "last_cycle_at": view.last_cycle_at.isoformat() if view.last_cycle_at else None,
        "interval_seconds": view.interval,
        "events_stream": "connected" if view.events_connected else "disconnected",
        "actions_in_flight": view.actions_in_flight,
    }


def leadership_document(
    standing: Standing, *, scope: str, holder: str, elected: bool
) -> dict[str, object]:
    """This medic's role as /status, /readyz and ``medic status`` show it: ``leader`` or
    ``standby`` and since when; who holds the lease and in which term; ``election``
    ``lease`` when a lease in Postgres decides, ``none`` when this medic is the only one."""
    return {
        "scope": scope,
        "role": str(standing.role),
        "since": standing.since.isoformat(),
        "holder": holder,
        "leader": standing.leader,
        "term": standing.term.token if standing.term is not None else None,
        "election": "lease" if elected else "none",
    }
