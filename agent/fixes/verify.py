"""Trying a fix branch before a person looks at it.

In a temporary worktree of the fix commit, medic builds the service's image when its
compose ``build:`` context lies inside the repository (tagged as a candidate,
``medic-candidate/<service>:<fix short id>``, never over the image the service runs),
and runs MEDIC_VERIFY_CMD there with a time limit. The worktree is removed afterwards.

The candidate image is kept: a person reviewing the fix may run it, and its tag is
stored with the fix so it can be removed after the decision (docs/fixes.md).

Verification only records what happened; a failed build or check never deletes the
branch. Both run code the fix changed (a Dockerfile's RUN steps, the project's tests),
which is why docs/fixes.md asks for a sandboxed MEDIC_VERIFY_CMD.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.compose import build_spec, config_files, load_compose
from agent.docker_gateway import BuildRequest, DockerGateway
from agent.errors import ActionError, MedicError
from agent.fixes.git import Git
from agent.model import Verification

#: How much of a build log or a command's output is kept.
TAIL_CHARS = 4000
TAIL_LINES = 60


@dataclass(frozen=True)
class VerifyRequest:
    """What to verify: a fix commit, the service it is for, and how."""

    commit: str
    tag: str
    service: str | None = None
    labels: Mapping[str, str] | None = None
    """The service container's labels: compose's point to its project folder and files."""
    command: str | None = None
    timeout: float = 600.0


def candidate_tag(service: str | None, fix_id: str) -> str:
    """``medic-candidate/<service>:<fix short id>``, in the characters Docker accepts."""
    name = re.sub(r"[^a-z0-9]+", "-", (service or "service").lower()).strip("-") or "service"
    return f"medic-candidate/{name}:{re.sub(r'[^A-Za-z0-9_.-]', '', fix_id)[:8] or 'fix'}"


def verify_fix(request: VerifyRequest, *, git: Git, gateway: DockerGateway | None) -> Verification:
    """Build and check ``request.commit`` in a temporary worktree; never raises for a
    failing build or command, only records it."""
    wants_build = gateway is not None and request.service is not None and bool(request.labels)
    if not wants_build and not request.command:
        return Verification()
    root = git.check_repository()
    with git.temporary_worktree(request.commit) as worktree:
        built: bool | None = None
        build_log = ""
        image: str | None = None
        if wants_build and gateway is not None:
            built, build_log, image = _build(request, root=root, worktree=worktree, gateway=gateway)
        exit_status: int | None = None
        output = ""
        error: str | None = None
        if request.command:
            exit_status, output, error = run_command(
                request.command, cwd=worktree, timeout=request.timeout
            )
    return Verification(
        built=built,
        build_log=build_log,
        image=image,
        command=request.command,
        exit_status=exit_status,
        output=output,
        error=error,
    )


def _build(
    request: VerifyRequest, *, root: Path, worktree: Path, gateway: DockerGateway
) -> tuple[bool | None, str, str | None]:
    assert request.service is not None and request.labels is not None
    try:
        working_dir, files = config_files(request.labels)
        # The fix branch's compose files where they are in the repository, so a fix of
        # the build section itself is what is built.
        mapped = tuple(_in_worktree(f, root, worktree) or f for f in files)
        config = load_compose(mapped)
        spec = build_spec(
            config, request.service, _in_worktree(working_dir, root, worktree) or working_dir
        )
    except ActionError as e:
        return None, f"Not built: {e}.", None
    if _relative_inside(spec.context, worktree) is None:
        return (
            None,
            f"Not built: the build context {spec.context} is outside the repository.",
            None,
        )
    try:
        result = gateway.build_image(
            BuildRequest(
                context=str(spec.context),
                tag=request.tag,
                dockerfile=spec.dockerfile,
                args=spec.args,
                target=spec.target,
            )
        )
    except MedicError as e:
        return False, tail(f"The build could not run: {e}"), None
    return result.ok, tail(result.output), request.tag if result.ok else None


def _relative_inside(path: Path, folder: Path) -> str | None:
    relative = posixpath.relpath(posixpath.normpath(str(path)), posixpath.normpath(str(folder)))
    if relative == ".." or relative.startswith("../"):
        return None
    return relative


def _in_worktree(path: Path, root: Path, worktree: Path) -> Path | None:
    """``path`` (in the repository's folder) as the same path in the worktree, or None."""
    for base in {root, root.resolve()}:
        relative = _relative_inside(path, base)
        if relative is not None:
            return worktree if relative == "." else worktree / relative
    return None


def run_command(command: str, *, cwd: Path, timeout: float) -> tuple[int | None, str, str | None]:
    """Run ``command`` (split like a shell would, but without one) in ``cwd``.

    Returns the exit status, the output tail (stdout and stderr together) and an error
    sentence when it could not run or did not finish in ``timeout`` seconds (then its
    whole process group is killed and the status is None).
    """
    try:
        argv = shlex.split(command)
    except ValueError as e:
        return None, "", f"MEDIC_VERIFY_CMD cannot be split into words: {e}"
    if not argv:
        return None, "", "MEDIC_VERIFY_CMD is empty"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        process = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        return None, "", f"cannot run {argv[0]}: {e.strerror or e}"
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            process.kill()
        out, _ = process.communicate()
        return (
            None,
            tail(out.decode("utf-8", errors="replace")),
            f"MEDIC_VERIFY_CMD did not finish within {timeout:g} s and was stopped",
        )
    return process.returncode, tail(out.decode("utf-8", errors="replace")), None


def tail(text: str) -> str:
    """The last lines of ``text``, at most TAIL_LINES lines and TAIL_CHARS characters."""
    lines = text.splitlines()[-TAIL_LINES:]
    kept = "\n".join(lines)
    return kept[-TAIL_CHARS:]
