"""What verification asks the engine for, read from the fake engine: a real git
repository, ``make_fix`` and the decisions, and ``FakeDocker`` recording every build
and sandbox request. The real engine's side is tests/integration/test_fixes_verify.py."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClock, FakeDocker
from fixrepo import FIX_NOW, Repo, diagnosis, incident, make_repo, store_with
from loguru import logger

from agent.engine.compose import CONFIG_FILES_LABEL, WORKING_DIR_LABEL
from agent.engine.gateway import HealthcheckSpec, SandboxResult, SandboxUntil
from agent.errors import DockerRequestError
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions, make_fix
from agent.fixes.review import approve, reject
from agent.model import Edit, Fix, FixId, Health, Signal

OPTIONS = FixOptions(policy=Policy(), author=Person("medic", "medic@localhost"))
TYPO = Edit("web/app.py", 'int("8080")', "int('8080')")

COMPOSE = """services:
  web:
    build:
      context: ./web
      args:
        VERSION: "1.2"
        NPM_TOKEN: abc123secret
    command: ["httpd", "-f", "-p", "8080"]
    working_dir: /app
    environment:
      - GREETING=hello
      - DB_PASSWORD=hunter2
    healthcheck:
      test: wget -q -O /dev/null http://127.0.0.1:8080/
      interval: 2s
