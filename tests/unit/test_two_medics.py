"""Two medics of one scope on one fake engine and one fake database: one acts.

Each medic is what ``medic run`` builds: a supervisor whose leader claims the lease of
its scope, and a spooling store in front of the shared database whose writes carry the
leader's term. The database (``FlakyDatabase``) checks that term against the lease rows
(``FakeLeases``) as Postgres does in each write's transaction. Every clock is the
test's ``FakeClock``; the database's clock can be moved on its own (``db_ahead``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fakes import T0, FakeClock, FakeDocker
from helpers import logged
from store_fakes import FakeLeases, FlakyDatabase

from agent.cli import leadership_text
from agent.config import HealingSettings
from agent.errors import StoreUnavailable
from agent.healing.act import Actor
from agent.healing.observe import Scope
from agent.leader import LeaseLeader
from agent.leadership import LeaseTiming, Role
from agent.model import (
    Action,
    AttemptStatus,
    Backoff,
    ContainerRef,
    Escalation,
    Finding,
    IncidentStatus,
    Match,
    Plan,
    Playbook,
    Signal,
    State,
    Wait,
)
from agent.store import MemoryStore
from agent.store.base import Identity
from agent.store.lease import Claim, LeaseStore, Term
from agent.store.spool import SpoolingStore
from agent.supervisor import NOT_LEADING, Supervisor
from agent.wiring import readiness

IDENTITY = Identity("ENGINE", "shop")
LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
INTERVAL = 2.0
TIMING = LeaseTiming.for_interval(INTERVAL)
START = Playbook(
    "start-exited",
    Match(frozenset({Signal.EXITED})),
    (Action("start"),),
    backoff=Backoff(initial=60, factor=2, max=300),
    escalation=Escalation(after_attempts=2, within=3600),
)


class World:
    """One engine, one database and its leases, one clock."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.db_ahead = timedelta(0)
        self.leases = FakeLeases(self.db_now)
        self.db = FlakyDatabase(self.leases)
        self.fake = FakeDocker(self.clock)
        self.tmp_path = tmp_path

    def db_now(self) -> datetime:
        return self.clock.now() + self.db_ahead

    def medic(self, name: str, *, leases: LeaseStore | None = None) -> Supervisor:
        return self.parts(name, leases=leases)[0]

    def parts(
        self, name: str, *, leases: LeaseStore | None = None
    ) -> tuple[Supervisor, LeaseLeader, SpoolingStore]:
        """A medic, its leader and its store."""
        leader = LeaseLeader(
            leases or self.leases,
            scope=IDENTITY.scope,
            describe="compose project 'shop'",
            timing=TIMING,
            holder=name,
            clock=self.clock,
            mono=self.clock.steady,
        )
        store = SpoolingStore(
            self.db,
            state_dir=self.tmp_path / name,
            identity=IDENTITY,
            fence=leader.fence,
            retry_delays=(3600,),
        )
        supervisor = Supervisor(
            healing=HealingSettings(interval=INTERVAL),
            gateway=self.fake,
            store=store,
            playbooks=[START],
            scope=Scope(project="shop"),
            clock=self.clock,
            leader=leader,
        )
        return supervisor, leader, store

    def starts(self) -> int:
        return self.fake.requests.count("start")


class Link(LeaseStore):
    """One medic's way to the shared leases, which can be cut."""

    def __init__(self, leases: FakeLeases) -> None:
        self.leases = leases
        self.down = False

    def claim(self, scope: str, holder: str, *, seconds: float) -> Claim:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.leases.claim(scope, holder, seconds=seconds)

    def release(self, term: Term) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")
        self.leases.release(term)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_of_two_medics_only_the_leader_records_and_acts(world: World) -> None:
    a, b = world.medic("a"), world.medic("b")
    web = world.fake.add("shop-web-1", LABELS)
    world.fake.crash(web)
    report_a = a.run_once()
    report_b = b.run_once()
    assert world.starts() == 1
    assert [f.signal for f in report_a.findings] == [Signal.EXITED]
    assert report_b.findings == [] and report_b.results == []
    assert [i.container.name for i in world.db.rows.list_incidents()] == ["shop-web-1"]
    assert a.leadership()["role"] == "leader" and a.leadership()["term"] == 1
    assert b.leadership()["role"] == "standby" and b.leadership()["leader"] == "a"
    # The standby observes: /status shows the container, with no incident.
    [seen] = b.status()
    assert seen["container"] == "shop-web-1" and seen["incidents"] == []


