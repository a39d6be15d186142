"""The model's read-only repository tools judge a link by what it points at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.escalate.repo_tools import Refused, RepoTools


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / ".env").write_text("DB_PASSWORD=hunter2hunter2\n")
    (root / "app" / "main.py").write_text("print('hi')\n")
    (root / "certs").mkdir()
    (root / "certs" / "server.key").write_text("key\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    os.symlink("../.env", root / "app" / "settings.txt")
    os.symlink("../.git/config", root / "app" / "gitconfig.txt")
    os.symlink(".git", root / "meta")
    os.symlink("certs/server.key", root / "server.txt")
    os.symlink("../../outside.txt", root / "app" / "outside.txt")
    os.symlink("main.py", root / "app" / "alias.py")
    return root


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("app/settings.txt", "secret file"),
        ("app/gitconfig.txt", ".git"),
        ("meta/config", ".git"),
        ("server.txt", "secret file"),
        ("app/outside.txt", "out of the repository"),
        (".GIT/config", ".git"),
        (".git. /config", ".git"),
    ],
)
def test_a_link_to_a_secret_into_git_or_outside_is_refused(repo: Path, path: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        RepoTools(root=repo).read_file(path)


def test_a_link_to_an_ordinary_file_inside_is_read(repo: Path) -> None:
    assert "print('hi')" in RepoTools(root=repo).read_file("app/alias.py")


def test_listing_and_grep_leave_out_what_links_lead_to(repo: Path) -> None:
    tools = RepoTools(root=repo)
    listing = tools.list_files("app")
    assert "app/main.py" in listing
    assert "settings.txt" not in listing
    assert "gitconfig.txt" not in listing
    assert tools.grep("hunter2") == "no line contains 'hunter2'"
    assert tools.grep("[core]") == "no line contains '[core]'"


def test_a_link_to_an_ignored_file_is_refused(repo: Path) -> None:
    tools = RepoTools(root=repo, is_ignored=lambda path: path == "app/main.py")
    with pytest.raises(Refused, match="ignored"):
        tools.read_file("app/alias.py")
