"""Diagnoses, fixes and scopes in the memory and spooling stores.

The contract in ``store_contract`` runs against each store here (and against
Postgres in tests/integration/test_store_escalation_postgres.py); the rest is
what only the spool does: keep a diagnosis and a decision made while Postgres
is away, and write them in order when it is back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from store_contract import CHECKS, T0, WEB, a_diagnosis, a_fix, check_name, open_incident
from store_fakes import FlakyDatabase

from agent.engine.docker_sdk import DockerSDKGateway
from agent.errors import DockerError, FixNotFound
from agent.model import (
    ContainerId,
    ContainerRef,
    Finding,
    FixStatus,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store import IncidentStore, MemoryStore
from agent.store.base import ForeignIncident, Identity
from agent.store.memory import MAX_KEPT_PER_INCIDENT
from agent.store.ops import RecordDiagnosis, RecordFix, from_json, to_json
from agent.store.spool import SpoolingStore

HOST_A = Identity(engine_id="AAAA:BBBB:CCCC", project="shop")
HOST_B = Identity(engine_id="DDDD:EEEE:FFFF", project="shop")


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[tuple[SpoolingStore, FlakyDatabase]]:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    yield store, db
    store.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# --- the contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_the_memory_store_keeps_the_diagnosis_and_fix_contract(
    check: Callable[[IncidentStore], None],
) -> None:
    check(MemoryStore())


@pytest.mark.parametrize("check", CHECKS, ids=check_name)
def test_the_spooling_store_keeps_the_contract_with_the_database_up(
    check: Callable[[IncidentStore], None], spool: tuple[SpoolingStore, FlakyDatabase]
) -> None:
    store, _ = spool
    check(store)
    assert store.pending_changes() == 0


def test_diagnosis_and_fix_operations_survive_a_trip_through_a_spool_line() -> None:
    incident = IncidentId("a" * 32)
    for op in (RecordDiagnosis(a_diagnosis(incident, "d1")), RecordFix(a_fix(incident, "f1"))):
        line = to_json(op)
        assert "\n" not in line
        assert from_json(line) == op


# --- the spool while Postgres is away ----------------------------------------------------------


def test_a_diagnosis_and_a_decision_made_while_the_database_is_down_are_written_in_order(
    spool: tuple[SpoolingStore, FlakyDatabase], tmp_path: Path
) -> None:
    store, db = spool
    incident = open_incident(store)
    db.down = True
    diagnosis = a_diagnosis(incident, "d1")
    proposed = a_fix(incident, "f1")
    approved = replace(proposed, status=FixStatus.APPROVED, decided_by="ada", decided_at=T0)
    store.record_diagnosis(diagnosis)
    store.record_fix(proposed)
    store.update_fix(approved)

    assert [line["op"] for line in lines(tmp_path / "spool.jsonl")] == [
        "record_diagnosis",
        "record_fix",
        "record_fix",
    ]
    # Asked while the database is away, the view answers.
    assert store.diagnoses(incident) == [diagnosis]
    assert store.get_fix("f1") == approved
    assert store.tokens_since(T0) == 1234
    assert store.list_fixes() == []
    assert db.rows.diagnoses(incident) == []

    db.down = False
    assert store.replay() is True
    assert db.rows.diagnoses(incident) == [diagnosis]
    assert db.rows.get_fix("f1") == approved
    assert (tmp_path / "spool.jsonl").read_text() == ""


def test_a_spool_of_diagnoses_and_fixes_left_by_an_earlier_run_is_read_then_written(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    db.down = True
    first = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = open_incident(first)
    first.record_diagnosis(a_diagnosis(incident, "d1"))
    first.record_fix(a_fix(incident, "f1"))
    first.close()

    again = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    assert again.pending_changes() == 3
    assert [d.id for d in again.diagnoses(incident)] == ["d1"]
    assert again.get_fix("f1").status is FixStatus.PROPOSED
    db.down = False
    assert again.replay() is True
    assert [f.id for f in db.rows.list_fixes()] == ["f1"]
    again.close()


def test_a_decision_on_a_fix_only_the_database_knows_is_spooled_not_lost(
    spool: tuple[SpoolingStore, FlakyDatabase], tmp_path: Path
) -> None:
    store, db = spool
    incident = open_incident(store)
    # Made by another medic process: only the database knows the fix.
    db.rows.record_diagnosis(a_diagnosis(incident, "d1"))
    db.rows.record_fix(a_fix(incident, "f1"))
    with pytest.raises(FixNotFound):
        store.update_fix(a_fix(incident, "f2"))
    db.down = True
    rejected = replace(a_fix(incident, "f1"), status=FixStatus.REJECTED, reason="no")
    store.update_fix(rejected)
    assert store.pending_changes() == 1
    db.down = False
    assert store.replay() is True
    assert db.rows.get_fix("f1") == rejected


def test_a_spooled_diagnosis_the_database_refuses_is_set_aside_and_the_rest_written(
    spool: tuple[SpoolingStore, FlakyDatabase], tmp_path: Path
) -> None:
    store, db = spool
    incident = open_incident(store)
    db.down = True
    # An incident nobody stored: the database refuses it, as its foreign key would.
    store.record_diagnosis(a_diagnosis(IncidentId("0" * 32), "orphan"))
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    db.down = False
    assert store.replay() is True
    assert [d.id for d in db.rows.diagnoses(incident)] == ["d1"]
    [kept] = lines(tmp_path / "spool.rejected.jsonl")
    assert (kept["op"], kept["id"]) == ("record_diagnosis", "orphan")


# --- bounded memory ------------------------------------------------------------------------------


def resolve_new_incident(store: MemoryStore, n: int) -> IncidentId:
    ref = ContainerRef(ContainerId(f"{n:064x}"), f"shop-job-{n}", "shop", "job")
    incident = store.record_finding(Finding(ref, Signal.EXITED, "exited", T0))
    store.record_diagnosis(a_diagnosis(incident.id, f"d{n}"))
    store.record_fix(a_fix(incident.id, f"f{n}", f"d{n}"))
    store.set_status(incident.id, IncidentStatus.RESOLVED, at=T0)
    return incident.id


def test_diagnoses_and_fixes_are_forgotten_with_their_incident() -> None:
    store = MemoryStore(max_resolved=2)
    first = resolve_new_incident(store, 0)
    kept = [resolve_new_incident(store, n) for n in (1, 2)]
    assert store.diagnoses(first) == []
    with pytest.raises(FixNotFound):
        store.get_fix("f0")
    assert [len(store.diagnoses(i)) for i in kept] == [1, 1]
    assert {f.id for f in store.list_fixes(include_decided=True)} == {"f1", "f2"}
    assert store.tokens_since(T0) == 2 * 1234


def test_an_incident_keeps_its_newest_diagnoses_and_fixes_within_the_bound() -> None:
    store = MemoryStore()
    incident = open_incident(store)
    for n in range(MAX_KEPT_PER_INCIDENT + 5):
        at = T0 + timedelta(minutes=n)
        store.record_diagnosis(a_diagnosis(incident, f"d{n}", created_at=at))
        store.record_fix(a_fix(incident, f"f{n:02}", f"d{n}", created_at=at))
    diagnoses = store.diagnoses(incident)
    assert len(diagnoses) == MAX_KEPT_PER_INCIDENT
    assert diagnoses[0].id == "d5"
    assert len(store.fixes_of_incident(incident)) == MAX_KEPT_PER_INCIDENT
    assert MAX_KEPT_PER_INCIDENT == 20


# --- one database, many medics -------------------------------------------------------------------


def test_an_identity_is_its_scope_and_engine_and_needs_the_engine() -> None:
    assert HOST_A.scope == "project=shop@AAAA:BBBB:CCCC"
    assert Identity(engine_id="E1").scope == "label=medic.enable@E1"
    assert HOST_A.scope != HOST_B.scope
    with pytest.raises(ValueError, match="Docker engine"):
        Identity(engine_id=" ", project="shop")


def test_a_store_with_an_identity_stamps_it_and_sees_only_its_own_active_incidents() -> None:
    store = MemoryStore(identity=HOST_A)
    mine = store.record_finding(Finding(WEB, Signal.EXITED, "exited", T0))
    assert mine.scope == HOST_A.scope
    theirs = replace(mine, id=IncidentId("b" * 32), scope=HOST_B.scope)
    store.put(theirs)
    assert [i.id for i in store.active_incidents()] == [mine.id]
    assert {i.id for i in store.list_incidents()} == {mine.id, theirs.id}
    with pytest.raises(ForeignIncident, match="belongs to project=shop@DDDD"):
        store.set_status(theirs.id, IncidentStatus.RESOLVED, at=T0)
    assert store.get(theirs.id).is_active


def test_two_spooling_medics_on_one_database_do_not_see_each_others_incidents(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    a = SpoolingStore(db, state_dir=tmp_path / "a", retry_delays=(3600,), identity=HOST_A)
    escalated = a.record_finding(Finding(WEB, Signal.EXITED, "exited", T0))
    a.set_status(escalated.id, IncidentStatus.ESCALATED, at=T0)
    b = SpoolingStore(db, state_dir=tmp_path / "b", retry_delays=(3600,), identity=HOST_B)
    assert b.active_incidents() == []
    assert [i.id for i in a.active_incidents()] == [escalated.id]
    with pytest.raises(ForeignIncident):
        b.set_status(escalated.id, IncidentStatus.RESOLVED, at=T0)
    assert db.rows.get(escalated.id).status is IncidentStatus.ESCALATED
    # Listing every incident (as the case file does for earlier ones) shows X's to Y,
    # but Y does not take it for its own.
    assert [i.id for i in b.list_incidents()] == [escalated.id]
    assert b.remembered() == 0
    a.close()
    b.close()


class _EngineWithoutId:
    """The SDK client's shape, for an engine whose ``docker info`` lacks an ID."""

    class api:
        @staticmethod
        def info() -> dict[str, object]:
            return {"ServerVersion": "20.10.24"}


def test_an_engine_that_gives_no_id_is_a_clear_error_not_an_empty_identity() -> None:
    gateway = DockerSDKGateway(_EngineWithoutId(), retry_attempts=1)
    with pytest.raises(DockerError, match="did not give its ID"):
        gateway.engine_id()
