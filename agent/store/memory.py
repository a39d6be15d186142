"""An incident store that lives and dies with the process.

Used by ``medic once``, by tests of the pipeline, by ``medic run`` when no
database is configured, and as the spooling store's view of Postgres. It keeps
the same rules as the Postgres store.

A daemon runs for months, so it does not keep every incident ever: it keeps
every active one, and the ``MAX_RESOLVED_KEPT`` resolved ones used most
recently. The durable history is Postgres's to keep.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from agent.model import (
    Attempt,
    EvidenceEntry,
    Finding,
    Incident,
    IncidentId,
    IncidentStatus,
)
from agent.store.base import (
    MAX_EVIDENCE,
    IncidentNotFound,
    IncidentQuery,
    IncidentStore,
    new_incident,
)

#: Resolved incidents kept in memory, besides every active one; the least recently
#: used go first.
MAX_RESOLVED_KEPT = 1_000


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

    def __init__(self, *, max_resolved: int | None = MAX_RESOLVED_KEPT) -> None:
        """``max_resolved=None`` keeps every resolved incident (a stand-in for a database)."""
        self._incidents: dict[IncidentId, Incident] = {}
        self._attempt_ids: set[str] = set()
        self._resolved: OrderedDict[IncidentId, None] = OrderedDict()
        self._max_resolved = max_resolved
        self._lock = threading.Lock()

    def held(self) -> int:
        """How many incidents are held in memory (not ``__len__``: an empty store is
        still a store, and ``store or MemoryStore()`` must keep it)."""
        with self._lock:
            return len(self._incidents)

    def _keep(self, incident: Incident) -> None:
        """Store ``incident`` and forget the least recently used resolved ones past the
        bound. Hold the lock."""
        self._incidents[incident.id] = incident
        if incident.is_active:
            self._resolved.pop(incident.id, None)
        else:
            self._resolved[incident.id] = None
            self._resolved.move_to_end(incident.id)
        if self._max_resolved is None:
            return
        while len(self._resolved) > self._max_resolved:
            gone, _ = self._resolved.popitem(last=False)
            forgotten = self._incidents.pop(gone)
            self._attempt_ids.difference_update(a.id for a in forgotten.attempts)

    def record_finding(self, finding: Finding) -> Incident:
        entry = EvidenceEntry(finding.observed_at, finding.summary, dict(finding.evidence))
        with self._lock:
            for incident in self._incidents.values():
                if (
                    incident.is_active
                    and incident.container.id == finding.container.id
                    and incident.signal is finding.signal
                ):
                    updated = replace(
                        incident,
                        updated_at=finding.observed_at,
                        evidence=append_evidence(incident.evidence, entry),
                    )
                    self._keep(updated)
                    return updated
            incident = new_incident(finding)
            self._keep(incident)
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
            self._keep(
                replace(
                    incident,
                    status=status,
                    updated_at=max(incident.updated_at, attempt.finished_at),
                    attempts=(*incident.attempts, attempt),
                )
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
            self._keep(updated)
            return updated

    def put(self, incident: Incident) -> None:
        """Keep ``incident`` exactly as given, replacing any with its id.

        For a store that mirrors another one (the spool's view of Postgres); the
        rules above are the other store's to keep.
        """
        with self._lock:
            self._attempt_ids.update(a.id for a in incident.attempts)
            self._keep(incident)

    def restore(self, incident_id: IncidentId, before: Incident | None) -> None:
        """Put back ``before`` as it was (None: forget the incident), undoing a change
        that could not be stored elsewhere."""
        with self._lock:
            now = self._incidents.pop(incident_id, None)
            self._resolved.pop(incident_id, None)
            if now is not None:
                self._attempt_ids.difference_update(a.id for a in now.attempts)
            if before is not None:
                self._attempt_ids.update(a.id for a in before.attempts)
                self._keep(before)

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
            return self._used(exact)
        matches = [i for key, i in self._incidents.items() if key.startswith(incident_id)]
        if len(matches) == 1 and incident_id:
            return self._used(matches[0])
        if matches:
            raise IncidentNotFound(
                f"Incident id {incident_id!r} is ambiguous: {len(matches)} incidents start with it."
            )
        raise IncidentNotFound(f"There is no incident with id {incident_id!r}.")

    def _used(self, incident: Incident) -> Incident:
        """Mark a resolved incident as recently used, so it is kept longer. Hold the lock."""
        if incident.id in self._resolved:
            self._resolved.move_to_end(incident.id)
        return incident
