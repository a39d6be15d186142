"""``medic fixes`` as a person runs it: a real process, a real git repository, and the
fixes in a real Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixrepo import Repo, propose_in_postgres

from agent.model import (
    Fix,
    Incident,
)

NOW = datetime.now(UTC).replace(microsecond=0)


def medic(*args: str, url: str, repo: Path | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIC_", "GIT_"))}
    env["MEDIC_DATABASE_URL"] = url
    if repo is not None:
        env["MEDIC_REPO"] = str(repo)
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.fixture
def proposed(postgres_url: str, tmp_path: Path) -> tuple[Repo, Incident, Fix]:
    """A real repository and, in Postgres, an incident with a diagnosis whose one-line
    edit medic made into a fix branch."""
    return propose_in_postgres(postgres_url, tmp_path, at=NOW)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("medic: ")
    return lines[0]


def parse(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_fixes_lists_those_awaiting_a_decision_with_the_contract_fields(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, incident, fix = proposed
    [listed] = parse(medic("fixes", "--json", url=postgres_url, repo=repo.path))
    assert {
        "id",
        "incident_id",
        "branch",
        "base",
        "status",
        "files",
        "summary",
        "refusal_reasons",
        "verification",
    } <= set(listed)
    assert listed["id"] == fix.id
    assert listed["incident_id"] == incident.id
    assert listed["branch"] == f"medic/fix-{incident.id[:8]}-web"
    assert listed["base"] == repo.git("rev-parse", "HEAD").strip()
    assert listed["status"] == "proposed"
    assert listed["files"] == ["web/app.py"]
    text = medic("fixes", url=postgres_url, repo=repo.path)
    assert fix.id[:8] in text.stdout and "proposed" in text.stdout


def test_fixes_show_has_the_diagnosis_and_the_diff(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, _, fix = proposed
    shown = parse(medic("fixes", "show", fix.id[:8], "--json", url=postgres_url, repo=repo.path))
    assert '-    port = int("8080")' in shown["diff"]
    assert '+    port = int("8081")' in shown["diff"]
    assert shown["diagnosis"]["summary"] == "The port should be 8081."
    text = medic("fixes", "show", fix.id[:8], url=postgres_url, repo=repo.path).stdout
    assert "Diff:" in text and "The port should be 8081." in text


def test_approve_over_an_uncommitted_change_in_a_touched_file_is_one_line_and_keeps_it(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, _, fix = proposed
    app = repo.path / "web" / "app.py"
    app.write_text(app.read_text() + "# my work in progress\n")
    before = repo.snapshot()
    line = one_line(medic("fixes", "approve", fix.id[:8], url=postgres_url, repo=repo.path))
    assert "uncommitted changes in web/app.py" in line
    assert repo.snapshot() == before
    assert app.read_text().endswith("# my work in progress\n")
    [still] = parse(medic("fixes", "--json", url=postgres_url, repo=repo.path))
    assert still["status"] == "proposed"


def test_approve_merges_and_the_timeline_says_who(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, incident, fix = proposed
    done = medic("fixes", "approve", fix.id[:8], "--by", "ana", url=postgres_url, repo=repo.path)
    assert done.returncode == 0, done.stderr
    assert "approved by ana" in done.stdout and "fast-forward" in done.stdout
    assert repo.git("rev-parse", "HEAD").strip() == fix.commit
    assert 'int("8081")' in (repo.path / "web" / "app.py").read_text()
    show = medic("incidents", "show", incident.id[:8], url=postgres_url, repo=repo.path)
    assert "fix approved" in show.stdout and "by ana" in show.stdout
    again = one_line(medic("fixes", "approve", fix.id[:8], url=postgres_url, repo=repo.path))
    assert "is approved already (by ana)" in again


def test_reject_deletes_the_branch_and_keeps_the_reason(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, incident, fix = proposed
    done = medic(
        "fixes",
        "reject",
        fix.id[:8],
        "--reason",
        "the port is right; the proxy is wrong",
        "--by",
        "bo",
        url=postgres_url,
        repo=repo.path,
    )
    assert done.returncode == 0, done.stderr
    assert fix.branch is not None
    assert fix.branch not in repo.git("branch", "--list")
    [rejected] = parse(medic("fixes", "--all", "--json", url=postgres_url, repo=repo.path))
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "the port is right; the proxy is wrong"
    assert rejected["decided_by"] == "bo"
    shown = parse(
        medic("incidents", "show", incident.id, "--json", url=postgres_url, repo=repo.path)
    )
    assert [f["status"] for f in shown["fixes"]] == ["rejected"]
    # The diff of a rejected fix still shows what was proposed.
    assert 'int("8081")' in shown["fixes"][0]["diff"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("fixes", "approve", "ffffffff"), "No fix has an id starting with 'ffffffff'"),
        (("fixes", "show", "ffffffff"), "No fix has an id starting with 'ffffffff'"),
        (("fixes", "reject", "ffffffff", "--reason", "x"), "No fix has an id starting with"),
    ],
)
def test_an_unknown_fix_is_one_line(
    proposed: tuple[Repo, Incident, Fix],
    postgres_url: str,
    args: tuple[str, ...],
    expected: str,
) -> None:
    repo, _, _ = proposed
    assert expected in one_line(medic(*args, url=postgres_url, repo=repo.path))


def test_approving_without_medic_repo_says_what_to_set(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    _, _, fix = proposed
    line = one_line(medic("fixes", "approve", fix.id[:8], url=postgres_url, repo=None))
    assert "set MEDIC_REPO" in line


def test_an_empty_reason_is_refused_in_one_line(
    proposed: tuple[Repo, Incident, Fix], postgres_url: str
) -> None:
    repo, _, fix = proposed
    line = one_line(
        medic("fixes", "reject", fix.id[:8], "--reason", " ", url=postgres_url, repo=repo.path)
    )
    assert "Say why the fix is rejected" in line
    assert fix.branch is not None and fix.branch in repo.git("branch", "--list")
