"""The decisions people make, the same from the command line and from the console:
approve a fix, reject a fix, resolve an incident by hand.

``medic fixes approve`` and ``POST /api/fixes/ID/approve`` (or the console's form)
both call ``Reviewer.approve``, so they refuse the same things with the same words
(uncommitted changes in the way, a branch a person changed, a decision already made)
and record the same decision. A refusal changes nothing and raises ``FixRefused`` or
``DecisionRefused``, whose message is the one line a person reads.

Approving runs no code: it merges the branch medic made and checked (agent/fixes/
review.py). Only an explicit rebuild afterwards builds and recreates the service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import FixesSettings
from agent.engine.gateway import DockerGateway
from agent.errors import ConfigError, MedicError
from agent.escalate.document import edits_diff
from agent.fixes import review
from agent.fixes.git import Git, Person
from agent.fixes.review import Approval
from agent.healing.act import Actor
from agent.model import Action, ContainerRef, Diagnosis, Fix, Incident, IncidentStatus
from agent.output import cell
from agent.present import resolved_note
from agent.store import IncidentStore

#: The Docker engine for one decision (it removes the fix's candidate image), or None
#: when it does not answer; the decision never waits for it.
Engine = Callable[[], AbstractContextManager[DockerGateway | None]]


class DecisionRefused(MedicError):
    """A decision cannot be made as asked; nothing changed."""


@dataclass(frozen=True)
class Rebuilt:
    """How the rebuild after an approval went."""

    ok: bool
    message: str


class Reviewer:
    """Makes people's decisions through one store, one repository and one engine."""

    def __init__(
        self,
        store: IncidentStore,
        *,
        repo: Path | None,
        fixes: FixesSettings,
        engine: Engine,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.repo = repo
        self.fixes = fixes
        self.engine = engine
        self.clock = clock
        # One decision at a time from this process: two people pressing approve on the
        # same fix at once get one merge and one "already approved".
        self._lock = threading.Lock()

    def git(self) -> Git:
        """MEDIC_REPO's git, or DecisionRefused saying what to set."""
        if self.repo is None:
            raise DecisionRefused(
                "set MEDIC_REPO to the repository the fix was made in to approve or reject it"
            )
        git = Git(self.repo)
        git.check_repository()
        return git

    def approve(self, ref: str, *, by: str | None) -> Approval:
        """Merge fix ``ref`` into the branch it was made on (agent/fixes/review.py)."""
        with self._lock:
            git = self.git()
            with self.engine() as gateway:
                return review.approve(
                    ref,
                    store=self.store,
                    git=git,
                    author=Person.parse(self.fixes.git_author),
                    clock=self.clock,
                    by=by,
                    remote=self.fixes.remote,
                    gateway=gateway,
                )

    def reject(self, ref: str, *, by: str | None, reason: str) -> Fix:
        """Delete fix ``ref``'s branch, keeping ``reason``."""
        with self._lock:
            git = self.git()
            with self.engine() as gateway:
                return review.reject(
                    ref,
                    store=self.store,
                    git=git,
                    reason=reason,
                    clock=self.clock,
                    by=by,
                    gateway=gateway,
                )

    def resolve(self, incident_id: str, *, by: str | None, note: str) -> Incident:
        """Close an incident by hand; a running medic lets go of its container and heals
        it automatically again."""
        if not note.strip():
            raise DecisionRefused("say what was done, for the record: a note is needed")
        with self._lock:
            incident = self.store.get(incident_id)
            if not incident.is_active:
                raise DecisionRefused(
                    f"incident {incident.id[:8]} was already resolved at "
                    f"{cell(incident.resolved_at)}; nothing changed"
                )
            self.store.set_status(
                incident.id,
                IncidentStatus.RESOLVED,
                at=self.clock.now(),
                note=resolved_note(review.decided_by(by), note.strip()),
            )
            return self.store.get(incident.id)


def resolved_text(incident: Incident) -> str:
    """What ``medic incidents resolve`` says, and the console after a resolution."""
    return (
        f"Incident {incident.id[:8]} ({incident.signal} on {incident.container.label}) is "
        f"resolved. A running medic heals {incident.container.name} automatically again."
    )


def rebuild_service(incident: Incident, *, gateway: DockerGateway, stop_timeout: float) -> Rebuilt:
    """The playbooks' rebuild action on the container that runs the incident's service
    now: build its image from the merged tree, then recreate it."""
    ref = incident.container
    if not ref.project or not ref.service:
        raise ConfigError(
            f"{ref.label} is not a compose service, so medic cannot rebuild it; rebuild it "
            "yourself."
        )
    current = next(
        (c for c in gateway.project_containers(ref.project) if c.service == ref.service),
        None,
    )
    if current is None:
        raise ConfigError(
            f"no container of service {ref.service} in project {ref.project} is left to "
            "rebuild; start it with docker compose up."
        )
    actor = Actor(gateway, workers=1, stop_timeout=stop_timeout)
    target = ContainerRef(current.id, current.name, ref.project, ref.service)
    result = actor.run_action(target, Action("rebuild"))
    if not result.ok:
        return Rebuilt(
            False, f"The fix is merged, but rebuilding {ref.service} failed: {result.error}"
        )
    return Rebuilt(True, f"Rebuilt and recreated {ref.service}: {result.output.splitlines()[-1]}.")


def approval_text(approval: Approval) -> str:
    fix = approval.fix
    if approval.already_merged:
        how = "it was already in it"
    elif approval.fast_forward:
        how = "a fast-forward"
    else:
        how = "a merge commit"
    text = (
        f"Fix {fix.id[:8]} is approved by {fix.decided_by}: {fix.branch} is merged into "
        f"{approval.into} ({how}; {approval.into} is at {approval.merged[:12]})."
    )
    if fix.pushed_to:
        text += f" {fix.branch} is pushed to {fix.pushed_to}."
    elif fix.push_error:
        text += f" Pushing {fix.branch} failed, the approval stands: {fix.push_error}."
    return text


def rejection_text(fix: Fix) -> str:
    deleted = f"; branch {fix.branch} is deleted" if fix.branch else ""
    return f"Fix {fix.id[:8]} is rejected by {fix.decided_by}{deleted}. Reason kept: {fix.reason}"


def fix_diff(git: Git | None, fix: Fix, diagnosis: Diagnosis | None) -> str | None:
    """The fix commit's diff from git; the proposed edits' diff when git cannot say."""
    if git is not None and fix.base and fix.commit:
        try:
            return git.diff(fix.base, fix.commit)
        except MedicError:
            pass
    if diagnosis is not None and diagnosis.edits:
        return edits_diff(diagnosis.edits)
    return None
