"""Which medic of a scope acts: the lease's timing, and what each answer means. Pure.

One medic of a scope leads: it records findings, acts and escalates. The others stand
by: they observe and serve their pages, and take over when the leader stops renewing
its lease (agent/store/lease.py keeps the lease; agent/leader.py runs the claims on a
thread of their own; docs/ha.md explains the choice and the numbers).

Two clocks decide, and they are never compared with each other:

* the database's, inside the claim statement, decides when a lease has run out and
  another medic may take it;
* this medic's own steady clock (``agent.clock.steady``) decides whether it may still
  act: the time since it *sent* its last successful claim, against ``LeaseTiming.acting``.
  The database stamps the lease after the claim was sent, so the local view runs out
  first, by the margin at least, whatever the two clocks read.

Every function here takes the time as an argument: ``mono`` is the steady clock's
seconds, ``now`` the host's time, used only for the ``since`` shown to people.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from agent.store.lease import Claim, Term

#: The lease lasts this many poll intervals (of database time) after each claim.
LEASE_INTERVALS = 1.5

#: Claims (a leader's renewals, a standby's tries) come this many times per interval.
CLAIMS_PER_INTERVAL = 4

#: A leader stops acting this many intervals before its lease would run out.
MARGIN_INTERVALS = 0.25


class Role(StrEnum):
    LEADER = "leader"
    STANDBY = "standby"


@dataclass(frozen=True)
class LeaseTiming:
    """How long a lease lasts, how often it is claimed, and how much earlier than its
    expiry its holder stops acting (all in seconds)."""

    duration: float
    """A claim holds the lease this long, in the database's time."""
    every: float
    """A leader renews, and a standby tries to take the lease, this often."""
    margin: float
    """A leader stops acting this long before its lease runs out."""

    def __post_init__(self) -> None:
        if min(self.duration, self.every, self.margin) <= 0:
            raise ValueError("a lease's duration, claim period and margin must be positive")
        if self.every >= self.acting:
            raise ValueError(
                f"a leader must renew (every {self.every:g} s) more often than it may act "
                f"on one renewal ({self.acting:g} s)"
            )

    @classmethod
    def for_interval(cls, interval: float) -> LeaseTiming:
        """The timing for a poll interval of ``interval`` seconds (MEDIC_INTERVAL): a
        lease of 1.5 intervals claimed four times an interval, acted on for 1.25.

        A standby takes over at most ``takeover`` = 1.75 intervals after the leader's
        last renewal, which leaves a quarter of an interval within the promised two
        for the claim's round trip and the new leader's first poll."""
        return cls(
            duration=LEASE_INTERVALS * interval,
            every=interval / CLAIMS_PER_INTERVAL,
            margin=MARGIN_INTERVALS * interval,
        )

    @property
    def acting(self) -> float:
        """Seconds after sending a successful claim that its holder may act."""
        return self.duration - self.margin

    @property
    def takeover(self) -> float:
        """The longest a scope is without a leader after the leader's last renewal (it
        was killed just after it): the lease runs out, then a standby's next try."""
        return self.duration + self.every


@dataclass(frozen=True)
class Standing:
    """Where this medic stands: its role, since when, and the term it leads in."""

    role: Role
    since: datetime
    """When it took this role: the lease's ``acquired_at`` (the database's time) for a
    leader, the host's time it stepped down or started for a standby."""
    term: Term | None = None
    """The term it leads in; None while it stands by."""
    sent: float | None = None
    """The steady clock's reading when its last successful claim was sent."""
    leader: str | None = None
    """Who holds the lease as far as this medic knows (itself, when it leads)."""

    @property
    def leading(self) -> bool:
        return self.role is Role.LEADER


def standing_by(since: datetime) -> Standing:
    """A medic that has not claimed the lease yet."""
    return Standing(Role.STANDBY, since)


@dataclass(frozen=True)
class Change:
    """A change of role, with the reason people read."""

    role: Role
    why: str
    term: Term | None = None
    before: str | None = None
    """Who held the lease before this medic took it, when known."""


def holds(standing: Standing, *, mono: float, timing: LeaseTiming) -> bool:
    """Whether this medic may act now: it leads, and its last successful claim was sent
    less than ``timing.acting`` seconds ago."""
    return standing.leading and standing.sent is not None and mono - standing.sent < timing.acting


def lapse(
    standing: Standing, *, mono: float, now: datetime, timing: LeaseTiming, failure: str | None
) -> tuple[Standing, Change | None]:
    """A leader whose lease is too old to act on steps down (``failure``: why its last
    claims failed, when they did)."""
    if not standing.leading or holds(standing, mono=mono, timing=timing):
        return standing, None
    assert standing.sent is not None
    ago = mono - standing.sent
    cause = (
        f"Postgres did not answer its renewals: {failure}"
        if failure
        else "this process was paused or starved of CPU, so it did not renew in time"
    )
    why = (
        f"its lease was last renewed {ago:.1f} s ago, and it may act for only "
        f"{timing.acting:g} s after a renewal ({cause})"
    )
    return Standing(Role.STANDBY, now), Change(Role.STANDBY, why)


def after_claim(
    standing: Standing,
    claim: Claim,
    *,
    me: str,
    sent: float,
    mono: float,
    now: datetime,
    timing: LeaseTiming,
) -> tuple[Standing, Change | None]:
    """What the database's answer to a claim sent at ``sent`` means, read at ``mono``.

    An answer that arrives too late to act on (the process was paused while the claim
    was out) grants nothing: the lease it renewed may have run out meanwhile.
    """
    if claim.holder != me:
        taken = replace(standing, leader=claim.holder) if not standing.leading else None
        if taken is not None:
            return taken, None
        why = f"{claim.holder} holds its lease now (term {claim.token})"
        return Standing(Role.STANDBY, now, leader=claim.holder), Change(Role.STANDBY, why)
    if mono - sent >= timing.acting:
        return standing, None
    term = claim.term
    if standing.leading and standing.term == term:
        return replace(standing, sent=max(sent, standing.sent or sent), leader=me), None
    before = standing.leader if standing.leader != me else None
    led = Standing(Role.LEADER, claim.acquired_at, term=term, sent=sent, leader=me)
    if standing.leading:
        # Its own lease ran out and it took it again: a new term, which refuses what
        # the old one still had in flight. Said as stepping down and leading anew.
        return led, Change(Role.LEADER, f"its lease term {claim.token - 1} ran out", term)
    return led, Change(Role.LEADER, "the lease was free", term, before=before)


def fenced(standing: Standing, *, now: datetime, why: str) -> tuple[Standing, Change | None]:
    """Postgres refused a write of this medic's term: it steps down."""
    if not standing.leading:
        return standing, None
    return Standing(Role.STANDBY, now), Change(Role.STANDBY, why)
