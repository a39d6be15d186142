"""An incident store that lives and dies with the process.

Used by ``medic once``, by tests of the pipeline, and by ``medic run`` when no
database is configured. It keeps the same rules as the Postgres store.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from agent.model import (
    SEVERITY,
    Attempt,
    EvidenceEntry,
    Finding,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store.base import (
    MAX_EVIDENCE,
    IncidentNotFound,
    IncidentQuery,
    IncidentStore,
    new_incident,
)


def graver(current: Signal, seen: Signal) -> Signal:
    """The more severe of two signals: what one failure episode is called."""
    return seen if SEVERITY.index(seen) < SEVERITY.index(current) else current


def append_evidence(
    entries: tuple[EvidenceEntry, ...], entry: EvidenceEntry
) -> tuple[EvidenceEntry, ...]:
    """Add ``entry``, keeping the first entry and the newest ones within MAX_EVIDENCE."""
    combined = (*entries, entry)
    if len(combined) <= MAX_EVIDENCE:
        return combined
    return (combined[0], *combined[-(MAX_EVIDENCE - 1) :])


class MemoryStore(IncidentStore):
    """Incidents in a dict, guarded by a lock so the supervisor's threads can share it."""

    def __init__(self) -> None:
        self._incidents: dict[IncidentId, Incident] = {}
        self._attempt_ids: set[str] = set()
        self._lock = threading.Lock()

    def record_finding(self, finding: Finding) -> Incident:
        entry = EvidenceEntry(finding.observed_at, finding.summary, dict(finding.evidence))
        with self._lock:
            for incident in self._incidents.values():
                if incident.is_active and incident.container.id == finding.container.id:
                    updated = replace(
                        incident,
                        signal=graver(incident.signal, finding.signal),
                        updated_at=finding.observed_at,
                        evidence=append_evidence(incident.evidence, entry),
                    )
                    self._incidents[incident.id] = updated
                    return updated
            incident = new_incident(finding)
            self._incidents[incident.id] = incident
            return incident

    def record_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            if attempt.id in self._attempt_ids:
                return
            incident = self._find(attempt.incident_id)
            status = incident.status
            if status is IncidentStatus.OPEN:
                status = IncidentStatus.HEALING
            self._attempt_ids.add(attempt.id)
            self._incidents[incident.id] = replace(
                incident,
                status=status,
                updated_at=max(incident.updated_at, attempt.finished_at),
                attempts=(*incident.attempts, attempt),
            )

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        with self._lock:
            incident = self._find(incident_id)
            updated = replace(
                incident,
                status=status,
                updated_at=at,
                resolved_at=at if status is IncidentStatus.RESOLVED else None,
                note=note if note is not None else incident.note,
            )
            self._incidents[incident.id] = updated
            return updated

    def put(self, incident: Incident) -> None:
        """Keep ``incident`` exactly as given, replacing any with its id.

        For a store that mirrors another one (the spool's view of Postgres); the
        rules above are the other store's to keep.
        """
        with self._lock:
            self._incidents[incident.id] = incident
            self._attempt_ids.update(a.id for a in incident.attempts)

    def get(self, incident_id: str) -> Incident:
        with self._lock:
            return self._find(incident_id)

    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        q = query or IncidentQuery()
        with self._lock:
            found = [
                i
                for i in self._incidents.values()
                if (not q.active_only or i.is_active)
                and (q.service is None or i.container.service == q.service)
                and (q.since is None or i.opened_at >= q.since)
                and (q.container_id is None or i.container.id == q.container_id)
            ]
        found.sort(key=lambda i: i.opened_at, reverse=True)
        return found[: q.limit] if q.limit is not None else found

    def _find(self, incident_id: str) -> Incident:
        exact = self._incidents.get(IncidentId(incident_id))
        if exact is not None:
            return exact
        matches = [i for key, i in self._incidents.items() if key.startswith(incident_id)]
        if len(matches) == 1 and incident_id:
            return matches[0]
        if matches:
            raise IncidentNotFound(
                f"Incident id {incident_id!r} is ambiguous: {len(matches)} incidents start with it."
            )
        raise IncidentNotFound(f"There is no incident with id {incident_id!r}.")
