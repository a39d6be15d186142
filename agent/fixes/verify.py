"""Trying a fix branch before a person looks at it, without running any of it on the host.

A fix is text until a person approves it. Nothing here checks the fix out on medic's
host or runs anything from its tree there: the commit's files are read from git
objects (``agent.fixes.archive``) and only ever reach the Docker engine, as a build
context or as a copy inside a throwaway sandbox container (``DockerGateway.run_sandbox``:
no network, no mounts, no socket, user 65534, no capabilities, resource limits).

Three steps, each recorded on the fix's ``Verification`` and none of them fatal:

1. **Build.** When the service's compose ``build:`` context lies inside the repository
   (read from the fix's own compose files, so a fix of the build section is what is
   built), its files are sent to the engine as a tar and built as a candidate,
   ``medic-candidate/<service>:<fix short id>``, never over the image the service runs.
   RUN steps get no network unless MEDIC_VERIFY_BUILD_NETWORK names one, the build has
   MEDIC_VERIFY_BUILD_TIMEOUT, and build args whose names look secret are left out.
2. **MEDIC_VERIFY_CMD**, split like a shell and run as argv in a sandbox made from
   MEDIC_VERIFY_IMAGE or the candidate image, with a copy of the fix's tree in
   ``/workspace``, within MEDIC_VERIFY_TIMEOUT.
3. **Healing.** When the incident's failure shows at start (the container exited,
   crash-looped, was OOM-killed, died or turned unhealthy), the candidate image runs in
   the same sandbox with the service's command, entrypoint, working folder, health
   check and environment (variables whose names look secret left out), for
   MEDIC_VERIFY_SETTLE seconds. The verdict is one sentence: it starts and passes its
   health check, it starts and stays up, or it still fails, with the first error line
   of its log (redacted, control characters removed).

The candidate image is kept for the person who reviews the fix; approving or
rejecting it removes the image (``agent.fixes.review``). A failed step never deletes
the branch.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.engine.compose import build_spec, config_files, load_compose
from agent.engine.compose_graph import services_of
from agent.engine.gateway import (
    BuildRequest,
    DockerGateway,
    HealthcheckSpec,
    SandboxLimits,
    SandboxRequest,
    SandboxResult,
    SandboxUntil,
)
from agent.errors import ActionError, MedicError
from agent.escalate.redact import Redactor, is_secret_name
from agent.fixes.archive import EXECUTABLE_MODE, FILE_MODE, SYMLINK_MODE, tree_archive
from agent.fixes.git import Git, TreeEntry
from agent.model import SIGNAL_KINDS, Health, Signal, Source, Verification
from agent.secrets import strip_terminal_escapes

#: How much of a build log or a command's output is kept.
TAIL_CHARS = 4000
TAIL_LINES = 60

#: Where the fix's files are inside a sandbox, and the folder in the tar that holds them.
WORKSPACE = "/workspace"

#: Failures that show when the service starts (the engine reports them): only for these
#: can running the candidate image for a while say whether the fix heals.
START_FAILURES = frozenset(s for s, kind in SIGNAL_KINDS.items() if kind.source is Source.ENGINE)

#: Labels on candidate images, so that stale ones are easy to find.
CANDIDATE_LABELS = (("medic.candidate", "true"),)

#: The label that ties a sandbox container to its fix: the fix's candidate tag.
FIX_LABEL = "medic.sandbox.fix"

#: Variables of medic's own that never reach a compose file's interpolation here: they
#: configure medic, its engine and git, and may hold its credentials.
_OWN_PREFIXES = ("MEDIC_", "ANTHROPIC_", "OPENAI_", "DOCKER_", "GIT_")

#: Words that mark a log line as the one saying what went wrong.
_ERROR_WORDS = re.compile(
    r"error|exception|fatal|panic|traceback|fail|cannot|can't|could not|denied|refused|"
    r"not found|no such|invalid|unable|killed",
    re.IGNORECASE,
)

#: A compose duration: ``1m30s``, ``500ms``, ``10s``.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

#: Reads a file's text, or None when it is absent.
Reader = Callable[[Path], str | None]


@dataclass(frozen=True)
class VerifyRequest:
    """What to verify: a fix commit, the service it is for, and how."""

    commit: str
    tag: str
    """The candidate image's tag (``candidate_tag``)."""
    service: str | None = None
    labels: Mapping[str, str] | None = None
    """The service container's labels: compose's point to its project folder and files."""
    command: str | None = None
    """MEDIC_VERIFY_CMD."""
    image: str | None = None
    """MEDIC_VERIFY_IMAGE; None runs the command in the candidate image."""
    timeout: float = 600.0
    """Seconds the command may run (MEDIC_VERIFY_TIMEOUT)."""
    build_timeout: float = 900.0
    build_network: str = "none"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    settle: float = 60.0
    """Seconds the candidate must stay up in the healing check; 0 skips the check."""
    check_healing: bool = False
    """The incident's failure shows at start (``START_FAILURES``)."""
    environment: Mapping[str, str] | None = None
    """What compose files are interpolated from; None: medic's environment without its
    own settings and secret-looking variables."""
    redact_patterns: tuple[re.Pattern[str], ...] = ()
    """The operator's MEDIC_REDACT patterns, for the healing verdict and log."""


