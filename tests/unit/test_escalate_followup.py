"""What follows a diagnosis: the escalation's notification carries the rule diagnosis,
no escalation goes unnotified, and Claude's edits become a recorded fix."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from escalate_support import FixtureSource, load_fixture
from fakes import FakeClock
from fixrepo import APP_PY, make_repo

from agent.escalate.followup import EscalationNotices, FixMaker, Followup
from agent.escalate.worker import DiagnosisResult, DiagnosisService, DiagnosisWorker
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions
from agent.model import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Edit,
    Finding,
    FixStatus,
    Incident,
    Signal,
)
from agent.notify import Notification, NotificationKind, Notifier
from agent.store.memory import MemoryStore

NOW = datetime(2026, 11, 21, 15, 0, 0, tzinfo=UTC)
OPTIONS = FixOptions(policy=Policy(), author=Person("medic", "medic@localhost"))


class Sent(Notifier):
    def __init__(self) -> None:
        self.items: list[Notification] = []
        self.closed = False

    def send(self, notification: Notification) -> None:
        self.items.append(notification)

    def close(self) -> None:
        self.closed = True


def note(kind: NotificationKind, incident_id: str = "inc-1", dedupe: str = "") -> Notification:
    return Notification(kind, incident_id, "shop/worker/crash_loop", "title", "body", NOW, dedupe)


def open_incident(store: MemoryStore, inspect: dict[str, Any]) -> Incident:
    labels = inspect["Config"]["Labels"]
    ref = ContainerRef(
        id=ContainerId(inspect["Id"]),
        name=str(inspect["Name"]).lstrip("/"),
        project=labels[PROJECT_LABEL],
        service=labels[SERVICE_LABEL],
    )
    return store.record_finding(Finding(ref, Signal.CRASH_LOOP, "worker keeps exiting", NOW))


def test_an_escalation_notice_is_held_and_every_other_notification_passes() -> None:
    sent = Sent()
    notices = EscalationNotices(sent)
    notices.send(note(NotificationKind.OPENED))
    notices.send(note(NotificationKind.ESCALATED))
    assert [n.kind for n in sent.items] == [NotificationKind.OPENED]
    claimed = notices.claim("inc-1")
    assert claimed is not None and claimed.kind is NotificationKind.ESCALATED
    assert notices.claim("inc-1") is None


def test_a_notice_nobody_claims_goes_out_as_it_was_after_the_grace() -> None:
    sent, clock = Sent(), [100.0]
    notices = EscalationNotices(sent, grace=30, monotonic=lambda: clock[0])
    notices.send(note(NotificationKind.ESCALATED))
    notices.sweep()
    assert sent.items == []
    clock[0] += 30
    notices.sweep()
    assert [n.body for n in sent.items] == ["body"]


def test_closing_sends_what_is_held_then_closes_the_notifier() -> None:
    sent = Sent()
    notices = EscalationNotices(sent)
    notices.send(note(NotificationKind.ESCALATED))
    notices.close()
    assert [n.kind for n in sent.items] == [NotificationKind.ESCALATED]
    assert sent.closed


def escalation_sent(data: dict[str, Any], incidents: MemoryStore, sent: Sent) -> Notification:
    """Escalate an incident of ``data``'s container through a worker, and the one
    notification that went out for it."""
    incident = open_incident(incidents, data["inspect"])
    worker = worker_for(data, incidents, sent)
    assert isinstance(worker.notices, EscalationNotices)
    worker.notices.send(note(NotificationKind.ESCALATED, incident.id))
    worker.escalated(incident)
    worker.close(timeout=30)
    [escalated] = sent.items
    return escalated


def worker_for(data: dict[str, Any], incidents: MemoryStore, sent: Sent) -> DiagnosisWorker:
    service = DiagnosisService(
        incidents=incidents,
        diagnoses=incidents,
        source=FixtureSource(data),
        clock=FakeClock(NOW),
    )
    return DiagnosisWorker(
        service,
        followup=Followup(notifier=sent, clock=FakeClock(NOW)),
        notices=EscalationNotices(sent),
        sweep_every=0.05,
    )


def test_the_escalation_notification_carries_the_rule_diagnosis() -> None:
    data = load_fixture("missing_module")
    incidents, sent = MemoryStore(), Sent()
    incident = open_incident(incidents, data["inspect"])
    worker = worker_for(data, incidents, sent)
    assert worker.notices is not None
    notices = worker.notices
    assert isinstance(notices, EscalationNotices)
    notices.send(note(NotificationKind.ESCALATED, incident.id))
    worker.escalated(incident)
    worker.close(timeout=30)
    [escalated] = sent.items
    assert escalated.kind is NotificationKind.ESCALATED
    assert escalated.body.startswith("body\n\nDiagnosis by medic's rules (missing_module): ")
    assert "requests" in escalated.body


class Broken(MemoryStore):
    def get(self, incident_id: str) -> Incident:
        raise RuntimeError("the disk is on fire")


def test_a_failed_diagnosis_still_sends_the_escalation_saying_it_failed() -> None:
    data = load_fixture("missing_module")
    incidents, sent = Broken(), Sent()
    escalated = escalation_sent(data, incidents, sent)
    assert escalated.body.startswith("body\n\nmedic could not diagnose it (the disk is on fire)")


class Stuck(FixtureSource):
    def __init__(self, data: dict[str, Any], release: threading.Event) -> None:
        super().__init__(data)
        self.release = release

    def inspect_attrs(self, container_id: str) -> Any:
        self.release.wait(10)
        return super().inspect_attrs(container_id)


def test_a_diagnosis_abandoned_at_stop_still_sends_the_escalation() -> None:
    data = load_fixture("missing_module")
    incidents, sent, release = MemoryStore(), Sent(), threading.Event()
    incident = open_incident(incidents, data["inspect"])
    diagnoses = incidents
    service = DiagnosisService(
        incidents=incidents, diagnoses=diagnoses, source=Stuck(data, release)
    )
    notices = EscalationNotices(sent)
    worker = DiagnosisWorker(service, followup=Followup(notifier=sent), notices=notices)
    notices.send(note(NotificationKind.ESCALATED, incident.id))
    worker.escalated(incident)
    try:
        worker.close(timeout=0.2)
    finally:
        release.set()
    [escalated] = sent.items
    assert "abandoned: medic stopped before it finished" in escalated.body
    [abandoned] = diagnoses.diagnoses(incident.id)
    assert abandoned.error is not None and abandoned.error.startswith("abandoned")


def llm_diagnosis(incident: Incident, *edits: Edit) -> Diagnosis:
    return Diagnosis(
        id=DiagnosisId("d" * 32),
        incident_id=incident.id,
        source=DiagnosisSource.LLM,
        created_at=NOW,
        summary="The port literal has a typo.",
        root_cause="app.py parses '8080' fine but the typo breaks it.",
        confidence=Confidence.HIGH,
        model="claude-sonnet-5-5",
        edits=edits,
    )


def result_of(incident: Incident, llm: Diagnosis) -> DiagnosisResult:
    rule = Diagnosis(
        id=DiagnosisId("r" * 32),
        incident_id=incident.id,
        source=DiagnosisSource.RULES,
        created_at=NOW,
        summary="unknown",
        root_cause="",
        confidence=Confidence.LOW,
        rule_id="unknown",
    )
    return DiagnosisResult(incident_id=incident.id, rule=rule, llm=llm, incident=incident)


def web_incident(store: MemoryStore) -> Incident:
    ref = ContainerRef(ContainerId("c" * 64), "project-web-1", "project", "web")
    return store.record_finding(Finding(ref, Signal.CRASH_LOOP, "web keeps exiting", NOW))


def test_without_a_repository_the_fix_is_refused_saying_why_and_recorded() -> None:
    fixes, sent = MemoryStore(), Sent()
    incident = web_incident(fixes)
    maker = FixMaker(store=fixes, git=None, options=OPTIONS, clock=FakeClock(NOW))
    edit = Edit("web/app.py", 'int("8080")', 'int("8081")')
    outcome = Followup(fixes=maker, notifier=sent).finished(
        result_of(incident, llm_diagnosis(incident, edit)), incident
    )
    assert outcome.fix is not None and outcome.fix.status is FixStatus.REFUSED
    assert outcome.fix.refusal_reasons[0].startswith("no_repository: MEDIC_REPO is not set")
    assert fixes.fixes_of_incident(incident.id) == [outcome.fix]
    [told] = sent.items
    assert told.kind is NotificationKind.FIX_PROPOSED
    assert "MEDIC_REPO is not set" in told.body


def test_edits_become_a_branch_and_people_hear_branch_files_and_summary(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    fixes, sent = MemoryStore(), Sent()
    incident = web_incident(fixes)
    maker = FixMaker(store=fixes, git=Git(repo.path), options=OPTIONS, clock=FakeClock(NOW))
    assert 'int("8080")' in APP_PY
    edit = Edit("web/app.py", 'int("8080")', 'int("8081")')
    outcome = Followup(fixes=maker, notifier=sent).finished(
        result_of(incident, llm_diagnosis(incident, edit)), incident
    )
    fix = outcome.fix
    assert fix is not None and fix.status is FixStatus.PROPOSED, fix
    assert fix.branch == f"medic/fix-{incident.id[:8]}-web"
    assert repo.git("rev-parse", fix.branch).strip() == fix.commit
    assert fixes.get_fix(fix.id) == fix
    [told] = sent.items
    assert fix.branch in told.title
    assert "Files: web/app.py" in told.body
    assert "Diagnosis: The port literal has a typo." in told.body


def test_a_diagnosis_without_edits_makes_no_fix_and_says_what_claude_found() -> None:
    fixes, sent = MemoryStore(), Sent()
    incident = web_incident(fixes)
    maker = FixMaker(store=fixes, git=None, options=OPTIONS)
    outcome = Followup(fixes=maker, notifier=sent).finished(
        result_of(incident, llm_diagnosis(incident)), incident
    )
    assert outcome.fix is None
    assert fixes.list_fixes(include_decided=True) == []
    [told] = sent.items
    assert told.kind is NotificationKind.DIAGNOSED
    assert told.body.startswith("The port literal has a typo.")


def test_the_escalation_notification_leads_with_the_service_where_the_cause_lies() -> None:
    data = load_fixture("dependency_stopped")
    incidents, sent = MemoryStore(), Sent()
    escalated = escalation_sent(data, incidents, sent)
    first, *rest = escalated.body.split("\n")
    assert first == "The cause lies in db, not in app: db is exited (exit code 137)."
    assert "body" in rest
    assert "Diagnosis by medic's rules (dependency_unreachable): " in escalated.body


def test_an_escalation_whose_cause_is_the_service_itself_starts_as_it_was() -> None:
    data = load_fixture("missing_module")
    incidents, sent = MemoryStore(), Sent()
    escalated = escalation_sent(data, incidents, sent)
    assert escalated.body.startswith("body\n\n")
    assert "The cause lies in" not in escalated.body


def upstream(llm: Diagnosis) -> Diagnosis:
    return replace(llm, cause_service="db", cause_state="exited (exit code 1)")


def test_the_models_diagnosis_notification_leads_with_the_service_it_names() -> None:
    fixes, sent = MemoryStore(), Sent()
    incident = web_incident(fixes)
    Followup(fixes=FixMaker(store=fixes, git=None, options=OPTIONS), notifier=sent).finished(
        result_of(incident, upstream(llm_diagnosis(incident))), incident
    )
    [told] = sent.items
    assert told.kind is NotificationKind.DIAGNOSED
    lines = told.body.split("\n")
    assert lines[:3] == [
        "The cause lies in db, not in web: db is exited (exit code 1).",
        "",
        "The port literal has a typo.",
    ]


def test_a_fix_notification_leads_with_the_service_the_diagnosis_names() -> None:
    fixes, sent = MemoryStore(), Sent()
    incident = web_incident(fixes)
    maker = FixMaker(store=fixes, git=None, options=OPTIONS, clock=FakeClock(NOW))
    edit = Edit("web/app.py", 'int("8080")', 'int("8081")')
    Followup(fixes=maker, notifier=sent).finished(
        result_of(incident, upstream(llm_diagnosis(incident, edit))), incident
    )
    [told] = sent.items
    assert told.kind is NotificationKind.FIX_PROPOSED
    assert (
        told.body.split("\n")[0] == "The cause lies in db, not in web: db is exited (exit code 1)."
    )
