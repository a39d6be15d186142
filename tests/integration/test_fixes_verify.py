"""Verification of a fix branch in a temporary worktree: MEDIC_VERIFY_CMD, and the
service's image built on the real engine as a candidate."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from fixrepo import FixedClock, Repo, diagnosis, incident, make_repo

from agent.compose import CONFIG_FILES_LABEL, WORKING_DIR_LABEL
from agent.docker_gateway import DockerSDKGateway
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions, make_fix
from agent.fixes.verify import candidate_tag
from agent.model import Edit, Fix, FixId, FixStatus

OPTIONS = FixOptions(policy=Policy(), author=Person("medic", "medic@localhost"))
TYPO = Edit("web/app.py", 'int("8080")', "int('8080')")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def worktrees(repo: Repo) -> list[str]:
    return [
        line
        for line in repo.git("worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ")
    ]


def propose(repo: Repo, options: FixOptions, **kwargs: Any) -> Fix:
    return make_fix(
        diagnosis(TYPO),
        incident(),
        git=Git(repo.path),
        options=options,
        clock=FixedClock(),
        **kwargs,
    )


def test_the_verify_command_runs_in_a_worktree_of_the_branch_which_is_removed_after(
    repo: Repo,
) -> None:
    check = """sh -c "grep -q \\"int('8080')\\" web/app.py && echo fixed && pwd" """
    fix = propose(repo, replace(OPTIONS, verify_cmd=check))
    verification = fix.verification
    assert verification is not None
    assert verification.exit_status == 0, verification
    assert verification.output.splitlines()[0] == "fixed"
    worktree = Path(verification.output.splitlines()[1])
    assert worktree != repo.path and not worktree.exists()
    assert verification.ok
    assert len(worktrees(repo)) == 1


def test_a_failing_verify_command_is_recorded_and_the_branch_stays(repo: Repo) -> None:
    fix = propose(repo, replace(OPTIONS, verify_cmd="sh -c 'echo broken >&2; exit 3'"))
    assert fix.status is FixStatus.PROPOSED
    assert fix.verification is not None
    assert fix.verification.exit_status == 3
    assert fix.verification.output == "broken"
    assert not fix.verification.ok
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit


def test_a_verify_command_that_runs_too_long_is_stopped_and_recorded(repo: Repo) -> None:
    options = replace(OPTIONS, verify_cmd="sh -c 'echo started; sleep 30'", verify_timeout=0.5)
    fix = propose(repo, options)
    assert fix.verification is not None
    assert fix.verification.exit_status is None
    assert fix.verification.error == "MEDIC_VERIFY_CMD did not finish within 0.5 s and was stopped"
    assert fix.verification.output == "started"
    assert len(worktrees(repo)) == 1


def test_a_verify_command_that_cannot_run_is_recorded(repo: Repo) -> None:
    fix = propose(repo, replace(OPTIONS, verify_cmd="no-such-program-here --x"))
    assert fix.verification is not None
    assert fix.verification.error == "cannot run no-such-program-here: No such file or directory"


def test_without_a_command_or_a_build_there_is_nothing_to_verify(repo: Repo) -> None:
    fix = propose(repo, OPTIONS)
    assert fix.verification is not None
    assert fix.verification.built is None and fix.verification.command is None
    assert len(worktrees(repo)) == 1


def test_the_candidate_tag_is_per_service_and_fix() -> None:
    assert candidate_tag("Web_API", "0123456789abcdef") == "medic-candidate/web-api:01234567"


@pytest.fixture
def gateway() -> Iterator[DockerSDKGateway]:
    gw = DockerSDKGateway.from_env()
    try:
        yield gw
    finally:
        gw.close()


@pytest.mark.docker
def test_the_branch_image_builds_on_the_engine_as_a_candidate(
    repo: Repo, gateway: DockerSDKGateway, docker_client: Any, busybox_image: str
) -> None:
    labels = {WORKING_DIR_LABEL: str(repo.path), CONFIG_FILES_LABEL: "compose.yaml"}
    fix_id = FixId("f1" + "0" * 30)
    tag = candidate_tag("web", fix_id)
    try:
        fix = propose(repo, OPTIONS, gateway=gateway, labels=labels, fix_id=fix_id)
        verification = fix.verification
        assert verification is not None
        assert verification.built is True, verification.build_log
        assert verification.image == tag == "medic-candidate/web:f1000000"
        image = docker_client.images.get(tag)
        # The candidate holds the branch's file, not the working tree's.
        container = docker_client.containers.run(
            image.id, ["cat", "/app/app.py"], remove=True, labels={"medic.test": "fixes"}
        )
        assert b"int('8080')" in container
        assert len(worktrees(repo)) == 1
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_a_broken_build_is_recorded_with_its_log_and_the_branch_stays(
    repo: Repo, gateway: DockerSDKGateway, docker_client: Any, busybox_image: str
) -> None:
    labels = {WORKING_DIR_LABEL: str(repo.path), CONFIG_FILES_LABEL: "compose.yaml"}
    fix_id = FixId("f2" + "0" * 30)
    edit = Edit("web/Dockerfile", "COPY app.py /app/app.py", "COPY missing.py /app/app.py")
    try:
        fix = make_fix(
            diagnosis(edit),
            incident(),
            git=Git(repo.path),
            options=OPTIONS,
            clock=FixedClock(),
            gateway=gateway,
            labels=labels,
            fix_id=fix_id,
        )
        assert fix.verification is not None
        assert fix.verification.built is False
        assert fix.verification.image is None
        assert "missing.py" in fix.verification.build_log
        assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(candidate_tag("web", fix_id), force=True)
