"""What a fix may touch: an allow-list, with names compared the way file systems fold them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.fixes.guardrails import MODE_FILE, Policy, RepoFacts, fold, path_refusals

FACTS = RepoFacts(
    modes={"web/app.py": MODE_FILE, "web/conf/nginx.conf": MODE_FILE, "Makefile": MODE_FILE},
    build_context="web",
)
ALL = frozenset({"compose", "dockerfile", "dependencies"})


NONE = Policy()


def codes(path: str, policy: Policy = NONE, facts: RepoFacts = FACTS) -> list[str]:
    return [r.code for r in path_refusals(path, facts, policy, creates=False)]


@pytest.mark.parametrize(
    ("name", "folded"),
    [(".GitModules", ".gitmodules"), (".gitattributes. ", ".gitattributes"), ("A.Py", "a.py")],
)
def test_names_fold_like_a_case_folding_file_system(name: str, folded: str) -> None:
    assert fold(name) == folded


def test_by_default_source_and_config_inside_the_build_context_only() -> None:
    assert codes("web/app.py") == []
    assert codes("web/conf/nginx.conf") == []
    assert codes("Makefile") == ["path_not_allowed"]
    assert codes("web/Makefile") == ["path_not_allowed"]  # not source or config by name
    assert codes("docs/app.py") == ["path_not_allowed"]  # outside the context


def test_without_a_build_context_only_fix_paths_open_anything() -> None:
    unbuilt = RepoFacts(modes=FACTS.modes, build_context=None)
    assert codes("web/app.py", facts=unbuilt) == ["path_not_allowed"]
    assert codes("web/app.py", Policy(allow=("web/**",)), unbuilt) == []


def test_kinds_open_only_with_their_opt_in_and_fix_paths_cannot_open_them() -> None:
    for path in ("compose.yaml", "web/Dockerfile", "web/requirements.txt"):
        assert codes(path, Policy(allow=("**",))) == ["path_kind_not_allowed"], path
        assert codes(path, Policy(kinds=ALL)) == [], path


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (".github/workflows/ci.yml", "path_ci"),
        ("web/.GITHUB/workflows/ci.yml", "path_ci"),
        ("web/.gitlab-ci.yml", "path_ci"),
        ("web/.gitattributes", "path_git_control"),
        ("web/.GitIgnore", "path_git_control"),
        ("web/.husky/pre-commit", "path_git_hooks"),
        ("web/.yarnrc.yml", "path_package_settings"),
        ("web/.env.local", "path_secret_file"),
    ],
)
def test_never_editable_whatever_the_settings(path: str, code: str) -> None:
    assert code in codes(path, Policy(allow=("**",), kinds=ALL))


def test_the_configured_hooks_folder_is_protected_in_any_case() -> None:
    facts = RepoFacts(modes={}, build_context="", protected=("tools/hooks",))
    assert "path_git_hooks" in codes("Tools/Hooks/post-merge", Policy(allow=("**",)), facts)
    assert codes("tools/hooksmith.py", Policy(allow=("**",)), facts) == []


PARTS = st.sampled_from(
    ["a", "src", "b.py", ".git", ".GIT", ".github", ".husky", "..", ".", "", "x.", "y ", ".env"]
)


@given(st.lists(PARTS, min_size=1, max_size=4))
def test_a_path_passes_exactly_when_every_part_is_innocent(parts: list[str]) -> None:
    """The oracle: only plain names pass; anything that climbs, needs normalising,
    folds to something git reads, or is a secret is refused."""
    path = "/".join(parts)
    innocent = all(part in ("a", "src", "b.py") for part in parts)
    facts = RepoFacts(modes={}, build_context="")
    refused = path_refusals(path, facts, Policy(allow=("**",)), creates=False)
    assert (not refused) == innocent, (path, refused)