@dataclass(frozen=True)
class _Built:
    built: bool | None = None
    log: str = ""
    image: str | None = None
    service: Mapping[str, Any] | None = None
    """The service's resolved compose definition, from the fix's tree."""


def candidate_tag(service: str | None, fix_id: str) -> str:
    """``medic-candidate/<service>:<fix short id>``, in the characters Docker accepts."""
    name = re.sub(r"[^a-z0-9]+", "-", (service or "service").lower()).strip("-") or "service"
    return f"medic-candidate/{name}:{re.sub(r'[^A-Za-z0-9_.-]', '', fix_id)[:8] or 'fix'}"


def heals_at_start(signal: Signal) -> bool:
    """Whether running the candidate for a while can tell if a fix heals ``signal``."""
    return signal in START_FAILURES


def verify_fix(request: VerifyRequest, *, git: Git, gateway: DockerGateway | None) -> Verification:
    """Build, check and try ``request.commit`` in sandboxes; never raises for a failing
    build, command or candidate, only records it. Raises MedicError when git fails."""
    wants_build = request.service is not None and bool(request.labels)
    if gateway is None:
        if request.command:
            return Verification(
                command=request.command,
                error="MEDIC_VERIFY_CMD was not run: it runs only in a sandbox container, and "
                "medic has no Docker engine here",
            )
        return Verification()
    if not wants_build and not request.command:
        return Verification()
    root = git.check_repository()
    tree = git.tree(request.commit)
    built = (
        _build(request, git=git, root=root, tree=tree, gateway=gateway) if wants_build else _Built()
    )
    verification = Verification(
        built=built.built, build_log=built.log, image=built.image, command=request.command
    )
    if request.command:
        verification = _run_command(request, verification, git=git, tree=tree, gateway=gateway)
    if request.check_healing and request.settle > 0 and built.image and built.service is not None:
        verification = _check_healing(request, verification, built.service, gateway=gateway)
    return verification


# --- 1. the candidate build ---------------------------------------------------------------


