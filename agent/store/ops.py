"""Incident changes (diagnoses, fixes and notification records included) as explicit,
idempotent operations.

The spooling store decides what a finding means (a new incident, or evidence for
the active one) and then writes one of these. Each carries the id of the row it
creates, made by medic, so writing it twice stores it once: that is what lets
the spool be replayed after an outage, or after a crash half-way through a
replay, without duplicates. Each operation is one JSON line in the spool.

The operations on incidents and attempts carry the lease ``term`` (fencing token,
agent/store/lease.py) of the medic that made them, when it led by a lease. A live
write is refused unless that term is still the lease's; a spooled one, replayed
later, is kept as history, and changes an incident only when no later term has
written to it (docs/ha.md).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.codec import (
    CodecError,
    attempt_from_dict,
    attempt_to_dict,
    container_fields,
    container_from_fields,
    diagnosis_from_dict,
    diagnosis_to_dict,
    enum_field,
    evidence_entry_from_dict,
    evidence_entry_to_dict,
    fix_from_dict,
    fix_to_dict,
    incident_from_dict,
    incident_to_dict,
    notification_record_from_dict,
    notification_record_to_dict,
    optional_text_field,
    text_field,
    time_field,
)
from agent.errors import StoreError
from agent.model import (
    Attempt,
    ContainerRef,
    Diagnosis,
    Evidence,
    EvidenceEntry,
    Fix,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
    Signal,
)
from agent.store.base import IncidentStore, new_id
from agent.store.lease import Term


@dataclass(frozen=True)
class OpenIncident:
    """A new incident with its first evidence entry (``entry_id``)."""

    incident: Incident
    entry_id: str
    term: int | None = None


@dataclass(frozen=True)
class AddEvidence:
    """One more finding for an active incident.

    ``signal`` is the finding's: when it is more severe than the incident's (repeated
    exits becoming a crash loop), the incident takes it, as one failure episode.
    """

    entry_id: str
    incident_id: IncidentId
    observed_at: datetime
    summary: str
    evidence: Evidence = field(default_factory=dict)
    signal: Signal | None = None
    term: int | None = None


@dataclass(frozen=True)
class RecordAttempt:
    """One action taken for an incident; an open incident becomes healing.

    An attempt is written when its plan starts (``running``) and again, with the
    same id, when it ends (``finished``) or when a later medic finds it was cut
    short (``interrupted``): that second write completes it. A completed attempt
    is never changed, so replaying either write again changes nothing.
    """

    attempt: Attempt
    term: int | None = None


@dataclass(frozen=True)
class SetStatus:
    """An incident moved to ``status`` (``change_id`` keys the status-change row)."""

    change_id: str
    incident_id: IncidentId
    status: IncidentStatus
    at: datetime
    note: str | None = None
    term: int | None = None


@dataclass(frozen=True)
class MoveIncident:
    """medic replaced the container of an active incident (a recreate or a rebuild):
    the incident follows the new container, and an evidence entry (``entry_id``)
    says so. Keyed by that entry, so a replay moves it once."""

    entry_id: str
    incident_id: IncidentId
    container: ContainerRef
    at: datetime
    note: str
    term: int | None = None


@dataclass(frozen=True)
class RecordDiagnosis:
    """One diagnosis of an incident, stored once (keyed by its id)."""

    diagnosis: Diagnosis


@dataclass(frozen=True)
class RecordFix:
    """A fix as it is now: stored when new, replaced when known (keyed by its id).

    Proposing a fix and each later change (a decision, a push) are each one of
    these, carrying the whole fix, so the spool replays them in order and the last
    one wins. One exception keeps a person's word: a fix stored as approved or
    rejected is not changed to another status by a replayed change.
    """

    fix: Fix


@dataclass(frozen=True)
class RecordNotification:
    """What became of one notification of an incident, stored once (keyed by its id).

    One of an incident the store does not have is skipped, not refused: it is a
    record of something already told, and replaying it must not stop the spool.
    """

    record: NotificationRecord


Operation = (
    OpenIncident
    | AddEvidence
    | RecordAttempt
    | SetStatus
    | MoveIncident
    | RecordDiagnosis
    | RecordFix
    | RecordNotification
)

#: The operations on incidents and attempts: the ones a lease fences.
FENCED = (OpenIncident, AddEvidence, RecordAttempt, SetStatus, MoveIncident)


def term_of(op: Operation) -> int | None:
    """The lease term an operation was made in; None when none was held, or it is not
    an operation on incidents or attempts."""
    return op.term if isinstance(op, FENCED) else None


class BadSpoolLine(StoreError):
    """A spool line that is not an operation this version of medic can read."""


def to_json(op: Operation) -> str:
    """One line of JSON (no newline) that ``from_json`` turns back into ``op``.

    The values inside are written by ``agent.codec``, as the CLI prints them.
    """
    doc: dict[str, Any]
    if isinstance(op, OpenIncident):
        doc = {"op": "open_incident", "entry_id": op.entry_id, **incident_to_dict(op.incident)}
    elif isinstance(op, AddEvidence):
        entry = EvidenceEntry(op.observed_at, op.summary, op.evidence)
        doc = {
            "op": "add_evidence",
            "id": op.entry_id,
            "incident_id": op.incident_id,
            **evidence_entry_to_dict(entry),
        }
        if op.signal is not None:
            doc["signal"] = str(op.signal)
    elif isinstance(op, RecordAttempt):
        doc = {"op": "record_attempt", **attempt_to_dict(op.attempt)}
    elif isinstance(op, RecordDiagnosis):
        doc = {"op": "record_diagnosis", **diagnosis_to_dict(op.diagnosis)}
    elif isinstance(op, RecordFix):
        doc = {"op": "record_fix", **fix_to_dict(op.fix)}
    elif isinstance(op, RecordNotification):
        doc = {"op": "record_notification", **notification_record_to_dict(op.record)}
    elif isinstance(op, MoveIncident):
        doc = {
            "op": "move_incident",
            "id": op.entry_id,
            "incident_id": op.incident_id,
            **container_fields(op.container),
            "at": op.at.isoformat(),
            "note": op.note,
        }
    else:
        doc = {
            "op": "set_status",
            "id": op.change_id,
            "incident_id": op.incident_id,
            "status": str(op.status),
            "at": op.at.isoformat(),
            "note": op.note,
        }
    term = term_of(op)
    if term is not None:
        doc["term"] = term
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def from_json(line: str) -> Operation:
    """The operation one spool line holds; BadSpoolLine when it holds none."""
    try:
        doc = json.loads(line)
    except ValueError as e:
        raise BadSpoolLine(f"the spool line {line[:80]!r} cannot be read: {e}") from e
    kind = doc.get("op") if isinstance(doc, dict) else None
    try:
        term = _term(doc)
        if kind == "open_incident":
            if "container_name" in doc:
                doc = _earlier_open_incident(doc)
            return OpenIncident(
                incident_from_dict(doc), entry_id=text_field(doc, "entry_id"), term=term
            )
        if kind == "add_evidence":
            entry = evidence_entry_from_dict(doc)
            return AddEvidence(
                entry_id=text_field(doc, "id"),
                incident_id=IncidentId(text_field(doc, "incident_id")),
                observed_at=entry.observed_at,
                summary=entry.summary,
                evidence=entry.evidence,
                signal=enum_field(doc, "signal", Signal) if doc.get("signal") else None,
                term=term,
            )
        if kind == "record_attempt":
            return RecordAttempt(attempt_from_dict(doc), term=term)
        if kind == "record_diagnosis":
            return RecordDiagnosis(diagnosis_from_dict(doc))
        if kind == "record_fix":
            return RecordFix(fix_from_dict(doc))
        if kind == "record_notification":
            return RecordNotification(notification_record_from_dict(doc))
        if kind == "move_incident":
            return MoveIncident(
                entry_id=text_field(doc, "id"),
                incident_id=IncidentId(text_field(doc, "incident_id")),
                container=container_from_fields(doc),
                at=time_field(doc, "at"),
                note=text_field(doc, "note"),
                term=term,
            )
        if kind == "set_status":
            return SetStatus(
                change_id=text_field(doc, "id"),
                incident_id=IncidentId(text_field(doc, "incident_id")),
                status=enum_field(doc, "status", IncidentStatus),
                at=time_field(doc, "at"),
                note=optional_text_field(doc, "note"),
                term=term,
            )
    except CodecError as e:
        raise BadSpoolLine(f"the spool line {line[:80]!r} cannot be read: {e}") from e
    raise BadSpoolLine(f"the spool line {line[:80]!r} holds an unknown operation {kind!r}")


def _term(doc: dict[str, Any]) -> int | None:
    """The lease term of a spool line; None on lines written without one (or before
    medics held leases)."""
    term = doc.get("term")
    if term is None:
        return None
    if isinstance(term, bool) or not isinstance(term, int) or term < 1:
        raise CodecError(f"term must be a positive whole number, not {term!r}")
    return term


def _earlier_open_incident(doc: dict[str, Any]) -> dict[str, Any]:
    """An ``open_incident`` line as medic wrote it before the codec, in today's shape.

    A spool can outlive the medic that wrote it (an upgrade while Postgres was
    away), so those lines are still read.
    """
    evidence = doc.get("evidence")
    return {
        **doc,
        "container": doc.get("container_name"),
        "evidence": [
            {
                "observed_at": doc.get("opened_at"),
                "summary": doc.get("summary"),
                "evidence": evidence,
            }
        ],
    }


class OperationStore(IncidentStore):
    """A store that can apply operations made elsewhere, in order, all or none."""

    @abstractmethod
    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        """Write ``ops`` in one transaction; already-stored ones change nothing.

        With ``term`` (a live write of a leading medic) the transaction first checks
        that ``term`` is still the lease's and raises FencedOut, writing nothing, when
        it is not. Without it (a replay of the spool, or no lease) the operations are
        written as history: each changes an incident only when no later term has.

        Raises StoreUnavailable when the store cannot be reached (nothing was
        written) and StoreError when an operation cannot be stored at all.
        """

    def move_incident(
        self, incident_id: IncidentId, container: ContainerRef, *, at: datetime, note: str
    ) -> Incident:
        found = self.get(incident_id)
        self.check_own(found)
        term = self.term()
        token = term.token if term is not None else None
        self.apply([MoveIncident(new_id(), found.id, container, at, note, token)], term=term)
        return self.get(found.id)
