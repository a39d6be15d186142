"""An incident store that lives and dies with the process.

Used by ``medic once``, by tests of the pipeline, by ``medic run`` when no
database is configured, and as the spooling store's view of Postgres. It keeps
the same rules as the Postgres store.

A daemon runs for months, so it does not keep every incident ever: it keeps
every active one, and the ``MAX_RESOLVED_KEPT`` resolved ones used most
recently. An incident's diagnoses, fixes and notification records are kept with
it (the newest ``MAX_KEPT_PER_INCIDENT`` of each) and forgotten with it. The durable history
is Postgres's to keep.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from loguru import logger

from agent.errors import FixNotFound
from agent.model import (
    SEVERITY,
    Attempt,
    AttemptStatus,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    EvidenceEntry,
    Finding,
    Fix,
    FixId,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationId,
    NotificationRecord,
    Signal,
)
from agent.store.base import (
    MAX_EVIDENCE,
    FixRecordedAlready,
    Identity,
    IncidentNotFound,
    IncidentQuery,
    IncidentStore,
    fix_not_found,
    new_incident,
)
from agent.store.lease import Fence

#: Resolved incidents kept in memory, besides every active one; the least recently
#: used go first.
MAX_RESOLVED_KEPT = 1_000

#: Diagnoses, fixes, and notification records kept in memory per incident: the newest.
MAX_KEPT_PER_INCIDENT = 20


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

    def __init__(
        self,
        *,
        max_resolved: int | None = MAX_RESOLVED_KEPT,
        identity: Identity | None = None,
        fence: Fence | None = None,
    ) -> None:
        """``max_resolved=None`` keeps every resolved incident (a stand-in for a database).
        ``fence`` is asked before each incident or attempt write, and refuses it by
        raising FencedOut (as Postgres would)."""
        self.identity = identity
        self.fence = fence
        self._diagnoses: dict[IncidentId, list[Diagnosis]] = {}
        self._diagnosis_ids: set[DiagnosisId] = set()
        self._fixes: dict[FixId, Fix] = {}
        self._notifications: dict[IncidentId, list[NotificationRecord]] = {}
        self._notification_ids: set[NotificationId] = set()
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
            self._forget_escalation(gone)

    def _forget_escalation(self, incident_id: IncidentId) -> None:
        """Forget an incident's diagnoses, fixes and notification records. Hold the lock."""
        for d in self._diagnoses.pop(incident_id, []):
            self._diagnosis_ids.discard(d.id)
        for n in self._notifications.pop(incident_id, []):
            self._notification_ids.discard(n.id)
        for fix_id in [f.id for f in self._fixes.values() if f.incident_id == incident_id]:
            del self._fixes[fix_id]

    def record_finding(self, finding: Finding) -> Incident:
        entry = EvidenceEntry(finding.observed_at, finding.summary, dict(finding.evidence))
        with self._lock:
            self.term()
            for incident in self._incidents.values():
                if (
                    incident.is_active
                    and incident.container.id == finding.container.id
                    and incident.scope == self.scope
                ):
                    updated = replace(
                        incident,
                        signal=graver(incident.signal, finding.signal),
                        updated_at=finding.observed_at,
                        evidence=append_evidence(incident.evidence, entry),
                    )
                    self._keep(updated)
                    return updated
            incident = new_incident(finding, scope=self.scope)
            self._keep(incident)
            return incident

    def record_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            self.term()
            if attempt.id in self._attempt_ids:
                self._complete(attempt)
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
                    updated_at=max(incident.updated_at, attempt.finished_at or attempt.started_at),
                    attempts=(*incident.attempts, attempt),
                )
            )

    def _complete(self, attempt: Attempt) -> None:
        """A known attempt again: it completes one still running (finished or
        interrupted); anything else changes nothing. Hold the lock."""
        if attempt.status is AttemptStatus.RUNNING:
            return
        for incident in list(self._incidents.values()):
            known = next((a for a in incident.attempts if a.id == attempt.id), None)
            if known is None:
                continue
            if known.status is not AttemptStatus.RUNNING:
                return
            kept = tuple(a for a in incident.attempts if a.id != attempt.id)
            if incident.id == attempt.incident_id:
                kept = tuple(attempt if a.id == attempt.id else a for a in incident.attempts)
            self._keep(replace(incident, attempts=kept))
            if incident.id != attempt.incident_id:
                # Recorded as started on an incident a person resolved meanwhile: the
                # attempt goes with its incident of now.
                target = self._find(attempt.incident_id)
                self._keep(replace(target, attempts=(*target.attempts, attempt)))
            ended = attempt.finished_at or attempt.started_at
            current = self._incidents[attempt.incident_id]
            self._keep(replace(current, updated_at=max(current.updated_at, ended)))
            return

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
            self.check_own(incident)
            self.term()
            updated = replace(
                incident,
                status=status,
                updated_at=at,
                resolved_at=at if status is IncidentStatus.RESOLVED else None,
                note=note if note is not None else incident.note,
            )
            self._keep(updated)
            return updated

    def move_incident(
        self, incident_id: IncidentId, container: ContainerRef, *, at: datetime, note: str
    ) -> Incident:
        with self._lock:
            incident = self._find(incident_id)
            self.check_own(incident)
            self.term()
            moved = replace(
                incident,
                container=container,
                updated_at=max(incident.updated_at, at),
                evidence=append_evidence(incident.evidence, EvidenceEntry(at, note)),
            )
            self._keep(moved)
            return moved

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
            else:
                self._forget_escalation(incident_id)

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
                and (q.scope is None or i.scope == q.scope)
            ]
        found.sort(key=lambda i: i.opened_at, reverse=True)
        return found[: q.limit] if q.limit is not None else found

    # --- diagnoses ----------------------------------------------------------------------------

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        with self._lock:
            if diagnosis.id in self._diagnosis_ids:
                return
            self._held(diagnosis.incident_id, "diagnosis")
            kept = [*self._diagnoses.get(diagnosis.incident_id, []), diagnosis]
            kept.sort(key=lambda d: d.created_at)
            for dropped in kept[:-MAX_KEPT_PER_INCIDENT]:
                self._diagnosis_ids.discard(dropped.id)
            self._diagnoses[diagnosis.incident_id] = kept[-MAX_KEPT_PER_INCIDENT:]
            self._diagnosis_ids.add(diagnosis.id)

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        with self._lock:
            return list(self._diagnoses.get(incident_id, []))

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        with self._lock:
            found = [
                d
                for kept in self._diagnoses.values()
                for d in kept
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
                for kept in self._diagnoses.values()
                for d in kept
                if d.created_at >= since
            )

    # --- fixes ---------------------------------------------------------------------------------

    def record_fix(self, fix: Fix) -> None:
        with self._lock:
            if fix.id in self._fixes:
                raise FixRecordedAlready(f"fix {fix.id} is recorded already")
            self._put_fix(fix)

    def update_fix(self, fix: Fix) -> None:
        with self._lock:
            if fix.id not in self._fixes:
                raise FixNotFound(f"No fix has the id {fix.id}.")
            self._put_fix(fix)

    def put_fix(self, fix: Fix) -> None:
        """Keep ``fix`` as given, new or known (for the spool's view); IncidentNotFound
        when its incident is not held."""
        with self._lock:
            self._put_fix(fix)

    def _put_fix(self, fix: Fix) -> None:
        """Hold the lock."""
        self._held(fix.incident_id, "fix")
        self._fixes[fix.id] = fix
        mine = sorted(
            (f for f in self._fixes.values() if f.incident_id == fix.incident_id),
            key=lambda f: f.created_at,
        )
        for dropped in mine[:-MAX_KEPT_PER_INCIDENT]:
            del self._fixes[dropped.id]

    def get_fix(self, ref: str) -> Fix:
        with self._lock:
            if ref in self._fixes:
                return self._fixes[FixId(ref)]
            found = [f for f in self._fixes.values() if ref and f.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        raise fix_not_found(ref, len(found))

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        with self._lock:
            fixes = list(self._fixes.values())
        if not include_decided:
            fixes = [f for f in fixes if f.status is FixStatus.PROPOSED]
        return sorted(fixes, key=lambda f: f.created_at, reverse=True)

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        with self._lock:
            fixes = [f for f in self._fixes.values() if f.incident_id == incident_id]
        return sorted(fixes, key=lambda f: f.created_at)

    # --- notifications ------------------------------------------------------------------------

    def record_notification(self, record: NotificationRecord) -> None:
        with self._lock:
            if record.id in self._notification_ids:
                return
            incident = self._incidents.get(record.incident_id)
            if incident is None:
                logger.debug(
                    "The {} record of the {} notification of incident {} is not kept: "
                    "no such incident is held.",
                    record.outcome,
                    record.kind,
                    record.incident_id[:8],
                )
                return
            self._used(incident)
            kept = [*self._notifications.get(record.incident_id, []), record]
            kept.sort(key=lambda n: n.at)  # stable: records of one moment keep their order
            for dropped in kept[:-MAX_KEPT_PER_INCIDENT]:
                self._notification_ids.discard(dropped.id)
            self._notifications[record.incident_id] = kept[-MAX_KEPT_PER_INCIDENT:]
            self._notification_ids.add(record.id)

    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        with self._lock:
            return list(self._notifications.get(incident_id, []))

    def _held(self, incident_id: IncidentId, what: str) -> None:
        """IncidentNotFound unless the incident is held, as a database's foreign key
        refuses a row for an incident it does not have. Hold the lock."""
        incident = self._incidents.get(incident_id)
        if incident is None:
            raise IncidentNotFound(
                f"The incident {incident_id!r} this {what} belongs to is not stored."
            )
        self._used(incident)

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
