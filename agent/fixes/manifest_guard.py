"""Dependency manifest changes that run code at install, change where packages come
from, or take a package from somewhere other than its index. Pure: no I/O.

Installing a dependency runs code: install hooks, build backends, build scripts. A fix
proposed by a model is untrusted, so by default it may not touch a dependency manifest
at all; when the operator opts in (``MEDIC_FIX_ALLOW=dependencies``) a fix may bump a
version or add an ordinary dependency from the package index, and these checks refuse
the rest. Each manifest is parsed as its package manager parses it, before and after
the edit, and only what the edit adds or changes is refused.

Codes:

``dependency_install_script``
    Code that runs at install or build: npm and Composer lifecycle scripts, any edit of
    setup.py, pyproject's ``[build-system]`` and build hooks, setup.cfg's
    ``setup_requires``/``cmdclass``, Cargo's ``build``, Maven plugins, pip's
    ``--global-option``/``--config-settings``.
``dependency_code_manifest``
    The manifest is itself a program (Gemfile, gemspec, Gradle, mix.exs, Podfile,
    Package.swift, build.sbt, MSBuild project files): any edit is refused.
``dependency_index``
    Where packages come from: pip's ``--index-url``/``--extra-index-url``/
    ``--find-links``/``--trusted-host``, ``-r``/``-c`` of a URL or of a file outside the
    repository, Poetry, uv, PDM and Pipfile sources, npm ``publishConfig``, Cargo
    ``[registries]``/``[source]``/``[patch]``/``[replace]``, go.mod ``replace`` with
    another module, Composer ``repositories`` and ``config``, conda channels, Maven
    repositories; and options medic does not know.
``dependency_remote_source``
    A dependency taken from a URL, a VCS or a local path instead of the index: pip
    ``git+``/``https://``/``file:``/``name @ url``/paths/``-e``, npm ``git+``/
    ``github:``/``user/repo``/``file:``/``link:`` specs, Poetry/uv/Pipfile/Cargo
    ``git``/``url``/``path``, go.mod ``replace`` with a folder, Maven system scope.
``dependency_lock_edited``
    A lock file (package-lock.json, poetry.lock, go.sum, Cargo.lock, …) edited by hand:
    locks name exact URLs and hashes a reviewer cannot check; the package manager
    writes them.
``dependency_settings``
    A package manager's settings (``is_package_manager_settings``): registries,
    credentials, proxies, hooks, wrapper downloads. Never editable.
``dependency_unreadable``
    The edited manifest no longer parses.

Versions are checked against allow-lists (``_PEP440_SPEC``, ``_NPM_RANGE``, …): a value
that is not plainly a version from the index is refused.
"""

from __future__ import annotations

import configparser
import json
import posixpath
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from xml.etree import ElementTree

import yaml

from agent.fixes.refusal import Refusal, show

# --- what a file is --------------------------------------------------------------------------

_KINDS = {
    "pyproject.toml": "pyproject",
    "setup.py": "setup-py",
    "setup.cfg": "setup-cfg",
    "pipfile": "pipfile",
    "pipfile.lock": "pipfile-lock",
    "poetry.lock": "poetry-lock",
    "uv.lock": "uv-lock",
    "pdm.lock": "pdm-lock",
    "package.json": "npm-package",
    "package-lock.json": "npm-lock",
    "npm-shrinkwrap.json": "npm-lock",
    "yarn.lock": "yarn-lock",
    "pnpm-lock.yaml": "pnpm-lock",
    "bun.lock": "bun-lock",
    "bun.lockb": "bun-lock",
    "go.mod": "go-mod",
    "go.sum": "go-sum",
    "go.work": "go-work",
    "go.work.sum": "go-sum",
    "cargo.toml": "cargo",
    "cargo.lock": "cargo-lock",
    "gemfile": "gemfile",
    "gems.rb": "gemfile",
    "gemfile.lock": "gemfile-lock",
    "gems.locked": "gemfile-lock",
    "composer.json": "composer",
    "composer.lock": "composer-lock",
    "pom.xml": "maven-pom",
    "build.gradle": "gradle",
    "build.gradle.kts": "gradle",
    "settings.gradle": "gradle",
    "settings.gradle.kts": "gradle",
    "mix.exs": "mix",
    "mix.lock": "mix-lock",
    "podfile": "cocoapods",
    "podfile.lock": "cocoapods-lock",
    "package.swift": "swift",
    "package.resolved": "swift-lock",
    "build.sbt": "sbt",
    "packages.config": "nuget",
    "directory.packages.props": "nuget",
    "directory.build.props": "nuget",
    "directory.build.targets": "nuget",
    "environment.yml": "conda",
    "environment.yaml": "conda",
}
_SUFFIX_KINDS = {
    ".gemspec": "gemspec",
    ".csproj": "nuget",
    ".fsproj": "nuget",
    ".vbproj": "nuget",
}
_REQUIREMENTS_NAME = re.compile(
    r"(?:.*[-_.])?(?:requirements|constraints)(?:[-_.].*)?\.(?:txt|in)|requirements\.pip"
)
#: Manifests that are programs in their build tool's language.
CODE_MANIFESTS = frozenset({"gemfile", "gemspec", "gradle", "mix", "cocoapods", "swift", "sbt"})
#: MSBuild project files run targets and tasks; they are programs too.
CODE_MANIFESTS_MSBUILD = frozenset({"nuget"})
LOCK_KINDS = frozenset(
    {
        "pipfile-lock",
        "poetry-lock",
        "uv-lock",
        "pdm-lock",
        "npm-lock",
        "yarn-lock",
        "pnpm-lock",
        "bun-lock",
        "go-sum",
        "cargo-lock",
        "gemfile-lock",
        "composer-lock",
        "mix-lock",
        "cocoapods-lock",
        "swift-lock",
    }
)


