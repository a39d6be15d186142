"""Where diagnoses are kept: the interface the diagnosis worker needs.

Every ``agent.store.IncidentStore`` (memory, Postgres, spooling) is one, so the rules
live once, in the stores; the worker only needs these four questions answered.
``record_diagnosis`` is named for what it records, since the same store records
incidents and fixes too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from agent.model import Diagnosis, IncidentId


class DiagnosisStore(Protocol):
    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        """Store one diagnosis; a diagnosis with an id already stored changes nothing."""
        ...

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        """An incident's diagnoses, oldest first."""
        ...

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        """The newest LLM diagnosis (or failed call) of this fingerprint made at or after
        ``since`` that is not itself a reuse."""
        ...

    def tokens_since(self, since: datetime) -> int:
        """Tokens (input, output, cache creation and cache read) spent on calls made at or
        after ``since``."""
        ...
