"""Diagnoses, fixes, notification records and scopes in a real Postgres, directly and
through the spool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from store_contract import (
    API,
    CHECKS,
    T0,
    WEB,
    a_diagnosis,
    a_fix,
    a_notification,
    check_name,
    open_incident,
)

from agent.model import Finding, FixStatus, IncidentId, IncidentStatus, NotificationOutcome, Signal
from agent.store import IncidentStore
from agent.store.base import ForeignIncident, Identity, new_incident
from agent.store.ops import OpenIncident, Operation, RecordFix, RecordNotification
from agent.store.postgres import PostgresStore, run_migrations
from agent.store.spool import SpoolingStore

HOST_X = Identity(engine_id="XXXX:XXXX:XXXX:XXXX", project="shop")
HOST_Y = Identity(engine_id="YYYY:YYYY:YYYY:YYYY", project="shop")


def rows(url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), params).fetchall()


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_the_postgres_store_keeps_the_diagnosis_and_fix_contract(
    check: Callable[[IncidentStore], None], postgres_url: str
) -> None:
    run_migrations(postgres_url)
    store = PostgresStore(postgres_url, migrate=False)
    try:
        check(store)
    finally:
        store.close()


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_the_spooling_store_over_postgres_keeps_the_contract(
    check: Callable[[IncidentStore], None], postgres_url: str, tmp_path: Path
) -> None:
    store = SpoolingStore(PostgresStore(postgres_url), state_dir=tmp_path, retry_delays=(3600,))
    try:
        check(store)
        assert store.pending_changes() == 0
    finally:
        store.close()


def test_the_columns_hold_what_people_query(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    store.record_fix(a_fix(incident, "f1"))
    store.close()
    [(unverified, edits, tokens)] = rows(
        postgres_url, "SELECT unverified_evidence, edits, input_tokens FROM diagnoses"
    )
    assert unverified == ["a line that is not in the log"]
    assert edits[0] == {"path": "app.py", "old": "import flsk", "new": "import flask"}
    assert tokens == 1000
    [(service, state)] = rows(postgres_url, "SELECT cause_service, cause_state FROM diagnoses")
    assert (service, state) == ("db", "exited (exit code 137)")
    [(commit_id, verification, files)] = rows(
        postgres_url, "SELECT commit_id, verification, files FROM fixes"
    )
    assert commit_id == "1" * 40
    assert verification["image"] == "medic-candidate/web:f1f1f1f1"
    assert verification["built"] is True
    assert files == ["app.py"]


def test_a_replayed_fix_change_never_undoes_a_decision_stored_since(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    proposed = a_fix(incident, "f1")
    store.record_fix(proposed)
    approved = replace(proposed, status=FixStatus.APPROVED, decided_by="ada", decided_at=T0)
    store.update_fix(approved)
    # A medic that spooled the proposal, and a push result, while Postgres was away.
    store.apply([RecordFix(proposed), RecordFix(replace(proposed, pushed_to="backup"))])
    assert store.get_fix("f1") == approved
    # The same decision, written again, still goes through (a replay after a crash).
    store.apply([RecordFix(replace(approved, push_error="the remote refused"))])
    assert store.get_fix("f1").push_error == "the remote refused"
    store.close()


# --- notification records ---------------------------------------------------------------------


def test_notification_records_are_rows_people_can_query(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = open_incident(store)
    store.record_notification(
        a_notification(
            incident,
            "n1",
            kind="escalated",
            outcome=NotificationOutcome.FAILED,
            error="webhook answered 500",
        )
    )
    store.record_notification(
        a_notification(incident, "n2", at=T0, outcome=NotificationOutcome.HELD_BACK)
    )
    store.close()
    assert rows(
        postgres_url, "SELECT id, incident_id, kind, outcome, error FROM notifications ORDER BY seq"
    ) == [
        ("n1", incident, "escalated", "failed", "webhook answered 500"),
        ("n2", incident, "opened", "held_back", None),
    ]


def test_a_spool_batch_replayed_twice_stores_each_record_once_and_skips_orphans(
    postgres_url: str,
) -> None:
    """As a medic killed after its replay committed and before it cut the spool."""
    store = PostgresStore(postgres_url)
    incident = open_incident(store)
    api = new_incident(Finding(API, Signal.EXITED, "shop-api-1 exited.", T0))
    batch: list[Operation] = [
        RecordNotification(a_notification(incident, "n1")),
        # An incident opened in the same batch, then a record of it: written in order.
        OpenIncident(api, entry_id="e" * 32),
        RecordNotification(a_notification(api.id, "n2")),
        # A record of an incident nobody stored is skipped; the rest of the batch is written.
        RecordNotification(a_notification(IncidentId("0" * 32), "orphan")),
        RecordNotification(
            a_notification(incident, "n3", at=T0, outcome=NotificationOutcome.DROPPED)
        ),
    ]
    store.apply(batch)
    store.apply(batch)
    assert [n.id for n in store.notifications(incident)] == ["n1", "n3"]
    assert [n.id for n in store.notifications(api.id)] == ["n2"]
    assert rows(postgres_url, "SELECT count(*) FROM notifications") == [(3,)]
    store.close()


def test_an_incidents_records_go_with_it_when_it_is_deleted(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    incident = open_incident(store)
    store.record_notification(a_notification(incident, "n1"))
    store.close()
    with psycopg.connect(postgres_url) as conn:
        conn.execute("DELETE FROM incidents WHERE id = %s", (incident,))
    assert rows(postgres_url, "SELECT count(*) FROM notifications") == [(0,)]


# --- one database, many medics -----------------------------------------------------------------


def medic_cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MEDIC_DATABASE_URL": url},
        check=False,
    )


def test_a_medic_never_sees_or_resolves_another_medics_escalated_incident(
    postgres_url: str, tmp_path: Path
) -> None:
    run_migrations(postgres_url)
    x = SpoolingStore(
        PostgresStore(postgres_url, identity=HOST_X),
        state_dir=tmp_path / "x",
        retry_delays=(3600,),
        identity=HOST_X,
    )
    escalated = x.record_finding(Finding(WEB, Signal.EXITED, "shop-web-1 exited.", T0))
    x.set_status(escalated.id, IncidentStatus.ESCALATED, at=T0, note="3 attempts failed")
    x.close()

    # Same project name, another host: a medic of its own, started on the same database.
    y = SpoolingStore(
        PostgresStore(postgres_url, identity=HOST_Y),
        state_dir=tmp_path / "y",
        retry_delays=(3600,),
        identity=HOST_Y,
    )
    assert y.active_incidents() == []
    assert y.active_incidents(WEB.id) == []
    with pytest.raises(ForeignIncident, match="belongs to project=shop@XXXX"):
        y.set_status(escalated.id, IncidentStatus.RESOLVED, at=T0, note="container is gone")
    later = T0 + timedelta(minutes=5)
    own = y.record_finding(Finding(WEB, Signal.UNHEALTHY, "shop-web-1 is unhealthy.", later))
    assert [i.id for i in y.active_incidents()] == [own.id]
    y.close()

    # Started again, X finds its escalated incident as it left it.
    again = PostgresStore(postgres_url, identity=HOST_X)
    assert [(i.id, i.status) for i in again.active_incidents()] == [
        (escalated.id, IncidentStatus.ESCALATED)
    ]
    again.close()
    assert rows(postgres_url, "SELECT id, scope, status FROM incidents ORDER BY opened_at") == [
        (escalated.id, HOST_X.scope, "escalated"),
        (own.id, HOST_Y.scope, "open"),
    ]

    listed = medic_cli("incidents", "--json", url=postgres_url)
    assert listed.returncode == 0, listed.stderr
    assert [(i["id"], i["scope"]) for i in json.loads(listed.stdout)] == [
        (own.id, HOST_Y.scope),
        (escalated.id, HOST_X.scope),
    ]
    table = medic_cli("incidents", url=postgres_url)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["ID", "SCOPE", "SERVICE"]
    assert [line.split()[1] for line in lines] == [
        "project=shop@YYYY:YYYY:YYYY",
        "project=shop@XXXX:XXXX:XXXX",
    ]


def test_incidents_from_before_scopes_are_listed_but_no_scoped_medic_resumes_them(
    postgres_url: str,
) -> None:
    legacy = PostgresStore(postgres_url)
    old = legacy.record_finding(Finding(WEB, Signal.EXITED, "shop-web-1 exited.", T0))
    legacy.set_status(old.id, IncidentStatus.ESCALATED, at=T0)
    legacy.close()

    medic = PostgresStore(postgres_url, identity=HOST_X)
    assert medic.active_incidents() == []
    # The same container failing again opens this medic's own incident; the old one is
    # closed, saying why, so there is still one active incident per container and signal.
    later = T0 + timedelta(minutes=1)
    new = medic.record_finding(Finding(WEB, Signal.EXITED, "shop-web-1 exited.", later))
    assert new.id != old.id and new.scope == HOST_X.scope
    superseded = medic.get(old.id)
    assert superseded.status is IncidentStatus.RESOLVED
    assert superseded.scope is None
    medic.close()
