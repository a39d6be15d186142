"""How fixes are shown: JSON objects for ``medic fixes --json`` and ``fixes show --json``,
a table row, and a show page with the diff. Pure: the diff text is passed in.

The JSON field names are a contract (issue 12): ``id``, ``incident_id``, ``branch``,
``base``, ``status``, ``files``, ``summary``, ``refusal_reasons``, ``verification``,
and the rest of the record beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.model import Diagnosis, Fix, Verification
from agent.output import safe_text

TABLE_HEADERS = ("id", "incident", "status", "verified", "branch", "files", "summary")


def fix_document(fix: Fix, *, diff: str | None = None) -> dict[str, Any]:
    """One fix as a JSON-ready object; ``diff`` is added when given (``fixes show``)."""
    document: dict[str, Any] = {
        "id": fix.id,
        "incident_id": fix.incident_id,
        "diagnosis_id": fix.diagnosis_id,
        "status": str(fix.status),
        "created_at": fix.created_at.isoformat(),
        "summary": fix.summary,
        "files": list(fix.files),
        "branch": fix.branch,
        "base": fix.base,
        "base_branch": fix.base_branch,
        "commit": fix.commit,
        "refusal_reasons": list(fix.refusal_reasons),
        "verification": verification_document(fix.verification),
        "pushed_to": fix.pushed_to,
        "push_error": fix.push_error,
        "decided_at": fix.decided_at.isoformat() if fix.decided_at else None,
        "decided_by": fix.decided_by,
        "reason": fix.reason,
    }
    if diff is not None:
        document["diff"] = diff
    return document


def verification_document(verification: Verification | None) -> dict[str, Any] | None:
    if verification is None:
        return None
    return {
        "ok": verification.ok,
        "built": verification.built,
        "image": verification.image,
        "build_log": verification.build_log,
        "command": verification.command,
        "exit_status": verification.exit_status,
        "output": verification.output,
        "error": verification.error,
        "command_image": verification.command_image,
        "healing": verification.healing,
        "healing_ok": verification.healing_ok,
        "healing_log": verification.healing_log,
        "compose_effect": list(verification.compose_effect),
    }


def verification_summary(verification: Verification | None) -> str:
    """A few words for the table: what was tried and how it went."""
    if verification is None:
        return "-"
    parts: list[str] = []
    if verification.built is True:
        parts.append("built")
    elif verification.built is False:
        parts.append("build failed")
    if verification.command is not None:
        if verification.exit_status == 0:
            parts.append("check passed")
        elif verification.exit_status is not None:
            parts.append(f"check exit {verification.exit_status}")
    if verification.healing_ok is True:
        parts.append("heals")
    elif verification.healing_ok is False:
        parts.append("still fails")
    if verification.error:
        parts.append("error")
    return ", ".join(parts) or "nothing to verify"


def healing_sentence(verification: Verification | None) -> str | None:
    """The healing check's verdict as a sentence about the candidate image, for the fix
    notification and ``medic fixes show``; None when it was not tried."""
    if verification is None or verification.healing is None:
        return None
    return f"The candidate image {safe_text(verification.healing)}."


def fix_row(fix: Fix) -> tuple[object, ...]:
    """The fix as a row under TABLE_HEADERS."""
    return (
        fix.id[:8],
        fix.incident_id[:8],
        str(fix.status),
        verification_summary(fix.verification) if fix.branch else "-",
        fix.branch or "-",
        ", ".join(fix.files) or "-",
        fix.summary,
    )


def show_text(fix: Fix, *, diagnosis: Diagnosis | None = None, diff: str | None = None) -> str:
    """The page ``medic fixes show ID`` prints: the fix, its diagnosis, how it was
    verified, and the diff."""
    lines = [
        f"Fix {fix.id} ({fix.status})",
        f"  incident   {fix.incident_id}",
        f"  created    {fix.created_at:%Y-%m-%d %H:%M:%S}",
        f"  summary    {fix.summary}",
        f"  files      {', '.join(fix.files) or '-'}",
    ]
    if fix.branch:
        lines.append(f"  branch     {fix.branch} ({(fix.commit or '')[:12]})")
    if fix.base:
        lines.append(f"  base       {fix.base_branch or 'detached HEAD'} at {fix.base[:12]}")
    if fix.pushed_to:
        lines.append(f"  pushed to  {fix.pushed_to}")
    if fix.push_error:
        lines.append(f"  push       failed: {fix.push_error}")
    if fix.decided_at:
        decision = (
            f"  {fix.status:<10} by {fix.decided_by or '-'} at {fix.decided_at:%Y-%m-%d %H:%M:%S}"
        )
        lines.append(decision)
    if fix.reason:
        lines.append(f"  reason     {fix.reason}")
    if fix.refusal_reasons:
        lines.append("")
        lines.append("Refused because:")
        lines.extend(f"  - {reason}" for reason in fix.refusal_reasons)
    if diagnosis is not None:
        lines.extend(_diagnosis_lines(diagnosis))
    if fix.verification is not None:
        lines.extend(_verification_lines(fix.verification))
    if diff:
        lines.append("")
        lines.append("Diff:")
        lines.append(diff.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _diagnosis_lines(diagnosis: Diagnosis) -> list[str]:
    source = f"{diagnosis.source}" + (f", {diagnosis.model}" if diagnosis.model else "")
    lines = [
        "",
        f"Diagnosis ({source}, confidence {diagnosis.confidence}, "
        f"rule {diagnosis.rule_id or '-'}):",
        f"  {diagnosis.summary}",
        f"  root cause: {diagnosis.root_cause}",
    ]
    lines.extend(f"  evidence: {quote}" for quote in diagnosis.evidence)
    return lines


def _verification_lines(verification: Verification) -> list[str]:
    lines = ["", f"Verification: {verification_summary(verification)}"]
    healing = healing_sentence(verification)
    if healing is not None:
        lines.append(f"  {healing}")
    if verification.image:
        lines.append(f"  candidate image {verification.image}")
    if verification.build_log:
        lines.append("  build log (tail):")
        lines.extend(_indented(verification.build_log))
    if verification.command is not None:
        status = "-" if verification.exit_status is None else str(verification.exit_status)
        where = (
            f" in a sandbox of {verification.command_image}" if verification.command_image else ""
        )
        lines.append(f"  {safe_text(verification.command)} exited {status}{where}")
        if verification.output:
            lines.extend(_indented(verification.output))
    if verification.healing_log:
        lines.append("  the candidate's log in the sandbox (tail):")
        lines.extend(_indented(verification.healing_log))
    if verification.compose_effect:
        lines.append("  compose configuration changes:")
        lines.extend(f"    {safe_text(line)}" for line in verification.compose_effect)
    if verification.error:
        lines.append(f"  error: {safe_text(verification.error)}")
    return lines


def _indented(text: str) -> Sequence[str]:
    return [f"    {safe_text(line)}" for line in text.splitlines()]
