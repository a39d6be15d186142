"""The lease SQL and the fencing of writes, on a real Postgres.

A lease is claimed, renewed, runs out by the database's clock, and passes to another
holder with a higher fencing token. A write carrying a term that is no longer the
lease's is refused in its own transaction, and nothing of it is stored. Changes a
former leader spooled are written later as history without undoing a later term.

Time passing on the database's clock is made by moving ``expires_at`` back with SQL,
so no test waits for a lease to run out, except one that checks ``now()`` decides.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agent.errors import FencedOut
from agent.model import (
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    Finding,
    IncidentStatus,
    Signal,
)
from agent.store.base import Identity, new_id, new_incident
from agent.store.lease import Claim, Term
from agent.store.ops import OpenIncident, RecordAttempt, SetStatus
from agent.store.postgres import PostgresLeases, PostgresStore, run_migrations

IDENTITY = Identity("ENGINE", "shop")
SCOPE = IDENTITY.scope
WEB = ContainerRef(ContainerId("a" * 64), "shop-web-1", "shop", "web")
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def rows(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def run_out(url: str) -> None:
    """The database's clock passes the lease's expiry."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE leases SET expires_at = now() - interval '1 second'")


def finding(at: datetime = T0) -> Finding:
    return Finding(WEB, Signal.EXITED, "shop-web-1 exited with code 3.", at, {"exit_code": 3})


def attempt(incident_id: str, at: datetime = T0) -> Attempt:
    return Attempt(
        id=AttemptId(new_id()),
        incident_id=incident_id,  # type: ignore[arg-type]
        playbook="start-exited",
        action="start",
        started_at=at,
        finished_at=at + timedelta(seconds=1),
        ok=True,
    )


@pytest.fixture
def leases(postgres_url: str) -> Any:
    store = PostgresLeases(postgres_url)
    yield store
    store.close()


def test_a_lease_is_taken_renewed_in_the_same_term_and_refused_to_another_holder(
    postgres_url: str, leases: PostgresLeases
) -> None:
    first = leases.claim(SCOPE, "a", seconds=30)
    assert (first.holder, first.token) == ("a", 1)
    renewed = leases.claim(SCOPE, "a", seconds=30)
    assert (renewed.holder, renewed.token, renewed.acquired_at) == ("a", 1, first.acquired_at)
    assert renewed.expires_at > first.expires_at
    other = leases.claim(SCOPE, "b", seconds=30)
    assert other == renewed  # b is told who holds it; nothing changed
    assert rows(postgres_url, "SELECT holder, token FROM leases") == [("a", 1)]


def test_a_lease_that_ran_out_passes_to_the_next_claimer_with_the_next_token(
    postgres_url: str, leases: PostgresLeases
) -> None:
    leases.claim(SCOPE, "a", seconds=30)
    run_out(postgres_url)
    taken = leases.claim(SCOPE, "b", seconds=30)
    assert (taken.holder, taken.token) == ("b", 2)
    assert leases.claim(SCOPE, "a", seconds=30).holder == "b"
    # A holder whose own lease ran out starts a new term too: what it had in flight
    # under the old token is refused.
    run_out(postgres_url)
    again = leases.claim(SCOPE, "b", seconds=30)
    assert (again.holder, again.token) == ("b", 3)
    assert again.acquired_at > taken.acquired_at


def test_expiry_is_judged_by_the_database_clock(leases: PostgresLeases) -> None:
    first = leases.claim(SCOPE, "a", seconds=0.5)
    assert leases.claim(SCOPE, "b", seconds=30).holder == "a"
    # No host clock is read: the lease runs out when the database's now() passes it.
    deadline = time.monotonic() + 30
    while (taken := leases.claim(SCOPE, "b", seconds=30)).holder != "b":
        assert time.monotonic() < deadline, "the lease never ran out"
        time.sleep(0.1)
    assert taken.token == first.token + 1
    assert taken.acquired_at >= first.expires_at


def test_a_released_lease_is_taken_at_the_next_claim(leases: PostgresLeases) -> None:
    first = leases.claim(SCOPE, "a", seconds=30)
    leases.release(Term(SCOPE, "a", 99))  # not its term: changes nothing
    assert leases.claim(SCOPE, "b", seconds=30).holder == "a"
    leases.release(first.term)
    assert leases.claim(SCOPE, "b", seconds=30).term == Term(SCOPE, "b", 2)


