"""A person's decision on a fix: approve (merge the branch) or reject (delete it).

Approving merges the fix commit into the branch that was checked out when the fix was
made (``Fix.base_branch``): a fast-forward when possible, else a merge commit. It is
refused with one line, changing nothing, when:

- the fix branch no longer points at the commit medic made (a person changed it:
  what was checked is no longer what would be merged);
- the base moved in a way that conflicts with the fix;
- the base branch is checked out and the merge would touch files with uncommitted
  changes (staged, unstaged or untracked), or a merge commit is needed while the index
  holds staged changes (git merges only onto a clean index);
- the base branch is checked out in another worktree of the repository.

When the base branch is not checked out anywhere (someone switched branches since the
fix was made), no working tree shows it, so the merge is made without one: the merged
tree by ``git merge-tree``, the commit by ``commit-tree``, and the branch moved only if
it still points where it did. The checked-out branch and its files stay as they are.

Rejecting deletes the fix branch (only while it still points at medic's commit) and
keeps the reason. Both record who decided and when. The rebuild after an approval
(``--rebuild``) is the caller's: ``Approval`` says what was merged and for which
incident.

After the merge, approving pushes the fix branch to MEDIC_FIX_REMOTE (``remote``) when
it is not there yet: a remote's CI runs what it is pushed, with its secrets, so by
default (MEDIC_FIX_PUSH=approved) nothing a model wrote reaches it before a person has
read it. A failed push is recorded on the fix; the approval stands.

Both decisions remove the fix's candidate image (``Verification.image``) through the
Docker gateway, when one is given. A missing image is fine; a failure is one warning
and never blocks the decision.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from loguru import logger

from agent.clock import Clock
from agent.engine.gateway import DockerGateway
from agent.errors import DockerError
from agent.fixes.errors import FixRefused
from agent.fixes.git import Git, Person
from agent.fixes.propose import push_branch
from agent.model import Fix, FixStatus, IncidentId


class FixStore(Protocol):
    """Where fixes are kept: every ``agent.store.IncidentStore`` (Postgres, spooling, memory)."""

    def record_fix(self, fix: Fix) -> None:
        """Keep a new fix (proposed or refused)."""

    def update_fix(self, fix: Fix) -> None:
        """Replace the stored fix with the same id (after a decision)."""

    def get_fix(self, ref: str) -> Fix:
        """The fix with id ``ref`` or the one fix whose id starts with it; FixNotFound
        otherwise (also when the prefix is shared)."""

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        """Fixes newest first: those awaiting a decision, or every one."""

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        """An incident's fixes, oldest first."""


@dataclass(frozen=True)
class Approval:
    """What an approval did: the fix as now recorded, and the merge."""

    fix: Fix
    into: str
    """The branch the fix was merged into."""
    merged: str
    """The commit that branch points at now."""
    fast_forward: bool
    already_merged: bool = False


def decided_by(by: str | None) -> str:
    """Who decides: the given name, else the operating system's user."""
    if by and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def approve(
    ref: str,
    *,
    store: FixStore,
    git: Git,
    author: Person,
    clock: Clock,
    by: str | None = None,
    remote: str | None = None,
    gateway: DockerGateway | None = None,
) -> Approval:
    """Merge fix ``ref`` into its base branch and record the approval; FixRefused (with
    nothing changed) when that cannot be done safely. Then push the fix branch to
    ``remote`` unless it is there already, and remove the candidate image through
    ``gateway``."""
    fix = _awaiting_decision(store.get_fix(ref), "approve")
    who = decided_by(by)
    commit, branch = _unchanged_branch(fix, git)
    into = fix.base_branch
    if into is None:
        raise FixRefused(
            f"Fix {fix.id[:8]} was made on a detached HEAD, so there is no branch to merge it "
            f"into; merge {branch} yourself."
        )
    target = git.branch_commit(into)
    if target is None:
        raise FixRefused(f"The branch {into} the fix was made on no longer exists.")
    now = clock.now()
    if git.is_ancestor(commit, target):
        approval = Approval(fix, into, target, fast_forward=True, already_merged=True)
    else:
        approval = _merge(
            fix,
            git=git,
            commit=commit,
            into=into,
            target=target,
            who=who,
            author=author,
            clock=clock,
        )
    recorded = replace(fix, status=FixStatus.APPROVED, decided_at=now, decided_by=who)
    logger.info(
        "Fix {} is approved by {} and merged into {} ({}).",
        fix.id[:8],
        who,
        into,
        "fast-forward" if approval.fast_forward else "merge commit",
    )
    if remote and fix.pushed_to != remote:
        pushed_to, push_error = push_branch(branch, git=git, remote=remote)
        recorded = replace(recorded, pushed_to=pushed_to, push_error=push_error)
    store.update_fix(recorded)
    remove_candidate(recorded, gateway)
    return replace(approval, fix=recorded)