def test_the_medic_taking_over_restores_backoff_and_does_not_repeat_the_last_action(
    world: World,
) -> None:
    a, b = world.medic("a"), world.medic("b")
    web = world.fake.add("shop-web-1", LABELS)
    world.fake.crash(web)
    a.run_once()
    b.run_once()
    assert world.starts() == 1
    world.fake.crash(web)  # it fails again, and a is killed: it never claims again
    world.clock.advance(TIMING.duration)
    report = b.run_once()
    assert b.leadership()["role"] == "leader" and b.leadership()["term"] == 2
    # b holds a's incident and its attempt: the next start waits out the backoff.
    assert world.starts() == 1
    [decision] = report.decisions
    assert isinstance(decision, Wait) and decision.playbook.name == "start-exited"
    world.clock.advance(60)
    b.run_once()
    assert world.starts() == 2
    [incident] = world.db.rows.list_incidents()
    assert [a.status for a in incident.attempts] == [AttemptStatus.FINISHED] * 2


def test_an_escalation_is_not_forgotten_by_the_medic_taking_over(world: World) -> None:
    a, b = world.medic("a"), world.medic("b")
    web = world.fake.add("shop-web-1", LABELS)
    for _ in range(3):
        world.fake.crash(web)
        a.run_once()
        world.clock.advance(61)
        a.run_once()
    [incident] = world.db.rows.list_incidents()
    assert incident.status is IncidentStatus.ESCALATED
    starts = world.starts()
    world.clock.advance(TIMING.duration)
    b.run_once()
    world.clock.advance(600)
    b.run_once()
    assert b.leadership()["role"] == "leader"
    assert world.starts() == starts
    [seen] = b.status()
    assert seen["circuit"] == "open" and seen["incidents"] == [
        {"id": incident.id, "signal": "exited"}
    ]


def test_a_leader_cut_off_from_postgres_heals_within_its_lease_then_stops_and_spools(
    world: World,
) -> None:
    link = Link(world.leases)
    a, _, spool = world.parts("a", leases=link)
    web = world.fake.add("shop-web-1", LABELS)
    a.run_once()
    link.down = world.db.down = True  # Postgres is away, from a at least
    world.fake.crash(web)
    a.run_once()  # within its lease: it heals, and spools what it did
    assert world.starts() == 1
    assert spool.pending_changes() == 3
    world.clock.advance(TIMING.acting)
    world.fake.crash(web)
    with logged("WARNING") as lines:
        a.run_once()
    assert world.starts() == 1
    assert a.leadership()["role"] == "standby"
    stepped = [line for line in lines if "stepped down" in line]
    assert len(stepped) == 1 and "Postgres did not answer its renewals" in stepped[0]
    # Another medic leads meanwhile; when Postgres is back, a's spool reaches it.
    b = world.medic("b")
    world.clock.advance(TIMING.duration)
    world.db.down = False
    b.run_once()
    assert b.leadership()["role"] == "leader"
    assert spool.replay() is True
    incidents = world.db.rows.list_incidents()
    assert sum(len(i.attempts) for i in incidents) >= 1


def test_a_leader_whose_term_postgres_refuses_steps_down_once_and_does_nothing(
    world: World,
) -> None:
    # a believes it leads (its own clock says its renewal is fresh), but the database's
    # clock ran ahead and b took the lease: a's first write is refused, before acting.
    link = Link(world.leases)
    a = world.medic("a", leases=link)
    a.run_once()
    world.db_ahead = timedelta(seconds=TIMING.duration)
    b, b_leader, _ = world.parts("b")
    b_leader.claim()
    assert b.leadership()["role"] == "leader"
    web = world.fake.add("shop-web-1", LABELS)
    world.fake.crash(web)
    link.down = True  # a's renewals do not get through: only its writes can tell it
    with logged("WARNING") as lines:
        a.run_once()
        a.run_once()
    assert world.starts() == 0
    assert world.db.rows.list_incidents() == []
    stepped = [line for line in lines if "stepped down" in line]
    assert len(stepped) == 1 and "Postgres refused its write" in stepped[0], lines
    assert a.leadership()["role"] == "standby"