def _build(
    request: VerifyRequest,
    *,
    git: Git,
    root: Path,
    tree: Mapping[str, TreeEntry],
    gateway: DockerGateway,
) -> _Built:
    assert request.service is not None and request.labels is not None
    try:
        working_dir, files = config_files(request.labels)
        config = _load(
            files,
            working_dir=working_dir,
            environment=_interpolation_environment(request.environment),
            read=tree_reader(git, root, tree),
        )
        service = services_of(config).get(request.service)
        spec = build_spec(config, request.service, working_dir)
    except ActionError as e:
        return _Built(None, f"Not built: {e}.")
    definition = service if isinstance(service, Mapping) else None
    under = _inside(spec.context, root)
    if under is None:
        return _Built(
            None, f"Not built: the build context {spec.context} is outside the repository."
        )
    dockerfile = _dockerfile_in_context(spec.dockerfile, spec.context)
    if dockerfile is None:
        return _Built(
            None,
            f"Not built: the Dockerfile {spec.dockerfile} lies outside the build context "
            f"{spec.context}, and medic sends only the context to the engine.",
            service=definition,
        )
    args = tuple((k, v) for k, v in spec.args if not is_secret_name(k))
    left_out = [k for k, _ in spec.args if is_secret_name(k)]
    note = (
        f"Build args left out because their names look secret: {', '.join(left_out)}.\n"
        if left_out
        else ""
    )
    try:
        context = tree_archive(tree, git.read_blobs, under=under)
        result = gateway.build_image(
            BuildRequest(
                context=str(spec.context),
                tag=request.tag,
                dockerfile=dockerfile,
                args=args,
                target=spec.target,
                archive=context,
                network_mode=request.build_network,
                time_limit=request.build_timeout,
                memory_mb=request.limits.memory_mb,
                labels=CANDIDATE_LABELS,
                proxy=False,
            )
        )
    except MedicError as e:
        return _Built(False, tail(f"{note}The build could not run: {e}"), service=definition)
    return _Built(
        result.ok,
        tail(note + result.output),
        request.tag if result.ok else None,
        definition,
    )


def tree_reader(git: Git, root: Path, tree: Mapping[str, TreeEntry]) -> Reader:
    """Reads a file as the fix commit has it when it lies in the repository and the
    commit tracks it (links followed inside the tree), else from the disk: a file git
    does not track is one the fix cannot have changed, and it is what compose reads."""
    cache: dict[str, str] = {}

    def read(path: Path) -> str | None:
        relative = _inside(path, root)
        for _ in range(8):
            if relative is None:
                break
            entry = tree.get(relative)
            if entry is None:
                break
            if entry.mode == SYMLINK_MODE:
                target = git.read_blobs([entry.sha])[entry.sha].decode("utf-8", "replace")
                joined = posixpath.join(posixpath.dirname(relative), target)
                if posixpath.isabs(target) or posixpath.normpath(joined).startswith("../"):
                    path = Path(posixpath.normpath(posixpath.join(str(root), joined)))
                    relative = _inside(path, root)
                    continue
                relative = posixpath.normpath(joined)
                continue
            if entry.mode not in (FILE_MODE, EXECUTABLE_MODE):
                return None
            if entry.sha not in cache:
                blob = git.read_blobs([entry.sha])[entry.sha]
                try:
                    cache[entry.sha] = blob.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ActionError(f"the file {path} in the fix is not UTF-8 text") from e
            return cache[entry.sha]
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise ActionError(f"cannot read {path} ({e})") from e

    return read


def _load(
    files: Sequence[Path], *, working_dir: Path, environment: Mapping[str, str], read: Reader
) -> dict[str, Any]:
    """The compose project the service is built from, read through ``read``."""
    return load_compose(
        files, working_dir=working_dir, environment=environment, read=read, strict=False
    )


def _interpolation_environment(given: Mapping[str, str] | None) -> dict[str, str]:
    source = os.environ if given is None else given
    if given is not None:
        return dict(given)
    return {
        k: v for k, v in source.items() if not k.startswith(_OWN_PREFIXES) and not is_secret_name(k)
    }


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (``""`` for the folder itself), or None when it
    lies outside; both as written and with links resolved."""
    for candidate, base in ((path, folder), (path, folder.resolve())):
        relative = posixpath.relpath(
            posixpath.normpath(str(candidate)), posixpath.normpath(str(base))
        )
        if relative == ".":
            return ""
        if relative != ".." and not relative.startswith("../"):
            return relative
    return None


def _dockerfile_in_context(dockerfile: str | None, context: Path) -> str | None:
    """The Dockerfile's path inside the context, or None when it lies outside."""
    if dockerfile is None:
        return "Dockerfile"
    path = Path(dockerfile) if posixpath.isabs(dockerfile) else context / dockerfile
    relative = _inside(Path(posixpath.normpath(str(path))), context)
    return relative or None


# --- 2. MEDIC_VERIFY_CMD --------------------------------------------------------------------


def _run_command(
    request: VerifyRequest,
    verification: Verification,
    *,
    git: Git,
    tree: Mapping[str, TreeEntry],
    gateway: DockerGateway,
) -> Verification:
    assert request.command is not None
    try:
        argv = shlex.split(request.command)
    except ValueError as e:
        return _with(verification, error=f"MEDIC_VERIFY_CMD cannot be split into words: {e}")
    if not argv:
        return _with(verification, error="MEDIC_VERIFY_CMD is empty")
    image = request.image or verification.image
    if image is None:
        why = (
            "the candidate image did not build"
            if verification.built is False
            else "no candidate image was built"
        )
        return _with(
            verification,
            error=f"MEDIC_VERIFY_CMD was not run: {why}, and MEDIC_VERIFY_IMAGE is not set",
        )
    try:
        workspace = tree_archive(tree, git.read_blobs, prefix=WORKSPACE.strip("/"))
        result = gateway.run_sandbox(
            SandboxRequest(
                image=image,
                entrypoint=(argv[0],),
                command=tuple(argv[1:]),
                workspace=workspace,
                working_dir=WORKSPACE,
                time_limit=request.timeout,
                until=SandboxUntil.EXIT,
                limits=request.limits,
                labels=(("medic.sandbox.purpose", "verify"), (FIX_LABEL, request.tag)),
            )
        )
    except MedicError as e:
        return _with(
            verification, command_image=image, error=f"MEDIC_VERIFY_CMD could not run: {e}"
        )
    error = None
    if result.still_running:
        error = f"MEDIC_VERIFY_CMD did not finish within {request.timeout:g} s and was stopped"
    elif result.oom_killed:
        error = (
            f"MEDIC_VERIFY_CMD ran out of memory (MEDIC_VERIFY_MEMORY_MB is "
            f"{request.limits.memory_mb}) and was killed"
        )
    return _with(
        verification,
        command_image=image,
        exit_status=result.exit_code,
        output=tail(result.output),
        error=error,
    )


# --- 3. does the candidate heal the failure? ------------------------------------------------


def _check_healing(
    request: VerifyRequest,
    verification: Verification,
    service: Mapping[str, Any],
    *,
    gateway: DockerGateway,
) -> Verification:
    assert verification.image is not None
    environment = service_environment(service.get("environment"))
    redactor = Redactor.build(env=environment, patterns=request.redact_patterns)
    try:
        command = _words(service.get("command"), "command")
        entrypoint = _words(service.get("entrypoint"), "entrypoint")
        healthcheck = healthcheck_spec(service.get("healthcheck"))
    except ActionError as e:
        return _with(verification, healing=f"could not be tried in a sandbox: {e}", healing_ok=None)
    working_dir = service.get("working_dir")
    try:
        result = gateway.run_sandbox(
            SandboxRequest(
                image=verification.image,
                command=command,
                entrypoint=entrypoint,
                working_dir=str(working_dir) if working_dir else None,
                environment=tuple((k, v) for k, v in environment.items() if not is_secret_name(k)),
                healthcheck=healthcheck,
                time_limit=request.settle,
                until=SandboxUntil.SETTLED,
                limits=request.limits,
                labels=(("medic.sandbox.purpose", "healing"), (FIX_LABEL, request.tag)),
            )
        )
    except MedicError as e:
        return _with(verification, healing=f"could not be tried in a sandbox: {e}", healing_ok=None)
    ok, verdict = healing_verdict(result, settle=request.settle, redactor=redactor)
    return _with(
        verification,
        healing=verdict,
        healing_ok=ok,
        healing_log=tail(redactor.redact(_printable_lines(result.output))),
    )


