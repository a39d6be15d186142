"""Every check a proposed edit must pass before medic commits it. Pure: no I/O.

The edits come from a model and are untrusted, like a request body: each one is
checked against facts about the repository read by ``agent.fixes.git`` (the tracked
files and their modes at the base commit, the contents of the files the edits name,
which paths git ignores) and against the operator's policy (MEDIC_FIX_PATHS and the
caps). Every problem found becomes a ``Refusal`` with a stable code and one sentence;
a proposal with any refusal is never committed. docs/fixes.md lists the codes and why
each check exists.

What a fix may touch is an allow-list (``path_refusals``):

- never, whatever the settings say: anything git reads as control or code (``.git``
  and every ``.git*`` name, ``.lfsconfig``, the hooks folders ``.husky/`` and
  ``.githooks/``, the folder ``core.hooksPath`` names and config files the repository's
  configuration includes), CI definitions, package-manager settings and secret files.
  Names are compared as a case-folding file system with trailing dots and spaces
  dropped would compare them, so ``.GitHub/`` and ``.gitmodules. `` are what they are;
- compose files, Dockerfiles and dependency manifests only when MEDIC_FIX_ALLOW names
  their kind (``compose``, ``dockerfile``, ``dependencies``), and then their own checks
  apply;
- everything else only inside the region: MEDIC_FIX_PATHS when set, else application
  source and config files (by extension) inside the service's build context.

Matching is exact: an edit's ``old`` text must occur exactly once in its file. An
empty ``old`` creates a file, which must not exist yet. Several edits of one file
apply in order, each to the result of the ones before it. An edit that holds a
control character other than tab and newline, or a bidirectional or invisible
formatting character, is refused: what a person reads in the diff must be what is
merged.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import posixpath
import re
import tomllib
import unicodedata
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from agent.fixes.compose_guard import compose_refusals, is_compose_file
from agent.fixes.dockerfile_guard import dockerfile_refusals, is_dockerfile
from agent.fixes.manifest_guard import (
    dependency_kind,
    dependency_refusals,
    is_package_manager_settings,
)
from agent.fixes.refusal import Refusal, show
from agent.fixes.secrets import secret_findings
from agent.model import Edit
from agent.secrets import HIDDEN, is_secret_file_name

#: git's modes for the kinds of tree entries medic meets.
MODE_FILE = "100644"
MODE_EXECUTABLE = "100755"
MODE_SYMLINK = "120000"
MODE_SUBMODULE = "160000"
REGULAR_MODES = frozenset({MODE_FILE, MODE_EXECUTABLE})

#: Files larger than this are not edited: a model has no business rewriting them, and
#: the line diff of two huge files is slow.
MAX_FILE_BYTES = 1_000_000

#: Names (after folding, see ``fold``) that steer git itself, besides every ``.git*``.
GIT_CONTROL_NAMES = frozenset({".lfsconfig"})

#: Folders of hooks that tools install into git (husky, plain ``.githooks``).
HOOK_FOLDERS = frozenset({".husky", ".githooks", ".git-hooks", ".hooks"})

#: CI and developer-tool definitions that run code with the repository's secrets or on
#: a developer's machine: folders and files, matched against one folded name.
CI_FOLDERS = frozenset(
    {
        ".github",
        ".gitlab",
        ".circleci",
        ".buildkite",
        ".woodpecker",
        ".teamcity",
        ".semaphore",
        ".tekton",
        ".harness",
        ".azure-pipelines",
        ".devcontainer",
        ".vscode",
        ".idea",
        ".gitea",
        ".forgejo",
        ".ci",
    }
)
CI_FILES = (
    ".gitlab-ci.yml",
    ".gitlab-ci.yaml",
    "jenkinsfile",
    "jenkinsfile.*",
    "*.jenkinsfile",
    ".travis.yml",
    "azure-pipelines*.yml",
    "azure-pipelines*.yaml",
    ".drone.yml",
    ".drone.yaml",
    ".drone.star",
    "bitbucket-pipelines.yml",
    ".woodpecker.yml",
    ".woodpecker.yaml",
    "appveyor.yml",
    ".appveyor.yml",
    "cloudbuild.yml",
    "cloudbuild.yaml",
    "buildspec.yml",
    "buildspec.yaml",
    ".cirrus.yml",
    "codefresh.yml",
    ".gitpod.yml",
    ".pre-commit-config.yaml",
    ".pre-commit-hooks.yaml",
    "lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yml",
    ".lefthook.yaml",
    "lefthook-local.yml",
    ".envrc",
    ".replit",
    "netlify.toml",
    "vercel.json",
)

#: Application source and config, by extension: what a fix may change by default,
#: inside the service's build context.
SOURCE_AND_CONFIG = frozenset(
    {
        # source
        "py", "pyi", "js", "mjs", "cjs", "jsx", "ts", "mts", "cts", "tsx", "go", "rb",
        "php", "java", "kt", "scala", "rs", "c", "h", "cc", "cpp", "cxx", "hpp", "hh",
        "cs", "fs", "swift", "m", "ex", "exs", "erl", "hrl", "clj", "cljs", "lua", "pl",
        "pm", "r", "jl", "dart", "vue", "svelte", "sh", "bash", "sql", "graphql", "gql",
        "proto",
        # web assets and templates
        "html", "htm", "css", "scss", "sass", "less", "tpl", "tmpl", "j2", "jinja",
        "jinja2", "mustache", "hbs", "ejs", "pug", "erb",
        # config
        "yml", "yaml", "json", "json5", "toml", "ini", "cfg", "conf", "config",
        "properties", "xml", "txt", "md", "rst", "csv",
    }
)  # fmt: skip

#: The kinds of file MEDIC_FIX_ALLOW opts in (config.FIX_ALLOW_KINDS).
KIND_COMPOSE = "compose"
KIND_DOCKERFILE = "dockerfile"
KIND_DEPENDENCIES = "dependencies"


@dataclass(frozen=True)
class RepoFacts:
    """What the checks need to know about the repository at the fix's base commit.

    ``modes`` maps every tracked path to its git mode; ``contents`` holds the bytes of
    the tracked regular files the edits name; ``ignored`` the named paths git ignores.
    """

    modes: Mapping[str, str]
    contents: Mapping[str, bytes] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()
    oversized: frozenset[str] = frozenset()
    """Tracked files larger than MAX_FILE_BYTES, left out of ``contents``."""
    build_context: str | None = None
    """The service's build context, relative to the repository (``""`` is its top), or
    None when the service is not built from the repository."""
    protected: tuple[str, ...] = ()
    """Paths git reads as code or configuration (the ``core.hooksPath`` folder, included
    config files): never written."""
    variables: Mapping[str, str] = field(default_factory=dict)
    """What compose substitutes ``${VAR}`` from: medic's environment and the project's
    ``.env``."""

    def is_directory(self, path: str) -> bool:
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.modes)


@dataclass(frozen=True)
class Policy:
    """The operator's limits on what a fix may change."""

    allow: tuple[str, ...] = ()
    """Glob patterns (``**`` crosses folders) of the paths a fix may change. Empty:
    application source and config files inside the service's build context."""
    kinds: frozenset[str] = frozenset()
    """MEDIC_FIX_ALLOW: ``compose``, ``dockerfile``, ``dependencies``."""
    max_files: int = 5
    max_lines: int = 200

    @classmethod
    def from_text(
        cls,
        fix_paths: str,
        *,
        max_files: int,
        max_lines: int,
        kinds: Iterable[str] = (),
    ) -> Policy:
        """From MEDIC_FIX_PATHS (patterns separated by commas or white space) and
        MEDIC_FIX_ALLOW's kinds."""
        patterns = tuple(p for p in re.split(r"[\s,]+", fix_paths) if p)
        return cls(allow=patterns, kinds=frozenset(kinds), max_files=max_files, max_lines=max_lines)


@dataclass(frozen=True)
class FileChange:
    """One file as the fix leaves it. ``before`` is None for a file the fix creates."""

    path: str
    before: bytes | None
    after: bytes
    mode: str

    def diff_lines(self) -> list[str]:
        """The unified diff of this file, without context lines."""
        old = _text(self.before or b"").splitlines()
        new = _text(self.after).splitlines()
        return list(difflib.unified_diff(old, new, lineterm="", n=0))

    def added_lines(self) -> list[str]:
        return [line[1:] for line in self.diff_lines()[2:] if line.startswith("+")]

    def changed_line_count(self) -> int:
        return sum(1 for line in self.diff_lines()[2:] if line[:1] in ("+", "-"))


@dataclass(frozen=True)
class Checked:
    """The outcome of the checks: the files as they would be committed, and every refusal."""

    changes: tuple[FileChange, ...]
    refusals: tuple[Refusal, ...]

    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.changes)


def check_edits(edits: Sequence[Edit], facts: RepoFacts, policy: Policy) -> Checked:
    """Apply ``edits`` in memory and check everything; never raises on bad input."""
    refusals: list[Refusal] = []
    if not edits:
        return Checked((), (Refusal("no_edits", "The diagnosis proposes no edits."),))
    paths = list(dict.fromkeys(e.path for e in edits))
    bad_paths: set[str] = set()
    for path in paths:
        problems = path_refusals(path, facts, policy, creates=_creates(edits, path, facts))
        if problems:
            bad_paths.add(path)
            refusals.extend(problems)
    if len(paths) > policy.max_files:
        refusals.append(
            Refusal(
                "too_many_files",
                f"The edits touch {len(paths)} files; at most {policy.max_files} are allowed "
                "(MEDIC_FIX_MAX_FILES).",
            )
        )
    changes: list[FileChange] = []
    for path in paths:
        if path in bad_paths:
            continue
        change, problems = _apply(
            path, [(i, e) for i, e in enumerate(edits, 1) if e.path == path], facts
        )
        refusals.extend(problems)
        if change is not None:
            changes.append(change)
    if changes and not refusals:
        refusals.extend(_content_refusals(changes, policy, facts))
    return Checked(tuple(changes), tuple(refusals))


