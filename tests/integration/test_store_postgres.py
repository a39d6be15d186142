"""The Postgres store against a real server: schema, lifecycle, idempotent writes, retention."""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.errors import StoreError, StoreUnavailable
from agent.model import (
    Attempt,
    AttemptId,
    AttemptStatus,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    EvidenceEntry,
    Finding,
    Health,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
    State,
)
from agent.store import IncidentNotFound, IncidentQuery, new_id
from agent.store.migrate import available, migrate
from agent.store.ops import AddEvidence, OpenIncident, Operation, RecordAttempt, SetStatus
from agent.store.postgres import PostgresStore, run_migrations

#: Every migration, in the order a fresh database gets them.
MIGRATIONS = ["0001_incidents.sql", "0002_one_incident_per_episode.sql"]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "incidents.md"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WEB = ContainerRef(ContainerId("a" * 64), "shop-web-1", "shop", "web")
API = ContainerRef(ContainerId("b" * 64), "shop-api-1", "shop", "api")
TABLES = {
    "incidents",
    "incident_evidence",
    "attempts",
    "incident_status_changes",
    "observations",
    "diagnoses",
    "fixes",
    "notifications",
    "leases",
    "medic_schema_migrations",
}
#: Every migration file, in order: all of them run on an empty database.
MIGRATIONS = [m.name for m in available()]