def healing_verdict(
    result: SandboxResult, *, settle: float, redactor: Redactor | None = None
) -> tuple[bool, str]:
    """Whether the candidate healed, and the sentence that says so."""
    if result.still_running and result.health is Health.HEALTHY:
        return True, "starts and passes its health check in a sandbox"
    if result.still_running and result.health is Health.NONE:
        return True, f"starts and stays up for {settle:g} s in a sandbox"
    if result.still_running and result.health is Health.UNHEALTHY:
        why = _clean_line(result.health_output or "", redactor) or "no output"
        return False, f"still fails: its health check fails: {why}"
    if result.still_running:
        return False, f"still fails: it did not pass its health check within {settle:g} s"
    if result.oom_killed:
        return False, "still fails: it runs out of memory in the sandbox"
    line = _clean_line(first_error_line(result.output), redactor)
    if not line:
        return False, f"still fails: it exits with code {result.exit_code} and logs nothing"
    return False, f"still fails: {line}"


def first_error_line(log: str) -> str:
    """The first line that says something went wrong, else the last line with text."""
    lines = [line for line in log.splitlines() if line.strip()]
    for line in lines:
        if _ERROR_WORDS.search(line):
            return line
    return lines[-1] if lines else ""


def _clean_line(line: str, redactor: Redactor | None) -> str:
    # As a terminal shows it (escape sequences, controls and bidi characters gone), on
    # one line.
    line = strip_terminal_escapes(line)
    text = redactor.redact(line) if redactor is not None else line
    text = " ".join(text.split())
    return text if len(text) <= 200 else f"{text[:197]}..."


def _printable_lines(text: str) -> str:
    return "\n".join(strip_terminal_escapes(text).splitlines())


def service_environment(raw: Any) -> dict[str, str]:
    """A compose service's ``environment:`` (a mapping or ``KEY=VALUE`` list) as text;
    variables without a value (taken from the shell in compose) are left out."""
    found: dict[str, str] = {}
    if isinstance(raw, Mapping):
        items: list[tuple[str, Any]] = [(str(k), v) for k, v in raw.items()]
    elif isinstance(raw, list):
        items = []
        for item in raw:
            key, sep, value = str(item).partition("=")
            items.append((key, value if sep else None))
    else:
        return found
    for key, value in items:
        if value is None or not key:
            continue
        found[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return found


def healthcheck_spec(raw: Any) -> HealthcheckSpec | None:
    """A compose ``healthcheck:`` in Docker's terms; None when there is none (the
    image's own applies)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ActionError("the service's healthcheck: is not a mapping")
    if raw.get("disable") is True:
        return HealthcheckSpec(test=("NONE",))
    test = raw.get("test")
    if test is None:
        return None
    if isinstance(test, str):
        words: tuple[str, ...] = ("CMD-SHELL", test)
    elif isinstance(test, list) and test:
        words = tuple(str(w) for w in test)
    else:
        raise ActionError("the service's healthcheck test is neither text nor a list")
    retries = raw.get("retries")
    return HealthcheckSpec(
        test=words,
        interval=_duration(raw.get("interval")),
        timeout=_duration(raw.get("timeout")),
        retries=int(retries) if retries is not None else None,
        start_period=_duration(raw.get("start_period")),
    )


def _duration(raw: Any) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ActionError(f"the health check duration {text!r} is not like 10s or 1m30s")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _words(raw: Any, key: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            return tuple(shlex.split(raw))
        except ValueError as e:
            raise ActionError(f"the service's {key} cannot be split into words: {e}") from e
    if isinstance(raw, list):
        return tuple(str(w) for w in raw)
    raise ActionError(f"the service's {key} is neither text nor a list")


def _with(verification: Verification, **changes: Any) -> Verification:
    return replace(verification, **changes)


def tail(text: str) -> str:
    """The last lines of ``text``, at most TAIL_LINES lines and TAIL_CHARS characters."""
    lines = text.splitlines()[-TAIL_LINES:]
    kept = "\n".join(lines)
    return kept[-TAIL_CHARS:]
