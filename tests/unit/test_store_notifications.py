"""Notification records in the memory and spooling stores.

The contract (``store_contract``) runs against every store in
test_store_escalation.py and against Postgres in the integration tests; here is
what only the spool and the memory store do with notification records: keep the
ones made while Postgres is away, write each once however often the spool is
replayed, and forget them with their incident.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from loguru import logger
from store_contract import T0, a_notification, open_incident
from store_fakes import FlakyDatabase

from agent.model import (
    ContainerId,
    ContainerRef,
    Finding,
    IncidentId,
    IncidentStatus,
    NotificationOutcome,
    Signal,
)
from agent.store import MemoryStore
from agent.store.memory import MAX_KEPT_PER_INCIDENT
from agent.store.ops import RecordNotification, from_json, to_json
from agent.store.spool import SpoolingStore


def lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every line medic logs during the test, as ``LEVEL message``."""
    found: list[str] = []
    sink = logger.add(
        lambda m: found.append(str(m).rstrip()), level="DEBUG", format="{level} {message}"
    )
    yield found
    logger.remove(sink)


@pytest.mark.parametrize("outcome", list(NotificationOutcome))
def test_a_notification_record_survives_a_trip_through_a_spool_line(
    outcome: NotificationOutcome,
) -> None:
    error = (
        "webhook answered 500 — «retry later»" if outcome is NotificationOutcome.FAILED else None
    )
    op = RecordNotification(
        a_notification(IncidentId("a" * 32), "n1", outcome=outcome, error=error)
    )
    line = to_json(op)
    assert "\n" not in line
    assert json.loads(line)["op"] == "record_notification"
    assert from_json(line) == op


def test_the_outcomes_are_the_words_the_timeline_shows() -> None:
    assert [str(o) for o in NotificationOutcome] == ["delivered", "failed", "held_back", "dropped"]


def test_records_made_while_the_database_is_away_are_spooled_and_written_in_order(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = open_incident(store)
    db.down = True
    held = a_notification(incident, "n1", outcome=NotificationOutcome.HELD_BACK)
    failed = a_notification(
        incident,
        "n2",
        kind="escalated",
        at=T0 + timedelta(seconds=3),
        outcome=NotificationOutcome.FAILED,
        error="webhook answered 500",
    )
    store.record_notification(held)
    store.record_notification(failed)

    assert [line["op"] for line in lines(tmp_path / "spool.jsonl")] == [
        "record_notification",
        "record_notification",
    ]
    # While the database is away, the view answers.
    assert store.notifications(incident) == [held, failed]
    assert db.rows.notifications(incident) == []

    db.down = False
    assert store.replay() is True
    assert db.rows.notifications(incident) == [held, failed]
    assert store.notifications(incident) == [held, failed]
    assert (tmp_path / "spool.jsonl").read_text() == ""
    store.close()


def test_a_replay_repeated_after_a_crash_stores_each_record_once(tmp_path: Path) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = open_incident(store)
    db.down = True
    records = [
        a_notification(incident, "n1"),
        a_notification(incident, "n2", kind="resolved", at=T0 + timedelta(minutes=1)),
    ]
    for record in records:
        store.record_notification(record)
    spool = (tmp_path / "spool.jsonl").read_text()
    store.close()

    # The first replay committed, then medic died before the spool was cut.
    db.down = False
    db.apply([from_json(line) for line in spool.splitlines()])
    (tmp_path / "spool.jsonl").write_text(spool)
    restarted = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    assert restarted.pending_changes() == 0
    assert db.rows.notifications(incident) == records
    assert restarted.notifications(incident) == records
    restarted.close()


def test_a_spool_of_records_left_by_an_earlier_run_is_read_while_the_database_is_away(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    db.down = True
    first = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = open_incident(first)
    first.record_notification(a_notification(incident, "n1"))
    first.close()

    again = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    assert again.pending_changes() == 2
    assert [n.id for n in again.notifications(incident)] == ["n1"]
    db.down = False
    assert again.replay() is True
    assert [n.id for n in db.rows.notifications(incident)] == ["n1"]
    again.close()


def test_a_spooled_record_of_an_unknown_incident_is_skipped_not_set_aside(
    tmp_path: Path, logged: list[str]
) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = open_incident(store)
    db.down = True
    nobody = IncidentId("0" * 32)
    store.record_notification(a_notification(nobody, "orphan"))
    store.record_notification(a_notification(incident, "n1"))
    db.down = False
    assert store.replay() is True

    assert [n.id for n in db.rows.notifications(incident)] == ["n1"]
    assert db.rows.notifications(nobody) == []
    assert not (tmp_path / "spool.rejected.jsonl").exists()
    assert not [line for line in logged if line.startswith("ERROR")]
    store.close()


def test_the_memory_store_says_at_debug_why_it_keeps_no_record_of_an_unknown_incident(
    logged: list[str],
) -> None:
    MemoryStore().record_notification(a_notification(IncidentId("0123abcd" * 4), "n1"))
    assert logged == [
        "DEBUG The delivered record of the opened notification of incident 0123abcd is not "
        "kept: no such incident is held."
    ]


# --- bounded memory ------------------------------------------------------------------------------


def test_notification_records_are_forgotten_with_their_incident() -> None:
    store = MemoryStore(max_resolved=1)
    incidents = []
    for n in range(2):
        ref = ContainerRef(ContainerId(f"{n:064x}"), f"shop-job-{n}", "shop", "job")
        incident = store.record_finding(Finding(ref, Signal.EXITED, "exited", T0))
        store.record_notification(a_notification(incident.id, f"n{n}"))
        store.set_status(incident.id, IncidentStatus.RESOLVED, at=T0)
        incidents.append(incident.id)
    assert store.notifications(incidents[0]) == []
    assert [n.id for n in store.notifications(incidents[1])] == ["n1"]


def test_an_incident_keeps_its_newest_notification_records_within_the_bound() -> None:
    store = MemoryStore()
    incident = open_incident(store)
    for n in range(MAX_KEPT_PER_INCIDENT + 5):
        at = T0 + timedelta(minutes=n)
        store.record_notification(a_notification(incident, f"n{n}", at=at))
    kept = store.notifications(incident)
    assert len(kept) == MAX_KEPT_PER_INCIDENT
    assert kept[0].id == "n5"