def dependency_kind(path: str) -> str | None:
    """Which dependency manifest a path is (``"pip-requirements"``, ``"npm-package"``,
    ``"go-mod"``, …), by name in any case; None for other files."""
    parts = path.lower().split("/")
    name = parts[-1]
    if name in _KINDS:
        return _KINDS[name]
    for suffix, kind in _SUFFIX_KINDS.items():
        if name.endswith(suffix):
            return kind
    if _REQUIREMENTS_NAME.fullmatch(name):
        return "pip-requirements"
    if len(parts) >= 2 and parts[-2] == "requirements" and name.endswith((".txt", ".in")):
        return "pip-requirements"
    return None


#: Package managers' settings files: registries, credentials, proxies, hooks.
#: gradle.properties counts: it sets the build's JVM arguments, proxies and credentials.
#: pnpm-workspace.yaml counts: pnpm reads settings from it, among them which
#: dependencies may run install scripts.
SETTINGS_NAMES = frozenset(
    {
        ".npmrc",
        ".yarnrc",
        ".yarnrc.yml",
        ".pnpmfile.cjs",
        ".pnpmfile.mjs",
        "pnpm-workspace.yaml",
        ".pnp.cjs",
        ".pnp.loader.mjs",
        "bunfig.toml",
        ".bowerrc",
        "pip.conf",
        "pip.ini",
        ".pypirc",
        ".condarc",
        "condarc",
        ".mambarc",
        "poetry.toml",
        "uv.toml",
        "pdm.toml",
        ".pdm.toml",
        "hatch.toml",
        "nuget.config",
        ".gemrc",
        "gradle.properties",
        "gradle-wrapper.properties",
        "gradlew",
        "gradlew.bat",
        "mvnw",
        "mvnw.cmd",
        "settings-security.xml",
        ".netrc",
        "_netrc",
    }
)
#: Folders whose every file is a package manager's settings, wrapper or cache.
SETTINGS_FOLDERS = frozenset({".cargo", ".mvn", ".m2", ".yarn", ".bundle", ".pip", ".nuget"})


def is_package_manager_settings(path: str) -> bool:
    """A package manager's settings file, which no fix may edit: .npmrc, pip.conf,
    .cargo/config.toml, settings.xml under .m2 or .mvn, anything in .yarn, …"""
    parts = [p for p in path.lower().split("/") if p]
    if not parts:
        return False
    return parts[-1] in SETTINGS_NAMES or any(p in SETTINGS_FOLDERS for p in parts[:-1])


# --- the check -------------------------------------------------------------------------------

Refuse = Callable[[str, str], None]


class ManifestError(ValueError):
    """A manifest cannot be parsed."""


