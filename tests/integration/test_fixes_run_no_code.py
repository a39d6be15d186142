"""Making, verifying, approving and rejecting a fix runs nothing of the repository's own.

The repository below has every kind of code git can be told to run: hooks in
``.git/hooks`` and in a husky-style ``core.hooksPath``, a filter driver (clean,
smudge and process), a diff driver, a merge driver and an fsmonitor hook, each of
which leaves a marker file when it runs. A person approving a fix must not run any
of it, nor must medic making or rejecting one; the markers prove it, and the same
repository with plain git commands shows that the markers do appear when git runs
them, so the test cannot pass by the drivers being broken.
"""

from __future__ import annotations

from pathlib import Path

from fakes import FakeClock, FakeDocker
from fixrepo import FIX_NOW, Repo, diagnosis, incident, make_repo

from agent.engine.compose import CONFIG_FILES_LABEL, WORKING_DIR_LABEL
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions, make_fix
from agent.fixes.review import approve, reject
from agent.model import Edit, FixStatus
from agent.store.memory import MemoryStore

AUTHOR = Person("medic", "medic@localhost")
HOOKS = (
    "post-merge",
    "post-checkout",
    "pre-merge-commit",
    "pre-commit",
    "post-commit",
    "commit-msg",
    "prepare-commit-msg",
    "reference-transaction",
    "post-rewrite",
    "pre-auto-gc",
)


def armed_repo(tmp_path: Path) -> tuple[Repo, Path]:
    """The fix repository with every way of running code pointed at a marker folder."""
    repo = make_repo(tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()

    def script(name: str) -> str:
        return f"#!/bin/sh\ntouch {markers}/{name}\ncat\n"

    for hook in HOOKS:
        for folder in (repo.path / ".git" / "hooks", repo.path / ".husky" / "_"):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / hook).write_text(script(f"{folder.parent.name}-{hook}"))
            (folder / hook).chmod(0o755)
    driver = tmp_path / "driver.sh"
    driver.write_text(script("driver"))
    driver.chmod(0o755)
    monitor = tmp_path / "fsmonitor.sh"
    monitor.write_text(f"#!/bin/sh\ntouch {markers}/fsmonitor\nexit 1\n")
    monitor.chmod(0o755)
    repo.write(".gitattributes", "*.py filter=mark diff=mark merge=mark\n")
    repo.commit_all("Attributes that name drivers")
    for key, value in (
        ("filter.mark.clean", f"{driver} clean"),
        ("filter.mark.smudge", f"{driver} smudge"),
        ("filter.mark.process", f"{driver} process"),
        ("diff.mark.textconv", f"{driver} textconv"),
        ("merge.mark.driver", f"{driver} merge %O %A %B"),
        ("core.fsmonitor", str(monitor)),
        ("core.hooksPath", ".husky/_"),
    ):
        repo.git("config", key, value)
    return repo, markers


def fix_edit(port: str) -> Edit:
    return Edit("web/app.py", 'port = int("8080")', f'port = int("{port}")')


def test_git_itself_would_run_them_all(tmp_path: Path) -> None:
    repo, markers = armed_repo(tmp_path)
    repo.write("web/app.py", repo.path.joinpath("web/app.py").read_text() + "# x\n")
    repo.commit_all("by hand")
    assert {"driver", "fsmonitor", ".husky-post-commit"} <= {p.name for p in markers.iterdir()}


def test_make_verify_approve_and_reject_run_no_hook_filter_driver_or_fsmonitor(
    tmp_path: Path,
) -> None:
    repo, markers = armed_repo(tmp_path)
    for marker in markers.iterdir():  # what setting the repository up ran
        marker.unlink()
    git = Git(repo.path)
    store = MemoryStore()
    store.put(incident())
    store.put(incident(incident_id="1" * 32))
    # Verification reads the fix from git too: a build and a verify command, through an
    # engine that records them (the real engine's side: test_fixes_verify.py).
    options = FixOptions(policy=Policy(), author=AUTHOR, verify_cmd="true", verify_settle=0)
    clock = FakeClock(FIX_NOW)
    engine = FakeDocker()
    labels = {WORKING_DIR_LABEL: str(repo.path), CONFIG_FILES_LABEL: "compose.yaml"}

    first = make_fix(
        diagnosis(fix_edit("8081")),
        incident(),
        git=git,
        options=options,
        clock=clock,
        gateway=engine,
        labels=labels,
    )
    second = make_fix(
        diagnosis(Edit("web/config.yaml", "workers: 2", "workers: 3")),
        incident(incident_id="1" * 32),
        git=git,
        options=options,
        clock=clock,
        gateway=engine,
        labels=labels,
    )
    assert first.status is FixStatus.PROPOSED and second.status is FixStatus.PROPOSED
    assert first.verification is not None and first.verification.built is True
    assert first.verification.exit_status == 0
    assert engine.requests == ["build", "sandbox", "build", "sandbox"]
    store.record_fix(first)
    store.record_fix(second)
    made = sorted(p.name for p in markers.iterdir())

    # The base moves on by hand (running the repository's hooks, as git does), so that
    # approving needs a real merge, not a fast-forward.
    repo.write("README.md", "# project, moved on\n")
    repo.commit_all("elsewhere")
    assert markers.joinpath(".husky-post-commit").exists()
    for marker in markers.iterdir():
        marker.unlink()

    approval = approve(first.id, store=store, git=git, author=AUTHOR, clock=clock, gateway=engine)
    assert not approval.fast_forward
    assert 'int("8081")' in (repo.path / "web" / "app.py").read_text()
    reject(second.id, store=store, git=git, reason="not this one", clock=clock, gateway=engine)

    assert made == []
    assert sorted(p.name for p in markers.iterdir()) == []