def _creates(edits: Sequence[Edit], path: str, facts: RepoFacts) -> bool:
    first = next(e for e in edits if e.path == path)
    return first.old == "" and path not in facts.modes


# --- paths ----------------------------------------------------------------------------------


def path_refusals(path: str, facts: RepoFacts, policy: Policy, *, creates: bool) -> list[Refusal]:
    """Why ``path`` may not be written (empty when it may). ``creates``: a new file."""
    shown = show(path)
    syntax = _path_syntax(path)
    if syntax is not None:
        return [Refusal(syntax[0], f"{shown} {syntax[1]}", path)]
    parts = path.split("/")
    folded = [fold(part) for part in parts]
    if ".git" in folded:
        return [Refusal("path_git_dir", f"{shown} is inside .git; medic never writes there.", path)]
    problems = never_editable(path, protected=facts.protected)
    for depth in range(1, len(parts)):
        ancestor = "/".join(parts[:depth])
        mode = facts.modes.get(ancestor)
        if mode == MODE_SYMLINK:
            problems.append(
                Refusal("path_symlink", f"{shown} lies under the symbolic link {ancestor}.", path)
            )
            break
        if mode is not None:
            problems.append(
                Refusal("path_not_directory", f"{shown} lies under the file {ancestor}.", path)
            )
            break
    mode = facts.modes.get(path)
    if mode == MODE_SYMLINK:
        problems.append(Refusal("path_symlink", f"{shown} is a symbolic link.", path))
    elif mode == MODE_SUBMODULE:
        problems.append(Refusal("path_submodule", f"{shown} is a git submodule.", path))
    elif mode is None and facts.is_directory(path):
        problems.append(Refusal("path_is_directory", f"{shown} is a folder, not a file.", path))
    if path in facts.ignored:
        problems.append(
            Refusal(
                "path_ignored",
                f"{shown} is ignored by git (.gitignore); medic never writes it.",
                path,
            )
        )
    if not problems:
        problems.extend(_allowed(path, facts, policy, creates=creates))
    return problems


def fold(name: str) -> str:
    """One path component as a case-folding file system that drops trailing dots and
    spaces (Windows, macOS by default) sees it: ``.GitModules. `` is ``.gitmodules``."""
    return unicodedata.normalize("NFC", name).rstrip(" .").casefold()


