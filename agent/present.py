"""What medic shows people about incidents and fixes: one presenter behind the CLI's
``--json``, the JSON API and the console's pages.

Every document here is built from store records by pure functions, so the three
faces cannot drift apart: ``medic incidents --json`` and ``GET /api/incidents`` are
the same list, ``medic incidents show ID --json`` and ``GET /api/incidents/ID`` the
same object, and the console renders the same timeline, diagnoses and diff. The JSON
field names are a contract (docs/review.md lists them); fields are only ever added.

Text in these documents may come from containers and models. It is data: the CLI
writes it through ``safe_text`` and the console escapes it as HTML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from agent.codec import diagnosis_to_dict, format_duration, incident_to_dict
from agent.config import parse_duration
from agent.errors import MedicError
from agent.escalate.document import cause_line, edits_diff, leading_cause
from agent.fixes.document import fix_document
from agent.model import (
    ACTIVE_STATUSES,
    Attempt,
    AttemptStatus,
    Diagnosis,
    DiagnosisSource,
    Fix,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
    ReviewMark,
)

#: The diff of a fix, or None when it cannot be had (the branch was deleted).
DiffOf = Callable[[Fix], str | None]


class QueryError(MedicError, ValueError):
    """A filter a person or a script gave cannot be read (an unknown status, say)."""


# --- which incidents -------------------------------------------------------------------

#: The ``status`` filter's words: one status, ``active`` (open, healing or escalated,
#: as ``medic incidents`` lists by default) or ``all``.
STATUS_WORDS: Mapping[str, frozenset[IncidentStatus]] = {
    "active": ACTIVE_STATUSES,
    "all": frozenset(IncidentStatus),
    **{str(s): frozenset({s}) for s in IncidentStatus},
}


def parse_statuses(text: str | None, *, default: str = "active") -> frozenset[IncidentStatus]:
    """``active``, ``all``, a status, or several joined by commas (``open,escalated``)."""
    words = [w.strip().lower() for w in (text or default).split(",") if w.strip()]
    if not words:
        words = [default]
    chosen: set[IncidentStatus] = set()
    for word in words:
        if word not in STATUS_WORDS:
            raise QueryError(
                f"status {word!r} is not one of {', '.join(STATUS_WORDS)}; join several with commas"
            )
        chosen |= STATUS_WORDS[word]
    return frozenset(chosen)


def status_word(statuses: frozenset[IncidentStatus]) -> str:
    """The shortest filter word for ``statuses``, for links and forms."""
    for word, meant in STATUS_WORDS.items():
        if meant == statuses:
            return word
    return ",".join(sorted(str(s) for s in statuses))


def parse_since(text: str | None, *, now: datetime) -> datetime | None:
    """A ``since`` filter: a duration back from ``now`` (``1h``, ``7d``), or an ISO date
    or time (UTC unless it says); None for none (empty, or ``all``)."""
    if not text or text.strip().lower() == "all":
        return None
    text = text.strip()
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(
            f"{text!r} is neither a duration like 1h or 2d nor a time like 2024-05-01T12:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing."""

    items: tuple[Incident, ...]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first item (0 when there is none)."""
        return (self.number - 1) * self.size + 1 if self.items else 0

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1 if self.items else 0


def page_of(incidents: Sequence[Incident], *, number: int, size: int) -> Page:
    """Page ``number`` (from 1; past the end gives the last) of ``incidents``."""
    total = len(incidents)
    pages = max(1, -(-total // size))
    number = min(max(1, number), pages)
    start = (number - 1) * size
    return Page(tuple(incidents[start : start + size]), number, size, total)


# --- incidents ---------------------------------------------------------------------------


def lasted(incident: Incident, *, now: datetime) -> float:
    """Seconds from opening to resolution, or to ``now`` while it goes on."""
    return max(0.0, ((incident.resolved_at or now) - incident.opened_at).total_seconds())


def duration_text(incident: Incident, *, now: datetime) -> str:
    """How long the incident lasted; ``+`` marks one that is still going on."""
    text = format_duration(int(lasted(incident, now=now)))
    return text if incident.resolved_at else f"{text}+"


def last_action_text(incident: Incident) -> str:
    if not incident.attempts:
        return "-"
    last = incident.attempts[-1]
    if last.status is AttemptStatus.RUNNING:
        return f"{last.action}: running"
    if last.status is AttemptStatus.INTERRUPTED:
        return f"{last.action}: interrupted"
    return f"{last.action}: {'ok' if last.ok else 'failed'}"


def scope_cell(scope: str | None) -> str:
    """An incident's scope in a table: what the medic supervised, and the start of its
    engine's ID (the JSON has it whole); ``-`` for one recorded before scopes."""
    if scope is None:
        return "-"
    what, at, engine = scope.partition("@")
    return f"{what}@{engine[:14]}" if at else scope


