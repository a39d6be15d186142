"""The one presenter behind the CLI's --json, the API and the console (agent/present.py):
its filters, pages, timeline, figures per service and diff numbering."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from fixrepo import incident as escalated

from agent import present
from agent.escalate.document import edits_diff
from agent.model import (
    Attempt,
    AttemptId,
    AttemptStatus,
    Confidence,
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
)

T0 = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_status_words_read_one_several_active_and_all() -> None:
    assert present.parse_statuses(None) == {
        IncidentStatus.OPEN,
        IncidentStatus.HEALING,
        IncidentStatus.ESCALATED,
    }
    assert present.parse_statuses("all") == set(IncidentStatus)
    assert present.parse_statuses("Resolved, escalated") == {
        IncidentStatus.RESOLVED,
        IncidentStatus.ESCALATED,
    }
    assert present.status_word(present.parse_statuses("escalated")) == "escalated"
    assert present.status_word(present.parse_statuses("open,healing,escalated")) == "active"
    with pytest.raises(present.QueryError, match="'sleeping' is not one of active, all"):
        present.parse_statuses("sleeping")


def test_since_reads_a_duration_back_from_now_or_a_time() -> None:
    assert present.parse_since("2h", now=T0) == T0 - timedelta(hours=2)
    assert present.parse_since("2026-04-01T12:00", now=T0) == datetime(2026, 4, 1, 12, tzinfo=UTC)
    assert present.parse_since("all", now=T0) is None
    assert present.parse_since("", now=T0) is None
    with pytest.raises(present.QueryError, match="neither a duration"):
        present.parse_since("yesterday", now=T0)


def test_pages_count_from_one_and_clamp_past_the_end() -> None:
    items = [escalated(incident_id=f"{n:032x}") for n in range(7)]
    first = present.page_of(items, number=1, size=3)
    assert (first.items, first.pages, first.first, first.last) == (tuple(items[:3]), 3, 1, 3)
    last = present.page_of(items, number=9, size=3)
    assert (last.number, last.items, last.first, last.last) == (3, (items[6],), 7, 7)
    empty = present.page_of([], number=1, size=3)
    assert (empty.pages, empty.first, empty.last) == (1, 0, 0)


def attempt(minutes: float, *, ok: bool, error: str | None = None) -> Attempt:
    return Attempt(
        id=AttemptId(f"a{minutes}"),
        incident_id=IncidentId("0123456789abcdef0123456789abcdef"),
        playbook="start-again",
        action="restart",
        started_at=at(minutes),
        finished_at=at(minutes + 0.5),
        ok=ok,
        error=error,
    )


def diagnosis(minutes: float, source: DiagnosisSource, **fields: object) -> Diagnosis:
    base = Diagnosis(
        id=DiagnosisId(f"d{minutes}{source}"),
        incident_id=IncidentId("0123456789abcdef0123456789abcdef"),
        source=source,
        created_at=at(minutes),
        summary=f"{source} says so",
        root_cause="because",
        confidence=Confidence.HIGH,
        rule_id="python_exception",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def fix(minutes: float, status: FixStatus, **fields: object) -> Fix:
    base = Fix(
        id=FixId(f"f{minutes:07.0f}" + "0" * 24),
        incident_id=IncidentId("0123456789abcdef0123456789abcdef"),
        diagnosis_id=DiagnosisId("d"),
        status=status,
        created_at=at(minutes),
        summary="fix the typo",
        files=("app.py",),
        branch="medic/fix-01234567-web",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_the_timeline_holds_everything_in_order_with_who_decided() -> None:
    incident = replace(
        escalated(),
        evidence=(EvidenceEntry(at(0), "web exited with code 1", {"exit_code": 1}),),
        attempts=(attempt(1, ok=True), attempt(3, ok=False, error="it exited again")),
        status=IncidentStatus.RESOLVED,
        resolved_at=at(30),
        note=present.resolved_note("ana", "rolled back by hand"),
    )
    moments = present.timeline(
        incident,
        diagnoses=[diagnosis(5, DiagnosisSource.RULES)],
        fixes=[
            fix(6, FixStatus.APPROVED, decided_at=at(20), decided_by="ops", reason=None),
            fix(7, FixStatus.REFUSED, branch=None, refusal_reasons=("a CI file",)),
        ],
    )
    assert [(m.at, m.event) for m in moments] == [
        (at(0), "finding"),
        (at(1), "attempt"),
        (at(3), "attempt"),
        (at(5), "diagnosed by rules"),
        (at(6), "fix proposed"),
        (at(7), "fix refused"),
        (at(20), "fix approved"),
        (at(30), "resolved by hand"),
    ]
    assert moments[0].detail == "web exited with code 1 (exit_code=1)"
    assert [m.ok for m in moments[1:3]] == [True, False]
    assert moments[2].outcome == "failed: it exited again"
    assert moments[5].outcome == "a CI file"
    assert (moments[6].by, moments[7].by, moments[7].detail) == (
        "ops",
        "ana",
        "rolled back by hand",
    )


def test_a_resolution_by_medic_is_no_ones_decision_and_old_notes_still_read() -> None:
    resolved = replace(escalated(), status=IncidentStatus.RESOLVED, resolved_at=at(9))
    [*_, last] = present.timeline(replace(resolved, note="recovered on its own"))
    assert (last.kind, last.by) == ("resolved", None)
    assert present.resolved_by(replace(resolved, note="by hand: fixed")) == ("a person", "fixed")


def test_an_attempt_whose_end_is_unknown_says_so() -> None:
    running = replace(attempt(1, ok=False), finished_at=None, status=AttemptStatus.RUNNING)
    [moment] = present.timeline(replace(escalated(), attempts=(running,)))
    assert moment.ok is None
    assert moment.outcome == "running: its end is not recorded yet"


def test_the_newest_rule_and_model_diagnoses_pair_and_older_ones_are_listed() -> None:
    old_rule = diagnosis(1, DiagnosisSource.RULES, rule_id="oom")
    rule = diagnosis(5, DiagnosisSource.RULES)
    stale_llm = diagnosis(2, DiagnosisSource.LLM, model="m")
    pair = present.diagnosis_pair([old_rule, stale_llm, rule])
    # A model diagnosis older than the newest rule one answers an earlier escalation.
    assert (pair.rule, pair.llm, pair.older) == (rule, None, (old_rule, stale_llm))
    llm = diagnosis(6, DiagnosisSource.LLM, model="m")
    assert present.diagnosis_pair([rule, llm]).llm == llm


def test_evidence_quotes_say_which_were_found_verbatim() -> None:
    d = diagnosis(
        1,
        DiagnosisSource.LLM,
        evidence=("no attribute 'serv_forever'",),
        unverified_evidence=("a line nobody logged",),
    )
    assert present.evidence_quotes(d) == [
        ("no attribute 'serv_forever'", True),
        ("a line nobody logged", False),
    ]


def test_figures_per_service_count_and_average_time_to_resolve() -> None:
    made = iter(range(100))

    def one(service: str, status: IncidentStatus, minutes: float | None) -> Incident:
        base = escalated(service=service, incident_id=f"{next(made):032x}")
        resolved_at = at(minutes) if minutes is not None else None
        return replace(
            base, status=status, resolved_at=resolved_at, attempts=(attempt(1, ok=True),)
        )

    figures = present.service_figures(
        [
            one("web", IncidentStatus.RESOLVED, 2),
            one("web", IncidentStatus.RESOLVED, 6),
            one("web", IncidentStatus.ESCALATED, None),
            one("api", IncidentStatus.OPEN, None),
        ]
    )
    web, api = figures
    assert (web.service, web.incidents, web.active, web.escalated, web.resolved) == (
        "web",
        3,
        1,
        1,
        2,
    )
    assert web.mttr_seconds == 240.0  # (2 min + 6 min) / 2
    assert web.attempts == 3
    assert (api.service, api.mttr_seconds) == ("api", None)


def test_diff_lines_keep_each_sides_numbers_across_files() -> None:
    diff = edits_diff(
        (
            Edit("app.py", "a\nb\nc\n", "a\nB\nc\n"),
            Edit("new.txt", "", "one\ntwo\n"),
        )
    )
    lines = present.diff_lines(diff)
    kinds = [(line.kind, line.text, line.old, line.new) for line in lines]
    assert kinds == [
        ("file", "--- a/app.py", None, None),
        ("file", "+++ b/app.py", None, None),
        ("hunk", "@@ -1,3 +1,3 @@", None, None),
        ("same", "a", 1, 1),
        ("del", "b", 2, None),
        ("add", "B", None, 2),
        ("same", "c", 3, 3),
        ("file", "--- /dev/null", None, None),
        ("file", "+++ b/new.txt", None, None),
        ("hunk", "@@ -0,0 +1,2 @@", None, None),
        ("add", "one", None, 1),
        ("add", "two", None, 2),
    ]


def test_a_git_diff_with_a_line_starting_with_dashes_inside_a_hunk_is_a_removed_line() -> None:
    diff = (
        "diff --git a/x.sql b/x.sql\n--- a/x.sql\n+++ b/x.sql\n"
        "@@ -4,2 +4,1 @@\n--- a comment\n keep\n"
    )
    lines = present.diff_lines(diff)
    assert [(line.kind, line.text, line.old) for line in lines[-2:]] == [
        ("del", "-- a comment", 4),
        ("same", "keep", 5),
    ]


def test_incidents_show_prints_the_pair_side_by_side_and_the_rest_one_line_each() -> None:
    from agent.cli_escalation import diagnoses_text

    stale_llm = diagnosis(2, DiagnosisSource.LLM, model="m", summary="an earlier answer")
    rule = diagnosis(5, DiagnosisSource.RULES, summary="the rules say so")
    text = diagnoses_text([stale_llm, rule])
    side_by_side, others = text.split("Other diagnoses:\n")
    assert "the rules say so" in side_by_side and "an earlier answer" not in side_by_side
    assert others == "  2026-05-01 11:02:00 llm m (python_exception): an earlier answer\n"
    # Without a rule diagnosis there is no pair: every diagnosis is a line of its own.
    only_llm = diagnoses_text([stale_llm])
    assert only_llm.startswith("\nOther diagnoses:\n") and "an earlier answer" in only_llm


DB_DOWN = {"cause_service": "db", "cause_state": "exited (exit code 137)"}


def test_the_cause_is_the_models_when_it_names_one_else_the_rules() -> None:
    rule = diagnosis(5, DiagnosisSource.RULES, **DB_DOWN)
    silent_llm = diagnosis(6, DiagnosisSource.LLM, model="m")
    llm = diagnosis(6, DiagnosisSource.LLM, model="m", cause_service="cache", cause_state="running")
    failed_llm = replace(llm, error="the call failed")

    from_rules = present.cause_of(present.diagnosis_pair([rule, silent_llm]))
    assert from_rules == present.Cause("db", "exited (exit code 137)", "rules", rule.id)
    assert from_rules.line == "Cause lies in db: exited (exit code 137)."
    assert from_rules.incidents_link == "/?service=db"
    from_model = present.cause_of(present.diagnosis_pair([rule, llm]))
    assert from_model == present.Cause("cache", "running", "m", llm.id)
    assert present.cause_of(present.diagnosis_pair([rule, failed_llm])) == from_rules
    assert present.cause_of(present.diagnosis_pair([diagnosis(5, DiagnosisSource.RULES)])) is None
    assert present.cause_of(present.diagnosis_pair([])) is None


def test_the_incidents_link_of_a_cause_is_the_listing_filtered_to_that_service() -> None:
    odd = present.Cause("a b&c", None, "rules", "d1")
    assert odd.incidents_link == "/?service=a+b%26c"
    assert odd.line == "Cause lies in a b&c."


def test_the_incident_document_and_its_diagnoses_carry_the_cause() -> None:
    rule = diagnosis(5, DiagnosisSource.RULES, **DB_DOWN)
    own = diagnosis(6, DiagnosisSource.LLM, model="m")
    document = present.incident_detail(
        escalated(), diagnoses=[rule, own], fixes=[], diff_of=lambda _fix: None, now=at(60)
    )
    [rules_doc, model_doc] = document["diagnoses"]
    assert (rules_doc["cause_service"], rules_doc["cause_state"]) == (
        "db",
        "exited (exit code 137)",
    )
    assert (model_doc["cause_service"], model_doc["cause_state"]) == (None, None)
    assert document["cause"] == {
        "service": "db",
        "state": "exited (exit code 137)",
        "by": "rules",
        "diagnosis_id": rule.id,
    }
    quiet = present.incident_detail(
        escalated(), diagnoses=[own], fixes=[], diff_of=lambda _fix: None, now=at(60)
    )
    assert quiet["cause"] is None


def test_incidents_show_leads_with_the_cause_before_any_summary() -> None:
    from agent.cli_escalation import diagnoses_text

    rule = diagnosis(5, DiagnosisSource.RULES, summary="app cannot reach db", **DB_DOWN)
    text = diagnoses_text([rule])
    assert text.startswith("Cause lies in db: exited (exit code 137).\n\n")
    assert text.index("Cause lies in db") < text.index("app cannot reach db")
    only_llm = diagnoses_text([diagnosis(2, DiagnosisSource.LLM, model="m", **DB_DOWN)])
    assert only_llm.startswith("Cause lies in db: exited (exit code 137).\n")
    assert "Cause lies in" not in diagnoses_text([diagnosis(5, DiagnosisSource.RULES)])