def rows(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def finding(ref: ContainerRef, at: datetime, signal: Signal = Signal.EXITED) -> Finding:
    return Finding(ref, signal, f"{ref.name} shows {signal}.", at, {"exit_code": 3})


def attempt(incident_id: IncidentId, at: datetime, *, ok: bool = True) -> Attempt:
    return Attempt(
        id=AttemptId(new_id()),
        incident_id=incident_id,
        playbook="start-exited",
        action="start",
        started_at=at,
        finished_at=at + timedelta(seconds=2),
        ok=ok,
        error=None if ok else "the engine said no",
        output="started",
    )


def test_migrations_create_the_tables_on_an_empty_database_and_rerun_changes_nothing(
    postgres_url: str,
) -> None:
    assert run_migrations(postgres_url) == MIGRATIONS
    tables = {
        r[0]
        for r in rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables == TABLES
    assert run_migrations(postgres_url) == []
    assert rows(
        postgres_url, "SELECT version, name FROM medic_schema_migrations ORDER BY version"
    ) == [(m.version, m.name) for m in available()]


def test_concurrent_migrations_take_turns(postgres_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def migrate() -> None:
        start.wait()
        try:
            results.append(run_migrations(postgres_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == [[], [], [], MIGRATIONS]
    assert rows(postgres_url, "SELECT count(*) FROM medic_schema_migrations") == [
        (len(MIGRATIONS),)
    ]


def test_lifecycle_open_healing_resolved_then_escalated_resolved_by_a_person(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        first = store.record_finding(finding(WEB, T0))
        again = store.record_finding(finding(WEB, T0 + timedelta(seconds=30)))
        assert again.id == first.id
        assert first.status is IncidentStatus.OPEN
        assert [e.observed_at for e in again.evidence] == [T0, T0 + timedelta(seconds=30)]
        assert again.evidence[0].evidence == {"exit_code": 3}

        start = attempt(first.id, T0 + timedelta(seconds=1))
        store.record_attempt(start)
        store.record_attempt(start)  # a repeated write stores it once
        healing = store.get(first.id[:6])
        assert healing.status is IncidentStatus.HEALING
        assert [a.id for a in healing.attempts] == [start.id]
        assert healing.attempts[0].output == "started"

        resolved = store.set_status(first.id, IncidentStatus.RESOLVED, at=T0 + timedelta(minutes=2))
        assert resolved.status is IncidentStatus.RESOLVED
        assert resolved.resolved_at == T0 + timedelta(minutes=2)

        # The same container and signal later: a new incident, since the old one is closed.
        second = store.record_finding(finding(WEB, T0 + timedelta(hours=1)))
        assert second.id != first.id
        store.record_attempt(attempt(second.id, T0 + timedelta(hours=1), ok=False))
        store.set_status(
            second.id,
            IncidentStatus.ESCALATED,
            at=T0 + timedelta(hours=1, minutes=1),
            note="3 attempts within 30 min",
        )
        assert [i.id for i in store.active_incidents(WEB.id)] == [second.id]
        by_hand = store.set_status(
            second.id, IncidentStatus.RESOLVED, at=T0 + timedelta(hours=2), note="by hand: fixed"
        )
        assert by_hand.note == "by hand: fixed"
        assert store.active_incidents() == []
        listed = store.list_incidents(IncidentQuery(service="web"))
        assert [i.id for i in listed] == [second.id, first.id]
        assert [len(i.attempts) for i in listed] == [1, 1]
        changes = rows(
            postgres_url,
            "SELECT status FROM incident_status_changes WHERE incident_id = %s ORDER BY at",
            second.id,
        )
        assert changes == [("escalated",), ("resolved",)]
    finally:
        store.close()


def test_the_database_allows_one_active_incident_per_container_whatever_its_signal(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        first = store.record_finding(finding(WEB, T0))
        # Another signal of the same failure episode adds evidence; the graver one names it.
        again = store.record_finding(finding(WEB, T0, Signal.UNHEALTHY))
        looped = store.record_finding(finding(WEB, T0, Signal.CRASH_LOOP))
        assert again.id == looped.id == first.id
        with pytest.raises(psycopg.errors.UniqueViolation), psycopg.connect(postgres_url) as conn:
            conn.execute(
                "INSERT INTO incidents (id, container_id, container_name, signal, status, "
                "summary, fingerprint, opened_at, updated_at) VALUES "
                "(%s, %s, 'x', 'unhealthy', 'healing', 's', 'f', now(), now())",
                (new_id(), WEB.id),
            )
        [active] = store.active_incidents(WEB.id)
        assert active.status is IncidentStatus.OPEN
        assert active.signal is Signal.CRASH_LOOP
        assert active.fingerprint == "shop/web/crash_loop"
        assert len(store.get(active.id).evidence) == 3
    finally:
        store.close()


def test_migration_0002_keeps_the_oldest_of_several_active_incidents_of_a_container(
    postgres_url: str,
) -> None:
    [first, second] = available()[:2]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn, [first])
        for n, signal in enumerate(("exited", "crash_loop")):
            conn.execute(
                "INSERT INTO incidents (id, container_id, container_name, signal, status, "
                "summary, fingerprint, opened_at, updated_at) VALUES "
                "(%s, %s, 'x', %s, 'healing', 's', 'f', %s, %s)",
                (f"incident-{n}", WEB.id, signal, T0 + timedelta(seconds=n), T0),
            )
        assert migrate(conn, [first, second]) == [second.name]
    assert rows(postgres_url, "SELECT id, status, note FROM incidents ORDER BY id") == [
        ("incident-0", "healing", None),
        (
            "incident-1",
            "resolved",
            "merged into incident incident: one incident per failure episode",
        ),
    ]
    assert rows(
        postgres_url, "SELECT status FROM incident_status_changes WHERE incident_id = 'incident-1'"
    ) == [("resolved",)]


def test_operations_applied_twice_are_stored_once(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = Incident(
        id=IncidentId(new_id()),
        container=API,
        signal=Signal.UNHEALTHY,
        status=IncidentStatus.OPEN,
        opened_at=T0,
        updated_at=T0,
        summary="shop-api-1 is unhealthy.",
        evidence=(EvidenceEntry(T0, "shop-api-1 is unhealthy.", {"failing_streak": 3}),),
    )
    ops: list[Operation] = [
        OpenIncident(incident, new_id()),
        AddEvidence(new_id(), incident.id, T0 + timedelta(seconds=5), "still", {}),
        RecordAttempt(attempt(incident.id, T0 + timedelta(seconds=6))),
        SetStatus(new_id(), incident.id, IncidentStatus.RESOLVED, T0 + timedelta(minutes=1)),
    ]
    try:
        store.apply(ops)
        store.apply(ops)
        stored = store.get(incident.id)
    finally:
        store.close()
    assert stored.status is IncidentStatus.RESOLVED
    assert len(stored.evidence) == 2
    assert len(stored.attempts) == 1
    counts = rows(
        postgres_url,
        "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_evidence),"
        " (SELECT count(*) FROM attempts), (SELECT count(*) FROM incident_status_changes)",
    )
    assert counts == [(1, 2, 1, 1)]


def test_an_incident_opened_while_postgres_was_away_supersedes_the_stored_one(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    try:
        old = store.record_finding(finding(WEB, T0))
        newer = Incident(
            id=IncidentId(new_id()),
            container=WEB,
            signal=Signal.EXITED,
            status=IncidentStatus.OPEN,
            opened_at=T0 + timedelta(minutes=5),
            updated_at=T0 + timedelta(minutes=5),
            summary="shop-web-1 exited with code 3.",
        )
        store.apply([OpenIncident(newer, new_id())])
        assert [i.id for i in store.active_incidents(WEB.id)] == [newer.id]
        closed = store.get(old.id)
        assert closed.status is IncidentStatus.RESOLVED
        assert closed.note is not None and "superseded" in closed.note
    finally:
        store.close()


def test_unknown_and_ambiguous_ids_are_named(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        with pytest.raises(IncidentNotFound, match="no incident with id 'nope'"):
            store.get("nope")
        with pytest.raises(IncidentNotFound):
            store.record_attempt(attempt(IncidentId("f" * 32), T0))
    finally:
        store.close()


def test_an_unreachable_database_says_where_and_why() -> None:
    store = PostgresStore("postgresql://medic:pw@127.0.0.1:1/medic")
    with pytest.raises(StoreUnavailable) as caught:
        store.list_incidents()
    message = str(caught.value)
    assert "127.0.0.1:1/medic" in message
    assert "pw" not in message
    assert "\n" not in message


def test_reading_before_migrating_says_to_migrate(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, migrate=False)
    with pytest.raises(StoreError, match="medic db migrate"):
        store.list_incidents()
    store.close()


def snapshot(ref: ContainerRef, at: datetime, state: State, health: Health) -> ContainerSnapshot:
    return ContainerSnapshot(
        ref=ref,
        labels={},
        image="busybox",
        state=state,
        health=health,
        exit_code=0 if state is State.RUNNING else 3,
        observed_at=at,
        restart_count=1,
    )


def test_observations_are_sampled_on_change_or_interval(postgres_url: str) -> None:
    now = datetime.now(UTC)
    store = PostgresStore(postgres_url, observation_interval=60, now=lambda: now)
    try:
        for seconds, state in [
            (0, State.RUNNING),
            (10, State.RUNNING),  # no change, too soon: not kept
            (20, State.EXITED),  # changed: kept
            (30, State.EXITED),
            (80, State.EXITED),  # 60 s after the last kept one: kept
        ]:
            at = now + timedelta(seconds=seconds)
            store.record_observations([snapshot(WEB, at, state, Health.NONE)])
    finally:
        store.close()
    kept = rows(postgres_url, "SELECT state, observed_at FROM observations ORDER BY observed_at")
    assert [(s, (t - now).total_seconds()) for s, t in kept] == [
        ("running", 0.0),
        ("exited", 20.0),
        ("exited", 80.0),
    ]


def test_what_is_remembered_to_sample_observations_is_bounded(postgres_url: str) -> None:
    from agent.store.postgres import MAX_KEPT_CONTAINERS

    now = datetime.now(UTC)
    store = PostgresStore(postgres_url, observation_interval=60, now=lambda: now)
    many = [
        ContainerRef(ContainerId(f"{n:064x}"), f"shop-worker-{n}", "shop", "worker")
        for n in range(MAX_KEPT_CONTAINERS + 200)
    ]
    try:
        store.record_observations([snapshot(ref, now, State.RUNNING, Health.NONE) for ref in many])
        assert store.remembered() == MAX_KEPT_CONTAINERS
        # The most recently seen are the ones remembered: seen again unchanged, not kept.
        store.record_observations([snapshot(many[-1], now, State.RUNNING, Health.NONE)])
    finally:
        store.close()
    [(count,)] = rows(postgres_url, "SELECT count(*) FROM observations")
    assert count == MAX_KEPT_CONTAINERS + 200


def test_retention_prunes_old_observations_in_batches_and_keeps_incidents(
    postgres_url: str,
) -> None:
    now = datetime.now(UTC)
    store = PostgresStore(postgres_url, retention_days=30, now=lambda: now)
    try:
        store.record_finding(finding(WEB, now - timedelta(days=90)))
        with psycopg.connect(postgres_url) as conn:
            conn.execute(
                "INSERT INTO observations (container_id, container_name, state, health,"
                " restart_count, observed_at)"
                " SELECT 'c', 'c', 'running', 'none', 0, %s - make_interval(days => 31 + g %% 5)"
                " FROM generate_series(1, 12) AS g",
                (now,),
            )
        assert store.prune_observations(before=now - timedelta(days=30), batch=5) == 12
        # record_observations prunes by itself, at most once an hour.
        store.record_observations([snapshot(API, now, State.RUNNING, Health.HEALTHY)])
    finally:
        store.close()
    assert rows(postgres_url, "SELECT count(*) FROM observations") == [(1,)]
    assert rows(postgres_url, "SELECT count(*) FROM incidents") == [(1,)]


def mttr_query() -> str:
    text = DOCS.read_text()
    found = re.search(r"<!-- mttr-query -->\s*```sql\n(.*?)```", text, re.S)
    assert found, "docs/incidents.md has no MTTR query under <!-- mttr-query -->"
    return found.group(1)


def test_the_documented_mttr_query_gives_mean_time_to_recovery_per_service(
    postgres_url: str,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = PostgresStore(postgres_url)
    try:
        for ref, opened_ago, minutes in [
            (WEB, timedelta(days=2), 2),
            (WEB, timedelta(days=1), 4),
            (API, timedelta(hours=5), 10),
            (API, timedelta(days=45), 100),  # outside the 30 days
        ]:
            incident = store.record_finding(finding(ref, now - opened_ago))
            store.set_status(
                incident.id,
                IncidentStatus.RESOLVED,
                at=now - opened_ago + timedelta(minutes=minutes),
            )
        store.record_finding(finding(API, now - timedelta(hours=1)))  # still open: left out
    finally:
        store.close()
    result = rows(postgres_url, mttr_query())
    assert result == [("api", 1, 600, 600), ("web", 2, 180, 240)]


def test_an_attempt_started_is_a_running_row_that_its_end_completes_once(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url)
    incident = store.record_finding(finding(WEB, T0))
    begun = Attempt(
        id=AttemptId(new_id()),
        incident_id=incident.id,
        playbook="restart-unhealthy",
        action="restart (stop timeout 30s)",
        started_at=T0,
        finished_at=None,
        ok=False,
        status=AttemptStatus.RUNNING,
    )
    store.record_attempt(begun)
    assert store.get(incident.id).status is IncidentStatus.HEALING
    assert rows(postgres_url, "SELECT status, finished_at FROM attempts") == [("running", None)]

    interrupted = replace(
        begun, status=AttemptStatus.INTERRUPTED, error="medic stopped", output="engine says"
    )
    store.apply([RecordAttempt(interrupted)])
    # Replays of the start, and a late end, change a completed attempt no more.
    done = replace(begun, status=AttemptStatus.FINISHED, finished_at=T0, ok=True)
    store.apply([RecordAttempt(begun), RecordAttempt(done), RecordAttempt(interrupted)])

    [kept] = store.get(incident.id).attempts
    assert kept == interrupted
    assert [a.status for a in store.list_incidents()[0].attempts] == [AttemptStatus.INTERRUPTED]
    store.close()


def test_a_finished_attempt_must_say_when_it_finished(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = store.record_finding(finding(WEB, T0))
    broken = replace(attempt(incident.id, T0), finished_at=None)
    with pytest.raises(StoreError, match="attempts_finished_at_known"):
        store.record_attempt(broken)
    store.close()