def never_editable(path: str, *, protected: Sequence[str] = ()) -> list[Refusal]:
    """The refusals for a path no fix may write whatever the settings say: git control
    files, hooks, CI definitions, package-manager settings, secret files. ``protected``:
    the paths the repository's git configuration reads (hooks folder, includes)."""
    shown = show(path)
    parts = path.split("/")
    folded = [fold(part) for part in parts]
    name = folded[-1]
    problems: list[Refusal] = []
    is_ci = any(part in CI_FOLDERS for part in folded[:-1]) or any(
        fnmatch.fnmatchcase(name, pattern) for pattern in CI_FILES
    )
    if is_ci:
        problems.append(
            Refusal(
                "path_ci",
                f"{shown} defines CI or developer tooling, which runs with the repository's "
                "secrets; medic never changes it.",
                path,
            )
        )
    elif any(part.startswith(".git") for part in folded) or name in GIT_CONTROL_NAMES:
        problems.append(
            Refusal("path_git_control", f"{shown} steers git itself; medic never changes it.", path)
        )
    folded_path = "/".join(folded)
    hooks = [p for p in protected if _under(folded_path, "/".join(fold(x) for x in p.split("/")))]
    if any(part in HOOK_FOLDERS for part in folded) or hooks:
        where = f" ({', '.join(hooks)} is what the repository's git configuration reads)"
        problems.append(
            Refusal(
                "path_git_hooks",
                f"{shown} is a git hook or git configuration{where if hooks else ''}; git "
                "would run or read it, so medic never changes it.",
                path,
            )
        )
    if is_package_manager_settings("/".join(folded)):
        problems.append(
            Refusal(
                "path_package_settings",
                f"{shown} holds package-manager settings (where packages come from, and "
                "credentials); medic never changes it.",
                path,
            )
        )
    if any(is_secret_file_name(part) for part in folded):
        problems.append(
            Refusal(
                "path_secret_file",
                f"{shown} is a kind of file that holds secrets (.env, keys, certificates); "
                "medic never changes it.",
                path,
            )
        )
    return problems


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def file_kind(path: str) -> str | None:
    """The MEDIC_FIX_ALLOW kind of a file (compose, dockerfile, dependencies), or None."""
    if is_compose_file(path):
        return KIND_COMPOSE
    if is_dockerfile(path):
        return KIND_DOCKERFILE
    if dependency_kind(path) is not None:
        return KIND_DEPENDENCIES
    return None


def plausible_path(path: str) -> bool:
    """Whether ``path`` is a normal relative path outside .git, safe to ask git about."""
    if _path_syntax(path) is not None:
        return False
    return all(fold(part) != ".git" for part in path.split("/"))


def _path_syntax(path: str) -> tuple[str, str] | None:
    if not path:
        return "path_empty", "is empty; an edit must name a file."
    if HIDDEN.search(path) or any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return "path_not_normalised", "contains control or invisible formatting characters."
    if unicodedata.normalize("NFC", path) != path:
        return "path_not_normalised", "is not in Unicode normal form C."
    if path.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", path):
        return "path_absolute", "is absolute; edits name files relative to the repository."
    if "\\" in path:
        return "path_not_normalised", "contains a backslash; write folders with /."
    parts = path.split("/")
    if ".." in parts:
        return "path_outside_repo", "climbs out of the repository with '..'."
    if posixpath.normpath(path) != path or "" in parts or "." in parts:
        return "path_not_normalised", f"is not in normal form (write {posixpath.normpath(path)!r})."
    if any(part != part.rstrip(" .") for part in parts):
        return "path_not_normalised", "has a name ending in a dot or a space."
    if len(path) > 1024:
        return "path_not_normalised", "is longer than 1024 characters."
    return None


def is_secret_file(path: str) -> bool:
    """Whether the file's name is one that holds secrets (.env*, keys, certificates):
    never written, whatever MEDIC_FIX_PATHS says."""
    return is_secret_file_name(path.rsplit("/", 1)[-1])


