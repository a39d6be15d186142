"""Fix branches in a real git repository: made without touching the working tree,
refused without leaving anything behind, approved, rejected and pushed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeClock
from fixrepo import FIX_NOW, Repo, diagnosis, incident, make_repo

from agent.errors import FixNotFound
from agent.fixes.errors import FixRefused
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions, edit_reviewer, make_fix
from agent.fixes.review import approve, reject
from agent.model import Edit, Fix, FixStatus
from agent.store.memory import MemoryStore

AUTHOR = Person("medic", "medic@localhost")
OPTIONS = FixOptions(policy=Policy(), author=AUTHOR)
TYPO = Edit("web/app.py", 'int("8080")', "int('8080')")
CLOCK = FakeClock(FIX_NOW)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


def propose(repo: Repo, *edits: Edit, options: FixOptions = OPTIONS) -> Fix:
    return make_fix(diagnosis(*edits), incident(), git=Git(repo.path), options=options, clock=CLOCK)


def with_local_change(repo: Repo) -> None:
    """An uncommitted change in the file the fix edits, and an untracked file."""
    repo.write("web/app.py", (repo.path / "web/app.py").read_text() + "# work in progress\n")
    repo.write("notes.txt", "mine\n")


# --- making the branch ----------------------------------------------------------------------


def test_a_valid_fix_makes_a_branch_whose_commit_has_exactly_the_edit(repo: Repo) -> None:
    base = repo.git("rev-parse", "HEAD").strip()
    fix = propose(repo, TYPO)
    assert fix.status is FixStatus.PROPOSED, fix.refusal_reasons
    assert fix.branch == "medic/fix-01234567-web"
    assert fix.base == base
    assert fix.base_branch == "main"
    assert fix.files == ("web/app.py",)
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit
    assert repo.git("rev-parse", f"{fix.commit}^").strip() == base
    assert repo.git("diff", "--name-only", base, fix.branch).split() == ["web/app.py"]
    diff = repo.git("diff", "-U0", base, fix.branch, "--", "web/app.py")
    changed = [
        line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == ['-    port = int("8080")', "+    port = int('8080')"]


def test_the_fix_commit_carries_the_diagnosis_incident_model_and_rule(repo: Repo) -> None:
    fix = propose(repo, TYPO)
    message = repo.git("log", "-1", "--format=%B", fix.branch or "")
    assert message.startswith("The port is parsed from a typo\n")
    assert "Root cause: app.py reads the port from a literal with a typo." in message
    assert "Incident: 0123456789abcdef0123456789abcdef" in message
    assert "Model: claude-sonnet-5-5" in message
    assert "Rule: unknown" in message
    author = repo.git("log", "-1", "--format=%an <%ae>|%cn <%ce>", fix.branch or "").strip()
    assert author == "medic <medic@localhost>|medic <medic@localhost>"


def test_making_a_fix_leaves_branch_index_working_tree_and_local_changes_untouched(
    repo: Repo,
) -> None:
    with_local_change(repo)
    repo.write("README.md", "# project, staged\n")
    repo.git("add", "README.md")
    before = repo.snapshot()
    fix = propose(repo, TYPO)
    assert fix.status is FixStatus.PROPOSED
    assert repo.snapshot() == before
    # The branch holds the fix on the committed file, not the local change.
    assert "# work in progress" not in repo.git("show", f"{fix.branch}:web/app.py")


def test_an_executable_keeps_its_mode_on_the_branch(repo: Repo) -> None:
    fix = propose(repo, Edit("web/start.sh", "python3", "python3 -u"))
    assert fix.status is FixStatus.PROPOSED
    assert repo.git("ls-tree", fix.branch or "", "web/start.sh").split()[0] == "100755"


def test_a_new_file_is_created_on_the_branch(repo: Repo) -> None:
    fix = propose(repo, Edit("web/health.py", "", "OK = True\n"))
    assert fix.status is FixStatus.PROPOSED, fix.refusal_reasons
    assert repo.git("show", f"{fix.branch}:web/health.py") == "OK = True\n"
    assert repo.git("ls-tree", fix.branch or "", "web/health.py").split()[0] == "100644"


def test_an_existing_branch_of_that_name_is_never_overwritten(repo: Repo) -> None:
    repo.git("branch", "medic/fix-01234567-web")
    mine = repo.git("rev-parse", "medic/fix-01234567-web").strip()
    fix = propose(repo, TYPO)
    assert fix.status is FixStatus.REFUSED
    assert fix.refusal_reasons[0].startswith("branch_exists:")
    assert repo.git("rev-parse", "medic/fix-01234567-web").strip() == mine


# --- refusals leave nothing behind ----------------------------------------------------------


MALICIOUS = {
    "path traversal": (Edit("../outside.py", "", "x = 1\n"), "path_outside_repo"),
    "absolute path": (Edit("/etc/passwd", "root", "toor"), "path_absolute"),
    "git hook": (Edit(".git/hooks/pre-commit", "", "#!/bin/sh\ncurl evil\n"), "path_git_dir"),
    "env file": (Edit(".env", "", "DB_PASSWORD=x\n"), "path_secret_file"),
    "env example": (Edit(".env.example", "DB_PASSWORD=", "DB_PASSWORD=x"), "path_secret_file"),
    "gitignored file": (Edit("local.cfg", "", "debug = true\n"), "path_ignored"),
    "symlink": (Edit("docs/app.py", 'int("8080")', "8080"), "path_symlink"),
    "old matches twice": (Edit("web/app.py", "http.server", "socketserver"), "old_ambiguous"),
    "old matches nowhere": (Edit("web/app.py", "int(8080)", "8080"), "old_not_found"),
    "deletion": (Edit("web/config.yaml", "port: 8080\nworkers: 2\n", ""), "file_deleted"),
    "huge diff": (
        Edit("web/app.py", "import http.server\n", "import http.server\n" + "X = 1\n" * 300),
        "too_many_lines",
    ),
    "broken yaml": (Edit("web/config.yaml", "workers: 2", "workers: [2"), "parse_error"),
    "privileged compose": (
        Edit("compose.yaml", "    build: ./web\n", "    build: ./web\n    privileged: true\n"),
        "compose_privileged",
    ),
    "docker socket": (
        Edit(
            "compose.yaml",
            "      - data:/data\n",
            "      - data:/data\n      - /var/run/docker.sock:/var/run/docker.sock\n",
        ),
        "compose_docker_socket",
    ),
    "aws key": (
        Edit(
            "web/app.py",
            "import http.server\n",
            'import http.server\nKEY = "AKIAIOSFODNN7EXAMPLE"\n',
        ),
        "secret_added",
    ),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_a_malicious_proposal_is_refused_with_its_reason_and_leaves_no_trace(
    repo: Repo, case: str
) -> None:
    edit, code = MALICIOUS[case]
    refs, objects, state = repo.refs(), repo.objects(), repo.snapshot()
    # Every kind opted in: these are the checks within the allow-list; the allow-list's
    # own corpus is tests/integration/test_hostile_fixes.py.
    everything = Policy(kinds=frozenset({"compose", "dockerfile", "dependencies"}))
    fix = propose(repo, TYPO, edit, options=replace(OPTIONS, policy=everything))
    assert fix.status is FixStatus.REFUSED
    assert any(reason.startswith(f"{code}: ") for reason in fix.refusal_reasons), (
        fix.refusal_reasons
    )
    assert fix.branch is None and fix.commit is None
    assert repo.refs() == refs
    assert repo.objects() == objects
    assert repo.snapshot() == state
    assert not (repo.path.parent / "outside.py").exists()


def test_every_reason_is_stored_not_only_the_first(repo: Repo) -> None:
    fix = propose(repo, *(MALICIOUS[c][0] for c in ("env file", "git hook", "symlink")))
    codes = [r.split(":")[0] for r in fix.refusal_reasons]
    assert codes == ["path_secret_file", "path_git_dir", "path_symlink"]


def test_the_allow_list_from_settings_limits_paths(repo: Repo) -> None:
    options = replace(OPTIONS, policy=Policy(allow=("web/*.yaml",)))
    fix = propose(repo, TYPO, options=options)
    assert fix.status is FixStatus.REFUSED
    assert fix.refusal_reasons[0].startswith("path_not_allowed: web/app.py is not among")


def test_the_reviewer_tells_the_model_which_edit_failed_and_where_to_look(repo: Repo) -> None:
    review = edit_reviewer(Git(repo.path), OPTIONS)
    messages = review(
        [TYPO, Edit("web/app.py", "port = int('808')", "x"), Edit(".env", "", "A=1")], "web"
    )
    assert messages == [
        # edit 1 applied first, so edit 2 is compared with the file as edit 1 left it
        "edit 2: `old` occurs 0 times in web/app.py; the nearest match is at line 5: "
        "    port = int('8080')",
        "edit 3: .env is a kind of file that holds secrets (.env, keys, certificates); "
        "medic never changes it.",
    ]
    assert review([TYPO], "web") == []


# --- approve --------------------------------------------------------------------------------


def fix_store() -> MemoryStore:
    """A store holding the incident the fixes are made for."""
    store = MemoryStore()
    store.put(incident())
    return store


def proposed(repo: Repo, store: MemoryStore, *edits: Edit) -> Fix:
    fix = propose(repo, *(edits or (TYPO,)))
    assert fix.status is FixStatus.PROPOSED, fix.refusal_reasons
    store.record_fix(fix)
    return fix


def test_approve_fast_forwards_the_base_branch_and_its_working_tree(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    approval = approve(
        fix.id[:6], store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK, by="alice"
    )
    assert approval.fast_forward
    assert repo.git("rev-parse", "main").strip() == fix.commit
    assert "int('8080')" in (repo.path / "web/app.py").read_text()
    assert repo.git("status", "--porcelain") == ""
    stored = store.get_fix(fix.id)
    assert stored.status is FixStatus.APPROVED
    assert stored.decided_by == "alice"
    assert stored.decided_at == CLOCK.now()


def test_approve_keeps_local_changes_in_files_the_fix_does_not_touch(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    repo.write("README.md", "# project, edited\n")
    approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)
    assert (repo.path / "README.md").read_text() == "# project, edited\n"
    assert repo.git("status", "--porcelain").strip() == "M README.md"


def test_approve_makes_a_merge_commit_when_the_base_moved(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    repo.write("README.md", "# project\n\nMoved on.\n")
    moved = repo.commit_all("Base moves on")
    approval = approve(
        fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK, by="bob"
    )
    assert not approval.fast_forward
    head = repo.git("rev-parse", "HEAD").strip()
    assert approval.merged == head
    assert repo.git("log", "-1", "--format=%P", head).split() == [moved, fix.commit]
    assert "int('8080')" in (repo.path / "web/app.py").read_text()
    assert "Moved on." in (repo.path / "README.md").read_text()
    assert "approved by bob" in repo.git("log", "-1", "--format=%B")
    assert repo.git("status", "--porcelain") == ""


def test_approve_refuses_when_an_uncommitted_change_is_in_a_touched_file(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    with_local_change(repo)
    before = repo.snapshot()
    with pytest.raises(FixRefused, match=r"uncommitted changes in web/app.py, which the merge"):
        approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)
    assert repo.snapshot() == before
    assert "# work in progress" in (repo.path / "web/app.py").read_text()
    assert store.get_fix(fix.id).status is FixStatus.PROPOSED


def test_approve_refuses_when_the_base_moved_in_a_conflicting_way(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    repo.write("web/app.py", APP_CONFLICT)
    repo.commit_all("Someone else fixed it differently")
    before = repo.snapshot()
    with pytest.raises(FixRefused, match=r"conflicts with it in web/app.py"):
        approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)
    assert repo.snapshot() == before


APP_CONFLICT = (
    "import http.server\n\n\ndef main():\n    port = 8080\n"
    '    server = http.server.HTTPServer(("", port), http.server.SimpleHTTPRequestHandler)\n'
    '    server.serve_forever()\n\n\nif __name__ == "__main__":\n    main()\n'
)


def test_approve_merges_into_the_base_branch_without_a_working_tree_when_another_is_checked_out(
    repo: Repo,
) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    repo.write("README.md", "# project\n\nMoved on.\n")
    repo.commit_all("Base moves on")
    repo.git("switch", "-q", "-c", "feature")
    with_local_change(repo)
    before = repo.snapshot()
    approval = approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)
    assert approval.into == "main" and not approval.fast_forward
    assert repo.snapshot() == before
    merged = repo.git("rev-parse", "main").strip()
    assert repo.git("show", f"{merged}:web/app.py").count("int('8080')") == 1
    assert "Moved on." in repo.git("show", f"{merged}:README.md")


def test_approve_refuses_when_the_branch_changed_since_medic_made_it(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    repo.git("update-ref", f"refs/heads/{fix.branch}", "HEAD")
    with pytest.raises(FixRefused, match="has changed since medic made it"):
        approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)


def test_a_decided_fix_cannot_be_decided_again(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    approve(fix.id, store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK, by="alice")
    with pytest.raises(FixRefused, match="is approved already"):
        reject(fix.id, store=store, git=Git(repo.path), reason="late", clock=CLOCK)


# --- reject ---------------------------------------------------------------------------------


def test_reject_deletes_the_branch_and_keeps_the_reason(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    before = repo.snapshot()
    rejected = reject(
        fix.id, store=store, git=Git(repo.path), reason="wrong port", clock=CLOCK, by="carol"
    )
    assert repo.git("branch", "--list", fix.branch or "") == ""
    assert rejected.status is FixStatus.REJECTED
    assert store.get_fix(fix.id).reason == "wrong port"
    assert store.get_fix(fix.id).decided_by == "carol"
    assert repo.snapshot() == before


def test_reject_needs_a_reason(repo: Repo) -> None:
    store = fix_store()
    fix = proposed(repo, store)
    with pytest.raises(FixRefused, match="--reason"):
        reject(fix.id, store=store, git=Git(repo.path), reason=" ", clock=CLOCK)
    assert repo.git("branch", "--list", fix.branch or "").strip()


def test_an_unknown_or_shared_prefix_is_not_found(repo: Repo) -> None:
    store = fix_store()
    with pytest.raises(FixNotFound, match="No fix has an id starting with 'zz'"):
        approve("zz", store=store, git=Git(repo.path), author=AUTHOR, clock=CLOCK)


# --- push -----------------------------------------------------------------------------------


def test_the_branch_is_pushed_to_a_local_bare_remote(repo: Repo, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    repo.git("init", "-q", "--bare", str(bare))
    repo.git("remote", "add", "review", str(bare))
    fix = propose(repo, TYPO, options=replace(OPTIONS, remote="review", push="proposed"))
    assert fix.pushed_to == "review" and fix.push_error is None
    pushed = Repo(bare).git("rev-parse", f"refs/heads/{fix.branch}").strip()
    assert pushed == fix.commit


def test_a_failed_push_is_recorded_and_the_local_branch_stays(repo: Repo, tmp_path: Path) -> None:
    repo.git("remote", "add", "review", str(tmp_path / "no-such-remote.git"))
    fix = propose(repo, TYPO, options=replace(OPTIONS, remote="review", push="proposed"))
    assert fix.status is FixStatus.PROPOSED
    assert fix.pushed_to is None
    assert fix.push_error is not None and "git push" in fix.push_error
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit


def test_a_remote_that_does_not_exist_is_recorded_as_a_push_error(repo: Repo) -> None:
    fix = propose(repo, TYPO, options=replace(OPTIONS, remote="nowhere", push="proposed"))
    assert (
        fix.push_error
        == "MEDIC_FIX_REMOTE names 'nowhere', which is not a remote of the repository"
    )
    assert fix.branch is not None
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit
