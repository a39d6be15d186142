"""The interface every incident store implements, and the rules they share.

A store records incidents and their attempts, the diagnoses and fix branches
escalation makes of them, and what became of each notification about them; it
satisfies both ``agent.escalate.store.DiagnosisStore`` and
``agent.fixes.review.FixStore``. A store made with an ``Identity`` belongs to one
medic: it stamps that medic's scope on the incidents it opens and reads, resumes
and resolves only those. A store without one (the CLI) reads every incident.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from agent.errors import FixNotFound, StoreError
from agent.model import (
    Attempt,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Diagnosis,
    EvidenceEntry,
    Finding,
    Fix,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
    ReviewMark,
)
from agent.store.lease import Fence, Term

#: An incident keeps at most this many evidence entries: the first ones and the newest.
MAX_EVIDENCE = 50


class IncidentNotFound(StoreError):
    """No incident has that id (or no single incident starts with that prefix)."""


class FixRecordedAlready(StoreError, ValueError):
    """A new fix was recorded with the id of one that is stored already."""


class ForeignIncident(StoreError):
    """A medic was asked to change an incident that another medic's scope owns."""


@dataclass(frozen=True)
class Identity:
    """Who a medic is, so that several can share one database without touching each
    other's incidents: what it supervises (a compose project, or the containers
    labelled ``medic.enable=true``) on which Docker engine (``docker info``'s ``ID``).

    Two hosts running a project of the same name have different engine ids, so
    they have different scopes too.
    """

    engine_id: str
    project: str | None = None
    stack: str | None = None
    """A Swarm stack instead of a compose project: each node's medic watches the stack's
    tasks on its own engine, so the engine id keeps their incidents apart."""

    def __post_init__(self) -> None:
        if not self.engine_id.strip():
            raise ValueError("a medic's identity needs the ID of the Docker engine it watches")

    @property
    def scope(self) -> str:
        """The text stored in ``incidents.scope``: ``project=shop@<engine id>``,
        ``stack=shop@<engine id>`` or ``label=medic.enable@<engine id>``."""
        if self.stack:
            what = f"stack={self.stack}"
        else:
            what = f"project={self.project}" if self.project else "label=medic.enable"
        return f"{what}@{self.engine_id}"


def new_id() -> str:
    """A fresh id, made by medic rather than the database so that replays are idempotent."""
    return uuid.uuid4().hex