"""


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path)
    repo.write("compose.yaml", COMPOSE)
    repo.commit_all("Build args, a command and a health check")
    return repo


def labels(repo: Repo) -> dict[str, str]:
    return {WORKING_DIR_LABEL: str(repo.path), CONFIG_FILES_LABEL: "compose.yaml"}


def propose(repo: Repo, engine: FakeDocker, options: FixOptions = OPTIONS, **kw: Any) -> Fix:
    return make_fix(
        diagnosis(TYPO),
        kw.pop("incident", incident()),
        git=Git(repo.path),
        options=options,
        clock=FakeClock(FIX_NOW),
        gateway=engine,
        labels=labels(repo),
        fix_id=FixId("f" * 32),
        **kw,
    )


def names(archive: bytes | None) -> dict[str, bytes]:
    assert archive is not None
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        found = {}
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            found[member.name] = data.read() if data is not None else b""
        return found


def test_the_candidate_build_gets_the_branch_s_context_without_network_or_secrets(
    repo: Repo,
) -> None:
    engine = FakeDocker()
    fix = propose(repo, engine, replace(OPTIONS, verify_settle=0, verify_build_timeout=120))
    assert fix.verification is not None and fix.verification.built is True
    [build] = engine.builds
    context = names(build.archive)
    assert set(context) == {"Dockerfile", "app.py", "config.yaml", "start.sh"}
    assert b"int('8080')" in context["app.py"]
    assert build.network_mode == "none"
    assert build.time_limit == 120
    assert build.proxy is False
    assert build.args == (("VERSION", "1.2"),)
    assert "Build args left out because their names look secret: NPM_TOKEN." in (
        fix.verification.build_log
    )


def test_the_verify_command_runs_as_argv_on_a_copy_of_the_tree_in_the_candidate(
    repo: Repo,
) -> None:
    engine = FakeDocker()
    engine.sandbox_results.append(SandboxResult(exit_code=0, output="3 passed\n"))
    options = replace(OPTIONS, verify_cmd="pytest -q 'tests/a b'", verify_settle=0)
    fix = propose(repo, engine, options)
    assert fix.verification is not None
    assert fix.verification.exit_status == 0 and fix.verification.output == "3 passed"
    [run] = engine.sandboxes
    assert run.image == "medic-candidate/web:ffffffff" == fix.verification.command_image
    assert run.entrypoint == ("pytest",) and run.command == ("-q", "tests/a b")
    assert run.working_dir == "/workspace" and run.until is SandboxUntil.EXIT
    assert b"int('8080')" in names(run.workspace)["workspace/web/app.py"]


def test_medic_verify_image_is_used_when_set(repo: Repo) -> None:
    engine = FakeDocker()
    engine.known_images.add("python:3.12")
    options = replace(OPTIONS, verify_cmd="pytest", verify_image="python:3.12", verify_settle=0)
    propose(repo, engine, options)
    assert [s.image for s in engine.sandboxes] == ["python:3.12"]


def test_without_an_image_the_command_is_not_run_and_says_why(repo: Repo) -> None:
    repo.write("web/Dockerfile", "FROM medic-test/busybox\n")
    repo.commit_all("Dockerfile")
    engine = FakeDocker()
    fix = make_fix(
        diagnosis(TYPO),
        incident(),
        git=Git(repo.path),
        options=replace(OPTIONS, verify_cmd="pytest"),
        clock=FakeClock(FIX_NOW),
        gateway=engine,
        labels=None,
    )
    assert fix.verification is not None
    assert fix.verification.error == (
        "MEDIC_VERIFY_CMD was not run: no candidate image was built, and MEDIC_VERIFY_IMAGE is "
        "not set"
    )
    assert engine.sandboxes == []


def test_the_healing_check_runs_the_service_as_compose_says_without_secret_variables(
    repo: Repo,
) -> None:
    engine = FakeDocker()
    engine.sandbox_results.append(
        SandboxResult(exit_code=None, output="", still_running=True, health=Health.HEALTHY)
    )
    fix = propose(repo, engine, replace(OPTIONS, verify_settle=5))
    assert fix.verification is not None
    assert fix.verification.healing == "starts and passes its health check in a sandbox"
    [run] = engine.sandboxes
    assert run.until is SandboxUntil.SETTLED and run.time_limit == 5
    assert run.command == ("httpd", "-f", "-p", "8080")
    assert run.working_dir == "/app"
    assert run.environment == (("GREETING", "hello"),)
    assert run.healthcheck == HealthcheckSpec(
        ("CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/"), interval=2.0
    )
    assert run.workspace is None


@pytest.mark.parametrize("signal", [Signal.LOG_MATCH, Signal.PROBE_FAILED])
def test_no_healing_check_when_the_failure_does_not_show_at_start(
    repo: Repo, signal: Signal
) -> None:
    engine = FakeDocker()
    fix = propose(
        repo, engine, replace(OPTIONS, verify_settle=5), incident=replace(incident(), signal=signal)
    )
    assert fix.verification is not None and fix.verification.healing is None
    assert engine.sandboxes == []


def test_a_branch_is_not_pushed_when_made_by_default_and_is_when_proposed(
    repo: Repo, tmp_path: Path
) -> None:
    bare = tmp_path / "remote.git"
    Repo(tmp_path).git("init", "-q", "--bare", str(bare))
    repo.git("remote", "add", "review", str(bare))
    made = propose(repo, FakeDocker(), replace(OPTIONS, remote="review", verify_settle=0))
    assert made.pushed_to is None and made.push_error is None
    assert Repo(bare).git("branch", "--list").strip() == ""
    other = make_fix(
        diagnosis(TYPO, incident_id="1" * 32),
        incident(incident_id="1" * 32),
        git=Git(repo.path),
        options=replace(OPTIONS, remote="review", push="proposed"),
        clock=FakeClock(FIX_NOW),
    )
    assert other.pushed_to == "review"
    assert Repo(bare).git("rev-parse", f"refs/heads/{other.branch}").strip() == other.commit


def test_a_candidate_image_that_cannot_be_removed_does_not_block_the_decision(
    repo: Repo,
) -> None:
    engine = FakeDocker()
    fix = propose(repo, engine, replace(OPTIONS, verify_settle=0))
    engine.fail("remove_image", DockerRequestError("Removing image x: the image is in use"))
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m.record["message"])), level="WARNING")
    try:
        decided = reject(
            fix.id,
            store=store_with(fix),
            git=Git(repo.path),
            reason="no",
            clock=FakeClock(FIX_NOW),
            gateway=engine,
        )
    finally:
        logger.remove(sink)
    assert decided.reason == "no"
    assert "medic-candidate/web:ffffffff" in engine.images
    assert warnings == [
        "The candidate image medic-candidate/web:ffffffff of fix ffffffff could not be removed "
        "(Removing image x: the image is in use); remove it with docker rmi "
        "medic-candidate/web:ffffffff."
    ]


def test_approving_removes_the_candidate_and_a_missing_one_is_fine(repo: Repo) -> None:
    engine = FakeDocker()
    fix = propose(repo, engine, replace(OPTIONS, verify_settle=0))
    engine.images.clear()
    approval = approve(
        fix.id,
        store=store_with(fix),
        git=Git(repo.path),
        author=OPTIONS.author,
        clock=FakeClock(FIX_NOW),
        gateway=engine,
    )
    assert approval.fix.status == "approved"
    assert engine.requests.count("remove_image") == 1