def incident_document(
    incident: Incident,
    *,
    now: datetime,
    detailed: bool = False,
    mark: ReviewMark | None = None,
) -> dict[str, Any]:
    """An incident as ``--json`` and the API give it: the codec's fields, with
    ``attempts`` a count and no evidence unless ``detailed``, how long it lasted (or
    has lasted so far), its last action, and where its review stands (``mark``)."""
    doc = incident_to_dict(incident)
    attempts = doc.pop("attempts")
    evidence = doc.pop("evidence")
    last = incident.attempts[-1] if incident.attempts else None
    doc["duration_seconds"] = round(lasted(incident, now=now), 3)
    doc["attempts"] = attempts if detailed else len(attempts)
    doc["last_action"] = last.action if last else None
    doc["last_action_ok"] = last.ok if last else None
    if mark is not None:
        doc["diagnosis_rule"] = mark.rule_id
        doc["fix_id"] = mark.fix_id
        doc["fix_status"] = str(mark.fix_status) if mark.fix_status else None
    if detailed:
        doc["evidence"] = evidence
    return doc


def incident_list(
    incidents: Iterable[Incident], *, now: datetime, marks: Mapping[IncidentId, ReviewMark]
) -> list[dict[str, Any]]:
    """``medic incidents --json`` and ``GET /api/incidents``."""
    return [incident_document(i, now=now, mark=marks.get(i.id, ReviewMark())) for i in incidents]


def diagnosis_document(diagnosis: Diagnosis) -> dict[str, Any]:
    """A stored diagnosis: every field, its edits as a diff too."""
    document = diagnosis_to_dict(diagnosis)
    document["edits_diff"] = edits_diff(diagnosis.edits) if diagnosis.edits else None
    return document


def notification_document(record: NotificationRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "kind": record.kind,
        "title": record.title,
        "at": record.at.isoformat(),
        "outcome": str(record.outcome),
        "error": record.error,
    }


def incident_detail(
    incident: Incident,
    *,
    diagnoses: Sequence[Diagnosis],
    fixes: Sequence[Fix],
    notifications: Sequence[NotificationRecord] = (),
    diff_of: DiffOf,
    now: datetime,
) -> dict[str, Any]:
    """``medic incidents show ID --json`` and ``GET /api/incidents/ID``: the incident
    with its attempts and evidence, its diagnoses, fixes (with their diffs),
    notifications and timeline."""
    document = incident_document(
        incident, now=now, detailed=True, mark=ReviewMark.of(diagnoses, fixes)
    )
    document["diagnoses"] = [diagnosis_document(d) for d in diagnoses]
    document["fixes"] = [fix_document(f, diff=diff_of(f)) for f in fixes]
    document["notifications"] = [notification_document(n) for n in notifications]
    document["timeline"] = [
        moment.document()
        for moment in timeline(
            incident, diagnoses=diagnoses, fixes=fixes, notifications=notifications
        )
    ]
    cause = cause_of(diagnosis_pair(diagnoses))
    document["cause"] = cause.document() if cause is not None else None
    return document


# --- fixes -------------------------------------------------------------------------------


def fix_list(fixes: Iterable[Fix]) -> list[dict[str, Any]]:
    """``medic fixes --json`` and ``GET /api/fixes``."""
    return [fix_document(f) for f in fixes]


def fix_detail(fix: Fix, *, diagnosis: Diagnosis | None, diff: str | None) -> dict[str, Any]:
    """``medic fixes show ID --json`` and ``GET /api/fixes/ID``."""
    document = fix_document(fix, diff=diff)
    document["diagnosis"] = diagnosis_to_dict(diagnosis) if diagnosis is not None else None
    return document


# --- the timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """One line of an incident's timeline."""

    at: datetime
    kind: str
    """finding, attempt, diagnosis, notification, fix, decision or resolved."""
    event: str
    detail: str
    outcome: str = ""
    ok: bool | None = None
    """Whether it went well (an attempt, a delivery); None where that means nothing."""
    by: str | None = None
    """Who decided, for a person's decision."""

    def document(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "event": self.event,
            "detail": self.detail,
            "outcome": self.outcome,
            "ok": self.ok,
            "by": self.by,
        }


#: The note ``resolve`` keeps: ``by hand (NAME): NOTE``; older ones say ``by hand: NOTE``.
_BY_HAND = re.compile(r"^by hand(?: \((?P<by>[^)]*)\))?: ?(?P<note>.*)$", re.DOTALL)


def resolved_note(by: str, note: str) -> str:
    """The incident note a person's resolution keeps."""
    return f"by hand ({by}): {note}"


