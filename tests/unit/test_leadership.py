"""The lease's timing and what each answer means, on fake clocks: who may act, and when.

The steady clock (``mono``) and the database's clock are both driven by the test, so
every timing rule is checked at its edge without sleeping. ``FakeLeases`` judges
expiry by the fake database clock, as Postgres judges it by ``now()``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fakes import T0, FakeClock
from helpers import logged
from hypothesis import given
from hypothesis import strategies as st
from store_fakes import FakeLeases

from agent.errors import FencedOut
from agent.leader import LeaseLeader, Sole
from agent.leadership import (
    LeaseTiming,
    Role,
    Standing,
    after_claim,
    holds,
    lapse,
    standing_by,
)
from agent.store.lease import Claim, Term

SCOPE = "project=shop@ENGINE"
TIMING = LeaseTiming.for_interval(2.0)


def claim(holder: str, token: int = 1, *, at: float = 0.0, seconds: float = 3.0) -> Claim:
    return Claim(
        SCOPE,
        holder,
        token,
        T0 + timedelta(seconds=at),
        T0 + timedelta(seconds=at + seconds),
    )


# --- the arithmetic -------------------------------------------------------------------------


@given(st.floats(min_value=0.05, max_value=3600.0, allow_nan=False))
def test_a_standby_takes_over_within_two_intervals_and_never_acts_alongside_the_leader(
    interval: float,
) -> None:
    timing = LeaseTiming.for_interval(interval)
    # The scope is without a leader for at most the lease plus one try after the
    # leader's last renewal, and a quarter interval is left for the new leader's poll.
    assert timing.takeover == pytest.approx(1.75 * interval)
    assert timing.takeover <= 2 * interval - interval / 4 + 1e-9
    # The leader stops acting a margin before another medic may take the lease.
    assert timing.acting < timing.duration
    assert timing.duration - timing.acting == pytest.approx(interval / 4)
    # It renews several times within what it may act on one renewal: one late renewal
    # (a slow round trip) does not cost the lease.
    assert timing.acting / timing.every >= 4 - 1e-9


def test_the_timing_for_the_default_interval_of_30_s() -> None:
    timing = LeaseTiming.for_interval(30.0)
    assert (timing.duration, timing.every, timing.margin) == (45.0, 7.5, 7.5)
    assert (timing.acting, timing.takeover) == (37.5, 52.5)


def test_a_timing_that_renews_less_often_than_it_may_act_is_refused() -> None:
    with pytest.raises(ValueError, match="renew"):
        LeaseTiming(duration=3.0, every=3.0, margin=0.5)


# --- the pure transitions --------------------------------------------------------------------


def test_a_leader_may_act_until_the_acting_window_after_its_claim_was_sent() -> None:
    standing, change = after_claim(
        standing_by(T0), claim("me"), me="me", sent=10.0, mono=10.2, now=T0, timing=TIMING
    )
    assert change is not None and change.role is Role.LEADER
    assert holds(standing, mono=10.0 + TIMING.acting - 0.001, timing=TIMING)
    assert not holds(standing, mono=10.0 + TIMING.acting, timing=TIMING)


def test_a_leader_past_its_acting_window_steps_down_saying_why() -> None:
    standing, _ = after_claim(
        standing_by(T0), claim("me"), me="me", sent=0.0, mono=0.1, now=T0, timing=TIMING
    )
    later = T0 + timedelta(seconds=60)
    kept, none = lapse(standing, mono=TIMING.acting - 0.01, now=later, timing=TIMING, failure=None)
    assert none is None and kept.leading
    down, change = lapse(standing, mono=60.0, now=later, timing=TIMING, failure=None)
    assert down == Standing(Role.STANDBY, later)
    assert change is not None and change.role is Role.STANDBY
    assert "last renewed 60.0 s ago" in change.why and "paused" in change.why
    _, unreachable = lapse(standing, mono=60.0, now=later, timing=TIMING, failure="refused")
    assert unreachable is not None and "Postgres did not answer its renewals: refused" in (
        unreachable.why
    )


def test_an_answer_that_arrives_after_the_acting_window_grants_nothing() -> None:
    # The claim was sent, then the process was paused past its lease before reading
    # the answer: what that answer renewed may have run out since.
    standing = standing_by(T0)
    after, change = after_claim(
        standing, claim("me"), me="me", sent=0.0, mono=TIMING.acting, now=T0, timing=TIMING
    )
    assert (after, change) == (standing, None)


def test_another_holder_makes_a_leader_step_down_and_a_standby_note_who_leads() -> None:
    leading, _ = after_claim(
        standing_by(T0), claim("me"), me="me", sent=0.0, mono=0.0, now=T0, timing=TIMING
    )
    down, change = after_claim(
        leading, claim("other", 2), me="me", sent=1.0, mono=1.0, now=T0, timing=TIMING
    )
    assert not down.leading and down.leader == "other"
    assert change is not None and "other holds its lease now (term 2)" in change.why
    again, nothing = after_claim(
        down, claim("other", 2), me="me", sent=2.0, mono=2.0, now=T0, timing=TIMING
    )
    assert nothing is None and again == down


def test_renewing_in_the_same_term_is_no_change_and_moves_the_window() -> None:
    leading, _ = after_claim(
        standing_by(T0), claim("me"), me="me", sent=0.0, mono=0.0, now=T0, timing=TIMING
    )
    renewed, change = after_claim(
        leading, claim("me"), me="me", sent=2.0, mono=2.1, now=T0, timing=TIMING
    )
    assert change is None
    assert renewed.sent == 2.0 and renewed.since == leading.since
    assert holds(renewed, mono=2.0 + TIMING.acting - 0.01, timing=TIMING)


# --- the leader on a fake database --------------------------------------------------------


class Medic:
    """A LeaseLeader whose steady clock is the test's FakeClock."""

    def __init__(self, name: str, leases: FakeLeases, clock: FakeClock) -> None:
        self.leader = LeaseLeader(
            leases,
            scope=SCOPE,
            describe="compose project 'shop'",
            timing=TIMING,
            holder=name,
            clock=clock,
            mono=clock.steady,
        )


