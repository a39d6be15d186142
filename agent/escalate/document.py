"""How a diagnosis is shown: the ``medic diagnose --json`` document and text for people.

The JSON field names are a contract (issue 11, item 6)::

    {incident_id, rule: {id, summary, root_cause, confidence, evidence, cause_service,
                         cause_state},
     llm: {model, summary, root_cause, confidence, evidence, edits, no_edits_reason,
           input_tokens, output_tokens, cause_service, cause_state} | null,
     reused_from: ID | null, error: str | null}

``cause_service`` names the other service of the compose project where the cause lies
(null when it lies in the incident's own service), ``cause_state`` its state then.
When one is named, the text for people leads with it, before any summary: the
service to look at first is the answer an operator needs most.
"""

from __future__ import annotations

import difflib
import textwrap
from typing import Any

from agent.escalate.worker import DiagnosisResult
from agent.model import Diagnosis, Edit


def diagnose_document(result: DiagnosisResult) -> dict[str, Any]:
    """The one JSON object ``medic diagnose ID --json`` prints."""
    rule = result.rule
    llm = result.llm
    return {
        "incident_id": result.incident_id,
        "rule": {
            "id": rule.rule_id or "unknown",
            "summary": rule.summary,
            "root_cause": rule.root_cause,
            "confidence": str(rule.confidence),
            "evidence": list(rule.evidence),
            "cause_service": rule.cause_service,
            "cause_state": rule.cause_state,
        },
        "llm": None if llm is None or llm.error is not None else llm_document(llm),
        "reused_from": result.reused_from,
        "error": result.error,
    }


def llm_document(d: Diagnosis) -> dict[str, Any]:
    return {
        "model": d.model,
        "summary": d.summary,
        "root_cause": d.root_cause,
        "confidence": str(d.confidence),
        "evidence": list(d.evidence),
        "edits": [{"path": e.path, "old": e.old, "new": e.new} for e in d.edits],
        "no_edits_reason": d.no_edits_reason,
        "input_tokens": d.input_tokens,
        "output_tokens": d.output_tokens,
        "cause_service": d.cause_service,
        "cause_state": d.cause_state,
    }


def leading_cause(rule: Diagnosis | None, llm: Diagnosis | None) -> Diagnosis | None:
    """Of a rule diagnosis and the model's that answers it, the one whose named cause
    service leads: the model's when it names one (it is the newer and has read more),
    else the rules'; None when neither names one."""
    for d in (llm, rule):
        if d is not None and d.error is None and d.cause_service:
            return d
    return None


def cause_line(service: str, state: str | None) -> str:
    """``Cause lies in db: exited (exit code 137).``"""
    return f"Cause lies in {service}" + (f": {state}." if state else ".")


def cause_sentence(d: Diagnosis, service: str) -> str:
    """The first line of a notification about ``service``'s incident whose cause lies in
    another service: ``The cause lies in db, not in app: db is exited (exit code 1).``"""
    state = f": {d.cause_service} is {d.cause_state}" if d.cause_state else ""
    return f"The cause lies in {d.cause_service}, not in {service}{state}."


COLUMN = 46


def render_text(result: DiagnosisResult) -> str:
    """The rule diagnosis and the model's side by side, then evidence, then edits as a diff."""
    rule = result.rule
    llm = result.llm if result.llm is not None and result.llm.error is None else None
    lines = [f"Incident {result.incident_id}", ""]
    cause = leading_cause(rule, llm)
    if cause is not None and cause.cause_service:
        lines += [cause_line(cause.cause_service, cause.cause_state), ""]
    left = [f"Rules ({rule.rule_id or 'unknown'}, {rule.confidence})", *_wrap(rule.summary)]
    left += ["", "Root cause:", *_wrap(rule.root_cause)]
    if llm is None:
        lines += [line for line in left]
    else:
        reused = f", reused from {result.reused_from[:12]}" if result.reused_from else ""
        right = [f"Model ({llm.model}, {llm.confidence}{reused})", *_wrap(llm.summary)]
        right += ["", "Root cause:", *_wrap(llm.root_cause)]
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            lines.append(f"{a:<{COLUMN}} | {b}".rstrip())
    lines += ["", "Rule evidence:", *(f"  {e}" for e in rule.evidence)]
    if llm is not None:
        lines += ["", "The model's evidence:", *(f"  {e}" for e in llm.evidence)]
        if llm.unverified_evidence:
            lines += [
                "",
                "These quotes were not found in what the model was shown, so its confidence "
                "was lowered to low:",
                *(f"  {q}" for q in llm.unverified_evidence),
            ]
        if llm.edits:
            lines += ["", "Proposed edits:", edits_diff(llm.edits).rstrip()]
        elif llm.no_edits_reason:
            lines += ["", f"No edits: {llm.no_edits_reason}"]
        total = (
            llm.input_tokens
            + llm.output_tokens
            + llm.cache_creation_input_tokens
            + llm.cache_read_input_tokens
        )
        lines += ["", f"Tokens: {llm.input_tokens} in, {llm.output_tokens} out, {total} in all."]
    if result.error:
        lines += ["", f"Note: {result.error}"]
    return "\n".join(lines) + "\n"


def edits_diff(edits: tuple[Edit, ...]) -> str:
    """The edits as a unified diff of each replaced passage."""
    parts = []
    for edit in edits:
        old = edit.old.splitlines(keepends=True)
        new = edit.new.splitlines(keepends=True)
        source = "/dev/null" if not edit.old else f"a/{edit.path}"
        diff = difflib.unified_diff(old, new, fromfile=source, tofile=f"b/{edit.path}")
        text = "".join(line if line.endswith("\n") else line + "\n" for line in diff)
        parts.append(text)
    return "".join(parts)


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, COLUMN) or [""]
