"""The guardrails every proposed edit passes before medic commits it (pure: no git here)."""

from __future__ import annotations

import pytest

from agent.fixes.compose_guard import compose_refusals, is_compose_file
from agent.fixes.guardrails import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_SUBMODULE,
    MODE_SYMLINK,
    Checked,
    Policy,
    RepoFacts,
    check_edits,
    glob_match,
    nearest_match,
    review_messages,
)
from agent.fixes.secrets import secret_findings
from agent.model import Edit

MAIN_PY = (
    b'import os\n\n\ndef main():\n    print("hello")\n\n\nif __name__ == "__main__":\n    main()\n'
)
COMPOSE = b"""services:
  web:
    build: ./web
    volumes:
      - data:/data
  worker:
    image: medic-test/busybox
volumes:
  data: {}
"""

FILES = {
    "app/main.py": MAIN_PY,
    "app/run.sh": b"#!/bin/sh\nexec python app/main.py\n",
    "config/app.yaml": b"port: 8080\nname: web\n",
    "config/app.json": b'{"port": 8080}\n',
    "pyproject.toml": b'[project]\nname = "x"\n',
    "compose.yaml": COMPOSE,
    "logo.png": b"\x89PNG\r\n\x1a\n\x00\x00",
    "README.md": b"# app\n",
    "link": b"app/main.py",
    "linkdir": b"app",
    "vendor/lib": b"",
}
MODES = {
    **{path: MODE_FILE for path in FILES},
    "app/run.sh": MODE_EXECUTABLE,
    "link": MODE_SYMLINK,
    "linkdir": MODE_SYMLINK,
    "vendor/lib": MODE_SUBMODULE,
}
FACTS = RepoFacts(
    modes=MODES,
    contents={p: c for p, c in FILES.items() if MODES[p] in (MODE_FILE, MODE_EXECUTABLE)},
    ignored=frozenset({"local.cfg", "app/cache.db"}),
    build_context="",
)
#: Every kind opted in: these tests are about the checks, not about the allow-list
#: (tests/unit/test_fix_allow_list.py).
POLICY = Policy(kinds=frozenset({"compose", "dockerfile", "dependencies"}))


def check(*edits: Edit, facts: RepoFacts = FACTS, policy: Policy = POLICY) -> Checked:
    return check_edits(edits, facts, policy)


def codes(result: Checked) -> list[str]:
    return [r.code for r in result.refusals]


def test_a_valid_edit_yields_the_edited_file_with_its_mode_and_no_refusal() -> None:
    result = check(Edit("app/main.py", 'print("hello")', 'print("hello, world")'))
    assert result.ok, result.refusals
    (change,) = result.changes
    assert change.path == "app/main.py"
    assert change.after == MAIN_PY.replace(b'"hello"', b'"hello, world"')
    assert change.mode == MODE_FILE
    assert change.changed_line_count() == 2


def test_an_executable_file_keeps_its_mode() -> None:
    result = check(Edit("app/run.sh", "exec python", "exec python3"))
    assert result.ok
    assert result.changes[0].mode == MODE_EXECUTABLE


def test_an_empty_old_creates_a_new_file_in_a_folder_that_holds_tracked_files() -> None:
    result = check(Edit("app/util.py", "", "X = 1\n"))
    assert result.ok, result.refusals
    assert result.changes[0].before is None
    assert result.changes[0].mode == MODE_FILE


def test_an_empty_old_is_refused_when_the_file_exists() -> None:
    assert codes(check(Edit("app/main.py", "", "X = 1\n"))) == ["file_exists"]


