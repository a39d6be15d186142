"""git runs with an environment medic controls and a time limit on every call."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.fixes.errors import GitError, GitTimeout
from agent.fixes.git import Git, Person


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "r"
    path.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        cwd=path,
        check=True,
    )
    return path


def test_the_callers_git_variables_do_not_steer_medics_git(repo: Path, tmp_path: Path) -> None:
    environ = {
        "PATH": "/usr/bin:/bin",
        "GIT_DIR": str(tmp_path / "elsewhere"),
        "GIT_WORK_TREE": str(tmp_path),
        "GIT_INDEX_FILE": str(tmp_path / "stray-index"),
    }
    git = Git(repo, environ=environ)
    assert git.current_branch() == "main"
    assert git.head() is not None
    assert not (tmp_path / "stray-index").exists()


def test_a_git_call_that_hangs_is_stopped_at_its_time_limit(repo: Path, tmp_path: Path) -> None:
    slow = tmp_path / "slow-git"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    with pytest.raises(GitTimeout, match=r"did not finish within 0\.2 s"):
        Git(repo, executable=str(slow), timeout=0.2).head()


def test_a_failing_git_command_says_what_git_said(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not a git repository"):
        Git(tmp_path).check_repository()


def test_an_author_must_look_like_name_and_email() -> None:
    assert Person.parse("medic bot <bot@example.com>") == Person("medic bot", "bot@example.com")
    with pytest.raises(GitError):
        Person.parse("medic")


def test_a_repository_owned_by_another_user_is_trusted_for_medic_alone(
    repo: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    home = tmp_path / "home"
    home.mkdir()
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 4321, 4321)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    plain = subprocess.run(
        ["git", "-C", str(repo), "status"],
        env=environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "dubious ownership" in plain.stderr
    git = Git(repo, environ=environ)
    assert git.current_branch() == "main"
    assert git.check_repository() == repo.resolve()
    # Nothing was written to any configuration file: the exception lives in medic's process.
    assert list(home.iterdir()) == []
    assert "safe" not in (repo / ".git" / "config").read_text()