def _merge(
    fix: Fix,
    *,
    git: Git,
    commit: str,
    into: str,
    target: str,
    who: str,
    author: Person,
    clock: Clock,
) -> Approval:
    preview = git.preview_merge(target, commit)
    if preview.conflicts:
        raise FixRefused(
            f"{into} has moved since fix {fix.id[:8]} was made and now conflicts with it in "
            f"{', '.join(preview.conflicts)}; nothing was merged."
        )
    message = (
        f"Merge fix branch {fix.branch} into {into}\n\n"
        f"Fix {fix.id} for incident {fix.incident_id}, approved by {who}.\n"
    )
    checked_out = git.worktree_branches()
    main = git.check_repository()
    where = checked_out.get(into)
    if where is not None and _same(where, main) and git.current_branch() == into:
        local = git.uncommitted()
        touched = sorted(set(preview.changed) & set(local))
        if touched:
            raise FixRefused(
                f"The working tree has uncommitted changes in {', '.join(touched)}, which the "
                "merge would touch; commit or stash them, then approve again. Nothing was changed."
            )
        staged = sorted(p for p, code in local.items() if code[0] not in " ?")
        if staged and not preview.fast_forward:
            raise FixRefused(
                f"The index has staged changes ({', '.join(staged)}) and the fix needs a merge "
                "commit; commit or unstage them, then approve again. Nothing was changed."
            )
        git.merge_checked_out(commit, message=message, author=author, when=clock.now())
        merged = git.branch_commit(into) or commit
        return Approval(fix, into, merged, fast_forward=preview.fast_forward)
    if where is not None:
        raise FixRefused(
            f"{into} is checked out in the worktree {where}; approve there or merge "
            f"{fix.branch} yourself. Nothing was changed."
        )
    if preview.fast_forward:
        git.move_branch(into, commit, target)
        return Approval(fix, into, commit, fast_forward=True)
    assert preview.tree is not None
    merge = git.commit_tree(
        tree=preview.tree,
        parents=(target, commit),
        message=message,
        author=author,
        when=clock.now(),
    )
    git.move_branch(into, merge, target)
    return Approval(fix, into, merge, fast_forward=False)


def reject(
    ref: str,
    *,
    store: FixStore,
    git: Git,
    reason: str,
    clock: Clock,
    by: str | None = None,
    gateway: DockerGateway | None = None,
) -> Fix:
    """Delete fix ``ref``'s branch and record the rejection with ``reason``, then remove
    the candidate image through ``gateway``."""
    if not reason.strip():
        raise FixRefused("Say why the fix is rejected: --reason TEXT.")
    fix = _awaiting_decision(store.get_fix(ref), "reject")
    if fix.branch is not None and fix.commit is not None:
        tip = git.branch_commit(fix.branch)
        if tip is not None and tip != fix.commit:
            raise FixRefused(
                f"{fix.branch} has commits medic did not make (it points at {tip[:12]}); medic "
                "does not delete them. Delete the branch yourself, then reject again."
            )
        if tip is not None:
            git.delete_branch(fix.branch, fix.commit)
    recorded = replace(
        fix,
        status=FixStatus.REJECTED,
        decided_at=clock.now(),
        decided_by=decided_by(by),
        reason=reason.strip(),
    )
    store.update_fix(recorded)
    logger.info("Fix {} is rejected by {}: {}", fix.id[:8], recorded.decided_by, recorded.reason)
    remove_candidate(recorded, gateway)
    return recorded


def remove_candidate(fix: Fix, gateway: DockerGateway | None) -> None:
    """Remove the fix's candidate image, now that it is decided; a failure is a warning."""
    image = fix.verification.image if fix.verification is not None else None
    if image is None or gateway is None:
        return
    try:
        removed = gateway.remove_image(image)
    except DockerError as e:
        logger.warning(
            "The candidate image {} of fix {} could not be removed ({}); remove it with docker "
            "rmi {}.",
            image,
            fix.id[:8],
            e,
            image,
        )
        return
    if removed:
        logger.info("The candidate image {} of fix {} is removed.", image, fix.id[:8])


def _awaiting_decision(fix: Fix, verb: str) -> Fix:
    if fix.status is FixStatus.PROPOSED:
        return fix
    if fix.status is FixStatus.REFUSED:
        raise FixRefused(
            f"Fix {fix.id[:8]} was refused by the guardrails; there is no branch to {verb}."
        )
    raise FixRefused(
        f"Fix {fix.id[:8]} is {fix.status} already"
        + (f" (by {fix.decided_by})" if fix.decided_by else "")
        + "."
    )


def _unchanged_branch(fix: Fix, git: Git) -> tuple[str, str]:
    if fix.branch is None or fix.commit is None:
        raise FixRefused(f"Fix {fix.id[:8]} has no branch.")
    tip = git.branch_commit(fix.branch)
    if tip is None:
        raise FixRefused(f"The fix branch {fix.branch} no longer exists; nothing was merged.")
    if tip != fix.commit:
        raise FixRefused(
            f"{fix.branch} has changed since medic made it (it points at {tip[:12]}, not "
            f"{fix.commit[:12]}); review and merge it yourself. Nothing was merged."
        )
    return fix.commit, fix.branch


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