def dependency_refusals(path: str, before: bytes | None, after: bytes | None) -> list[Refusal]:
    """Refusals for what an edit adds to a dependency manifest; see the module docstring."""
    if after is None or after == before:
        return []
    shown = show(path)
    refusals: list[Refusal] = []

    def refuse(code: str, message: str) -> None:
        # The message quotes the model's text: show() escapes what a terminal would obey.
        refusal = Refusal(code, f"{shown}: {show(message)}.", path)
        if refusal not in refusals:
            refusals.append(refusal)

    if is_package_manager_settings(path):
        refuse("dependency_settings", "package manager settings are never changed by a fix")
        return refusals
    kind = dependency_kind(path)
    if kind is None:
        return []
    if kind == "setup-py":
        refuse("dependency_install_script", "setup.py runs at install; a fix may not change it")
    elif kind in CODE_MANIFESTS or kind in CODE_MANIFESTS_MSBUILD:
        refuse("dependency_code_manifest", f"a {kind} manifest is a program; a fix may not edit it")
    elif kind in LOCK_KINDS:
        refuse("dependency_lock_edited", "lock files are written by the package manager")
    else:
        check = _CHECKS[kind]
        try:
            new = check.parse(_decode(after), path)
        except ManifestError as e:
            refuse("dependency_unreadable", f"it no longer parses: {e}")
            return refusals
        old: Any = None
        if before is not None:
            try:
                old = check.parse(_decode(before), path)
            except ManifestError:
                old = None  # everything in the new file counts as added
        check.compare(old, new, refuse, path)
    return refusals


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise ManifestError("it is not UTF-8 text") from e


class _Check:
    def __init__(
        self,
        parse: Callable[[str, str], Any],
        compare: Callable[[Any, Any, Refuse, str], None],
    ) -> None:
        self.parse = parse
        self.compare = compare


# --- Python requirements ---------------------------------------------------------------------

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_CLAUSE = rf"(?:===|==|~=|!=|<=|>=|<|>)\s*{_VERSION}"
#: A specifier list such as ``>=1.2,<2``: what an index requirement may say.
_PEP440_SPEC = re.compile(rf"\s*(?:{_CLAUSE}\s*(?:,\s*{_CLAUSE}\s*)*)?")
_REQUIREMENT = re.compile(
    rf"\s*{_NAME}\s*(?:\[\s*(?:{_NAME}(?:\s*,\s*{_NAME})*)?\s*\])?"
    rf"\s*(?:\(\s*{_PEP440_SPEC.pattern}\s*\)|{_PEP440_SPEC.pattern})\s*"
)
_COMMENT = re.compile(r"(^|\s)#.*$")
_INDEX_OPTIONS = frozenset(
    {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "--no-index"}
)
_BUILD_OPTIONS = frozenset({"--global-option", "--install-option", "--config-settings", "-C"})
_INCLUDE_OPTIONS = frozenset({"-r", "--requirement", "-c", "--constraint"})
_EDITABLE_OPTIONS = frozenset({"-e", "--editable"})
#: Options that change nothing about where a package comes from or what runs.
_HARMLESS_OPTIONS = frozenset(
    {"--pre", "--prefer-binary", "--only-binary", "--no-binary", "--require-hashes", "--hash"}
)


def requirement_problem(text: str) -> tuple[str, str] | None:
    """Why a PEP 508 requirement is not a plain name and version from the index."""
    spec = text.split(";", 1)[0].strip()
    if not spec:
        return None
    lowered = spec.lower()
    if "@" in spec or "://" in spec or lowered.startswith(("git+", "hg+", "svn+", "bzr+", "file:")):
        return "dependency_remote_source", f"{spec} is taken from a URL, not the index"
    if spec.startswith((".", "/", "~")) or "/" in spec or "\\" in spec:
        return "dependency_remote_source", f"{spec} is taken from a path, not the index"
    if not _REQUIREMENT.fullmatch(spec):
        return "dependency_remote_source", f"{spec} is not a name and version from the index"
    return None