def new_incident(finding: Finding, *, scope: str | None = None) -> Incident:
    """The open incident a first finding starts, with that finding as its evidence."""
    return Incident(
        scope=scope,
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
    scope: str | None = None
    """Only incidents of this scope (``Identity.scope``); None: of every scope."""


class IncidentStore(ABC):
    """Incidents and their attempts, diagnoses, fixes and notification records.

    Rules every implementation keeps: at most one active incident (open, healing or
    escalated) per container of the store's own scope, whatever signals it shows: one
    failure episode is one incident, named by its gravest signal (a crash loop is what
    repeated exits become), and a finding while one is active adds its evidence to it;
    writes with an id that is already stored change nothing (except ``record_fix``, which
    refuses, and ``update_fix``).
    """

    #: The medic this store records for; None reads (and opens) incidents of any scope.
    identity: Identity | None = None

    #: Asked before each incident or attempt write when a lease decides which medic
    #: acts (docs/ha.md): the term to write under, or FencedOut. None: no lease.
    fence: Fence | None = None

    def term(self) -> Term | None:
        """The term this store's next incident or attempt write goes under (FencedOut
        when this medic may not write now); None without a lease."""
        return self.fence() if self.fence is not None else None

    @property
    def scope(self) -> str | None:
        """The scope stamped on incidents this store opens (None without an identity)."""
        return self.identity.scope if self.identity is not None else None

    def check_own(self, incident: Incident) -> None:
        """ForeignIncident when this store has an identity and ``incident`` is not of its
        scope: a medic never resolves another medic's incident."""
        if self.identity is not None and incident.scope != self.identity.scope:
            owner = incident.scope or "no scope (recorded before medics had one)"
            raise ForeignIncident(
                f"Incident {incident.id[:8]} belongs to {owner}, not to this medic "
                f"({self.identity.scope}); it is left as it is."
            )

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
    def move_incident(
        self, incident_id: IncidentId, container: ContainerRef, *, at: datetime, note: str
    ) -> Incident:
        """The incident's container was replaced by ``container`` (medic recreated or
        rebuilt it): the incident stays as it is and follows the new container, so the
        new one's findings and attempts join it; an evidence entry at ``at`` says
        ``note``. ForeignIncident when it is another medic's."""

    @abstractmethod
    def get(self, incident_id: str) -> Incident:
        """One incident with its evidence and attempts, by id or unique id prefix."""

    @abstractmethod
    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        """Incidents matching ``query``, newest first."""

    def active_incidents(self, container_id: ContainerId | None = None) -> list[Incident]:
        """Open, healing and escalated incidents of this store's scope (of every scope
        without an identity), optionally of one container."""
        return self.list_incidents(
            IncidentQuery(active_only=True, container_id=container_id, scope=self.scope)
        )

    # --- diagnoses (agent.escalate.store.DiagnosisStore) ---------------------------------------

    @abstractmethod
    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        """Store one diagnosis of a stored incident; one whose id is stored changes nothing."""

    @abstractmethod
    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        """An incident's diagnoses, oldest first."""

    @abstractmethod
    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        """The newest LLM diagnosis (or failed call) of this fingerprint made at or after
        ``since`` that is not itself a reuse."""

    @abstractmethod
    def tokens_since(self, since: datetime) -> int:
        """Tokens (input, output, cache creation and cache read) of diagnoses made at or
        after ``since``."""

    # --- fixes (agent.fixes.review.FixStore) ------------------------------------------------

    @abstractmethod
    def record_fix(self, fix: Fix) -> None:
        """Keep a new fix (proposed or refused); FixRecordedAlready when its id is stored."""

    @abstractmethod
    def update_fix(self, fix: Fix) -> None:
        """Replace the stored fix with the same id (after a decision); FixNotFound when
        there is none."""

    @abstractmethod
    def get_fix(self, ref: str) -> Fix:
        """The fix with id ``ref`` or the one fix whose id starts with it; FixNotFound
        otherwise (also when the prefix is shared)."""

    @abstractmethod
    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        """Fixes newest first: those awaiting a decision (proposed), or every one."""

    @abstractmethod
    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        """An incident's fixes, oldest first."""

    def review_marks(self, incident_ids: Sequence[IncidentId]) -> dict[IncidentId, ReviewMark]:
        """Where each incident's review stands (its newest rule diagnosis's rule, its
        newest fix and that fix's status), for a listing; incidents with neither are
        left out. Stores that can answer in one query override this."""
        marks: dict[IncidentId, ReviewMark] = {}
        for incident_id in incident_ids:
            mark = ReviewMark.of(self.diagnoses(incident_id), self.fixes_of_incident(incident_id))
            if mark != ReviewMark():
                marks[incident_id] = mark
        return marks

    # --- notifications ----------------------------------------------------------------------

    @abstractmethod
    def record_notification(self, record: NotificationRecord) -> None:
        """Keep what became of one notification of an incident; one whose id is stored
        changes nothing. A record of an incident the store does not have is not kept,
        and that is no error (a DEBUG line at most): the notification was told whether
        or not its record can be kept, and a timeline without its incident has no page."""

    @abstractmethod
    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        """An incident's notification records, oldest first (by ``at``, then in the
        order they were recorded)."""

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


def fix_not_found(ref: str, matches: int) -> FixNotFound:
    """The error ``get_fix`` raises for ``ref`` when ``matches`` fixes (not one) match."""
    if matches:
        return FixNotFound(f"{matches} fixes have ids starting with {ref!r}; give more of it.")
    return FixNotFound(f"No fix has an id starting with {ref!r}; `medic fixes --all` lists them.")
