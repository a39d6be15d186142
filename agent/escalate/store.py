"""Where diagnoses are kept: the interface, and an implementation in memory.

Every ``agent.store.IncidentStore`` (memory, Postgres, spooling) is one: the
worker only needs these four questions answered. ``record_diagnosis`` is named
for what it records, since the same store records incidents and fixes too.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol

from agent.model import Diagnosis, DiagnosisSource, IncidentId


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


class MemoryDiagnosisStore:
    """Diagnoses in a list, for tests and for medic without a database."""

    def __init__(self) -> None:
        self._items: list[Diagnosis] = []
        self._lock = threading.Lock()

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        with self._lock:
            if all(d.id != diagnosis.id for d in self._items):
                self._items.append(diagnosis)

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        with self._lock:
            found = [d for d in self._items if d.incident_id == incident_id]
        return sorted(found, key=lambda d: d.created_at)

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        with self._lock:
            found = [
                d
                for d in self._items
                if d.source is DiagnosisSource.LLM
                and d.fingerprint == fingerprint
                and d.created_at >= since
                and d.reused_from is None
            ]
        return max(found, key=lambda d: d.created_at) if found else None

    def tokens_since(self, since: datetime) -> int:
        with self._lock:
            return sum(
                d.input_tokens
                + d.output_tokens
                + d.cache_creation_input_tokens
                + d.cache_read_input_tokens
                for d in self._items
                if d.created_at >= since
            )