def resolved_by(incident: Incident) -> tuple[str | None, str]:
    """Who resolved the incident by hand (None: medic did, or it was not said) and the
    note, from its note."""
    match = _BY_HAND.match(incident.note or "")
    if match is None:
        return None, incident.note or ""
    return match.group("by") or "a person", match.group("note")


def attempt_cells(a: Attempt) -> tuple[str, str]:
    """An attempt's detail and outcome; one whose end is unknown says so rather than
    showing a duration or an outcome it does not have."""
    took = "end unknown" if a.duration is None else format_duration(a.duration)
    detail = f"{a.action} (playbook {a.playbook}, {took})"
    if a.status is AttemptStatus.RUNNING:
        return detail, "running: its end is not recorded yet"
    if a.status is AttemptStatus.INTERRUPTED:
        said = f"; {a.output}" if a.output else ""
        return detail, f"interrupted: {a.error or 'medic stopped before it ended'}{said}"
    return detail, "ok" if a.ok else f"failed: {a.error or 'no reason given'}"


def evidence_text(summary: str, evidence: Mapping[str, object]) -> str:
    details = ", ".join(f"{k}={v}" for k, v in evidence.items() if v is not None)
    return f"{summary} ({details})" if details else summary


def timeline(
    incident: Incident,
    *,
    diagnoses: Sequence[Diagnosis] = (),
    fixes: Sequence[Fix] = (),
    notifications: Sequence[NotificationRecord] = (),
) -> list[Moment]:
    """Everything that happened to the incident, oldest first: findings with their
    evidence, attempts and their outcomes, diagnoses, notifications, fixes, and the
    decisions people made, with their names."""
    moments = [
        Moment(e.observed_at, "finding", "finding", evidence_text(e.summary, e.evidence))
        for e in incident.evidence
    ]
    for a in incident.attempts:
        detail, outcome = attempt_cells(a)
        ok = None if a.status is not AttemptStatus.FINISHED else a.ok
        moments.append(Moment(a.started_at, "attempt", "attempt", detail, outcome, ok=ok))
    for d in diagnoses:
        who = "rules" if d.source is DiagnosisSource.RULES else (d.model or "model")
        what = d.error or d.summary
        moments.append(
            Moment(
                d.created_at,
                "diagnosis",
                f"diagnosed by {who}",
                f"{d.rule_id or '-'}: {what}",
                "" if d.error else f"confidence {d.confidence}",
                ok=None if d.error is None else False,
            )
        )
    for n in notifications:
        moments.append(
            Moment(
                n.at,
                "notification",
                f"notified: {n.kind}",
                n.title,
                str(n.outcome).replace("_", " ") + (f": {n.error}" if n.error else ""),
                ok=n.outcome == "delivered",
            )
        )
    for fix in fixes:
        if fix.status is FixStatus.REFUSED:
            moments.append(
                Moment(
                    fix.created_at,
                    "fix",
                    "fix refused",
                    f"{fix.id[:8]}: {fix.summary}",
                    "; ".join(fix.refusal_reasons),
                    ok=False,
                )
            )
            continue
        moments.append(
            Moment(
                fix.created_at,
                "fix",
                "fix proposed",
                f"{fix.id[:8]} on {fix.branch} ({', '.join(fix.files)})",
            )
        )
        if fix.decided_at is not None:
            why = f": {fix.reason}" if fix.reason else ""
            moments.append(
                Moment(
                    fix.decided_at,
                    "decision",
                    f"fix {fix.status}",
                    f"{fix.id[:8]} by {fix.decided_by or 'unknown'}{why}",
                    by=fix.decided_by,
                )
            )
    if incident.resolved_at is not None:
        by, note = resolved_by(incident)
        if by is not None:
            moments.append(
                Moment(incident.resolved_at, "decision", "resolved by hand", note, by=by)
            )
        else:
            moments.append(Moment(incident.resolved_at, "resolved", "resolved", note))
    moments.sort(key=lambda m: m.at)
    return moments


# --- diagnoses side by side --------------------------------------------------------------


@dataclass(frozen=True)
class DiagnosisPair:
    """The newest rule diagnosis and the model's that answers it, and the rest."""

    rule: Diagnosis | None
    llm: Diagnosis | None
    older: tuple[Diagnosis, ...]


def diagnosis_pair(diagnoses: Sequence[Diagnosis]) -> DiagnosisPair:
    rules = [d for d in diagnoses if d.source is DiagnosisSource.RULES and d.error is None]
    llms = [d for d in diagnoses if d.source is DiagnosisSource.LLM]
    rule = rules[-1] if rules else None
    llm = None
    if llms and (rule is None or llms[-1].created_at >= rule.created_at):
        llm = llms[-1]
    shown = {d.id for d in (rule, llm) if d is not None}
    return DiagnosisPair(rule, llm, tuple(d for d in diagnoses if d.id not in shown))