def test_edits_of_one_file_apply_in_order() -> None:
    result = check(
        Edit("app/main.py", 'print("hello")', 'print("a")'),
        Edit("app/main.py", 'print("a")', 'print("b")'),
    )
    assert result.ok
    assert b'print("b")' in result.changes[0].after


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../etc/passwd", "path_outside_repo"),
        ("app/../../etc/passwd", "path_outside_repo"),
        ("/etc/passwd", "path_absolute"),
        ("~/x", "path_absolute"),
        ("C:/x.py", "path_absolute"),
        ("app\\main.py", "path_not_normalised"),
        ("./app/main.py", "path_not_normalised"),
        ("app//main.py", "path_not_normalised"),
        ("app/main.py/", "path_not_normalised"),
        ("app/ma\nin.py", "path_not_normalised"),
        ("", "path_empty"),
        (".git/hooks/pre-commit", "path_git_dir"),
        ("app/.git/config", "path_git_dir"),
        (".GIT/config", "path_git_dir"),
        (".gitmodules", "path_git_control"),
        (".env", "path_secret_file"),
        (".env.production", "path_secret_file"),
        ("deploy/server.key", "path_secret_file"),
        ("certs/site.pem", "path_secret_file"),
        ("home/id_ed25519", "path_secret_file"),
        ("local.cfg", "path_ignored"),
        ("link", "path_symlink"),
        ("linkdir/main.py", "path_symlink"),
        ("vendor/lib", "path_submodule"),
        ("app", "path_is_directory"),
        ("app/main.py/x", "path_not_directory"),
    ],
)
def test_a_path_medic_must_not_write_is_refused_with_its_code(path: str, code: str) -> None:
    result = check(Edit(path, "anything", "else"))
    assert code in codes(result)
    assert not result.changes


def test_a_refusal_reads_as_code_and_sentence() -> None:
    (refusal,) = check(Edit(".env", "A=1", "A=2")).refusals
    assert str(refusal).startswith("path_secret_file: .env is a kind of file that holds secrets")


def test_by_default_a_new_file_in_a_new_folder_is_not_allowed() -> None:
    assert codes(check(Edit("newdir/x.py", "", "X = 1\n"))) == ["path_not_allowed"]


def test_a_new_file_in_an_ignored_path_is_refused_as_ignored() -> None:
    assert codes(check(Edit("app/cache.db", "", "x"))) == ["path_ignored"]


def test_the_allow_list_takes_globs_with_double_star() -> None:
    policy = Policy(allow=("app/**/*.py", "*.toml"), kinds=POLICY.kinds)
    assert check(Edit("app/main.py", "hello", "hi"), policy=policy).ok
    assert check(Edit("pyproject.toml", '"x"', '"y"'), policy=policy).ok
    assert codes(check(Edit("README.md", "app", "web"), policy=policy)) == ["path_not_allowed"]
    assert codes(check(Edit("config/app.yaml", "8080", "80"), policy=policy)) == [
        "path_not_allowed"
    ]