def _requirement_lines(text: str) -> list[str]:
    """Logical lines of a requirements file: continuations joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = _COMMENT.sub("", pending + raw).strip()
        pending = ""
        if line:
            lines.append(" ".join(line.split()))
    if pending.strip():
        lines.append(" ".join(_COMMENT.sub("", pending).split()))
    return lines


def _option(line: str) -> tuple[str, str]:
    """``--index-url=x``, ``--index-url x``, ``-ix`` → (option, value)."""
    head, _, rest = line.partition(" ")
    if head.startswith("--"):
        name, equals, value = head.partition("=")
        return name, value if equals else rest.strip()
    if len(head) > 2:
        return head[:2], head[2:]
    return head, rest.strip()


def requirement_line_problem(line: str, path: str) -> tuple[str, str] | None:
    """Why one logical line of a requirements file may not be added."""
    if line.startswith("-"):
        option, value = _option(line)
        if option in _INDEX_OPTIONS:
            return "dependency_index", f"{option} changes where packages come from"
        if option in _BUILD_OPTIONS:
            return "dependency_install_script", f"{option} passes settings to a build"
        if option in _EDITABLE_OPTIONS:
            return "dependency_remote_source", f"{option} {value} installs from a path or VCS"
        if option in _INCLUDE_OPTIONS:
            return _include_problem(option, value, path)
        if option in _HARMLESS_OPTIONS:
            return None
        return "dependency_index", f"{option} is an option medic does not know"
    requirement, _, options = line.partition(" --")
    for option in filter(None, options.split(" --")):
        name = "--" + option.split("=", 1)[0].split(" ", 1)[0]
        if name in _BUILD_OPTIONS:
            return "dependency_install_script", f"{name} passes settings to a build"
        if name != "--hash":
            return "dependency_index", f"{name} is an option medic does not know"
    return requirement_problem(requirement)


def _include_problem(option: str, value: str, path: str) -> tuple[str, str] | None:
    if "://" in value or value.lower().startswith("file:"):
        return "dependency_index", f"{option} {value} reads requirements from a URL"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), value))
    if value.startswith(("/", "~")) or joined.startswith("..") or "$" in value:
        return "dependency_index", f"{option} {value} reads a file outside the repository"
    return None


def _compare_requirements(old: Any, new: Any, refuse: Refuse, path: str) -> None:
    known = set(old or [])
    for line in new:
        if line not in known:
            problem = requirement_line_problem(line, path)
            if problem:
                refuse(*problem)


# --- pyproject.toml, Pipfile, setup.cfg ------------------------------------------------------


def _toml(text: str, _path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(str(e)) from e


def _get(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _table(document: Any, *keys: str) -> dict[str, Any]:
    value = _get(document, *keys)
    return value if isinstance(value, dict) else {}


#: pyproject subtrees whose change runs code at build or install.
_PYPROJECT_BUILD: tuple[tuple[str, ...], ...] = (
    ("build-system",),
    ("tool", "poetry", "build"),
    ("tool", "setuptools", "cmdclass"),
    ("tool", "pdm", "build"),
)
#: pyproject subtrees that say where packages come from.
_PYPROJECT_INDEX: tuple[tuple[str, ...], ...] = (
    ("tool", "poetry", "source"),
    ("tool", "uv", "index"),
    ("tool", "uv", "index-url"),
    ("tool", "uv", "extra-index-url"),
    ("tool", "uv", "find-links"),
    ("tool", "uv", "no-index"),
    ("tool", "uv", "index-strategy"),
    ("tool", "uv", "allow-insecure-host"),
    ("tool", "uv", "keyring-provider"),
    ("tool", "uv", "pip"),
    ("tool", "pdm", "source"),
    ("tool", "rye", "sources"),
)
#: Keys of a dependency table entry that take it from somewhere other than the index.
_REMOTE_KEYS = frozenset(
    {"git", "url", "path", "file", "branch", "tag", "rev", "subdirectory", "develop", "editable"}
)
_INDEX_KEYS = frozenset({"source", "index", "registry", "registry-index"})


def _compare_pyproject(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    for keys in _PYPROJECT_BUILD:
        if _get(old, *keys) != _get(new, *keys):
            refuse("dependency_install_script", f"[{'.'.join(keys)}] changes what runs at build")
    for keys in _hook_tables(_table(new, "tool", "hatch"), ("tool", "hatch")):
        if _get(old, *keys) != _get(new, *keys):
            refuse("dependency_install_script", f"[{'.'.join(keys)}] adds a build hook")
    for keys in _PYPROJECT_INDEX:
        if _get(old, *keys) != _get(new, *keys):
            refuse("dependency_index", f"[{'.'.join(keys)}] changes where packages come from")
    lists: list[tuple[str, ...]] = [
        ("project", "dependencies"),
        ("tool", "uv", "dev-dependencies"),
        ("tool", "uv", "constraint-dependencies"),
        ("tool", "uv", "override-dependencies"),
        ("tool", "rye", "dev-dependencies"),
    ]
    for group in (
        "project.optional-dependencies",
        "dependency-groups",
        "tool.pdm.dev-dependencies",
    ):
        lists += [(*group.split("."), name) for name in _table(new, *group.split("."))]
    for keys in lists:
        _compare_requirement_list(_get(old, *keys), _get(new, *keys), refuse)
    poetry_tables: list[tuple[str, ...]] = [
        ("tool", "poetry", "dependencies"),
        ("tool", "poetry", "dev-dependencies"),
    ]
    poetry_tables += [
        ("tool", "poetry", "group", name, "dependencies")
        for name in _table(new, "tool", "poetry", "group")
    ]
    for keys in [*poetry_tables, ("tool", "uv", "sources")]:
        _compare_dependency_table(_table(old, *keys), _table(new, *keys), refuse, _pep440_version)


def _hook_tables(table: dict[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    for key, value in table.items():
        if key == "hooks":
            yield (*prefix, key)
        elif isinstance(value, dict):
            yield from _hook_tables(value, (*prefix, key))


def _compare_requirement_list(old: Any, new: Any, refuse: Refuse) -> None:
    known = {str(x) for x in old} if isinstance(old, list) else set()
    for item in new if isinstance(new, list) else []:
        if isinstance(item, str) and item not in known:
            problem = requirement_problem(item)
            if problem:
                refuse(*problem)


def _pep440_version(value: str) -> bool:
    value = value.strip()
    return value == "*" or _PEP440_SPEC.fullmatch(value) is not None or _poetry_version(value)


def _poetry_version(value: str) -> bool:
    # Poetry's own constraints: ^1.2, ~1.2, 1.2.*, "1.2 || 2.0"
    return re.fullmatch(r"[\w.*^~<>=!, |+-]*", value) is not None and ":" not in value


def _compare_dependency_table(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    refuse: Refuse,
    version_ok: Callable[[str], bool],
) -> None:
    """A table of name → version string, or → table of details (Poetry, uv sources,
    Pipfile, Cargo): what an entry adds beyond a version from the index."""
    for name, spec in new.items():
        previous = old.get(name)
        if spec == previous:
            continue
        for entry in spec if isinstance(spec, list) else [spec]:
            _check_entry(str(name), entry, previous, refuse, version_ok)


def _check_entry(
    name: str,
    entry: Any,
    previous: Any,
    refuse: Refuse,
    version_ok: Callable[[str], bool],
) -> None:
    if isinstance(entry, str):
        if not version_ok(entry):
            refuse("dependency_remote_source", f"{name} = {entry!r} is not a version")
        return
    if not isinstance(entry, dict):
        refuse("dependency_remote_source", f"{name} has a value medic cannot read")
        return
    earlier = previous if isinstance(previous, list) else [previous]
    olds = [p for p in earlier if isinstance(p, dict)]
    for key, value in entry.items():
        if any(o.get(key) == value for o in olds):
            continue
        if key in _REMOTE_KEYS:
            refuse("dependency_remote_source", f"{name} would come from {key} {value}")
        elif key in _INDEX_KEYS:
            refuse("dependency_index", f"{name} would come from the {key} {value}")
        elif key == "version" and isinstance(value, str) and not version_ok(value):
            refuse("dependency_remote_source", f"{name} version {value!r} is not a version")


#: Pipfile tables that are not package categories.
_PIPFILE_TABLES = frozenset({"source", "requires", "pipenv", "scripts"})


def _compare_pipfile(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    if _get(old, "source") != _get(new, "source"):
        refuse("dependency_index", "[[source]] changes where packages come from")
    for table, packages in new.items():
        if table not in _PIPFILE_TABLES and isinstance(packages, dict):
            _compare_dependency_table(_table(old, table), packages, refuse, _pep440_version)


def _setup_cfg(text: str, _path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ManifestError(" ".join(str(e).split())[:200]) from e
    return parser


def _cfg(parser: configparser.ConfigParser | None, section: str, key: str) -> str | None:
    if parser is None or not parser.has_option(section, key):
        return None
    return parser.get(section, key)


def _compare_setup_cfg(
    old: configparser.ConfigParser | None,
    new: configparser.ConfigParser,
    refuse: Refuse,
    path: str,
) -> None:
    for key in ("setup_requires", "cmdclass"):
        if _cfg(old, "options", key) != _cfg(new, "options", key):
            refuse("dependency_install_script", f"[options] {key} changes what runs at install")
    if _cfg(old, "options", "dependency_links") != _cfg(new, "options", "dependency_links"):
        refuse("dependency_index", "[options] dependency_links changes where packages come from")
    for section, code in (
        ("easy_install", "dependency_index"),
        ("aliases", "dependency_install_script"),
    ):
        was = dict(old.items(section)) if old is not None and old.has_section(section) else {}
        now = dict(new.items(section)) if new.has_section(section) else {}
        if was != now:
            refuse(code, f"[{section}] changes how packages are installed")
    fields = [("options", "install_requires"), ("options", "tests_require")]
    if new.has_section("options.extras_require"):
        fields += [("options.extras_require", k) for k in new.options("options.extras_require")]
    for section, key in fields:
        was_text, now_text = _cfg(old, section, key), _cfg(new, section, key)
        _compare_requirements(
            _requirement_lines(was_text or ""), _requirement_lines(now_text or ""), refuse, path
        )


# --- package.json, composer.json -------------------------------------------------------------

_NPM_LIFECYCLE = (
    "install",
    "prepare",
    "prepublish",
    "publish",
    "pack",
    "dependencies",
    "shrinkwrap",
)
#: npm scripts that run at install or pack time.
NPM_INSTALL_HOOKS = frozenset(
    [*_NPM_LIFECYCLE, "prepublishOnly"]
    + [f"{when}{hook}" for hook in _NPM_LIFECYCLE for when in ("pre", "post")]
)
_NPM_SECTIONS = (
    "dependencies",
    "devDependencies",
    "optionalDependencies",
    "peerDependencies",
)
#: A version range or dist-tag from the registry: ``^1.2.3``, ``>=1 <2``, ``1.x``, ``latest``.
_NPM_RANGE = re.compile(r"[\w.*^~<>=|+ -]*")
_NPM_PACKAGE = r"(?:@[\w.-]+/)?[\w.-]+"
_PACKAGE_MANAGER = re.compile(r"(?:npm|yarn|pnpm|bun)@\d[\w.+-]*")


def npm_spec_ok(spec: str) -> bool:
    """A dependency spec that resolves from the registry, or to a workspace package."""
    if _NPM_RANGE.fullmatch(spec):
        return True
    alias = re.fullmatch(rf"npm:{_NPM_PACKAGE}(?:@(.*))?", spec)
    if alias:
        return _NPM_RANGE.fullmatch(alias.group(1) or "") is not None
    workspace = re.fullmatch(r"(?:workspace|catalog):(.*)", spec)
    return (
        workspace is not None and re.fullmatch(r"[\w.*^~<>=| -]*", workspace.group(1)) is not None
    )


def _json(text: str, _path: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as e:
        raise ManifestError(str(e)) from e
    if not isinstance(document, dict):
        raise ManifestError("it is not a JSON object")
    return document


def _compare_npm(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    old_scripts, new_scripts = _table(old, "scripts"), _table(new, "scripts")
    for hook, command in new_scripts.items():
        if hook in NPM_INSTALL_HOOKS and old_scripts.get(hook) != command:
            refuse("dependency_install_script", f"the {hook} script runs at install")
    if _get(old, "gypfile") != _get(new, "gypfile"):
        refuse("dependency_install_script", "gypfile changes whether node-gyp runs at install")
    for key in ("publishConfig", "registry"):
        if _get(old, key) != _get(new, key):
            refuse("dependency_index", f"{key} changes which registry is used")
    manager = _get(new, "packageManager")
    if manager != _get(old, "packageManager") and not (
        isinstance(manager, str) and _PACKAGE_MANAGER.fullmatch(manager.split("+", 1)[0])
    ):
        refuse("dependency_remote_source", f"packageManager {manager} is not a registry release")
    for section in _NPM_SECTIONS:
        _compare_npm_specs(_table(old, section), _table(new, section), section, refuse)
    for keys in (("overrides",), ("resolutions",), ("pnpm", "overrides")):
        _compare_npm_specs(_table(old, *keys), _table(new, *keys), ".".join(keys), refuse)


def _compare_npm_specs(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str, refuse: Refuse
) -> None:
    for name, spec in new.items():
        previous = old.get(name)
        if spec == previous:
            continue
        if isinstance(spec, dict):  # nested overrides
            _compare_npm_specs(previous if isinstance(previous, dict) else {}, spec, where, refuse)
        elif not isinstance(spec, str):
            refuse("dependency_remote_source", f"{where} {name} has a value medic cannot read")
        elif not (npm_spec_ok(spec) or re.fullmatch(r"\$[\w@/.-]+", spec)):
            refuse("dependency_remote_source", f"{where} {name} would come from {spec}")


_COMPOSER_EVENTS = re.compile(r"(?:pre|post)-[\w-]+|init|command")
#: Composer settings that change nothing about where packages come from or what runs.
_COMPOSER_HARMLESS_CONFIG = frozenset(
    {
        "sort-packages",
        "optimize-autoloader",
        "classmap-authoritative",
        "apcu-autoloader",
        "platform",
        "platform-check",
        "preferred-install",
        "process-timeout",
    }
)
_COMPOSER_CONSTRAINT = re.compile(r"[\w.*^~<>=|, @!-]*(?:#[0-9a-fA-F]+)?")


def _compare_composer(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    old_scripts, new_scripts = _table(old, "scripts"), _table(new, "scripts")
    for event, command in new_scripts.items():
        if _COMPOSER_EVENTS.fullmatch(event) and old_scripts.get(event) != command:
            refuse("dependency_install_script", f"the {event} script runs at install")
    if _get(old, "repositories") != _get(new, "repositories"):
        refuse("dependency_index", "repositories changes where packages come from")
    old_config, new_config = _table(old, "config"), _table(new, "config")
    for key in set(old_config) | set(new_config):
        if old_config.get(key) == new_config.get(key) or key in _COMPOSER_HARMLESS_CONFIG:
            continue
        if key == "allow-plugins":
            refuse("dependency_install_script", "config.allow-plugins lets plugins run")
        else:
            refuse("dependency_index", f"config.{key} changes how packages are fetched")
    for section in ("require", "require-dev"):
        old_specs, new_specs = _table(old, section), _table(new, section)
        for name, spec in new_specs.items():
            if spec != old_specs.get(name) and not (
                isinstance(spec, str) and _COMPOSER_CONSTRAINT.fullmatch(spec)
            ):
                refuse("dependency_remote_source", f"{section} {name} would come from {spec}")


# --- Cargo.toml ------------------------------------------------------------------------------

_CARGO_SECTIONS = ("dependencies", "dev-dependencies", "dev_dependencies", "build-dependencies")
_CARGO_VERSION = re.compile(r"[\w.*^~<>=, +-]*")


def _cargo_tables(document: Any) -> Iterator[tuple[str, ...]]:
    for section in (*_CARGO_SECTIONS, "build_dependencies"):
        yield (section,)
        for target in _table(document, "target"):
            yield ("target", target, section)
    yield ("workspace", "dependencies")


def _compare_cargo(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    for section in ("registries", "source", "patch", "replace"):
        if _get(old, section) != _get(new, section):
            refuse("dependency_index", f"[{section}] changes where crates come from")
    if _get(old, "package", "build") != _get(new, "package", "build"):
        refuse("dependency_install_script", "package.build changes the build script")
    for keys in _cargo_tables(new):
        _compare_dependency_table(
            _table(old, *keys),
            _table(new, *keys),
            refuse,
            lambda v: _CARGO_VERSION.fullmatch(v) is not None,
        )


# --- go.mod, go.work -------------------------------------------------------------------------

_GO_VERBS = frozenset(
    {"module", "go", "toolchain", "require", "exclude", "replace", "retract", "godebug", "tool"}
)
_GO_WORK_VERBS = frozenset({"go", "toolchain", "use", "replace", "godebug"})
_GO_VERSION = re.compile(r"v\d+\.\d+\.\d+[\w.+-]*")


def _go_entries(text: str, path: str) -> list[tuple[str, tuple[str, ...]]]:
    """go.mod's directives, one (verb, words) per entry, blocks unrolled."""
    verbs = _GO_WORK_VERBS if path.lower().endswith("go.work") else _GO_VERBS
    entries: list[tuple[str, tuple[str, ...]]] = []
    block: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        words = tuple(raw.split("//", 1)[0].split())
        if not words:
            continue
        if block is not None:
            if words == (")",):
                block = None
            else:
                entries.append((block, words))
            continue
        verb = words[0]
        if verb not in verbs:
            raise ManifestError(f"unknown directive {verb[:40]!r} at line {number}")
        if words[1:] == ("(",):
            block = verb
        elif words[1:] == ("(", ")"):
            continue
        else:
            entries.append((verb, words[1:]))
    if block is not None:
        raise ManifestError(f"the {block} block is never closed")
    for verb, words in entries:
        if verb == "require" and (len(words) != 2 or not _GO_VERSION.fullmatch(words[1])):
            raise ManifestError(f"require {' '.join(words)} is not a module and a version")
        if verb == "replace" and "=>" not in words:
            raise ManifestError(f"replace {' '.join(words)} has no =>")
    return entries


