"""The only module that runs git.

Every call is ``git`` with a list of arguments (never a shell), a time limit, and an
environment medic controls: the caller's ``GIT_*`` variables are dropped so that no
stray ``GIT_DIR`` or ``GIT_INDEX_FILE`` points a command somewhere else, prompts are
off, optional locks are off so that reading the status never rewrites the
repository's index, and the repository is marked safe for this process alone (it is
often owned by another user than medic's; see ``_trust``).

No git command medic runs executes code from the repository or its configuration
(``_NO_CODE``): hooks point at an empty folder medic made (post-merge and
post-checkout included), ``core.fsmonitor`` is off, and every filter, diff and merge
driver the configuration defines is emptied, so a ``.gitattributes`` line naming one
runs nothing. Automatic ``gc`` and maintenance are off too. Config files that the
repository's configuration includes from its own working tree are reported by
``protected_paths`` with the hooks folder, so that a fix can never change them.

The repository's checked-out branch, index and working tree are never touched. A fix
commit is built with a temporary index (``GIT_INDEX_FILE`` in a temporary folder):
read-tree of the base, hash-object of the edited files, update-index, write-tree,
commit-tree, then ``update-ref`` with an empty old value, which makes git refuse to
overwrite a branch that exists. Verification reads the fix from git objects
(``tree``, ``read_blobs``) and never checks it out. The only command that changes the
working tree is ``merge`` into the checked-out branch, run when a person approves a
fix, after checking that it would not touch their changes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from agent.fixes.errors import GitError, GitTimeout

_AUTHOR = re.compile(r"^\s*([^<>]+?)\s*<([^<>\s]+)>\s*$")


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a commit's tree, as ``git ls-tree -r`` lists it."""

    path: str
    mode: str
    kind: str
    sha: str
    size: int | None


@dataclass(frozen=True)
class NewFile:
    """A file as a fix commit holds it."""

    path: str
    content: bytes
    mode: str


@dataclass(frozen=True)
class Person:
    """Who a commit is by: ``Name <email>``."""

    name: str
    email: str

    @classmethod
    def parse(cls, text: str) -> Person:
        found = _AUTHOR.match(text)
        if not found:
            raise GitError(f"{text!r} is not an author like 'medic <medic@localhost>'")
        return cls(found.group(1), found.group(2))


@dataclass(frozen=True)
class MergePreview:
    """What merging a commit into a branch would do, worked out without touching anything.

    ``fast_forward``: the branch is an ancestor of the commit. Otherwise ``tree`` is the
    merged tree, or None with ``conflicts`` naming the files that conflict.
    """

    fast_forward: bool
    tree: str | None
    conflicts: tuple[str, ...]
    changed: tuple[str, ...]


