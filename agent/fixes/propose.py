"""A diagnosis's edits turned into a fix: checked, committed to a branch, verified, pushed.

``make_fix`` is the one entry point. It reads what the guardrails need from the
repository at its current HEAD, and when any check fails it returns a refused Fix
with every reason and writes nothing to the repository: no object, no ref. Otherwise
it commits the edits with a temporary index onto ``medic/fix-<incident>-<service>``
(never overwriting a branch of that name) and verifies the branch in sandboxes
(``agent.fixes.verify``). A remote's CI runs what is pushed to it, with its secrets,
so the branch goes to MEDIC_FIX_REMOTE only after a person approves it
(``agent.fixes.review``), unless MEDIC_FIX_PUSH is ``proposed``: then it is pushed
when made. A failed verification or push is recorded on the fix; the branch stays for
a person to look at.

``edit_reviewer`` gives the diagnosis client the callback with which the model learns
which of its edits failed and why, so that it may resend them once.
"""

from __future__ import annotations

import os
import posixpath
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from loguru import logger

from agent.clock import Clock
from agent.config import FixesSettings
from agent.engine.compose import build_spec
from agent.engine.compose_graph import parse_dotenv, resolve_project
from agent.engine.gateway import DockerGateway, SandboxLimits
from agent.errors import MedicError
from agent.fixes.compose_guard import compose_effect, is_compose_file
from agent.fixes.git import Git, NewFile, Person, TreeEntry
from agent.fixes.guardrails import (
    MAX_FILE_BYTES,
    REGULAR_MODES,
    Checked,
    Policy,
    RepoFacts,
    check_edits,
    describe,
    plausible_path,
    review_edits,
)
from agent.fixes.refusal import Refusal
from agent.fixes.verify import VerifyRequest, candidate_tag, heals_at_start, verify_fix
from agent.model import Diagnosis, Edit, Fix, FixId, FixStatus, Incident, Verification
from agent.secrets import strip_terminal_escapes


@dataclass(frozen=True)
class FixOptions:
    """The settings a fix is made with (from MEDIC_FIX_* and friends)."""

    policy: Policy
    author: Person
    remote: str | None = None
    push: str = "approved"
    """When the branch goes to ``remote`` (MEDIC_FIX_PUSH): ``approved`` (by
    ``agent.fixes.review.approve``) or ``proposed`` (as soon as it is made)."""
    verify_cmd: str | None = None
    verify_image: str | None = None
    verify_timeout: float = 600.0
    verify_build_timeout: float = 900.0
    verify_build_network: str = "none"
    verify_memory_mb: int = 1024
    verify_pids: int = 256
    verify_cpus: float = 1.0
    verify_settle: float = 60.0
    redact_patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_settings(
        cls, fixes: FixesSettings, *, redact_patterns: tuple[re.Pattern[str], ...] = ()
    ) -> FixOptions:
        """The options ``fixes`` sets; ``redact_patterns`` are MEDIC_REDACT's, parsed."""
        return cls(
            policy=Policy.from_text(
                fixes.paths,
                max_files=fixes.max_files,
                max_lines=fixes.max_lines,
                kinds=fixes.allow_kinds,
            ),
            author=Person.parse(fixes.git_author),
            remote=fixes.remote,
            push=fixes.push,
            verify_cmd=fixes.verify_cmd,
            verify_image=fixes.verify_image,
            verify_timeout=fixes.verify_timeout,
            verify_build_timeout=fixes.verify_build_timeout,
            verify_build_network=fixes.verify_build_network,
            verify_memory_mb=fixes.verify_memory_mb,
            verify_pids=fixes.verify_pids,
            verify_cpus=fixes.verify_cpus,
            verify_settle=fixes.verify_settle,
            redact_patterns=redact_patterns,
        )


def new_fix_id() -> FixId:
    return FixId(uuid.uuid4().hex)


def branch_name(incident: Incident) -> str:
    """``medic/fix-<incident short id>-<service>``."""
    who = incident.container.service or incident.container.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", who).strip(".-")[:40] or "service"
    return f"medic/fix-{incident.id[:8]}-{slug}"