def _compare_go(old: Any, new: Any, refuse: Refuse, _path: str) -> None:
    known = set(old or [])
    for verb, words in new:
        if (verb, words) in known or verb != "replace":
            continue
        arrow = words.index("=>")
        source, target = words[0], words[arrow + 1 : arrow + 2]
        destination = target[0] if target else ""
        if destination.startswith(("./", "../", "/")) or re.match(r"[A-Za-z]:\\", destination):
            refuse("dependency_remote_source", f"replace {source} takes it from {destination}")
        elif destination != source:
            refuse("dependency_index", f"replace {source} takes it from {destination}")


# --- conda environment.yml -------------------------------------------------------------------


def _yaml_mapping(text: str, _path: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ManifestError(" ".join(str(e).split())[:200]) from e
    if not isinstance(document, dict):
        raise ManifestError("it is not a mapping")
    return document


def _compare_conda(old: Any, new: Any, refuse: Refuse, path: str) -> None:
    if _get(old, "channels") != _get(new, "channels"):
        refuse("dependency_index", "channels change where packages come from")
    old_deps = _get(old, "dependencies") if isinstance(_get(old, "dependencies"), list) else []
    new_deps = _get(new, "dependencies") if isinstance(_get(new, "dependencies"), list) else []
    for dependency in new_deps:
        if isinstance(dependency, dict):
            was = next((d.get("pip") for d in old_deps if isinstance(d, dict)), None)
            now = dependency.get("pip")
            _compare_requirements(
                [" ".join(str(x).split()) for x in was or []],
                [" ".join(str(x).split()) for x in now or []],
                refuse,
                path,
            )
        elif dependency not in old_deps:
            text = str(dependency)
            if "::" in text:
                refuse("dependency_index", f"{text} names its channel")
            elif not re.fullmatch(
                r"[\w.-]+\s*(?:[=<>!~]=?\s*[\w.*+!-]+\s*,?\s*)*(?:=[\w.*]+)?", text
            ):
                refuse("dependency_remote_source", f"{text} is not a package and a version")


# --- pom.xml ---------------------------------------------------------------------------------

#: Maven elements and what a change inside them means.
_POM_ELEMENTS = {
    "repositories": ("dependency_index", "changes where artifacts come from"),
    "pluginRepositories": ("dependency_index", "changes where plugins come from"),
    "distributionManagement": ("dependency_index", "changes where artifacts are published"),
    "plugins": ("dependency_install_script", "changes the plugins that run at build"),
    "pluginManagement": ("dependency_install_script", "changes the plugins that run at build"),
    "extensions": ("dependency_install_script", "changes the extensions that run at build"),
    "parent": ("dependency_index", "changes the parent POM"),
}


def _pom(text: str, _path: str) -> ElementTree.Element:
    if re.search(r"<!(?:DOCTYPE|ENTITY)", text):
        raise ManifestError("it declares a DTD or entities")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise ManifestError(str(e)) from e
    for element in root.iter():
        if isinstance(element.tag, str):
            element.tag = element.tag.rsplit("}", 1)[-1]
        element.text = (element.text or "").strip()
        element.tail = ""
    return root


def _pom_parts(root: ElementTree.Element | None, tag: str) -> Counter[str]:
    if root is None:
        return Counter()
    return Counter(ElementTree.tostring(e, encoding="unicode") for e in root.iter(tag))


def _compare_pom(
    old: ElementTree.Element | None, new: ElementTree.Element, refuse: Refuse, _path: str
) -> None:
    for tag, (code, what) in _POM_ELEMENTS.items():
        if _pom_parts(new, tag) - _pom_parts(old, tag):
            refuse(code, f"<{tag}> {what}")
    was = _pom_parts(old, "dependency")
    for dependency in new.iter("dependency"):
        text = ElementTree.tostring(dependency, encoding="unicode")
        system = dependency.find("systemPath") is not None or (
            (dependency.findtext("scope") or "").strip() == "system"
        )
        if system and not was[text]:
            refuse("dependency_remote_source", "a system-scoped dependency comes from a path")


def _requirements(text: str, _path: str) -> list[str]:
    return _requirement_lines(text)


_CHECKS: dict[str, _Check] = {
    "pip-requirements": _Check(_requirements, _compare_requirements),
    "pyproject": _Check(_toml, _compare_pyproject),
    "pipfile": _Check(_toml, _compare_pipfile),
    "setup-cfg": _Check(_setup_cfg, _compare_setup_cfg),
    "npm-package": _Check(_json, _compare_npm),
    "composer": _Check(_json, _compare_composer),
    "cargo": _Check(_toml, _compare_cargo),
    "go-mod": _Check(_go_entries, _compare_go),
    "go-work": _Check(_go_entries, _compare_go),
    "conda": _Check(_yaml_mapping, _compare_conda),
    "maven-pom": _Check(_pom, _compare_pom),
}