@dataclass(frozen=True)
class Cause:
    """Where the newest diagnoses find the cause, when it lies in another service of the
    stack: what the incident page and ``medic incidents show`` lead with."""

    service: str
    state: str | None
    by: str
    """Who named it: ``rules`` or the model's name."""
    diagnosis_id: str

    @property
    def line(self) -> str:
        """``Cause lies in db: exited (exit code 137).``"""
        return cause_line(self.service, self.state)

    @property
    def incidents_link(self) -> str:
        """The incidents page filtered to that service (its ``service`` parameter)."""
        return "/?" + urlencode({"service": self.service})

    def document(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "state": self.state,
            "by": self.by,
            "diagnosis_id": self.diagnosis_id,
        }


def cause_of(pair: DiagnosisPair) -> Cause | None:
    """The other service where the shown diagnoses find the cause: the model's answer
    when it names one, else the rules'; None when the cause lies in this service."""
    d = leading_cause(pair.rule, pair.llm)
    if d is None or d.cause_service is None:
        return None
    by = "rules" if d.source is DiagnosisSource.RULES else (d.model or "model")
    return Cause(service=d.cause_service, state=d.cause_state, by=by, diagnosis_id=d.id)


def evidence_quotes(diagnosis: Diagnosis) -> list[tuple[str, bool]]:
    """Each evidence quote and whether it was found verbatim in what was read. The
    rules quote only what they read; the model's quotes are checked, and those not
    found are kept in ``unverified_evidence``."""
    unverified = set(diagnosis.unverified_evidence)
    quotes = [(q, q not in unverified) for q in diagnosis.evidence]
    quotes += [(q, False) for q in diagnosis.unverified_evidence if q not in diagnosis.evidence]
    return quotes


# --- per service -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceFigures:
    """One service's incidents over a window."""

    service: str
    incidents: int
    active: int
    escalated: int
    resolved: int
    attempts: int
    mttr_seconds: float | None
    """Mean time from opening to resolution of the resolved ones; None without any."""

    def document(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "incidents": self.incidents,
            "active": self.active,
            "escalated": self.escalated,
            "resolved": self.resolved,
            "attempts": self.attempts,
            "mttr_seconds": None if self.mttr_seconds is None else round(self.mttr_seconds, 3),
        }


def service_figures(incidents: Iterable[Incident]) -> list[ServiceFigures]:
    """Counts and mean time to resolve per service (the container's name where compose
    gave no service), the busiest first."""
    by_service: dict[str, list[Incident]] = {}
    for i in incidents:
        by_service.setdefault(i.container.service or i.container.name, []).append(i)
    figures = []
    for service, group in by_service.items():
        took = [
            (i.resolved_at - i.opened_at).total_seconds()
            for i in group
            if i.resolved_at is not None
        ]
        figures.append(
            ServiceFigures(
                service=service,
                incidents=len(group),
                active=sum(1 for i in group if i.is_active),
                escalated=sum(1 for i in group if i.status is IncidentStatus.ESCALATED),
                resolved=sum(1 for i in group if i.status is IncidentStatus.RESOLVED),
                attempts=sum(len(i.attempts) for i in group),
                mttr_seconds=sum(took) / len(took) if took else None,
            )
        )
    figures.sort(key=lambda f: (-f.incidents, f.service))
    return figures


# --- diffs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff, with the line numbers it has on each side."""

    kind: str
    """``file`` (a ---/+++ header or git's own), ``hunk``, ``add``, ``del`` or ``same``."""
    text: str
    old: int | None = None
    new: int | None = None


_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def diff_lines(diff: str) -> list[DiffLine]:
    """A unified diff's lines, numbered as in the old and the new file. A hunk ends
    when its header's line counts are used up, so a following file's ``---`` header is
    never taken for a removed line."""
    lines: list[DiffLine] = []
    old = new = old_left = new_left = 0
    for text in diff.splitlines():
        hunk = _HUNK.match(text)
        if hunk:
            old, new = int(hunk.group(1)), int(hunk.group(3))
            old_left = int(hunk.group(2) or 1)
            new_left = int(hunk.group(4) or 1)
            lines.append(DiffLine("hunk", text))
        elif (old_left <= 0 and new_left <= 0) or text.startswith("\\"):
            lines.append(DiffLine("file", text))
        elif text.startswith("+"):
            lines.append(DiffLine("add", text[1:], new=new))
            new += 1
            new_left -= 1
        elif text.startswith("-"):
            lines.append(DiffLine("del", text[1:], old=old))
            old += 1
            old_left -= 1
        else:
            lines.append(DiffLine("same", text[1:], old=old, new=new))
            old += 1
            new += 1
            old_left -= 1
            new_left -= 1
    return lines
