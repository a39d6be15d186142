"""Diagnosis on demand and off the healing path: rules always, the model within the budgets."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from escalate_support import FixtureSource, load_fixture
from fake_anthropic import FakeAnthropic, error, tool_use
from fake_http import Reply
from fakes import FakeClock

from agent.escalate.budget import error_signature, fingerprint
from agent.escalate.claude import ClaudeModel, make_client
from agent.escalate.document import diagnose_document, render_text
from agent.escalate.llm import SUBMIT, Diagnoser, Limits
from agent.escalate.worker import DiagnosisService, DiagnosisWorker, new_diagnosis_id
from agent.model import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisSource,
    Finding,
    Incident,
    IncidentId,
    Signal,
)
from agent.store.memory import MemoryStore

NOW = datetime(2026, 11, 21, 15, 0, 0, tzinfo=UTC)


def submit(*, cause_service: str | None = None, **usage: int) -> Reply:
    answer: dict[str, Any] = {
        "summary": "The worker image lacks the requests package.",
        "root_cause": "requests is imported but not installed.",
        "confidence": "high",
        "evidence": ["ModuleNotFoundError: No module named 'requests'"],
        "edits": [],
        "no_edits_reason": "The image's requirements are outside the repository.",
    }
    if cause_service is not None:
        answer["cause_service"] = cause_service
    return tool_use(SUBMIT, answer, **usage)


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic([])
    with server.running():
        yield server


def open_incident(store: MemoryStore, inspect: dict[str, Any]) -> Incident:
    labels = inspect["Config"]["Labels"]
    ref = ContainerRef(
        id=ContainerId(inspect["Id"]),
        name=str(inspect["Name"]).lstrip("/"),
        project=labels[PROJECT_LABEL],
        service=labels[SERVICE_LABEL],
    )
    return store.record_finding(Finding(ref, Signal.CRASH_LOOP, "worker keeps exiting", NOW))


def earlier_incident(store: MemoryStore) -> IncidentId:
    """Another container's incident, whose diagnosis spent tokens earlier."""
    ref = ContainerRef(ContainerId("e" * 64), "shop-cron-1", "shop", "cron")
    return store.record_finding(
        Finding(ref, Signal.EXITED, "cron exited", NOW - timedelta(days=1))
    ).id


def service(
    fake: FakeAnthropic | None,
    incidents: MemoryStore,
    diagnoses: MemoryStore,
    data: dict[str, Any],
    *,
    daily_tokens: int = 1_000_000,
    clock: FakeClock | None = None,
) -> DiagnosisService:
    llm = None
    if fake is not None:
        client = make_client(api_key="sk-ant-test", base_url=fake.url, max_retries=1, strict=True)
        llm = Diagnoser(ClaudeModel(client, "claude-sonnet-5-5"), limits=Limits())
    return DiagnosisService(
        incidents=incidents,
        diagnoses=diagnoses,
        source=FixtureSource(data),
        llm=llm,
        daily_tokens=daily_tokens,
        window=3600,
        repo_head=lambda: "4f2a9c1",
        clock=clock or FakeClock(NOW),
    )


def test_without_a_key_the_rules_diagnose_and_the_case_file_is_stored() -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    result = service(None, incidents, diagnoses, data).diagnose(incident.id)
    document = diagnose_document(result)
    assert document["rule"]["id"] == "missing_module"
    assert document["llm"] is None and document["error"] is None
    stored = diagnoses.diagnoses(incident.id)
    assert [d.source for d in stored] == [DiagnosisSource.RULES]
    assert "ModuleNotFoundError: No module named 'requests'" in stored[0].case_file


@pytest.mark.parametrize(
    ("fixture", "service_name", "state"),
    [
        ("dependency_stopped", "db", "exited (exit code 137)"),
        ("dependency_refused", "db", "running"),
    ],
)
def test_the_rule_diagnosis_records_the_other_service_where_the_cause_lies(
    fixture: str, service_name: str, state: str
) -> None:
    data = load_fixture(fixture)
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    result = service(None, incidents, diagnoses, data).diagnose(incident.id)
    [stored] = diagnoses.diagnoses(incident.id)
    assert (stored.cause_service, stored.cause_state) == (service_name, state)
    assert result.rule == stored


