"""Incident changes as explicit, idempotent operations.

The spooling store decides what a finding means (a new incident, or evidence for
the active one) and then writes one of these. Each carries the id of the row it
creates, made by medic, so writing it twice stores it once: that is what lets
the spool be replayed after an outage, or after a crash half-way through a
replay, without duplicates. Each operation is one JSON line in the spool.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent.errors import StoreError
from agent.model import (
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    Evidence,
    EvidenceEntry,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store.base import IncidentStore


@dataclass(frozen=True)
class OpenIncident:
    """A new incident with its first evidence entry (``entry_id``)."""

    incident: Incident
    entry_id: str


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


@dataclass(frozen=True)
class RecordAttempt:
    """One action taken for an incident; an open incident becomes healing."""

    attempt: Attempt


@dataclass(frozen=True)
class SetStatus:
    """An incident moved to ``status`` (``change_id`` keys the status-change row)."""

    change_id: str
    incident_id: IncidentId
    status: IncidentStatus
    at: datetime
    note: str | None = None


Operation = OpenIncident | AddEvidence | RecordAttempt | SetStatus


class BadSpoolLine(StoreError):
    """A spool line that is not an operation this version of medic can read."""


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def to_json(op: Operation) -> str:
    """One line of JSON (no newline) that ``from_json`` turns back into ``op``."""
    doc: dict[str, Any]
    if isinstance(op, OpenIncident):
        i = op.incident
        first = i.evidence[0] if i.evidence else EvidenceEntry(i.opened_at, i.summary)
        doc = {
            "op": "open_incident",
            "id": i.id,
            "entry_id": op.entry_id,
            "container_id": i.container.id,
            "container_name": i.container.name,
            "project": i.container.project,
            "service": i.container.service,
            "signal": str(i.signal),
            "status": str(i.status),
            "opened_at": _time(i.opened_at),
            "summary": i.summary,
            "evidence": dict(first.evidence),
        }
    elif isinstance(op, AddEvidence):
        doc = {
            "op": "add_evidence",
            "id": op.entry_id,
            "incident_id": op.incident_id,
            "observed_at": _time(op.observed_at),
            "summary": op.summary,
            "evidence": dict(op.evidence),
        }
        if op.signal is not None:
            doc["signal"] = str(op.signal)
    elif isinstance(op, RecordAttempt):
        a = op.attempt
        doc = {
            "op": "record_attempt",
            "id": a.id,
            "incident_id": a.incident_id,
            "playbook": a.playbook,
            "action": a.action,
            "started_at": _time(a.started_at),
            "finished_at": _time(a.finished_at),
            "ok": a.ok,
            "error": a.error,
            "output": a.output,
        }
    else:
        doc = {
            "op": "set_status",
            "id": op.change_id,
            "incident_id": op.incident_id,
            "status": str(op.status),
            "at": _time(op.at),
            "note": op.note,
        }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


def from_json(line: str) -> Operation:
    """The operation one spool line holds; BadSpoolLine when it holds none."""
    try:
        doc = json.loads(line)
        kind = doc["op"]
        if kind == "open_incident":
            opened_at = _parse_time(doc["opened_at"])
            incident = Incident(
                id=IncidentId(doc["id"]),
                container=ContainerRef(
                    id=ContainerId(doc["container_id"]),
                    name=doc["container_name"],
                    project=doc["project"],
                    service=doc["service"],
                ),
                signal=Signal(doc["signal"]),
                status=IncidentStatus(doc["status"]),
                opened_at=opened_at,
                updated_at=opened_at,
                summary=doc["summary"],
                evidence=(EvidenceEntry(opened_at, doc["summary"], doc["evidence"]),),
            )
            return OpenIncident(incident=incident, entry_id=doc["entry_id"])
        if kind == "add_evidence":
            return AddEvidence(
                entry_id=doc["id"],
                incident_id=IncidentId(doc["incident_id"]),
                observed_at=_parse_time(doc["observed_at"]),
                summary=doc["summary"],
                evidence=doc["evidence"],
                signal=Signal(doc["signal"]) if doc.get("signal") else None,
            )
        if kind == "record_attempt":
            return RecordAttempt(
                Attempt(
                    id=AttemptId(doc["id"]),
                    incident_id=IncidentId(doc["incident_id"]),
                    playbook=doc["playbook"],
                    action=doc["action"],
                    started_at=_parse_time(doc["started_at"]),
                    finished_at=_parse_time(doc["finished_at"]),
                    ok=bool(doc["ok"]),
                    error=doc["error"],
                    output=doc["output"],
                )
            )
        if kind == "set_status":
            return SetStatus(
                change_id=doc["id"],
                incident_id=IncidentId(doc["incident_id"]),
                status=IncidentStatus(doc["status"]),
                at=_parse_time(doc["at"]),
                note=doc["note"],
            )
    except (ValueError, KeyError, TypeError) as e:
        raise BadSpoolLine(f"the spool line {line[:80]!r} cannot be read: {e}") from e
    raise BadSpoolLine(f"the spool line {line[:80]!r} holds an unknown operation {kind!r}")


class OperationStore(IncidentStore):
    """A store that can apply operations made elsewhere, in order, all or none."""

    @abstractmethod
    def apply(self, ops: Sequence[Operation]) -> None:
        """Write ``ops`` in one transaction; already-stored ones change nothing.

        Raises StoreUnavailable when the store cannot be reached (nothing was
        written) and StoreError when an operation cannot be stored at all.
        """
