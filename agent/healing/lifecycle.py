"""When an incident is over, and when medic should look again. Pure: no I/O, no clock.

Recovery is judged per signal, because each signal has its own way of being well
again (docs/incidents.md, "Lifecycle"): its entry in ``agent.model.SIGNAL_KINDS``
names its ``Recovery`` (the container runs and passes its health check; a probe
passed and none failed since; the log rule's window went by without a matching
line). A signal without an entry is a KeyError, never a silent default.

An incident (one per container and failure episode, whatever signals it showed)
resolves once every signal it showed has been clear for the settle period. All
times here are the host's: the settle period and wake times are medic's own
schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.model import SIGNAL_KINDS, ContainerSnapshot, Health, Recovery, Signal, State


@dataclass(frozen=True)
class Clear:
    """Since when each kind of signal has been clear on one container (host times)."""

    healthy_since: datetime | None = None
    """Running and passing its health check (or having none) since then."""
    probe_ok_since: datetime | None = None
    """Every probe passed since then; None while the last probe failed or none ran."""
    log_quiet_at: datetime | None = None
    """The log window passes without a match at this time; None while lines match."""


def clear_since(signals: Iterable[Signal], clear: Clear) -> datetime | None:
    """Since when every one of ``signals`` has been clear, or None if one is not."""
    times: list[datetime] = []
    for signal in set(signals):
        since = _SINCE[SIGNAL_KINDS[signal].recovery](clear)
        if since is None:
            return None
        times.append(since)
    if not times:
        return clear.healthy_since
    # A log incident needs a healthy container too: a stopped one logs nothing at all.
    if clear.healthy_since is None:
        return None
    return max([*times, clear.healthy_since])


#: When each way of being well again last began (the signal's ``Recovery``).
_SINCE: Mapping[Recovery, Callable[[Clear], datetime | None]] = {
    Recovery.HEALTHY: lambda clear: clear.healthy_since,
    Recovery.PROBE_PASSES: lambda clear: clear.probe_ok_since,
    Recovery.LOG_QUIET: lambda clear: clear.log_quiet_at,
}


@dataclass(frozen=True)
class Settle:
    """Whether an incident resolves now, or when to look again to see."""

    resolved: bool
    at: datetime | None
    """When the settle period is over (None while some signal is not clear)."""


def settle(signals: Iterable[Signal], clear: Clear, *, now: datetime, period: float) -> Settle:
    """Resolve when every signal has been clear for ``period`` seconds."""
    since = clear_since(signals, clear)
    if since is None:
        return Settle(resolved=False, at=None)
    at = since + timedelta(seconds=period)
    return Settle(resolved=now >= at, at=at)


def cleared_by_person(incident_id: str | None, active_ids: Iterable[str]) -> bool:
    """Whether a person resolved the incident medic holds (it is no longer active)."""
    return incident_id is not None and incident_id not in set(active_ids)


def health_recheck_at(
    snapshot: ContainerSnapshot, *, stale: bool, now: datetime
) -> datetime | None:
    """When to look again at a container whose health status predates medic's action.

    Docker keeps the old status until the check runs again; look just after its next
    run, counted on the host clock from now (never from the engine's check time).
    """
    if not stale or snapshot.state is not State.RUNNING or snapshot.health is Health.NONE:
        return None
    interval = snapshot.health_interval or 30.0
    return now + timedelta(seconds=interval + 0.5)


def earliest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def wake_times(wakes: Mapping[object, datetime | None]) -> list[datetime]:
    """Every scheduled look, for the loop's next timeout."""
    return [t for t in wakes.values() if t is not None]