def test_a_rule_diagnosis_of_the_service_itself_names_no_other_service() -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    service(None, incidents, diagnoses, data).diagnose(incident.id)
    [stored] = diagnoses.diagnoses(incident.id)
    assert (stored.cause_service, stored.cause_state) == (None, None)


def test_the_model_diagnosis_records_the_service_it_names_with_the_case_files_state(
    fake: FakeAnthropic,
) -> None:
    data = load_fixture("dependency_stopped")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    fake.script += [submit(cause_service="db")]
    result = service(fake, incidents, diagnoses, data).diagnose(incident.id)
    assert result.llm is not None
    stored = diagnoses.diagnoses(incident.id)[-1]
    assert stored == result.llm
    assert (stored.cause_service, stored.cause_state) == ("db", "exited (exit code 137)")


def test_a_reused_model_diagnosis_names_the_same_service_in_its_state_now(
    fake: FakeAnthropic,
) -> None:
    data = load_fixture("dependency_stopped")
    incidents = diagnoses = MemoryStore()
    first = open_incident(incidents, data["inspect"])
    svc = service(fake, incidents, diagnoses, data)
    fake.script += [submit(cause_service="db")]
    one = svc.diagnose(first.id)
    incidents.set_status(first.id, first.status.RESOLVED, at=NOW)
    for sibling in data["siblings"]:
        if sibling["service"] == "db":
            sibling.update(state="restarting", exit_code=None)
    second = open_incident(incidents, data["inspect"])
    two = svc.diagnose(second.id)
    assert len(fake.requests) == 1
    assert one.llm is not None and two.llm is not None and two.reused_from == one.llm.id
    assert (one.llm.cause_service, one.llm.cause_state) == ("db", "exited (exit code 137)")
    assert (two.llm.cause_service, two.llm.cause_state) == ("db", "restarting")