def read_facts(
    git: Git,
    commit: str,
    edits: Sequence[Edit],
    *,
    service: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> RepoFacts:
    """What the guardrails need from ``commit``: its files and modes, the contents of the
    regular files the edits name and of every YAML file (compose reads any it is told
    to include), which of the named paths git ignores, the build context of
    ``service``, the paths git itself reads as code or configuration, and what compose
    substitutes from (``environ``, default medic's own, over the project's ``.env``)."""
    tree = git.tree(commit)
    named = [
        p
        for p in dict.fromkeys(e.path for e in edits)
        if plausible_path(p) and not _under_a_file(p, tree)
    ]
    wanted: dict[str, str] = {}
    oversized: set[str] = set()
    for path in [*named, *(p for p in tree if p.lower().endswith((".yml", ".yaml")))]:
        entry = tree.get(path)
        if entry is None or entry.mode not in REGULAR_MODES:
            continue
        if entry.size is not None and entry.size > MAX_FILE_BYTES:
            oversized.add(path)
            continue
        wanted[path] = entry.sha
    blobs = git.read_blobs(list(wanted.values()))
    contents = {path: blobs[sha] for path, sha in wanted.items()}
    root = git.check_repository()
    variables = {**_dotenv(root), **(os.environ if environ is None else environ)}
    return RepoFacts(
        modes={path: entry.mode for path, entry in tree.items()},
        contents=contents,
        ignored=git.ignored(named),
        oversized=frozenset(oversized),
        build_context=build_context(service, contents, tree, variables),
        protected=git.protected_paths(),
        variables=variables,
    )


#: Where a repository's files are placed to read its compose projects, so that any
#: path compose resolves outside the repository is plainly outside it.
_ROOT = PurePosixPath("/repository")


def build_context(
    service: str | None,
    contents: Mapping[str, bytes],
    tree: Mapping[str, TreeEntry],
    variables: Mapping[str, str],
) -> str | None:
    """The build context of ``service`` relative to the repository (``""`` for its top),
    from the first compose file of the repository (shallowest first) that builds it;
    None when none does, or when its context lies outside the repository."""
    if not service:
        return None

    def read(path: Path) -> str | None:
        relative = PurePosixPath(posixpath.normpath(str(path))).relative_to(_ROOT)
        raw = contents.get(str(relative))
        return None if raw is None else raw.decode("utf-8", errors="replace")

    roots = sorted(
        (p for p in tree if is_compose_file(p) and p in contents),
        key=lambda p: (p.count("/"), p),
    )
    for root in roots:
        folder = _ROOT / posixpath.dirname(root)
        try:
            config = resolve_project(
                [Path(str(_ROOT / root))],
                working_dir=Path(str(folder)),
                environment=variables,
                read=read,
            ).config
            spec = build_spec(config, service, Path(str(folder)))
        except (MedicError, ValueError):
            continue
        context = posixpath.normpath(str(spec.context))
        if context == str(_ROOT):
            return ""
        if context.startswith(f"{_ROOT}/"):
            return context.removeprefix(f"{_ROOT}/")
        return None
    return None


def _dotenv(root: Path) -> dict[str, str]:
    """The project's ``.env`` at the repository's top, as compose reads it; nothing when
    there is none, it cannot be read, or it is a link (it might lead anywhere)."""
    path = root / ".env"
    try:
        if path.is_symlink() or not path.is_file():
            return {}
        return parse_dotenv(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def _under_a_file(path: str, tree: Mapping[str, TreeEntry]) -> bool:
    # git check-ignore refuses paths beyond a symbolic link; the guardrails refuse them anyway.
    parts = path.split("/")
    return any("/".join(parts[:depth]) in tree for depth in range(1, len(parts)))


def edit_reviewer(
    git: Git, options: FixOptions
) -> Callable[[Sequence[Edit], str | None], Sequence[str]]:
    """The callback for the diagnosis client: per failed edit, one message for the model
    (a refused path and why, or an ``old`` that does not match once and the nearest
    match). It takes the edits and the incident's service, and reads the repository at
    its HEAD each time it is called."""

    def review(edits: Sequence[Edit], service: str | None) -> Sequence[str]:
        head = git.head()
        if head is None:
            return ["the repository has no commit yet, so no edit can apply"]
        facts = read_facts(git, head, edits, service=service)
        return review_edits(edits, facts, options.policy)

    return review


def make_fix(
    diagnosis: Diagnosis,
    incident: Incident,
    *,
    git: Git,
    options: FixOptions,
    clock: Clock,
    gateway: DockerGateway | None = None,
    labels: Mapping[str, str] | None = None,
    fix_id: FixId | None = None,
) -> Fix:
    """Check ``diagnosis.edits`` and make the fix branch, or a refused Fix saying why.

    ``gateway`` and ``labels`` (the service container's compose labels) let medic build
    the service's image from the branch; without them only MEDIC_VERIFY_CMD runs.
    Raises FixError only when git itself fails; a bad proposal is never an error.
    """
    fix_id = fix_id or new_fix_id()
    now = clock.now()
    base = git.head()
    base_branch = git.current_branch()
    paths = tuple(dict.fromkeys(e.path for e in diagnosis.edits))
    fix = Fix(
        id=fix_id,
        incident_id=incident.id,
        diagnosis_id=diagnosis.id,
        status=FixStatus.PROPOSED,
        created_at=now,
        summary=diagnosis.summary,
        files=paths,
        base=base,
        base_branch=base_branch,
    )
    if base is None:
        return _refuse(fix, [Refusal("no_base", "The repository has no commit to build a fix on.")])
    facts = read_facts(git, base, diagnosis.edits, service=incident.container.service)
    checked = check_edits(diagnosis.edits, facts, options.policy)
    if not checked.ok:
        return _refuse(fix, checked.refusals)
    branch = branch_name(incident)
    exists = _branch_exists_refusal(git, branch)
    if exists is not None:
        return _refuse(fix, [exists])
    commit = git.create_commit(
        base=base,
        files=[NewFile(c.path, c.after, c.mode) for c in checked.changes],
        message=commit_message(diagnosis, incident, checked),
        author=options.author,
        when=now,
    )
    try:
        git.create_branch(branch, commit)
    except MedicError:
        # Made by someone else between the check and now; the commit stays unreferenced.
        exists = _branch_exists_refusal(git, branch)
        if exists is None:
            raise
        return _refuse(fix, [exists])
    fix = replace(fix, branch=branch, commit=commit, files=checked.files)
    logger.info(
        "Fix {} for incident {} is on branch {} ({}), changing {}.",
        fix_id[:8],
        incident.id[:8],
        branch,
        commit[:12],
        ", ".join(checked.files),
    )
    verification = _verify(fix, incident, git=git, options=options, gateway=gateway, labels=labels)
    effect = _compose_effect(checked, facts)
    if effect:
        verification = replace(verification, compose_effect=effect)
    fix = replace(fix, verification=verification)
    if options.push != "proposed":
        # The remote's CI runs what it is pushed, with its secrets: after approval only.
        return fix
    pushed_to, push_error = push_branch(branch, git=git, remote=options.remote)
    return replace(fix, pushed_to=pushed_to, push_error=push_error)


def _compose_effect(checked: Checked, facts: RepoFacts) -> tuple[str, ...]:
    """What the fix changes in the compose projects as compose resolves them, for the
    person reviewing it (``medic fixes show``)."""
    after = {c.path: c.after for c in checked.changes}
    return compose_effect(
        tuple(after),
        before=facts.contents.get,
        after=lambda path: after[path] if path in after else facts.contents.get(path),
        tracked=tuple(dict.fromkeys([*facts.modes, *after])),
        variables=facts.variables,
    )


def commit_message(diagnosis: Diagnosis, incident: Incident, checked: Checked) -> str:
    """The fix commit's message: the diagnosis summary and root cause, then the facts a
    reviewer needs to find the incident and the diagnosis behind it."""
    summary = _one_line(diagnosis.summary)[:72] or "fix proposed by medic"
    root_cause = _clean(diagnosis.root_cause)
    service = incident.container.service or incident.container.name
    return (
        f"{summary}\n\n"
        f"Root cause: {root_cause}\n\n"
        f"Incident: {incident.id} ({incident.signal} on {service})\n"
        f"Diagnosis: {diagnosis.id} ({diagnosis.source}, confidence {diagnosis.confidence})\n"
        f"Model: {diagnosis.model or '-'}\n"
        f"Rule: {diagnosis.rule_id or '-'}\n"
        f"Files: {', '.join(checked.files)}\n"
        "\n"
        "Proposed by medic; a person approves or rejects it with `medic fixes`.\n"
    )


def _refuse(fix: Fix, refusals: Sequence[Refusal]) -> Fix:
    logger.warning(
        "The fix proposed for incident {} is refused: {}",
        fix.incident_id[:8],
        "; ".join(r.message for r in refusals),
    )
    return replace(fix, status=FixStatus.REFUSED, refusal_reasons=describe(refusals))


def _branch_exists_refusal(git: Git, branch: str) -> Refusal | None:
    if not git.is_valid_branch_name(branch):
        return Refusal("branch_invalid", f"{branch} is not a valid git branch name.")
    if git.branch_commit(branch) is None:
        return None
    return Refusal(
        "branch_exists",
        f"The branch {branch} exists already; medic never overwrites a branch. Approve or "
        "reject the fix on it first.",
    )


def _verify(
    fix: Fix,
    incident: Incident,
    *,
    git: Git,
    options: FixOptions,
    gateway: DockerGateway | None,
    labels: Mapping[str, str] | None,
) -> Verification:
    assert fix.commit is not None
    service = incident.container.service
    request = VerifyRequest(
        commit=fix.commit,
        tag=candidate_tag(service, fix.id),
        service=service,
        labels=labels,
        command=options.verify_cmd,
        image=options.verify_image,
        timeout=options.verify_timeout,
        build_timeout=options.verify_build_timeout,
        build_network=options.verify_build_network,
        limits=SandboxLimits(
            memory_mb=options.verify_memory_mb, pids=options.verify_pids, cpus=options.verify_cpus
        ),
        settle=options.verify_settle,
        check_healing=heals_at_start(incident.signal),
        redact_patterns=options.redact_patterns,
    )
    try:
        verification = verify_fix(request, git=git, gateway=gateway)
    except MedicError as e:
        logger.warning("Verifying fix {} failed: {}.", fix.id[:8], e)
        return Verification(error=f"verification could not run: {e}")
    if not verification.ok:
        logger.warning(
            "Fix {} on {} did not pass verification; the branch stays for a person to see.",
            fix.id[:8],
            fix.branch,
        )
    return verification


def push_branch(branch: str, *, git: Git, remote: str | None) -> tuple[str | None, str | None]:
    """Push ``branch`` to ``remote``: ``(remote, None)`` when pushed, ``(None, why)``
    when not; ``(None, None)`` without a remote. Never raises for a failed push."""
    if not remote:
        return None, None
    try:
        if not git.remote_exists(remote):
            return (
                None,
                f"MEDIC_FIX_REMOTE names {remote!r}, which is not a remote of the repository",
            )
        git.push(remote, branch)
    except MedicError as e:
        logger.warning("Pushing {} to {} failed; the local branch stays: {}.", branch, remote, e)
        return None, str(e)
    logger.info("Fix branch {} is pushed to {}.", branch, remote)
    return remote, None


def _clean(text: str) -> str:
    # The model's words go into the commit message, which people read in git log: no
    # escape sequence, control or bidi character of its own.
    return strip_terminal_escapes(text).strip()


def _one_line(text: str) -> str:
    return " ".join(_clean(text).split())