def test_an_action_is_not_started_once_the_leader_may_no_longer_act(world: World) -> None:
    """The actor asks right before each action: a plan decided in time but reaching the
    worker after the lease ran out (a pause in between) does not start."""
    a = world.medic("a")
    a.run_once()
    web = world.fake.add("shop-web-1", LABELS)
    world.fake.crash(web)
    actor = Actor(world.fake, clock=world.clock, gate=a._why_not_act)
    finding = Finding(web_ref(world, web.id), Signal.EXITED, "exited", world.clock.now())
    plan = Plan(finding, START, START.actions, attempt=1)
    world.clock.advance(TIMING.acting)
    [result] = actor.run_plan(finding.container, plan, labels=LABELS)
    assert (result.ok, result.error) == (False, NOT_LEADING)
    assert world.starts() == 0
    actor.shutdown(timeout=1)


def web_ref(world: World, container_id: str) -> ContainerRef:
    return world.fake.inspect(container_id).ref


def test_without_a_lease_the_only_medic_leads_from_the_start(world: World) -> None:
    medic = Supervisor(
        healing=HealingSettings(interval=INTERVAL),
        gateway=world.fake,
        store=SpoolingStore(world.db, state_dir=world.tmp_path / "sole"),
        playbooks=[START],
        scope=Scope(project="shop"),
        clock=world.clock,
    )
    web = world.fake.add("shop-web-1", LABELS, state=State.RUNNING)
    world.fake.crash(web)
    medic.run_once()
    assert world.starts() == 1
    assert medic.leadership()["role"] == str(Role.LEADER)
    assert medic.leadership()["election"] == "none"


def test_status_readyz_and_metrics_say_leader_or_standby_and_since_when(world: World) -> None:
    a, b = world.medic("a"), world.medic("b")
    a.run_once()
    world.clock.advance(1)
    b.run_once()
    lead, stand = a.leadership(), b.leadership()
    assert a.status_document()["leadership"] == lead
    assert lead == {
        "scope": "compose project 'shop'",
        "role": "leader",
        "since": T0.isoformat(),
        "holder": "a",
        "leader": "a",
        "term": 1,
        "election": "lease",
    }
    assert stand["role"] == "standby" and stand["leader"] == "a" and stand["term"] is None
    assert leadership_text(lead) == (
        "This medic leads compose project 'shop' since 2026-11-21 12:00:00 "
        "(lease term 1, holder a)."
    )
    assert leadership_text(stand) == (
        "This medic stands by for compose project 'shop' since 2026-11-21 12:00:00 "
        "(holder b); a leads it. It observes and does nothing until it takes the lease."
    )
    assert leadership_text(None) is None
    _, ready = readiness(MemoryStore(), b)
    assert ready["leadership"] == stand

    def gauge(medic: Supervisor, name: str) -> float | None:
        return medic.metrics.registry.get_sample_value(name)

    assert (gauge(a, "medic_leader"), gauge(b, "medic_leader")) == (1.0, 0.0)
    assert (gauge(a, "medic_lease_term"), gauge(b, "medic_lease_term")) == (1.0, 0.0)
    assert gauge(a, "medic_leader_since_timestamp_seconds") == T0.timestamp()


def test_a_medic_that_steps_down_lets_go_and_gets_it_all_back_when_it_leads_again(
    world: World,
) -> None:
    link = Link(world.leases)
    a = world.medic("a", leases=link)
    web = world.fake.add("shop-web-1", LABELS)
    for _ in range(3):
        world.fake.crash(web)
        a.run_once()
        world.clock.advance(61)
        a.run_once()
    [escalated] = a.status()
    assert escalated["circuit"] == "open" and escalated["incidents"]
    term = a.leadership()["term"]
    assert isinstance(term, int)
    link.down = True  # cut off past its lease: it stands by and lets go of everything
    world.clock.advance(TIMING.acting)
    a.run_once()
    [let_go] = a.status()
    assert a.leadership()["role"] == "standby"
    assert let_go["circuit"] == "closed" and let_go["incidents"] == []
    assert let_go["attempts_in_streak"] == 0
    link.down = False  # back: nobody else took the lease, so it leads in a new term
    world.clock.advance(TIMING.duration)
    a.run_once()
    [back] = a.status()
    assert a.leadership()["term"] == term + 1
    assert back["circuit"] == "open" and back["incidents"] == escalated["incidents"]
    assert back["attempts_in_streak"] == escalated["attempts_in_streak"]