def test_token_counts_recorded_equal_what_the_server_reported(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    fake.script += [
        tool_use(
            "list_files", {"path": "."}, input_tokens=2100, output_tokens=40, cache_creation=1800
        ),
        submit(input_tokens=300, output_tokens=150, cache_read=2000),
    ]
    result = service(fake, incidents, diagnoses, data).diagnose(incident.id)
    assert result.llm is not None
    stored = next(d for d in diagnoses.diagnoses(incident.id) if d.source is DiagnosisSource.LLM)
    assert stored.input_tokens == 2100 + 300
    assert stored.output_tokens == 40 + 150
    assert stored.cache_creation_input_tokens == 1800
    assert stored.cache_read_input_tokens == 2000
    assert stored.case_file == result.rule.case_file
    assert stored.case_file in fake.bodies[0]["messages"][0]["content"][0]["text"]
    assert diagnoses.tokens_since(NOW - timedelta(hours=1)) == 2400 + 190 + 1800 + 2000
    document = diagnose_document(result)
    assert document["llm"]["input_tokens"] == 2400
    assert document["llm"]["output_tokens"] == 190


def test_a_second_incident_with_the_same_fingerprint_makes_no_call(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    first = open_incident(incidents, data["inspect"])
    svc = service(fake, incidents, diagnoses, data)
    fake.script += [submit()]
    one = svc.diagnose(first.id)
    incidents.set_status(first.id, first.status.RESOLVED, at=NOW)
    second = open_incident(incidents, data["inspect"])
    assert second.id != first.id
    two = svc.diagnose(second.id)
    assert len(fake.requests) == 1
    assert one.llm is not None and two.llm is not None
    assert two.reused_from == one.llm.id
    assert diagnose_document(two)["reused_from"] == one.llm.id
    assert two.llm.input_tokens == 0
    assert "reused from" in render_text(two)


def test_a_spent_daily_budget_makes_no_call_and_says_so(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    diagnoses.record_diagnosis(
        Diagnosis(
            id=new_diagnosis_id(),
            incident_id=earlier_incident(incidents),
            source=DiagnosisSource.LLM,
            created_at=NOW.replace(hour=1),
            summary="s",
            root_cause="r",
            confidence=Confidence.LOW,
            input_tokens=9_000,
            output_tokens=1_000,
            fingerprint="other",
        )
    )
    incident = open_incident(incidents, data["inspect"])
    result = service(fake, incidents, diagnoses, data, daily_tokens=10_000).diagnose(incident.id)
    assert fake.requests == []
    assert result.error is not None and "daily token budget is spent" in result.error
    assert diagnose_document(result)["rule"]["id"] == "missing_module"


def test_yesterdays_spending_does_not_count_against_today(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    diagnoses.record_diagnosis(
        Diagnosis(
            id=new_diagnosis_id(),
            incident_id=earlier_incident(incidents),
            source=DiagnosisSource.LLM,
            created_at=NOW - timedelta(days=1),
            summary="s",
            root_cause="r",
            confidence=Confidence.LOW,
            input_tokens=50_000,
            fingerprint="other",
        )
    )
    incident = open_incident(incidents, data["inspect"])
    fake.script += [submit()]
    result = service(fake, incidents, diagnoses, data, daily_tokens=10_000).diagnose(incident.id)
    assert result.error is None and len(fake.requests) == 1


def test_an_api_failure_is_recorded_and_not_retried_within_the_window(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    clock = FakeClock(NOW)
    svc = service(fake, incidents, diagnoses, data, clock=clock)
    fake.script += [error(529, "overloaded_error", "Overloaded", **{"retry-after-ms": "5"})] * 2
    first = svc.diagnose(incident.id)
    assert first.error is not None and "529" in first.error
    assert diagnose_document(first)["llm"] is None
    assert diagnose_document(first)["rule"]["id"] == "missing_module"
    again = svc.diagnose(incident.id)
    assert len(fake.requests) == 2  # the first call and the SDK's one retry; nothing after
    assert again.error is not None and "is not retried before" in again.error
    clock.advance(2 * 3600)
    fake.script += [submit()]
    later = svc.diagnose(incident.id)
    assert later.error is None and len(fake.requests) == 3


def test_the_fingerprint_ignores_times_ids_and_numbers() -> None:
    one = ["2026-11-21T10:00:01Z worker[412] ERROR request 9f8e7d6c5b4a failed after 312 ms"]
    two = ["2026-11-22T18:30:45Z worker[977] ERROR request 0a1b2c3d4e5f failed after 95 ms"]
    other = ["2026-11-22T18:30:45Z worker[977] ERROR disk full"]
    assert error_signature(one) == error_signature(two)
    assert error_signature(one) != error_signature(other)


def test_the_fingerprint_changes_with_the_repository_head_and_the_model() -> None:
    from escalate_support import case_from_fixture

    case = case_from_fixture("missing_module")
    base = fingerprint(case, repo_head="aaa", model="claude-sonnet-5-5").key
    assert base == fingerprint(case, repo_head="aaa", model="claude-sonnet-5-5").key
    assert base != fingerprint(case, repo_head="bbb", model="claude-sonnet-5-5").key
    assert base != fingerprint(case, repo_head="aaa", model="claude-opus-5-5").key


def test_escalated_returns_at_once_and_close_lets_the_diagnosis_finish(
    fake: FakeAnthropic,
) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    answered = threading.Event()
    reached = threading.Event()

    def hold() -> None:
        reached.set()
        answered.wait(10)

    fake.script += [dataclasses.replace(submit(), before=hold)]
    worker = DiagnosisWorker(service(fake, incidents, diagnoses, data))
    worker.escalated(incident)
    # escalated() has returned although Claude has not answered yet.
    assert reached.wait(10)
    assert [d.source for d in diagnoses.diagnoses(incident.id)] == [DiagnosisSource.RULES]
    answered.set()
    worker.close(timeout=10)
    sources = [d.source for d in diagnoses.diagnoses(incident.id)]
    assert sources == [DiagnosisSource.RULES, DiagnosisSource.LLM]
    assert all(d.error is None for d in diagnoses.diagnoses(incident.id))


def test_close_records_unfinished_diagnoses_as_abandoned(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    first = open_incident(incidents, data["inspect"])
    incidents.set_status(first.id, first.status.RESOLVED, at=NOW)
    second = open_incident(incidents, data["inspect"])
    release = threading.Event()
    reached = threading.Event()

    def stuck() -> None:
        reached.set()
        release.wait(10)

    fake.script += [dataclasses.replace(submit(), before=stuck)]
    worker = DiagnosisWorker(service(fake, incidents, diagnoses, data))
    worker.escalated(first)
    worker.escalated(second)
    assert reached.wait(10)
    worker.close(timeout=0.1)
    release.set()
    for incident in (first, second):
        abandoned = [d for d in diagnoses.diagnoses(incident.id) if d.error]
        assert len(abandoned) == 1
        assert abandoned[0].error is not None and abandoned[0].error.startswith("abandoned")


def test_the_json_document_has_exactly_the_contract_fields(fake: FakeAnthropic) -> None:
    data = load_fixture("missing_module")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    fake.script += [submit()]
    document = diagnose_document(service(fake, incidents, diagnoses, data).diagnose(incident.id))
    json.dumps(document)
    assert set(document) == {"incident_id", "rule", "llm", "reused_from", "error"}
    assert set(document["rule"]) == {
        "id",
        "summary",
        "root_cause",
        "confidence",
        "evidence",
        "cause_service",
        "cause_state",
    }
    assert set(document["llm"]) == {
        "model",
        "summary",
        "root_cause",
        "confidence",
        "evidence",
        "edits",
        "no_edits_reason",
        "input_tokens",
        "output_tokens",
        "cause_service",
        "cause_state",
    }
    # The cause of a missing module lies in the worker itself.
    assert document["rule"]["cause_service"] is None
    assert document["llm"]["cause_state"] is None


def test_the_text_shows_rules_and_claude_side_by_side_and_edits_as_a_diff() -> None:
    from agent.escalate.worker import DiagnosisResult
    from agent.model import Edit

    rule = Diagnosis(
        id=new_diagnosis_id(),
        incident_id=IncidentId("inc-1"),
        source=DiagnosisSource.RULES,
        created_at=NOW,
        summary="worker fails at start: the Python module 'requests' is missing.",
        root_cause="The program imports requests, which is not installed.",
        confidence=Confidence.HIGH,
        evidence=("ModuleNotFoundError: No module named 'requests'",),
        rule_id="missing_module",
    )
    llm = dataclasses.replace(
        rule,
        id=new_diagnosis_id(),
        source=DiagnosisSource.LLM,
        model="claude-sonnet-5-5",
        summary="requirements.txt lacks requests.",
        edits=(Edit("requirements.txt", "flask==3.0\n", "flask==3.0\nrequests==2.32\n"),),
        unverified_evidence=("an invented line",),
        confidence=Confidence.LOW,
    )
    text = render_text(DiagnosisResult(incident_id=IncidentId("inc-1"), rule=rule, llm=llm))
    header = next(line for line in text.splitlines() if line.startswith("Rules ("))
    assert "| Model (claude-sonnet-5-5, low)" in header
    assert "--- a/requirements.txt" in text
    assert "+requests==2.32" in text
    assert "  an invented line" in text


def test_medic_diagnose_leads_with_the_other_service_where_the_cause_lies() -> None:
    from agent.escalate.worker import DiagnosisResult

    data = load_fixture("dependency_stopped")
    incidents = diagnoses = MemoryStore()
    incident = open_incident(incidents, data["inspect"])
    result = service(None, incidents, diagnoses, data).diagnose(incident.id)
    document = diagnose_document(result)
    assert document["rule"]["cause_service"] == "db"
    assert document["rule"]["cause_state"] == "exited (exit code 137)"
    lines = render_text(result).splitlines()
    assert lines[:3] == [f"Incident {incident.id}", "", "Cause lies in db: exited (exit code 137)."]
    summary = next(i for i, line in enumerate(lines) if line.startswith("Rules ("))
    assert summary > 2
    # The model's answer, when it names a service, leads instead.
    llm = dataclasses.replace(
        result.rule,
        id=new_diagnosis_id(),
        source=DiagnosisSource.LLM,
        model="claude-sonnet-5-5",
        cause_service="migrate",
        cause_state="exited (exit code 1)",
    )
    both = DiagnosisResult(incident_id=incident.id, rule=result.rule, llm=llm)
    assert render_text(both).splitlines()[2] == "Cause lies in migrate: exited (exit code 1)."
    assert diagnose_document(both)["llm"]["cause_service"] == "migrate"
