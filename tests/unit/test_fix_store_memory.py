"""The in-memory store keeps fixes as the FixStore contract says."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fixrepo import incident

from agent.errors import FixNotFound
from agent.fixes.review import FixStore, decided_by
from agent.model import DiagnosisId, Fix, FixId, FixStatus, IncidentId
from agent.store.memory import MemoryStore

AT = datetime(2026, 5, 1, tzinfo=UTC)


def fix(
    fix_id: str, *, incident: str = "i1", minutes: int = 0, status: FixStatus = FixStatus.PROPOSED
) -> Fix:
    return Fix(
        id=FixId(fix_id),
        incident_id=IncidentId(incident),
        diagnosis_id=DiagnosisId("d"),
        status=status,
        created_at=AT + timedelta(minutes=minutes),
        summary="s",
    )


def fix_store(*fixes: Fix) -> MemoryStore:
    """A store holding incidents i1 and i2, and ``fixes``."""
    store = MemoryStore()
    for incident_id in ("i1", "i2"):
        store.put(incident(incident_id=incident_id))
    for f in fixes:
        store.record_fix(f)
    return store


def test_a_fix_is_found_by_id_or_unique_prefix() -> None:
    store: FixStore = fix_store(fix("abc123"), fix("abd456"))
    assert store.get_fix("abc123").id == "abc123"
    assert store.get_fix("abd").id == "abd456"
    with pytest.raises(FixNotFound, match="2 fixes have ids starting with 'ab'"):
        store.get_fix("ab")
    with pytest.raises(FixNotFound, match="No fix has an id starting with 'zz'"):
        store.get_fix("zz")


def test_listing_shows_fixes_awaiting_a_decision_newest_first_unless_all() -> None:
    store = fix_store()
    store.record_fix(fix("a", minutes=1))
    store.record_fix(fix("b", minutes=2))
    store.record_fix(fix("c", minutes=3, status=FixStatus.REFUSED))
    assert [f.id for f in store.list_fixes()] == ["b", "a"]
    assert [f.id for f in store.list_fixes(include_decided=True)] == ["c", "b", "a"]


def test_an_update_replaces_the_fix_and_an_unknown_one_is_not_found() -> None:
    store = fix_store(fix("a"))
    store.update_fix(replace(fix("a"), status=FixStatus.REJECTED, reason="no"))
    assert store.get_fix("a").reason == "no"
    with pytest.raises(FixNotFound):
        store.update_fix(fix("b"))


def test_a_fix_is_recorded_once() -> None:
    store = fix_store(fix("a"))
    with pytest.raises(ValueError, match="recorded already"):
        store.record_fix(fix("a"))


def test_fixes_of_an_incident_oldest_first() -> None:
    store = fix_store(fix("b", minutes=2), fix("a", minutes=1), fix("x", incident="i2"))
    assert [f.id for f in store.fixes_of_incident(IncidentId("i1"))] == ["a", "b"]


def test_who_decided_is_the_given_name_else_the_os_user() -> None:
    assert decided_by("  alice ") == "alice"
    assert decided_by(None)
