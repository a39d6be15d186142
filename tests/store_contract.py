"""What every incident store promises about diagnoses, fixes and notification records,
written once.

Each ``check_*`` takes an empty store and fails if that store breaks a promise;
the memory, spooling and Postgres stores' tests run every check against their
own store (``CHECKS``). The promises are those of ``DiagnosisStore`` and
``FixStore``, whose in-memory implementations the escalation tests use, that an
incident follows a container medic replaced (``move_incident``), and that what
became of each notification is kept once per incident (``record_notification``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent.errors import FixNotFound
from agent.escalate.store import DiagnosisStore
from agent.fixes.review import FixStore
from agent.model import (
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Edit,
    Finding,
    Fix,
    FixId,
    FixStatus,
    IncidentId,
    IncidentStatus,
    NotificationId,
    NotificationOutcome,
    NotificationRecord,
    Signal,
    Verification,
)
from agent.store import IncidentNotFound, IncidentStore
from agent.store.base import FixRecordedAlready

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WEB = ContainerRef(ContainerId("a" * 64), "shop-web-1", "shop", "web")
API = ContainerRef(ContainerId("b" * 64), "shop-api-1", "shop", "api")


def open_incident(store: IncidentStore, ref: ContainerRef = WEB) -> IncidentId:
    found = Finding(ref, Signal.EXITED, f"{ref.name} exited with code 1.", T0, {"exit_code": 1})
    return store.record_finding(found).id


def a_diagnosis(incident_id: IncidentId, diagnosis_id: str, **changes: Any) -> Diagnosis:
    fields: dict[str, Any] = {
        "id": DiagnosisId(diagnosis_id),
        "incident_id": incident_id,
        "source": DiagnosisSource.LLM,
        "created_at": T0,
        "summary": "The web service cannot import its app module.",
        "root_cause": "app.py imports 'flsk', a typo for 'flask'.",
        "confidence": Confidence.HIGH,
        "evidence": ("ModuleNotFoundError: No module named 'flsk'",),
        "rule_id": "missing_module",
        "model": "claude-sonnet-5-5",
        "edits": (Edit("app.py", "import flsk", "import flask"), Edit("NEW.md", "", "x\n")),
        "no_edits_reason": None,
        "case_file": "## log tail\nModuleNotFoundError: No module named 'flsk'\n" + "é" * 10,
        "fingerprint": "fp-1",
        "input_tokens": 1000,
        "output_tokens": 200,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 4,
        "unverified_evidence": ("a line that is not in the log",),
        "cause_service": "db",
        "cause_state": "exited (exit code 137)",
    }
    fields.update(changes)
    return Diagnosis(**fields)


def a_fix(incident_id: IncidentId, fix_id: str, diagnosis_id: str = "d1", **changes: Any) -> Fix:
    fields: dict[str, Any] = {
        "id": FixId(fix_id),
        "incident_id": incident_id,
        "diagnosis_id": DiagnosisId(diagnosis_id),
        "status": FixStatus.PROPOSED,
        "created_at": T0,
        "summary": "Import flask, not flsk.",
        "files": ("app.py",),
        "branch": f"medic/fix-{incident_id[:8]}-web",
        "base": "0" * 40,
        "base_branch": "main",
        "commit": "1" * 40,
        "verification": Verification(
            built=True,
            build_log="Successfully built",
            image="medic-candidate/web:f1f1f1f1",
            command="pytest -q",
            exit_status=0,
            output="3 passed",
        ),
        "pushed_to": "origin",
    }
    fields.update(changes)
    return Fix(**fields)


def a_notification(incident_id: IncidentId, record_id: str, **changes: Any) -> NotificationRecord:
    fields: dict[str, Any] = {
        "id": NotificationId(record_id),
        "incident_id": incident_id,
        "kind": "opened",
        "title": "medic: web shows exited",
        "at": T0,
        "outcome": NotificationOutcome.DELIVERED,
        "error": None,
    }
    fields.update(changes)
    return NotificationRecord(**fields)


def check_a_diagnosis_is_kept_whole_and_once_oldest_first(store: IncidentStore) -> None:
    incident = open_incident(store)
    later = a_diagnosis(incident, "d2", created_at=T0 + timedelta(minutes=1), edits=())
    first = a_diagnosis(
        incident,
        "d1",
        source=DiagnosisSource.RULES,
        model=None,
        cause_service=None,
        cause_state=None,
    )
    store.record_diagnosis(later)
    store.record_diagnosis(first)
    store.record_diagnosis(replace(first, summary="written again"))
    assert store.diagnoses(incident) == [first, later]
    assert store.diagnoses(IncidentId("f" * 32)) == []


def check_a_diagnosis_keeps_the_other_service_where_the_cause_lies(
    store: IncidentStore,
) -> None:
    incident = open_incident(store)
    upstream = a_diagnosis(incident, "d1", cause_service="db", cause_state="no container")
    own = a_diagnosis(
        incident, "d2", created_at=T0 + timedelta(minutes=1), cause_service=None, cause_state=None
    )
    store.record_diagnosis(upstream)
    store.record_diagnosis(own)
    [first, second] = store.diagnoses(incident)
    assert (first.cause_service, first.cause_state) == ("db", "no container")
    assert (second.cause_service, second.cause_state) == (None, None)


def check_a_diagnosis_of_an_unknown_incident_is_refused(store: IncidentStore) -> None:
    with pytest.raises(IncidentNotFound):
        store.record_diagnosis(a_diagnosis(IncidentId("f" * 32), "d1"))


def check_the_reusable_diagnosis_is_the_newest_llm_one_of_the_fingerprint_since(
    store: IncidentStore,
) -> None:
    web, api = open_incident(store, WEB), open_incident(store, API)
    at = T0 + timedelta(hours=1)
    for d in (
        a_diagnosis(web, "old", created_at=T0),
        a_diagnosis(web, "hit", created_at=at + timedelta(minutes=5)),
        a_diagnosis(api, "newer", created_at=at + timedelta(minutes=9)),
        a_diagnosis(web, "rules", source=DiagnosisSource.RULES, created_at=at + timedelta(hours=1)),
        a_diagnosis(
            web, "reuse", reused_from=DiagnosisId("hit"), created_at=at + timedelta(hours=2)
        ),
        a_diagnosis(web, "other", fingerprint="fp-2", created_at=at + timedelta(hours=3)),
    ):
        store.record_diagnosis(d)
    found = store.find_reusable("fp-1", since=at)
    assert found is not None and found.id == "newer"
    assert store.find_reusable("fp-1", since=at + timedelta(minutes=10)) is None
    assert store.find_reusable("fp-9", since=T0) is None


def check_the_tokens_spent_since_a_time_count_every_kind(store: IncidentStore) -> None:
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "yesterday", created_at=T0 - timedelta(days=1)))
    store.record_diagnosis(a_diagnosis(incident, "at", created_at=T0))
    store.record_diagnosis(
        a_diagnosis(
            incident,
            "later",
            created_at=T0 + timedelta(hours=3),
            input_tokens=7,
            output_tokens=5,
            cache_creation_input_tokens=3,
            cache_read_input_tokens=2,
        )
    )
    assert store.tokens_since(T0) == 1234 + 17
    assert store.tokens_since(T0 + timedelta(seconds=1)) == 17
    assert store.tokens_since(T0 + timedelta(days=1)) == 0


def check_a_fix_is_kept_whole_and_found_by_id_or_unique_prefix(store: IncidentStore) -> None:
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    one, two = a_fix(incident, "abc123"), a_fix(incident, "abd456", verification=None)
    store.record_fix(one)
    store.record_fix(two)
    assert store.get_fix("abc123") == one
    assert store.get_fix("abd") == two
    with pytest.raises(FixNotFound, match="2 fixes have ids starting with 'ab'"):
        store.get_fix("ab")
    with pytest.raises(FixNotFound, match="No fix has an id starting with 'zz'"):
        store.get_fix("zz")
    with pytest.raises(FixNotFound):
        store.get_fix("")


def check_a_fix_is_recorded_once(store: IncidentStore) -> None:
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    store.record_fix(a_fix(incident, "f1"))
    with pytest.raises(FixRecordedAlready, match="recorded already"):
        store.record_fix(a_fix(incident, "f1", summary="another"))
    with pytest.raises(ValueError):
        store.record_fix(a_fix(incident, "f1"))
    assert store.get_fix("f1").summary == "Import flask, not flsk."


def check_an_update_replaces_the_fix_and_an_unknown_one_is_not_found(
    store: IncidentStore,
) -> None:
    incident = open_incident(store)
    store.record_diagnosis(a_diagnosis(incident, "d1"))
    store.record_fix(a_fix(incident, "f1"))
    decided = replace(
        a_fix(incident, "f1"),
        status=FixStatus.REJECTED,
        decided_at=T0 + timedelta(hours=1),
        decided_by="carol",
        reason="wrong port",
        push_error="the remote refused",
    )
    store.update_fix(decided)
    assert store.get_fix("f1") == decided
    with pytest.raises(FixNotFound):
        store.update_fix(a_fix(incident, "f2"))


def check_fixes_are_listed_newest_first_awaiting_a_decision_unless_all(
    store: IncidentStore,
) -> None:
    web, api = open_incident(store, WEB), open_incident(store, API)
    store.record_diagnosis(a_diagnosis(web, "d1"))
    store.record_diagnosis(a_diagnosis(api, "d2"))
    for fix in (
        a_fix(web, "a", created_at=T0 + timedelta(minutes=1)),
        a_fix(api, "b", "d2", created_at=T0 + timedelta(minutes=2)),
        a_fix(web, "c", created_at=T0 + timedelta(minutes=3), status=FixStatus.REFUSED),
        a_fix(web, "d", created_at=T0 + timedelta(minutes=4), status=FixStatus.APPROVED),
    ):
        store.record_fix(fix)
    assert [f.id for f in store.list_fixes()] == ["b", "a"]
    assert [f.id for f in store.list_fixes(include_decided=True)] == ["d", "c", "b", "a"]
    assert [f.id for f in store.fixes_of_incident(web)] == ["a", "c", "d"]
    assert [f.id for f in store.fixes_of_incident(IncidentId("f" * 32))] == []


def check_the_store_is_both_a_diagnosis_store_and_a_fix_store(store: IncidentStore) -> None:
    diagnoses: DiagnosisStore = store
    fixes: FixStore = store
    incident = open_incident(store)
    diagnoses.record_diagnosis(a_diagnosis(incident, "d1"))
    fixes.record_fix(a_fix(incident, "f1"))
    assert [f.id for f in fixes.fixes_of_incident(incident)] == ["f1"]


def check_an_incident_follows_the_container_that_replaced_it(store: IncidentStore) -> None:
    incident = open_incident(store)
    new = replace(WEB, id=ContainerId("d" * 64))
    note = f"shop-web-1 ({WEB.short_id}) was recreated as {new.short_id}"

    moved = store.move_incident(incident, new, at=T0 + timedelta(minutes=1), note=note)

    assert (moved.id, moved.container, moved.status) == (incident, new, IncidentStatus.OPEN)
    assert store.get(incident).container == new
    assert [e.summary for e in store.get(incident).evidence][-1] == note
    assert [i.id for i in store.active_incidents(new.id)] == [incident]
    assert store.active_incidents(WEB.id) == []
    # The new container's findings join the same incident.
    again = Finding(new, Signal.EXITED, "shop-web-1 exited with code 1.", T0 + timedelta(minutes=2))
    assert store.record_finding(again).id == incident
    assert len(store.get(incident).evidence) == 3
    with pytest.raises(IncidentNotFound):
        store.move_incident(IncidentId("f" * 32), new, at=T0, note=note)


def check_notification_records_are_kept_whole_and_once_oldest_first(
    store: IncidentStore,
) -> None:
    incident = open_incident(store)
    later = T0 + timedelta(minutes=5)
    failed = a_notification(
        incident,
        "n-failed",
        kind="escalated",
        title="medic: web keeps failing — é",
        at=later,
        outcome=NotificationOutcome.FAILED,
        error="no destination accepted the escalated notification of incident 0123abcd",
    )
    opened = a_notification(incident, "n-opened")
    # Two of one moment keep the order they were recorded in.
    held = a_notification(
        incident, "n-held", kind="playbook", at=later, outcome=NotificationOutcome.HELD_BACK
    )
    dropped = a_notification(
        incident, "n-dropped", kind="resolved", at=later, outcome=NotificationOutcome.DROPPED
    )
    for record in (failed, opened, held, dropped):
        store.record_notification(record)
    store.record_notification(replace(opened, outcome=NotificationOutcome.FAILED, error="x"))
    assert store.notifications(incident) == [opened, failed, held, dropped]
    assert store.notifications(IncidentId("f" * 32)) == []


def check_a_notification_record_of_an_unknown_incident_is_not_kept_and_is_no_error(
    store: IncidentStore,
) -> None:
    unknown = IncidentId("f" * 32)
    store.record_notification(a_notification(unknown, "n-orphan"))
    assert store.notifications(unknown) == []
    # The store goes on keeping the records of the incidents it has.
    incident = open_incident(store)
    store.record_notification(a_notification(incident, "n-1"))
    assert [n.id for n in store.notifications(incident)] == ["n-1"]


def check_notification_records_stay_with_their_own_incident(store: IncidentStore) -> None:
    web, api = open_incident(store, WEB), open_incident(store, API)
    store.record_notification(a_notification(web, "n-web"))
    store.record_notification(a_notification(api, "n-api", at=T0 - timedelta(minutes=1)))
    assert [n.id for n in store.notifications(web)] == ["n-web"]
    assert [n.id for n in store.notifications(api)] == ["n-api"]


CHECKS: list[Callable[[IncidentStore], None]] = [
    check_a_diagnosis_is_kept_whole_and_once_oldest_first,
    check_a_diagnosis_keeps_the_other_service_where_the_cause_lies,
    check_a_diagnosis_of_an_unknown_incident_is_refused,
    check_the_reusable_diagnosis_is_the_newest_llm_one_of_the_fingerprint_since,
    check_the_tokens_spent_since_a_time_count_every_kind,
    check_a_fix_is_kept_whole_and_found_by_id_or_unique_prefix,
    check_a_fix_is_recorded_once,
    check_an_update_replaces_the_fix_and_an_unknown_one_is_not_found,
    check_fixes_are_listed_newest_first_awaiting_a_decision_unless_all,
    check_the_store_is_both_a_diagnosis_store_and_a_fix_store,
    check_an_incident_follows_the_container_that_replaced_it,
    check_notification_records_are_kept_whole_and_once_oldest_first,
    check_a_notification_record_of_an_unknown_incident_is_not_kept_and_is_no_error,
    check_notification_records_stay_with_their_own_incident,
]


def check_name(check: Callable[[IncidentStore], None]) -> str:
    return check.__name__.removeprefix("check_")