class Git:
    """git commands on one repository."""

    def __init__(
        self,
        repo: Path,
        *,
        timeout: float = 60.0,
        push_timeout: float = 120.0,
        environ: Mapping[str, str] | None = None,
        executable: str = "git",
    ) -> None:
        self.repo = Path(repo)
        self.timeout = timeout
        self.push_timeout = push_timeout
        self._executable = executable
        base = os.environ if environ is None else environ
        env = {k: v for k, v in base.items() if not k.startswith("GIT_")}
        env.update(
            {
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_OPTIONAL_LOCKS": "0",
                "LC_ALL": "C",
                "LANGUAGE": "C",
            }
        )
        env.update(_trust(self.repo))
        self._env = env
        self._hooks = _empty_hooks_folder()
        self._drivers: tuple[str, ...] | None = None

    # --- running ----------------------------------------------------------------------

    def _run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        ok: Sequence[int] = (0,),
        timeout: float | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        command = [self._executable, *self._no_code(), *args]
        limit = self.timeout if timeout is None else timeout
        full_env = dict(self._env)
        if env:
            full_env.update(env)
        try:
            # A new session, so that on time-out the whole group (ssh, hooks) is killed.
            process = subprocess.Popen(
                command,
                cwd=str(cwd or self.repo),
                env=full_env,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise GitError(f"cannot run git ({e.strerror or e}); is git installed?") from e
        try:
            out, err = process.communicate(input=input, timeout=limit)
        except subprocess.TimeoutExpired as e:
            _kill_group(process)
            process.communicate()
            raise GitTimeout(
                f"git {args[0]} did not finish within {limit:g} s in {self.repo} and was stopped"
            ) from e
        result = subprocess.CompletedProcess(command, process.returncode, out, err)
        if result.returncode not in ok:
            raise GitError(f"git {_describe(args)} failed in {self.repo}: {_last_line(err or out)}")
        return result

    def _no_code(self) -> list[str]:
        """``-c`` options that keep every git command from running code (module docstring)."""
        if self._drivers is None:
            self._drivers = ()  # while reading them: the read itself runs with the rest
            self._drivers = self._configured_drivers()
        options = [f"core.hooksPath={self._hooks}", *_NO_CODE]
        options += [f"{key}=" for key in self._drivers]
        return [part for option in options for part in ("-c", option)]

    def _configured_drivers(self) -> tuple[str, ...]:
        """The keys of every filter, diff and merge driver command in git's configuration
        (system, global, the repository's, and what they include)."""
        result = self._run(
            "config", "--null", "--name-only", "--get-regexp", _DRIVER_KEYS, ok=(0, 1)
        )
        keys = result.stdout.decode("utf-8", "surrogateescape").split("\0")
        return tuple(dict.fromkeys(k for k in keys if k))

    def protected_paths(self) -> tuple[str, ...]:
        """Repository-relative paths a fix must never change because git itself reads
        them as configuration or code: the folder ``core.hooksPath`` names, and config
        files included from inside the working tree."""
        top = self.check_repository()
        found: list[str] = []
        result = self._run(
            "config",
            "--null",
            "--show-origin",
            "--get-regexp",
            r"^(core\.hookspath|include\.path|includeif\..*\.path)$",
            ok=(0, 1),
        )
        records = result.stdout.decode("utf-8", "surrogateescape").split("\0")
        # Records: "file:ORIGIN", "KEY\nVALUE", alternating.
        for origin, entry in zip(records[0::2], records[1::2], strict=False):
            _key, _, value = entry.partition("\n")
            if not value:
                continue
            base = top
            if origin.startswith("file:"):
                # git names the repository's own config relative to the top folder.
                base = top / Path(origin.removeprefix("file:")).parent
            if _key.lower() == "core.hookspath":
                base = top
            target = Path(os.path.expanduser(value))
            full = target if target.is_absolute() else base / target
            relative = _inside(Path(os.path.normpath(full)), top)
            if relative is not None and relative != ".":
                found.append(relative)
        return tuple(dict.fromkeys(found))

    def _text(
        self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        return self._run(*args, input=input, env=env).stdout.decode("utf-8", errors="replace")

    # --- reading ----------------------------------------------------------------------

    def check_repository(self) -> Path:
        """The repository's top folder; GitError when ``repo`` is not a git work tree."""
        top = self._text("rev-parse", "--show-toplevel").strip()
        return Path(top)

    def head(self) -> str | None:
        """The commit checked out, or None in a repository without commits."""
        result = self._run("rev-parse", "--verify", "-q", "HEAD^{commit}", ok=(0, 1))
        return result.stdout.decode().strip() or None

    def current_branch(self) -> str | None:
        """The branch checked out, or None on a detached HEAD."""
        result = self._run("symbolic-ref", "-q", "--short", "HEAD", ok=(0, 1))
        return result.stdout.decode().strip() or None

    def branch_commit(self, branch: str) -> str | None:
        """The commit ``branch`` points at, or None when there is no such branch."""
        result = self._run(
            "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", ok=(0, 1)
        )
        return result.stdout.decode().strip() or None

    def is_valid_branch_name(self, name: str) -> bool:
        result = self._run("check-ref-format", "--branch", name, ok=(0, 1, 128))
        return result.returncode == 0

    def tree(self, commit: str) -> dict[str, TreeEntry]:
        """Every file of ``commit``, by path (submodules have kind ``commit``)."""
        raw = self._run("ls-tree", "-r", "-l", "-z", "--full-tree", commit).stdout
        entries: dict[str, TreeEntry] = {}
        for record in raw.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, sha, size = meta.decode().split()
            path = name.decode("utf-8", errors="surrogateescape")
            entries[path] = TreeEntry(path, mode, kind, sha, int(size) if size.isdigit() else None)
        return entries

    def blob(self, sha: str) -> bytes:
        return self._run("cat-file", "blob", sha).stdout

    def read_blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """The contents of many blobs in one ``git cat-file --batch``, by sha."""
        wanted = list(dict.fromkeys(shas))
        if not wanted:
            return {}
        out = self._run("cat-file", "--batch", input=("\n".join(wanted) + "\n").encode()).stdout
        found: dict[str, bytes] = {}
        position = 0
        for sha in wanted:
            end = out.index(b"\n", position)
            header = out[position:end].decode().split()
            position = end + 1
            if len(header) < 3 or header[1] != "blob":
                raise GitError(f"{sha} is not a blob in {self.repo}")
            size = int(header[2])
            found[sha] = out[position : position + size]
            position += size + 1
        return found

    def ignored(self, paths: Sequence[str]) -> frozenset[str]:
        """Which of ``paths`` the ignore rules match, tracked or not."""
        if not paths:
            return frozenset()
        data = b"\0".join(p.encode("utf-8", errors="surrogateescape") for p in paths) + b"\0"
        result = self._run("check-ignore", "--no-index", "-z", "--stdin", input=data, ok=(0, 1))
        return frozenset(
            p.decode("utf-8", errors="surrogateescape") for p in result.stdout.split(b"\0") if p
        )

    def diff(self, base: str, commit: str) -> str:
        """The change from ``base`` to ``commit`` as a unified diff."""
        return self._text(
            "diff", "--no-color", "--no-ext-diff", "--no-textconv", base, commit, "--"
        )

    def changed_paths(self, old: str, new: str) -> tuple[str, ...]:
        raw = self._run("diff", "--name-only", "-z", "--no-renames", old, new, "--").stdout
        return tuple(p.decode("utf-8", errors="surrogateescape") for p in raw.split(b"\0") if p)

    def is_ancestor(self, ancestor: str, commit: str) -> bool:
        result = self._run("merge-base", "--is-ancestor", ancestor, commit, ok=(0, 1))
        return result.returncode == 0

    def uncommitted(self) -> dict[str, str]:
        """Paths with changes not in HEAD (staged, unstaged or untracked), and their
        two-letter status. Reading it does not write the index (optional locks are off)."""
        raw = self._run(
            "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignore-submodules=none"
        ).stdout
        records = raw.split(b"\0")
        found: dict[str, str] = {}
        i = 0
        while i < len(records):
            record = records[i]
            i += 1
            if len(record) < 4:
                continue
            code = record[:2].decode()
            path = record[3:].decode("utf-8", errors="surrogateescape")
            found[path] = code
            if code[0] in "RC":  # a rename or copy is followed by its source
                source = records[i].decode("utf-8", errors="surrogateescape")
                found[source] = code
                i += 1
        return found

    def worktree_branches(self) -> dict[str, Path]:
        """The branches checked out in any worktree of the repository, and where."""
        raw = self._text("worktree", "list", "--porcelain")
        branches: dict[str, Path] = {}
        path: Path | None = None
        for line in raw.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line.startswith("branch refs/heads/") and path is not None:
                branches[line.removeprefix("branch refs/heads/")] = path
        return branches

    def remote_exists(self, remote: str) -> bool:
        result = self._run("remote", "get-url", "--", remote, ok=(0, 2, 128))
        return result.returncode == 0

    # --- writing objects and refs -----------------------------------------------------

    def create_commit(
        self,
        *,
        base: str,
        files: Sequence[NewFile],
        message: str,
        author: Person,
        when: datetime,
    ) -> str:
        """A commit of ``base`` with ``files`` replaced, made with a temporary index.

        Writes objects only: no ref, and not the repository's index or working tree.
        """
        with tempfile.TemporaryDirectory(prefix="medic-index-") as folder:
            env = {"GIT_INDEX_FILE": str(Path(folder) / "index")}
            self._run("read-tree", base, env=env)
            for file in files:
                sha = self._text(
                    "hash-object", "-w", "--no-filters", "--stdin", input=file.content
                ).strip()
                self._run(
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"{file.mode},{sha},{file.path}",
                    env=env,
                )
            tree = self._text("write-tree", env=env).strip()
        return self.commit_tree(
            tree=tree, parents=(base,), message=message, author=author, when=when
        )

    def commit_tree(
        self,
        *,
        tree: str,
        parents: Sequence[str],
        message: str,
        author: Person,
        when: datetime,
    ) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        args += ["-F", "-"]
        return self._text(*args, input=message.encode(), env=_identity(author, when)).strip()

    def create_branch(self, branch: str, commit: str) -> None:
        """Point the new ``branch`` at ``commit``; GitError when the branch exists."""
        self._run("update-ref", "-m", "medic: fix branch", f"refs/heads/{branch}", commit, "")

    def move_branch(self, branch: str, new: str, old: str) -> None:
        """Move ``branch`` from ``old`` to ``new``; GitError when it no longer points at ``old``."""
        self._run("update-ref", "-m", "medic: merge fix", f"refs/heads/{branch}", new, old)

    def delete_branch(self, branch: str, expected: str) -> None:
        """Delete ``branch`` if it still points at ``expected``; GitError otherwise."""
        self._run("update-ref", "-d", f"refs/heads/{branch}", expected)

    def push(self, remote: str, branch: str) -> None:
        """Push ``branch`` to ``remote`` under the same name; never forced."""
        ref = f"refs/heads/{branch}"
        self._run("push", "--porcelain", "--", remote, f"{ref}:{ref}", timeout=self.push_timeout)

    # --- merging (approve) ------------------------------------------------------------

    def preview_merge(self, into: str, commit: str) -> MergePreview:
        """What merging ``commit`` into the commit ``into`` would do; changes nothing
        (``merge-tree --write-tree`` only writes objects)."""
        if self.is_ancestor(into, commit):
            return MergePreview(True, None, (), self.changed_paths(into, commit))
        result = self._run(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", into, commit, ok=(0, 1)
        )
        lines = [
            line for line in result.stdout.decode("utf-8", "surrogateescape").split("\n") if line
        ]
        tree = lines[0] if lines else None
        if result.returncode == 1:
            return MergePreview(False, None, tuple(dict.fromkeys(lines[1:])), ())
        if tree is None:
            raise GitError("git merge-tree printed no tree")
        return MergePreview(False, tree, (), self.changed_paths(into, tree))

    def merge_checked_out(
        self, commit: str, *, message: str, author: Person, when: datetime
    ) -> None:
        """``git merge`` of ``commit`` into the checked-out branch: a fast-forward when
        possible, else a merge commit. Run only after checking it touches no local change."""
        self._run(
            "merge",
            "--ff",
            "--no-edit",
            "--no-stat",
            "--no-verify",
            "-m",
            message,
            commit,
            env=_identity(author, when),
        )


#: Options on every git command so that it runs no code of the repository's: no
#: fsmonitor daemon or hook, no automatic gc or maintenance (which run hooks and rewrite
#: the repository), no ``ext::`` transport. The hooks folder and the driver commands
#: are added per repository (``Git._no_code``).
_NO_CODE = (
    "core.fsmonitor=false",
    "core.untrackedCache=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "protocol.ext.allow=never",
    "diff.external=",
)

#: The configuration keys that name a command git runs for a path's attributes.
_DRIVER_KEYS = (
    r"^(filter\..+\.(clean|smudge|process)|diff\..+\.(textconv|command)|merge\..+\.driver)$"
)


def _empty_hooks_folder() -> str:
    """An empty folder, readable by medic only, for ``core.hooksPath``: git finds no
    hook there, whatever the repository's own settings say."""
    global _HOOKS  # noqa: PLW0603 - one empty folder serves every repository
    if _HOOKS is None or not os.path.isdir(_HOOKS) or os.listdir(_HOOKS):
        _HOOKS = tempfile.mkdtemp(prefix="medic-no-hooks-")
        os.chmod(_HOOKS, 0o500)
    return _HOOKS


_HOOKS: str | None = None


def _inside(path: Path, folder: Path) -> str | None:
    """``path`` relative to ``folder`` when it lies inside it (links resolved), else None."""
    for candidate, base in ((path, folder), (path.resolve(), folder.resolve())):
        try:
            return candidate.relative_to(base).as_posix()
        except ValueError:
            continue
    return None


def _trust(repo: Path) -> dict[str, str]:
    """Configuration for this process only, marking ``repo`` as safe to git.

    medic in its container runs as another user than the one who owns the mounted
    repository, and git then refuses it ("detected dubious ownership"). git reads
    ``safe.directory`` only from protected configuration, which includes the
    command-line scope that ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` set: the exception
    names this one repository, and neither the user's global configuration nor any
    other repository is touched.
    """
    paths = list(dict.fromkeys([os.path.abspath(repo), str(Path(repo).resolve())]))
    config = {"GIT_CONFIG_COUNT": str(len(paths))}
    for number, path in enumerate(paths):
        config[f"GIT_CONFIG_KEY_{number}"] = "safe.directory"
        config[f"GIT_CONFIG_VALUE_{number}"] = path
    return config


def _identity(person: Person, when: datetime) -> dict[str, str]:
    date = f"{int(when.timestamp())} +0000"
    return {
        "GIT_AUTHOR_NAME": person.name,
        "GIT_AUTHOR_EMAIL": person.email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": person.name,
        "GIT_COMMITTER_EMAIL": person.email,
        "GIT_COMMITTER_DATE": date,
    }


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def _describe(args: Sequence[str]) -> str:
    shown = [a for a in args if not a.startswith("-")][:2]
    return " ".join(shown) or args[0]


def _last_line(output: bytes) -> str:
    lines = [
        line.strip()
        for line in output.decode("utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    if not lines:
        return "no message"
    # git's first 'fatal:'/'error:' line is usually the one that says why.
    for line in lines:
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1]