def _allowed(path: str, facts: RepoFacts, policy: Policy, *, creates: bool) -> list[Refusal]:
    shown = show(path)
    kind = file_kind(path)
    if kind is not None and kind not in policy.kinds:
        return [
            Refusal(
                "path_kind_not_allowed",
                f"{shown} is a {_KIND_NAMES[kind]}; fixes change those only when "
                f"MEDIC_FIX_ALLOW names {kind}.",
                path,
            )
        ]
    if creates and posixpath.dirname(path) and not facts.is_directory(posixpath.dirname(path)):
        return [
            Refusal(
                "path_not_allowed",
                f"{shown} would be a new file in a folder that holds no tracked file.",
                path,
            )
        ]
    if policy.allow:
        if any(glob_match(pattern, path) for pattern in policy.allow):
            return []
        return [
            Refusal(
                "path_not_allowed",
                f"{shown} is not among MEDIC_FIX_PATHS ({', '.join(policy.allow)}).",
                path,
            )
        ]
    if kind is not None:
        return []  # an opted-in kind may be wherever the project keeps it
    if facts.build_context is None:
        return [
            Refusal(
                "path_not_allowed",
                f"{shown} may not be changed: the service is not built from this repository, "
                "so there is no build context to fix; MEDIC_FIX_PATHS can name what may change.",
                path,
            )
        ]
    context = facts.build_context.strip("/")
    if context and not _under(path, context):
        return [
            Refusal(
                "path_not_allowed",
                f"{shown} is outside the service's build context {context}/; "
                "MEDIC_FIX_PATHS can name more.",
                path,
            )
        ]
    name = path.rsplit("/", 1)[-1]
    extension = name.rpartition(".")[2].lower() if "." in name.lstrip(".") else ""
    if extension not in SOURCE_AND_CONFIG:
        return [
            Refusal(
                "path_not_allowed",
                f"{shown} is not application source or config by its name; "
                "MEDIC_FIX_PATHS can name it.",
                path,
            )
        ]
    return []


