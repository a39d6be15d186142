"""One codec for recorded values: every value survives a trip through JSON, field by field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from agent.codec import (
    CodecError,
    attempt_from_dict,
    attempt_to_dict,
    diagnosis_from_dict,
    diagnosis_to_dict,
    edit_from_dict,
    edit_to_dict,
    evidence_entry_from_dict,
    evidence_entry_to_dict,
    fix_from_dict,
    fix_to_dict,
    format_duration,
    incident_from_dict,
    incident_to_dict,
    verification_from_dict,
    verification_to_dict,
)
from agent.model import (
    Attempt,
    AttemptId,
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Edit,
    EvidenceEntry,
    Fix,
    FixId,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
    Verification,
)

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
WEB = ContainerRef(ContainerId("c" * 64), "shop-web-1", "shop", "web")


def through_json(doc: dict[str, Any]) -> dict[str, Any]:
    """What a reader gets back after the document was written as text."""
    parsed: dict[str, Any] = json.loads(json.dumps(doc))
    return parsed


def an_attempt(**changes: Any) -> Attempt:
    fields: dict[str, Any] = {
        "id": AttemptId("a1" * 16),
        "incident_id": IncidentId("i1" * 16),
        "playbook": "restart-unhealthy",
        "action": "restart (stop timeout 10s)",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=4.5),
        "ok": False,
        "error": "the engine refused: 500",
        "output": "line one\nline two",
    }
    fields.update(changes)
    return Attempt(**fields)


def an_incident(**changes: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": IncidentId("i1" * 16),
        "container": WEB,
        "signal": Signal.UNHEALTHY,
        "status": IncidentStatus.ESCALATED,
        "opened_at": T0,
        "updated_at": T0 + timedelta(minutes=3),
        "summary": "shop-web-1 is unhealthy.",
        "resolved_at": None,
        "evidence": (
            EvidenceEntry(T0, "shop-web-1 is unhealthy.", {"streak": 3, "output": "refused"}),
            EvidenceEntry(T0 + timedelta(seconds=30), "still", {"ratio": 0.5, "oom": False}),
        ),
        "attempts": (an_attempt(), an_attempt(id=AttemptId("a2" * 16), ok=True, error=None)),
        "note": "3 attempts in 30 min",
        "scope": "project=shop@ABCD:EFGH",
    }
    fields.update(changes)
    return Incident(**fields)


def a_diagnosis(**changes: Any) -> Diagnosis:
    fields: dict[str, Any] = {
        "id": DiagnosisId("d1" * 16),
        "incident_id": IncidentId("i1" * 16),
        "source": DiagnosisSource.LLM,
        "created_at": T0,
        "summary": "The web service cannot reach its database.",
        "root_cause": "DATABASE_HOST names a service that does not exist.",
        "confidence": Confidence.HIGH,
        "evidence": ('could not translate host name "dbx"',),
        "rule_id": "dns",
        "model": "claude-sonnet-5-5",
        "edits": (Edit("compose.yml", "DATABASE_HOST: dbx", "DATABASE_HOST: db"),),
        "no_edits_reason": None,
        "case_file": "## inspect\n{}",
        "fingerprint": "shop/web/unhealthy",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 50,
        "error": None,
        "reused_from": DiagnosisId("d0" * 16),
        "unverified_evidence": ("a quote the model made up",),
        "cause_service": "db",
        "cause_state": "exited (exit code 1)",
    }
    fields.update(changes)
    return Diagnosis(**fields)


def a_fix(**changes: Any) -> Fix:
    fields: dict[str, Any] = {
        "id": FixId("f1" * 16),
        "incident_id": IncidentId("i1" * 16),
        "diagnosis_id": DiagnosisId("d1" * 16),
        "status": FixStatus.PROPOSED,
        "created_at": T0,
        "summary": "Point DATABASE_HOST at db.",
        "files": ("compose.yml",),
        "branch": "medic/fix-i1i1i1i1-web",
        "base": "0" * 40,
        "base_branch": "main",
        "commit": "1" * 40,
        "refusal_reasons": (),
        "verification": Verification(
            built=True,
            build_log="Step 1/3",
            image="medic-candidate/web:f1f1f1f1",
            command="make test",
            exit_status=0,
            output="ok",
        ),
        "pushed_to": None,
        "push_error": "no remote",
        "decided_at": T0 + timedelta(hours=1),
        "decided_by": "ada",
        "reason": None,
    }
    fields.update(changes)
    return Fix(**fields)


def test_an_incident_with_evidence_and_attempts_survives_a_trip_through_json() -> None:
    incident = an_incident()
    assert incident_from_dict(through_json(incident_to_dict(incident))) == incident


def test_a_resolved_incident_without_service_or_project_survives_too() -> None:
    bare = ContainerRef(ContainerId("e" * 64), "lonely", None, None)
    incident = an_incident(
        container=bare,
        status=IncidentStatus.RESOLVED,
        resolved_at=T0 + timedelta(hours=2),
        evidence=(),
        attempts=(),
        note=None,
        scope=None,
    )
    assert incident_from_dict(through_json(incident_to_dict(incident))) == incident


def test_the_incident_fields_are_the_ones_the_cli_prints() -> None:
    doc = incident_to_dict(an_incident())
    assert set(doc) == {
        "id",
        "project",
        "service",
        "container",
        "container_id",
        "signal",
        "status",
        "summary",
        "opened_at",
        "updated_at",
        "resolved_at",
        "note",
        "scope",
        "fingerprint",
        "evidence",
        "attempts",
    }
    assert doc["container"] == "shop-web-1"
    assert doc["container_id"] == "c" * 64
    assert doc["signal"] == "unhealthy"
    assert doc["opened_at"] == "2026-05-01T12:00:00.123456+00:00"
    assert doc["fingerprint"] == "shop/web/unhealthy"


def test_times_keep_their_offset_and_microseconds() -> None:
    elsewhere = datetime(2026, 5, 1, 14, 0, 0, 7, tzinfo=timezone(timedelta(hours=2)))
    attempt = an_attempt(started_at=elsewhere, finished_at=elsewhere)
    back = attempt_from_dict(through_json(attempt_to_dict(attempt)))
    assert back.started_at == elsewhere
    assert back.started_at.utcoffset() == timedelta(hours=2)


def test_attempts_and_evidence_entries_survive_alone() -> None:
    attempt = an_attempt()
    assert attempt_from_dict(through_json(attempt_to_dict(attempt))) == attempt
    entry = EvidenceEntry(T0, "exited with code 3", {"exit_code": 3, "error": None})
    assert evidence_entry_from_dict(through_json(evidence_entry_to_dict(entry))) == entry


def test_database_rows_with_real_datetimes_are_read_as_well() -> None:
    row = {**attempt_to_dict(an_attempt()), "started_at": T0, "finished_at": T0}
    assert attempt_from_dict(row).started_at == T0


@pytest.mark.parametrize(
    "diagnosis",
    [
        a_diagnosis(),
        a_diagnosis(
            source=DiagnosisSource.RULES,
            confidence=Confidence.LOW,
            evidence=(),
            rule_id="unknown",
            model=None,
            edits=(),
            no_edits_reason="the rules propose no edits",
            reused_from=None,
            error="the daily token budget is spent",
            cause_service=None,
            cause_state=None,
        ),
    ],
)
def test_a_diagnosis_survives_a_trip_through_json(diagnosis: Diagnosis) -> None:
    assert diagnosis_from_dict(through_json(diagnosis_to_dict(diagnosis))) == diagnosis


def test_a_diagnosis_names_the_service_where_the_cause_lies_and_its_state() -> None:
    doc = diagnosis_to_dict(a_diagnosis())
    assert (doc["cause_service"], doc["cause_state"]) == ("db", "exited (exit code 1)")


def test_a_diagnosis_stored_before_causes_were_named_still_loads_without_one() -> None:
    doc = through_json(diagnosis_to_dict(a_diagnosis()))
    del doc["cause_service"], doc["cause_state"]
    loaded = diagnosis_from_dict(doc)
    assert (loaded.cause_service, loaded.cause_state) == (None, None)
    assert loaded == a_diagnosis(cause_service=None, cause_state=None)


def test_an_edit_that_creates_a_file_keeps_its_empty_old_text() -> None:
    edit = Edit("new.txt", "", "hello\n")
    assert edit_from_dict(through_json(edit_to_dict(edit))) == edit


@pytest.mark.parametrize(
    "fix",
    [
        a_fix(),
        a_fix(
            status=FixStatus.REFUSED,
            files=(),
            branch=None,
            base=None,
            base_branch=None,
            commit=None,
            refusal_reasons=("touches .env", "deletes a file"),
            verification=None,
            push_error=None,
            decided_at=None,
            decided_by=None,
            reason="refused by the guardrails",
        ),
    ],
)
def test_a_fix_survives_a_trip_through_json(fix: Fix) -> None:
    assert fix_from_dict(through_json(fix_to_dict(fix))) == fix


def test_a_verification_says_whether_it_passed_and_reading_ignores_that() -> None:
    failed = Verification(built=False, build_log="error: no such file", error=None)
    doc = verification_to_dict(failed)
    assert doc["ok"] is False
    assert verification_from_dict(through_json(doc)) == failed
    assert verification_from_dict({**doc, "ok": True}).ok is False


def test_a_verification_with_a_sandbox_run_and_a_healing_check_survives_a_trip() -> None:
    checked = Verification(
        built=True,
        image="medic-candidate/web:f1f1f1f1",
        command="pytest -q",
        command_image="medic-candidate/web:f1f1f1f1",
        exit_status=0,
        output="3 passed",
        healing="still fails: KeyError: 'PORT'",
        healing_ok=False,
        healing_log="Traceback (most recent call last):\nKeyError: 'PORT'",
        compose_effect=("web: environment PORT added",),
    )
    doc = verification_to_dict(checked)
    assert doc["ok"] is False
    assert doc["compose_effect"] == ["web: environment PORT added"]
    assert verification_from_dict(through_json(doc)) == checked


def test_a_verification_stored_before_the_sandbox_fields_still_loads_as_not_tried() -> None:
    old = {
        "ok": True,
        "built": True,
        "build_log": "Step 1/3",
        "image": "medic-candidate/web:f1f1f1f1",
        "command": "make test",
        "exit_status": 0,
        "output": "ok",
        "error": None,
    }
    loaded = verification_from_dict(old)
    assert loaded.healing is None and loaded.healing_ok is None
    assert loaded.healing_log == "" and loaded.compose_effect == ()
    assert loaded.command_image is None
    assert loaded.ok


def test_a_failed_healing_check_makes_the_verification_fail() -> None:
    assert not Verification(built=True, healing="still fails: boom", healing_ok=False).ok
    assert Verification(built=True, healing="starts and stays up", healing_ok=True).ok


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"opened_at": "yesterday"}, "'opened_at' is not an ISO 8601 time"),
        ({"opened_at": "2026-05-01T12:00:00"}, "'opened_at' has no time zone"),
        ({"signal": "on_fire"}, "'signal' is 'on_fire', not one of unhealthy"),
        ({"summary": 42}, "'summary' must be a string, not int"),
        ({"attempts": [{"id": "x"}]}, "attempts[0]: the field 'incident_id' is missing"),
        ({"attempts": "two"}, "'attempts' must be a list, not str"),
        ({"evidence": [{"observed_at": None}]}, "evidence[0]: the field 'observed_at'"),
    ],
)
def test_a_bad_document_names_the_field(change: dict[str, Any], message: str) -> None:
    doc = {**through_json(incident_to_dict(an_incident())), **change}
    with pytest.raises(CodecError) as caught:
        incident_from_dict(doc)
    assert message in str(caught.value)


def test_ok_must_be_a_boolean_not_a_truthy_string() -> None:
    doc = {**attempt_to_dict(an_attempt()), "ok": "false"}
    with pytest.raises(CodecError, match="'ok' must be true or false, not str"):
        attempt_from_dict(doc)


def test_nested_evidence_from_elsewhere_is_kept_as_text_not_refused() -> None:
    entry = evidence_entry_from_dict(
        {"observed_at": T0.isoformat(), "summary": "odd", "evidence": {"ports": [80, 443]}}
    )
    assert entry.evidence == {"ports": "[80, 443]"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (-3, "0 s"),
        (2.5, "2.5 s"),
        (45, "45 s"),
        (59.96, "60 s"),
        (60, "1 min"),
        (75, "1 min 15 s"),
        (192, "3 min 12 s"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (7530, "2 h 5 min"),
        (86400 * 3 + 3600 * 4 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_in_their_two_largest_units(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