def test_two_medics_one_leads_the_other_takes_over_when_renewals_stop() -> None:
    clock = FakeClock()
    leases = FakeLeases(clock.now)
    a, b = Medic("a", leases, clock).leader, Medic("b", leases, clock).leader
    a.claim()
    b.claim()
    assert a.holds() and not b.holds()
    assert b.standing().leader == "a"
    first = a.fence()
    assert first == Term(SCOPE, "a", 1)
    with pytest.raises(FencedOut):
        b.fence()
    # a stops renewing (killed, or cut off): b tries every claim period.
    with logged("INFO") as lines:
        tries = 0
        while not b.holds():
            clock.advance(TIMING.every)
            b.claim()
            tries += 1
    assert clock.now() - T0 <= timedelta(seconds=TIMING.takeover)
    assert tries == round(TIMING.duration / TIMING.every)
    assert b.fence() == Term(SCOPE, "b", 2)
    assert [line for line in lines if "leads" in line] == [
        "medic leads compose project 'shop' now (lease term 2, holder b, taking over from a): "
        "it records, heals and escalates, and medics standing by only observe."
    ]
    # a's own clock says it may not act; its old term is refused by the database.
    assert not a.holds()
    with pytest.raises(FencedOut):
        leases.check(first)


def test_a_paused_leader_steps_down_with_one_line_before_it_does_anything() -> None:
    clock = FakeClock()
    leases = FakeLeases(clock.now)
    a, b = Medic("a", leases, clock).leader, Medic("b", leases, clock).leader
    a.claim()
    b.claim()
    clock.advance(TIMING.duration + TIMING.every)  # a is paused; b takes over
    b.claim()
    assert b.holds()
    with logged("WARNING") as lines:
        assert not a.holds()  # the first thing a asks when it resumes
        with pytest.raises(FencedOut):
            a.fence()
        a.claim()  # its lease thread resumes too
        assert not a.holds()
    assert len(lines) == 1
    assert lines[0].startswith("medic stepped down from leading compose project 'shop': ")
    assert "paused" in lines[0]


def test_a_leader_that_cannot_reach_postgres_stops_acting_when_its_window_closes() -> None:
    clock = FakeClock()
    leases = FakeLeases(clock.now)
    a = Medic("a", leases, clock).leader
    a.claim()
    leases.down = True
    with logged("WARNING") as lines:
        while a.holds():
            clock.advance(TIMING.every)
            a.claim()
    assert clock.now() - T0 >= timedelta(seconds=TIMING.acting)
    assert clock.now() - T0 < timedelta(seconds=TIMING.duration)
    assert len(lines) == 2
    assert lines[0].startswith("medic cannot renew its lease of compose project 'shop'")
    assert "stepped down" in lines[1] and "Postgres did not answer" in lines[1]
    # Back: it claims again; its lease ran out meanwhile, so it leads in a new term.
    leases.down = False
    clock.advance(TIMING.duration)
    a.claim()
    assert a.holds() and a.fence().token == 2


def test_a_refused_write_makes_the_leader_step_down_once() -> None:
    clock = FakeClock()
    a = Medic("a", FakeLeases(clock.now), clock).leader
    a.claim()
    with logged("WARNING") as lines:
        a.fenced(FencedOut("term 1 is over"))
        a.fenced(FencedOut("term 1 is over"))
    assert not a.holds()
    assert len(lines) == 1 and "Postgres refused its write (term 1 is over)" in lines[0]


def test_letting_go_hands_the_lease_to_the_next_claim() -> None:
    clock = FakeClock()
    leases = FakeLeases(clock.now)
    a, b = Medic("a", leases, clock).leader, Medic("b", leases, clock).leader
    a.claim()
    b.claim()
    a.close()
    b.claim()
    assert b.holds() and b.fence().token == 2


def test_without_a_database_the_only_medic_always_leads() -> None:
    sole = Sole(since=T0, holder="me")
    assert sole.holds() and not sole.elected
    assert sole.standing().role is Role.LEADER and sole.standing().since == T0