_KIND_NAMES = {
    KIND_COMPOSE: "compose file",
    KIND_DOCKERFILE: "Dockerfile",
    KIND_DEPENDENCIES: "dependency manifest",
}


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern``: ``*`` and ``?`` stay within one folder,
    ``**`` crosses folders (``src/**/*.py``, ``**/Dockerfile``, ``app/**``)."""
    return _glob_regex(pattern).fullmatch(path) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out))


# --- applying the edits ---------------------------------------------------------------------


def _apply(
    path: str, numbered: list[tuple[int, Edit]], facts: RepoFacts
) -> tuple[FileChange | None, list[Refusal]]:
    shown = show(path)
    mode = facts.modes.get(path)
    before: bytes | None = None
    text: str | None = None
    if mode is not None:
        if path in facts.oversized:
            return None, [
                Refusal("file_too_large", f"{shown} is larger than {MAX_FILE_BYTES} bytes.", path)
            ]
        raw = facts.contents.get(path)
        if raw is None:
            return None, [
                Refusal("file_unreadable", f"{shown} could not be read at the base commit.", path)
            ]
        if len(raw) > MAX_FILE_BYTES:
            return None, [
                Refusal("file_too_large", f"{shown} is larger than {MAX_FILE_BYTES} bytes.", path)
            ]
        decoded = _decode(raw)
        if decoded is None:
            return None, [Refusal("binary_file", f"{shown} is binary (not UTF-8 text).", path)]
        before, text = raw, decoded
    problems: list[Refusal] = []
    for number, edit in numbered:
        if "\x00" in edit.new or "\x00" in edit.old:
            problems.append(
                Refusal("binary_file", f"Edit {number} puts a NUL byte into {shown}.", path)
            )
            continue
        hidden = HIDDEN.search(edit.new)
        if hidden is not None:
            problems.append(
                Refusal(
                    "edit_hidden_characters",
                    f"Edit {number} of {shown} holds the character "
                    f"U+{ord(hidden.group()[0]):04X}, a control or formatting character that "
                    "can hide or reorder text in a diff; only tab and newline are allowed.",
                    path,
                )
            )
            continue
        if edit.old == "":
            if text is not None:
                problems.append(
                    Refusal(
                        "file_exists",
                        f"Edit {number} creates {shown}, which already exists.",
                        path,
                    )
                )
                continue
            text = edit.new
            continue
        if text is None:
            problems.append(
                Refusal(
                    "file_missing",
                    f"Edit {number} changes {shown}, which is not a tracked file.",
                    path,
                )
            )
            continue
        count = text.count(edit.old)
        if count != 1:
            code = "old_not_found" if count == 0 else "old_ambiguous"
            problems.append(Refusal(code, match_message(number, edit, text), path))
            continue
        text = text.replace(edit.old, edit.new, 1)
    if problems or text is None:
        return None, problems
    try:
        after = text.encode("utf-8")
    except UnicodeEncodeError:
        return None, [Refusal("binary_file", f"The edits leave {shown} not valid UTF-8.", path)]
    if before is not None and after == before:
        return None, [Refusal("no_change", f"The edits leave {shown} as it was.", path)]
    if not text.strip():
        code = "file_deleted" if before is not None else "file_empty"
        what = "empty it, which deletes it" if before is not None else "create it empty"
        return None, [
            Refusal(code, f"The edits of {shown} {what}; medic never deletes files.", path)
        ]
    return FileChange(path, before, after, mode or MODE_FILE), []


def _decode(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


# --- the content of the changed files -------------------------------------------------------


def _content_refusals(
    changes: Sequence[FileChange], policy: Policy, facts: RepoFacts
) -> list[Refusal]:
    refusals: list[Refusal] = []
    lines = sum(c.changed_line_count() for c in changes)
    if lines > policy.max_lines:
        refusals.append(
            Refusal(
                "too_many_lines",
                f"The edits change {lines} lines; at most {policy.max_lines} are allowed "
                "(MEDIC_FIX_MAX_LINES).",
            )
        )
    refusals.extend(_kind_refusals(changes, facts))
    for change in changes:
        problem = parse_problem(change.path, _text(change.after))
        if problem is not None:
            refusals.append(problem)
        kinds = secret_findings("\n".join(change.added_lines()))
        if kinds:
            refusals.append(
                Refusal(
                    "secret_added",
                    f"The edits add what looks like a secret to {show(change.path)}: "
                    f"{', '.join(kinds)}.",
                    change.path,
                )
            )
    return refusals


def _kind_refusals(changes: Sequence[FileChange], facts: RepoFacts) -> list[Refusal]:
    """The checks of compose files (as compose reads the whole project), Dockerfiles and
    dependency manifests."""
    refusals: list[Refusal] = []
    for change in changes:
        if is_dockerfile(change.path):
            refusals.extend(dockerfile_refusals(change.path, change.before, change.after))
        if dependency_kind(change.path) is not None:
            refusals.extend(dependency_refusals(change.path, change.before, change.after))
    after = {c.path: c.after for c in changes}
    refusals.extend(
        compose_refusals(
            tuple(after),
            before=facts.contents.get,
            after=lambda path: after[path] if path in after else facts.contents.get(path),
            tracked=tuple(dict.fromkeys([*facts.modes, *after])),
            variables=facts.variables,
        )
    )
    return refusals


def parse_problem(path: str, text: str) -> Refusal | None:
    """A refusal when a YAML, JSON, TOML or Python file no longer parses."""
    shown = show(path)
    lower = path.lower()
    try:
        if lower.endswith((".yml", ".yaml")):
            for _ in yaml.safe_load_all(text):
                pass
        elif lower.endswith(".json"):
            json.loads(text)
        elif lower.endswith(".toml"):
            tomllib.loads(text)
        elif lower.endswith((".py", ".pyi")):
            # compile() only parses; nothing runs. Its warnings (bad escapes) are not errors.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(text, path, "exec", dont_inherit=True)
        else:
            return None
    except SyntaxError as e:
        where = f" at line {e.lineno}" if e.lineno else ""
        return Refusal("python_syntax", f"{shown} no longer compiles{where}: {e.msg}.", path)
    except (yaml.YAMLError, ValueError, RecursionError, MemoryError) as e:
        detail = " ".join(str(e).split())[:200]
        return Refusal("parse_error", f"{shown} no longer parses: {detail}.", path)
    return None


# --- messages for the model -------------------------------------------------------------------


def review_edits(edits: Sequence[Edit], facts: RepoFacts, policy: Policy) -> list[str]:
    """The messages for the model about its edits: a refused path says why, an ``old``
    that does not match once says where the nearest match is. Empty when all is well."""
    refused: dict[str, str] = {}
    contents: dict[str, str | None] = {}
    for path in dict.fromkeys(e.path for e in edits):
        problems = path_refusals(path, facts, policy, creates=_creates(edits, path, facts))
        if problems:
            refused[path] = " ".join(p.message for p in problems)
            continue
        raw = facts.contents.get(path)
        contents[path] = None if raw is None else _decode(raw)
    return review_messages(edits, contents, refused=refused)


def review_messages(
    edits: Sequence[Edit],
    contents: Mapping[str, str | None],
    *,
    refused: Mapping[str, str] | None = None,
) -> list[str]:
    """One message per edit whose ``old`` text does not occur exactly once in its file.

    ``contents`` maps each path to the file's text at the base commit (None: no such
    file); ``refused`` maps paths that may not be written to the sentence saying why.
    Several edits of one file apply in order, as ``check_edits`` applies them. The
    messages go back to the model so that it may resend the failed edits once.
    """
    messages: list[str] = []
    texts: dict[str, str | None] = {}
    for number, edit in enumerate(edits, 1):
        if refused and edit.path in refused:
            messages.append(f"edit {number}: {refused[edit.path]}")
            continue
        hidden = HIDDEN.search(edit.new)
        if hidden is not None:
            messages.append(
                f"edit {number}: `new` holds U+{ord(hidden.group()[0]):04X}, a control or "
                "formatting character that can hide text from the person reviewing the diff; "
                "only tab and newline are allowed"
            )
            continue
        if edit.path not in texts:
            texts[edit.path] = contents.get(edit.path)
        text = texts[edit.path]
        if edit.old == "":
            if text is not None:
                messages.append(
                    f"edit {number}: `old` is empty, which creates {edit.path}, but that file "
                    "already exists; quote the text to replace instead"
                )
            else:
                texts[edit.path] = edit.new
            continue
        if text is None:
            messages.append(f"edit {number}: {edit.path} is not a file in the repository")
            continue
        if text.count(edit.old) == 1:
            texts[edit.path] = text.replace(edit.old, edit.new, 1)
            continue
        messages.append(match_message(number, edit, text))
    return messages


def match_message(number: int, edit: Edit, text: str) -> str:
    """Why ``edit.old`` does not match exactly once in ``text``, with where to look."""
    count = text.count(edit.old)
    if count > 1:
        starts = _occurrence_lines(text, edit.old)
        where = ", ".join(str(n) for n in starts[:10])
        return (
            f"edit {number}: `old` occurs {count} times in {edit.path} (at lines {where}); "
            "include more of the surrounding lines so that it occurs once"
        )
    nearest = nearest_match(text, edit.old)
    if nearest is None:
        return f"edit {number}: `old` occurs 0 times in {edit.path}"
    line, quoted = nearest
    return (
        f"edit {number}: `old` occurs 0 times in {edit.path}; the nearest match is at "
        f"line {line}: {quoted}"
    )


def _occurrence_lines(text: str, needle: str) -> list[int]:
    lines: list[int] = []
    start = text.find(needle)
    while start != -1:
        lines.append(text.count("\n", 0, start) + 1)
        start = text.find(needle, start + 1)
    return lines


def nearest_match(text: str, old: str, *, max_lines: int = 20_000) -> tuple[int, str] | None:
    """The 1-based line where the text most like ``old`` starts, and that text."""
    lines = text.splitlines()[:max_lines]
    wanted = old.strip("\n").splitlines() or [old]
    size = len(wanted)
    target = "\n".join(line.strip() for line in wanted)
    best: tuple[float, int] | None = None
    for start in range(max(1, len(lines) - size + 1)):
        window = "\n".join(line.strip() for line in lines[start : start + size])
        matcher = difflib.SequenceMatcher(None, target, window, autojunk=False)
        if best is not None and matcher.real_quick_ratio() <= best[0]:
            continue
        if best is not None and matcher.quick_ratio() <= best[0]:
            continue
        ratio = matcher.ratio()
        if best is None or ratio > best[0]:
            best = (ratio, start)
    if best is None or best[0] < 0.3 or not lines:
        return None
    start = best[1]
    quoted = "\n".join(lines[start : start + size])
    return start + 1, quoted


def describe(refusals: Iterable[Refusal]) -> tuple[str, ...]:
    """The refusals as the one-line strings a Fix stores (``code: sentence``)."""
    return tuple(str(r) for r in refusals)