def test_the_allow_list_never_opens_a_secret_file_or_git() -> None:
    policy = Policy(allow=("**",))
    assert codes(check(Edit(".env", "A", "B"), policy=policy)) == ["path_secret_file"]
    assert codes(check(Edit(".git/config", "A", "B"), policy=policy)) == ["path_git_dir"]


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("app/**", "app/a/b.py", True),
        ("**/Dockerfile", "Dockerfile", True),
        ("**/Dockerfile", "web/Dockerfile", True),
        ("*.py", "app/main.py", False),
        ("app/*.py", "app/main.py", True),
        ("app/*.py", "app/sub/main.py", False),
        ("app/?.py", "app/a.py", True),
        ("app/[ab].py", "app/c.py", False),
    ],
)
def test_glob_patterns(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


def test_old_matching_nowhere_is_refused_and_says_where_the_nearest_match_is() -> None:
    (refusal,) = check(Edit("app/main.py", 'print("helo")', 'print("hi")')).refusals
    assert refusal.code == "old_not_found"
    assert "line 5" in refusal.message
    assert 'print("hello")' in refusal.message


def test_old_matching_twice_is_refused_with_both_lines() -> None:
    (refusal,) = check(Edit("app/main.py", "main()", "run()")).refusals
    assert refusal.code == "old_ambiguous"
    assert "2 times" in refusal.message
    assert "lines 4, 9" in refusal.message


def test_matching_is_exact_not_fuzzy_about_white_space() -> None:
    assert codes(check(Edit("app/main.py", 'print( "hello")', "x"))) == ["old_not_found"]


def test_an_edit_of_a_file_that_does_not_exist_is_refused() -> None:
    assert "file_missing" in codes(check(Edit("app/other.py", "x", "y")))


def test_emptying_a_file_counts_as_deleting_it() -> None:
    assert codes(check(Edit("README.md", "# app\n", ""))) == ["file_deleted"]


def test_creating_an_empty_file_is_refused() -> None:
    assert codes(check(Edit("app/empty.py", "", "  \n"))) == ["file_empty"]


def test_an_edit_that_changes_nothing_is_refused() -> None:
    assert codes(check(Edit("README.md", "app", "app"))) == ["no_change"]


def test_a_binary_file_is_refused() -> None:
    everything = Policy(allow=("**",))
    assert codes(check(Edit("logo.png", "PNG", "GIF"), policy=everything)) == ["binary_file"]


def test_a_nul_byte_in_new_text_is_refused() -> None:
    assert codes(check(Edit("README.md", "app", "a\x00p"))) == ["binary_file"]


def test_more_files_than_the_cap_are_refused() -> None:
    edits = [Edit(f"app/new{i}.py", "", f"X = {i}\n") for i in range(3)]
    result = check(*edits, policy=Policy(max_files=2))
    assert "too_many_files" in codes(result)


def test_a_huge_diff_is_refused() -> None:
    big = "".join(f"LINE_{i} = {i}\n" for i in range(150))
    result = check(
        Edit("app/main.py", "import os\n", "import os\n" + big), policy=Policy(max_lines=100)
    )
    assert codes(result) == ["too_many_lines"]
    assert "150 lines" in result.refusals[0].message


def test_yaml_that_no_longer_parses_is_refused() -> None:
    assert codes(check(Edit("config/app.yaml", "port: 8080", "port: [8080"))) == ["parse_error"]


def test_json_and_toml_that_no_longer_parse_are_refused() -> None:
    assert codes(check(Edit("config/app.json", "8080}", "8080,}"))) == ["parse_error"]
    assert "parse_error" in codes(check(Edit("pyproject.toml", 'name = "x"', "name = x")))


def test_python_that_no_longer_compiles_is_refused_with_its_line() -> None:
    (refusal,) = check(Edit("app/main.py", 'print("hello")', 'print("hello"')).refusals
    assert refusal.code == "python_syntax"
    assert "app/main.py no longer compiles at line" in refusal.message


def test_python_with_a_warning_but_no_error_compiles() -> None:
    assert check(Edit("app/main.py", 'print("hello")', 'print("\\d")')).ok


@pytest.mark.parametrize(
    ("added", "kind"),
    [
        ('AWS_KEY = "AKIAIOSFODNN7EXAMPLE"', "AWS access key"),
        ('TOKEN = "ghp_' + "a" * 36 + '"', "GitHub token"),
        ('SLACK = "xoxb-123456789012-abcdefghij"', "Slack token"),
        ('STRIPE = "sk_live_' + "a1" * 12 + '"', "Stripe key"),
        ('KEY = "sk-ant-api03-' + "x" * 40 + '"', "Anthropic API key"),
        ('PEM = "-----BEGIN RSA PRIVATE KEY-----"', "private key"),
        (
            'JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N"',
            "JSON Web Token",
        ),
        ('DB = "postgresql://medic:hunter2hunter2@db/medic"', "password in a URL"),
    ],
)
def test_an_added_secret_is_refused_without_echoing_it(added: str, kind: str) -> None:
    result = check(Edit("app/main.py", "import os\n", f"import os\n{added}\n"))
    assert codes(result) == ["secret_added"]
    assert kind in result.refusals[0].message
    value = added.split('"')[1]
    assert value not in result.refusals[0].message


def test_a_secret_already_in_the_file_does_not_block_an_unrelated_edit() -> None:
    facts = RepoFacts(
        modes={"app/settings.py": MODE_FILE},
        contents={"app/settings.py": b'KEY = "AKIAIOSFODNN7EXAMPLE"\nDEBUG = True\n'},
        build_context="",
    )
    assert check(Edit("app/settings.py", "DEBUG = True", "DEBUG = False"), facts=facts).ok


@pytest.mark.parametrize(
    "text",
    [
        "REDIS_HOST=redis",
        "url = f'postgresql://{user}:${DB_PASSWORD}@db/app'",
        "password = os.environ['DB_PASSWORD']",
        "import hashlib\nprint(hashlib.sha256(b'x').hexdigest())",
    ],
)
def test_ordinary_code_is_not_a_secret(text: str) -> None:
    assert secret_findings(text) == []


def edit_compose(old: str, new: str) -> Checked:
    return check(Edit("compose.yaml", old, new))


def test_compose_files_are_recognised_by_name() -> None:
    for name in ("compose.yaml", "deploy/docker-compose.prod.yml", "compose.override.yml"):
        assert is_compose_file(name)
    assert not is_compose_file("config/app.yaml")


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("    build: ./web\n", "    build: ./web\n    privileged: true\n", "compose_privileged"),
        (
            "    build: ./web\n",
            "    build: ./web\n    network_mode: host\n",
            "compose_host_network",
        ),
        ("    build: ./web\n", "    build: ./web\n    pid: host\n", "compose_host_pid"),
        ("    build: ./web\n", "    build: ./web\n    cap_add: [SYS_ADMIN]\n", "compose_cap_add"),
        (
            "    build: ./web\n",
            "    build: ./web\n    devices: ['/dev/sda:/dev/sda']\n",
            "compose_devices",
        ),
        (
            "      - data:/data\n",
            "      - data:/data\n      - /var/run/docker.sock:/var/run/docker.sock\n",
            "compose_docker_socket",
        ),
        (
            "      - data:/data\n",
            "      - data:/data\n      - {type: bind, source: /run/docker.sock, target: /s}\n",
            "compose_docker_socket",
        ),
        ("      - data:/data\n", "      - /:/host\n", "compose_host_root"),
        ("    volumes:\n      - data:/data\n", "", "compose_volume_removed"),
    ],
)
def test_a_compose_change_that_widens_power_or_drops_a_volume_is_refused(
    old: str, new: str, code: str
) -> None:
    assert code in codes(edit_compose(old, new))


