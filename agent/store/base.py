"""The interface every incident store implements, and the rules they share."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.errors import StoreError
from agent.model import (
    Attempt,
    ContainerId,
    ContainerSnapshot,
    EvidenceEntry,
    Finding,
    Incident,
    IncidentId,
    IncidentStatus,
)

#: An incident keeps at most this many evidence entries: the first ones and the newest.
MAX_EVIDENCE = 50


class IncidentNotFound(StoreError):
    """No incident has that id (or no single incident starts with that prefix)."""


def new_id() -> str:
    """A fresh id, made by medic rather than the database so that replays are idempotent."""
    return uuid.uuid4().hex


def new_incident(finding: Finding) -> Incident:
    """The open incident a first finding starts, with that finding as its evidence."""
    return Incident(
        id=IncidentId(new_id()),
        container=finding.container,
        signal=finding.signal,
        status=IncidentStatus.OPEN,
        opened_at=finding.observed_at,
        updated_at=finding.observed_at,
        summary=finding.summary,
        evidence=(EvidenceEntry(finding.observed_at, finding.summary, dict(finding.evidence)),),
    )


@dataclass(frozen=True)
class IncidentQuery:
    """Which incidents a listing wants; every field narrows the result."""

    active_only: bool = False
    service: str | None = None
    since: datetime | None = None
    container_id: ContainerId | None = None
    limit: int | None = None


class IncidentStore(ABC):
    """Incidents and their attempts.

    Rules every implementation keeps: at most one active incident (open, healing or
    escalated) per container, whatever signals it shows: one failure episode is one
    incident (a crash loop is what repeated exits become), and a finding while one is
    active adds its evidence to it, keeping the incident's first signal; writes with
    an id that is already stored change nothing.
    """

    @abstractmethod
    def record_finding(self, finding: Finding) -> Incident:
        """Open an incident for the finding, or add its evidence to the container's
        active one."""

    @abstractmethod
    def record_attempt(self, attempt: Attempt) -> None:
        """Store one attempt; the incident becomes ``healing`` unless it is escalated."""

    @abstractmethod
    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        """Move an incident to ``status``; resolving sets ``resolved_at``."""

    @abstractmethod
    def get(self, incident_id: str) -> Incident:
        """One incident with its evidence and attempts, by id or unique id prefix."""

    @abstractmethod
    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        """Incidents matching ``query``, newest first."""

    def active_incidents(self, container_id: ContainerId | None = None) -> list[Incident]:
        """Open, healing and escalated incidents, optionally of one container."""
        return self.list_incidents(IncidentQuery(active_only=True, container_id=container_id))

    def record_observations(self, snapshots: Sequence[ContainerSnapshot]) -> None:  # noqa: B027
        """What every container looked like at one poll. A store samples what it keeps
        (the memory store keeps none); called once per poll cycle."""

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether incidents are being recorded, for /readyz; memory always is."""
        return True, {"status": "ok", "store": type(self).__name__}

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the default holds none."""

    def pending_changes(self) -> int:
        """Changes accepted but not yet durably stored where they belong (a spool's backlog)."""
        return 0