def test_two_medics_claiming_at_once_get_one_lease(postgres_url: str) -> None:
    run_migrations(postgres_url)
    results: list[Claim] = []
    start = threading.Barrier(4)

    def claim(name: str) -> None:
        store = PostgresLeases(postgres_url)
        try:
            start.wait()
            results.append(store.claim(SCOPE, name, seconds=30))
        finally:
            store.close()

    threads = [threading.Thread(target=claim, args=(f"m{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    holders = {c.holder for c in results}
    assert len(results) == 4 and len(holders) == 1
    assert {c.token for c in results} == {1}


def test_a_write_of_a_term_that_is_over_is_refused_and_nothing_is_stored(
    postgres_url: str, leases: PostgresLeases
) -> None:
    term: list[Term] = []
    store = PostgresStore(postgres_url, identity=IDENTITY, fence=lambda: term[0])
    try:
        term.append(leases.claim(SCOPE, "a", seconds=30).term)
        incident = store.record_finding(finding())
        store.record_attempt(attempt(incident.id))
        assert rows(postgres_url, "SELECT status, term FROM incidents") == [("healing", 1)]

        run_out(postgres_url)
        assert leases.claim(SCOPE, "b", seconds=30).token == 2
        before = rows(
            postgres_url,
            "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_evidence),"
            " (SELECT count(*) FROM attempts), (SELECT count(*) FROM incident_status_changes)",
        )
        with pytest.raises(FencedOut, match="b holds it in term 2"):
            store.record_finding(finding(T0 + timedelta(seconds=5)))
        with pytest.raises(FencedOut):
            store.record_attempt(attempt(incident.id, T0 + timedelta(seconds=5)))
        with pytest.raises(FencedOut):
            store.set_status(incident.id, IncidentStatus.ESCALATED, at=T0, note="by a")
        with pytest.raises(FencedOut):
            store.move_incident(incident.id, WEB, at=T0, note="moved by a")
        after = rows(
            postgres_url,
            "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_evidence),"
            " (SELECT count(*) FROM attempts), (SELECT count(*) FROM incident_status_changes)",
        )
        assert after == before
        assert rows(postgres_url, "SELECT status, term FROM incidents") == [("healing", 1)]

        # The new leader's term writes, one operation or a batch (sent in a pipeline).
        term[0] = Term(SCOPE, "b", 2)
        store.set_status(incident.id, IncidentStatus.ESCALATED, at=T0, note="by b")
        assert rows(postgres_url, "SELECT status, term FROM incidents") == [("escalated", 2)]
        store.apply(
            [
                RecordAttempt(attempt(incident.id, T0 + timedelta(seconds=9)), term=2),
                SetStatus(new_id(), incident.id, IncidentStatus.RESOLVED, T0, "by b", term=2),
            ],
            term=term[0],
        )
        assert rows(postgres_url, "SELECT status FROM incidents") == [("resolved",)]
        with pytest.raises(FencedOut):
            store.apply(
                [
                    RecordAttempt(attempt(incident.id, T0 + timedelta(seconds=10)), term=1),
                    SetStatus(new_id(), incident.id, IncidentStatus.OPEN, T0, "by a", term=1),
                ],
                term=Term(SCOPE, "a", 1),
            )
        assert rows(postgres_url, "SELECT count(*) FROM attempts") == [(2,)]
    finally:
        store.close()


def test_a_lease_that_ran_out_fences_its_holder_even_before_anyone_takes_it(
    postgres_url: str, leases: PostgresLeases
) -> None:
    term = leases.claim(SCOPE, "a", seconds=30).term
    store = PostgresStore(postgres_url, identity=IDENTITY, fence=lambda: term)
    try:
        run_out(postgres_url)
        with pytest.raises(FencedOut, match="it ran out"):
            store.record_finding(finding())
        assert rows(postgres_url, "SELECT count(*) FROM incidents") == [(0,)]
    finally:
        store.close()


def test_changes_a_former_leader_spooled_are_kept_without_undoing_the_later_term(
    postgres_url: str, leases: PostgresLeases
) -> None:
    """a led in term 1 and spooled while Postgres was away from it; b took over (term 2)
    and opened its own incident for the same container. a's replay comes later."""
    old = new_incident(finding(T0), scope=SCOPE)
    store = PostgresStore(postgres_url, identity=IDENTITY)
    try:
        leases.claim(SCOPE, "a", seconds=30)
        run_out(postgres_url)
        b = leases.claim(SCOPE, "b", seconds=30).term
        store.fence = lambda: b
        current = store.record_finding(finding(T0 + timedelta(seconds=20)))
        store.fence = None

        # The replay: no live term, each operation with the term it was made in.
        store.apply(
            [
                OpenIncident(old, new_id(), term=1),
                RecordAttempt(attempt(old.id, T0 + timedelta(seconds=1)), term=1),
                SetStatus(new_id(), old.id, IncidentStatus.ESCALATED, T0, "by a", term=1),
                SetStatus(new_id(), current.id, IncidentStatus.RESOLVED, T0, "by a", term=1),
            ]
        )
        got = dict(rows(postgres_url, "SELECT id, status FROM incidents"))
        assert got == {current.id: "open", old.id: "resolved"}
        [(note,)] = rows(postgres_url, "SELECT note FROM incidents WHERE id = %s", old.id)
        assert f"superseded by incident {current.id[:8]}" in note
        assert "took the lease over (term 2)" in note
        # Nothing of the replay is lost: its attempt and status changes are on record.
        assert rows(postgres_url, "SELECT count(*) FROM attempts WHERE incident_id = %s", old.id)
        assert rows(
            postgres_url,
            "SELECT count(*) FROM incident_status_changes WHERE note = 'by a'",
        ) == [(2,)]
    finally:
        store.close()