def test_removing_a_named_volume_is_refused() -> None:
    result = check(Edit("compose.yaml", "volumes:\n  data: {}\n", ""))
    assert "compose_volume_removed" in codes(result)


def test_a_harmless_compose_change_passes() -> None:
    assert edit_compose("image: medic-test/busybox", "image: medic-test/busybox:1").ok


def test_keeping_an_existing_privileged_setting_is_not_a_new_one() -> None:
    before = b"services:\n  a:\n    privileged: true\n    image: x\n"
    after = b"services:\n  a:\n    privileged: true\n    image: y\n"
    assert compose_refusals("compose.yaml", before, after) == []


def test_every_problem_is_reported_not_only_the_first() -> None:
    result = check(Edit(".env", "A", "B"), Edit("/etc/passwd", "x", "y"), Edit("link", "a", "b"))
    assert codes(result) == ["path_secret_file", "path_absolute", "path_symlink"]


def test_no_edits_is_a_refusal() -> None:
    assert codes(check()) == ["no_edits"]


def test_review_messages_name_each_failed_edit_and_the_nearest_line() -> None:
    contents = {"app/main.py": MAIN_PY.decode()}
    messages = review_messages(
        [
            Edit("app/main.py", "import os", "import sys"),
            Edit("app/main.py", 'print("helo")', "x"),
            Edit("app/main.py", "main()", "x"),
            Edit("app/missing.py", "x", "y"),
        ],
        contents,
    )
    assert messages == [
        "edit 2: `old` occurs 0 times in app/main.py; the nearest match is at line 5: "
        '    print("hello")',
        "edit 3: `old` occurs 2 times in app/main.py (at lines 4, 9); include more of the "
        "surrounding lines so that it occurs once",
        "edit 4: app/missing.py is not a file in the repository",
    ]


def test_review_messages_are_empty_when_every_edit_matches_once() -> None:
    assert (
        review_messages(
            [Edit("app/main.py", "import os", "import sys")], {"app/main.py": MAIN_PY.decode()}
        )
        == []
    )


def test_nearest_match_of_a_multi_line_old_points_at_its_first_line() -> None:
    text = "a = 1\ndef main():\n    print('hello')\nb = 2\n"
    assert nearest_match(text, "def main():\n    print('helo')\n") == (
        2,
        "def main():\n    print('hello')",
    )
