"""An honest stand-in for Postgres, for the spooling store's unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from agent.errors import FencedOut, FixNotFound, StoreUnavailable
from agent.model import (
    Attempt,
    AttemptStatus,
    Diagnosis,
    EvidenceEntry,
    Finding,
    Fix,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
)
from agent.store import IncidentNotFound, IncidentQuery, MemoryStore, new_id
from agent.store.lease import Claim, LeaseStore, Term
from agent.store.memory import append_evidence
from agent.store.ops import (
    AddEvidence,
    MoveIncident,
    OpenIncident,
    Operation,
    OperationStore,
    RecordAttempt,
    RecordDiagnosis,
    RecordFix,
    RecordNotification,
)


class FlakyDatabase(OperationStore):
    """An honest stand-in for Postgres: applies operations idempotently, and can be down."""

    def __init__(self, leases: FakeLeases | None = None) -> None:
        """``leases``: the lease rows a live write's term is checked against."""
        self.rows = MemoryStore(max_resolved=None)
        self.leases = leases
        self.down = False
        self.applied: list[Operation] = []
        self.keys: set[str] = set()
        self.lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("connection refused")

    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        with self.lock:
            self._check()
            if term is not None and self.leases is not None:
                self.leases.check(term)
            self._refuse_orphans(ops)
            for op in ops:
                key = _key(op)
                if key in self.keys:
                    continue
                self.keys.add(key)
                self.applied.append(op)
                if isinstance(op, OpenIncident):
                    self.rows.put(op.incident)
                elif isinstance(op, AddEvidence):
                    found = self.rows.get(op.incident_id)
                    entry = EvidenceEntry(op.observed_at, op.summary, op.evidence)
                    self.rows.put(replace(found, evidence=append_evidence(found.evidence, entry)))
                elif isinstance(op, RecordAttempt):
                    self.rows.record_attempt(op.attempt)
                elif isinstance(op, RecordDiagnosis):
                    self.rows.record_diagnosis(op.diagnosis)
                elif isinstance(op, RecordFix):
                    self._put_fix(op.fix)
                elif isinstance(op, RecordNotification):
                    # As Postgres: one of an unknown incident is skipped, not refused.
                    self.rows.record_notification(op.record)
                elif isinstance(op, MoveIncident):
                    self.rows.move_incident(op.incident_id, op.container, at=op.at, note=op.note)
                else:
                    self.rows.set_status(op.incident_id, op.status, at=op.at, note=op.note)

    def _refuse_orphans(self, ops: Sequence[Operation]) -> None:
        """Refuse the whole batch, as a transaction whose foreign key fails is, when an
        operation belongs to an incident that is neither stored nor opened in it."""
        opened = {op.incident.id for op in ops if isinstance(op, OpenIncident)}
        for op in ops:
            if isinstance(op, RecordDiagnosis):
                owner = op.diagnosis.incident_id
            elif isinstance(op, RecordFix):
                owner = op.fix.incident_id
            else:
                continue
            if owner not in opened:
                try:
                    self.rows.get(owner)
                except IncidentNotFound as e:
                    raise IncidentNotFound(f"the incident {owner} is not stored") from e

    def record_notification(self, record: NotificationRecord) -> None:
        self.apply([RecordNotification(record)])

    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        self._check()
        return self.rows.notifications(incident_id)

    def _put_fix(self, fix: Fix) -> None:
        """As Postgres does: a stored decision is not changed to another status."""
        try:
            stored = self.rows.get_fix(fix.id)
        except FixNotFound:
            stored = None
        decided = (FixStatus.APPROVED, FixStatus.REJECTED)
        if stored is None or stored.status not in decided or stored.status is fix.status:
            self.rows.put_fix(fix)

    def record_finding(self, finding: Finding) -> Incident:
        raise AssertionError("the spooling store writes operations, never findings")

    def record_attempt(self, attempt: Attempt) -> None:
        raise AssertionError("the spooling store writes operations, never attempts")

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        raise AssertionError("the spooling store writes operations")

    def get(self, incident_id: str) -> Incident:
        self._check()
        return self.rows.get(incident_id)

    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        self._check()
        return self.rows.list_incidents(query)

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        self.apply([RecordDiagnosis(diagnosis)])

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        self._check()
        return self.rows.diagnoses(incident_id)

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        self._check()
        return self.rows.find_reusable(fingerprint, since=since)

    def tokens_since(self, since: datetime) -> int:
        self._check()
        return self.rows.tokens_since(since)

    def record_fix(self, fix: Fix) -> None:
        raise AssertionError("the spooling store writes operations, never fixes")

    def update_fix(self, fix: Fix) -> None:
        raise AssertionError("the spooling store writes operations, never fixes")

    def get_fix(self, ref: str) -> Fix:
        self._check()
        return self.rows.get_fix(ref)

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        self._check()
        return self.rows.list_fixes(include_decided=include_decided)

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        self._check()
        return self.rows.fixes_of_incident(incident_id)


def _key(op: Operation) -> str:
    if isinstance(op, OpenIncident):
        return f"incident:{op.incident.id}"
    if isinstance(op, AddEvidence):
        return f"evidence:{op.entry_id}"
    if isinstance(op, RecordAttempt):
        # As Postgres: an attempt's start and its end are two writes; the end applies
        # once (the store itself keeps a completed attempt from changing again).
        running = op.attempt.status is AttemptStatus.RUNNING
        return f"attempt:{op.attempt.id}:{'start' if running else 'end'}"
    if isinstance(op, RecordDiagnosis):
        return f"diagnosis:{op.diagnosis.id}"
    if isinstance(op, RecordFix):
        return f"fix:{op.fix.id}:{new_id()}"  # every change of a fix is applied
    if isinstance(op, MoveIncident):
        return f"evidence:{op.entry_id}"
    if isinstance(op, RecordNotification):
        return f"notification:{op.record.id}"
    return f"status:{op.change_id}"


class FakeLeases(LeaseStore):
    """The lease rows of ``PostgresLeases`` in a dict, judged by ``now``: the database's
    clock (a test's FakeClock). Can be down, as the database can."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self.now = now
        self.rows: dict[str, Claim] = {}
        self.down = False
        self.claims = 0
        self.lock = threading.Lock()

    def claim(self, scope: str, holder: str, *, seconds: float) -> Claim:
        with self.lock:
            self.claims += 1
            if self.down:
                raise StoreUnavailable("connection refused")
            now = self.now()
            until = now + timedelta(seconds=seconds)
            row = self.rows.get(scope)
            if row is None:
                row = Claim(scope, holder, 1, now, until)
            elif row.holder == holder and row.expires_at > now:
                row = replace(row, expires_at=until)
            elif row.expires_at <= now:
                row = Claim(scope, holder, row.token + 1, now, until)
            else:
                return row
            self.rows[scope] = row
            return row

    def release(self, term: Term) -> None:
        with self.lock:
            if self.down:
                raise StoreUnavailable("connection refused")
            row = self.rows.get(term.scope)
            if row is not None and row.term == term:
                self.rows[term.scope] = replace(row, expires_at=min(row.expires_at, self.now()))

    def check(self, term: Term) -> None:
        """What Postgres checks in each fenced write's transaction."""
        with self.lock:
            row = self.rows.get(term.scope)
            if row is None or row.term != term or row.expires_at <= self.now():
                raise FencedOut(f"the lease of {term.scope} is not in term {term.token} any more")
