"""Budgets, so that an outage never becomes a bill.

Three bounds, all pure here (the worker reads what has been spent from the store):

* per incident: at most ``llm_incident_calls`` calls and ``llm_incident_tokens``
  tokens (``llm.Limits``);
* per UTC day: ``llm_daily_tokens`` across all incidents;
* per failure: one diagnosis per *fingerprint* within ``diagnosis_window``. The
  fingerprint is the service, image id, exit code, the normalised error signature of
  the log (numbers, ids and times stripped), the repository's HEAD and the model:
  the same failure never pays twice, and a failed call is not retried within the
  window either.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from agent.escalate.casefile import ERROR_LOOKING, CaseFile

#: Error-looking log lines that make up the signature (the newest ones).
SIGNATURE_LINES = 5

_NOISE = (
    (
        re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),
        "<time>",
    ),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<id>"),
    (re.compile(r"\b(?:0x)?[0-9a-f]{8,}\b", re.I), "<id>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\d+"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def error_signature(lines: Sequence[str]) -> str:
    """The newest error-looking lines with numbers, ids, addresses and times stripped.

    Two crashes of the same bug give the same signature although their timestamps,
    pids, request ids and ports differ.
    """
    errors = [line for line in lines if ERROR_LOOKING.search(line)][-SIGNATURE_LINES:]
    if not errors:
        errors = [line for line in lines if line.strip()][-2:]
    normalised = []
    for line in errors:
        text = line
        for pattern, replacement in _NOISE:
            text = pattern.sub(replacement, text)
        normalised.append(text.strip())
    return "\n".join(normalised)


@dataclass(frozen=True)
class Fingerprint:
    service: str
    image_id: str
    exit_code: int | None
    signature: str
    repo_head: str | None
    model: str

    @property
    def key(self) -> str:
        parts = [
            self.service,
            self.image_id,
            str(self.exit_code),
            self.signature,
            self.repo_head or "-",
            self.model,
        ]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def fingerprint(case: CaseFile, *, repo_head: str | None, model: str) -> Fingerprint:
    """The failure's fingerprint from its case file."""
    who = f"{case.project or '-'}/{case.service or case.container_name}"
    return Fingerprint(
        service=who,
        image_id=case.image_id,
        exit_code=case.exit_code,
        signature=error_signature(case.logs),
        repo_head=repo_head,
        model=model,
    )


def day_start(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day: when the daily token budget starts again."""
    return datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)


def window_start(now: datetime, window: float) -> datetime:
    return now - timedelta(seconds=window)


def daily_refusal(*, spent: int, daily_tokens: int) -> str | None:
    """Why no call may be made today, or None when the budget allows one."""
    if daily_tokens <= 0:
        return "The model was not asked: MEDIC_LLM_DAILY_TOKENS is 0."
    if spent >= daily_tokens:
        return (
            f"The model was not asked: the daily token budget is spent ({spent} of "
            f"{daily_tokens} tokens since 00:00 UTC; MEDIC_LLM_DAILY_TOKENS)."
        )
    return None
