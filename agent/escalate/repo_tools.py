"""The model's read-only view of the repository: ``list_files``, ``read_file`` and ``grep``.

Whichever provider serves the model (agent/escalate/llm.py), these are the only
tools it gets, and every argument it sends is untrusted: paths are confined to
MEDIC_REPO, judged after normalisation and link resolution, and anything under
``.git``, ignored by git or shaped like a secret file is refused with a sentence the
model reads as the tool's result. Nothing here writes, runs a command or reaches the
network.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from agent.secrets import is_secret_file_name

#: Bytes of one tool result sent back to the model.
TOOL_OUTPUT_BYTES = 12 * 1024
#: Lines ``read_file`` returns at most per call.
READ_LINES = 250
#: Entries ``list_files`` returns at most.
LIST_ENTRIES = 300
#: Matches ``grep`` returns at most.
GREP_MATCHES = 80
#: Files larger than this are not read or searched.
FILE_BYTES = 1024 * 1024


class Refused(Exception):
    """A tool call that is not allowed; the message goes back to the model."""


@dataclass
class RepoTools:
    """``list_files``, ``read_file`` and ``grep`` over one repository, read-only.

    Paths are relative to the repository; absolute paths, ``..``, ``.git``, symlinks
    that leave the repository, files git ignores (``is_ignored``) and secret files are
    refused with a message that says why.
    """

    root: Path | None
    """None: no repository (MEDIC_REPO unset); every call is refused."""
    is_ignored: Callable[[str], bool] = lambda _path: False
    redact: Callable[[str], str] = lambda text: text
    runs: int = 0
    seen: list[str] = field(default_factory=list)
    """The texts the model was shown (redacted), for checking its quotes."""
    files_read: list[str] = field(default_factory=list)

    def run(self, name: str, args: dict[str, Any]) -> str:
        self.runs += 1
        if name == "list_files":
            out = self.list_files(str(args.get("path") or "."))
        elif name == "read_file":
            out = self.read_file(
                _text_arg(args, "path"),
                start_line=_int_arg(args, "start_line", 1),
                end_line=_int_arg(args, "end_line", 0) or None,
            )
        elif name == "grep":
            out = self.grep(_text_arg(args, "text"), path=str(args.get("path") or "."))
        else:
            raise Refused(f"there is no tool {name!r}; use list_files, read_file or grep")
        out = self.redact(out)
        self.seen.append(out)
        return _cap(out, TOOL_OUTPUT_BYTES)

    def resolve(self, path: str) -> tuple[str, Path]:
        """The repository-relative path and the real file, or Refused saying why."""
        if self.root is None:
            raise Refused("no repository is available to read (MEDIC_REPO is not set)")
        text = path.strip()
        if not text or text in (".", "./"):
            return ".", self.root
        if text.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", text):
            raise Refused(f"{path!r} is an absolute path; give a path relative to the repository")
        parts = PurePosixPath(text.replace("\\", "/")).parts
        if ".." in parts:
            raise Refused(f"{path!r} leaves the repository ('..' is not allowed)")
        if any(p.rstrip(" .").casefold() == ".git" for p in parts):
            raise Refused(f"{path!r} is inside .git, which is not readable")
        rel = "/".join(p for p in parts if p not in (".", ""))
        for part in parts:
            if is_secret_file_name(part):
                raise Refused(f"{path!r} looks like a secret file (keys, .env, credentials)")
        full = self.root / rel
        try:
            real = full.resolve(strict=True)
        except (OSError, RuntimeError):
            raise Refused(f"{path!r} does not exist") from None
        root = self.root.resolve()
        if real != root and root not in real.parents:
            raise Refused(f"{path!r} is a symlink that leads out of the repository")
        # A link inside the repository is judged by what it points at: a link to .env
        # or into .git is as unreadable as the file itself.
        target = real.relative_to(root).as_posix() if real != root else "."
        target_parts = [p.rstrip(" .").casefold() for p in PurePosixPath(target).parts]
        if ".git" in target_parts:
            raise Refused(f"{path!r} leads into .git, which is not readable")
        if any(is_secret_file_name(part) for part in target_parts):
            raise Refused(f"{path!r} leads to a secret file (keys, .env, credentials)")
        if self.is_ignored(rel) or (target not in (rel, ".") and self.is_ignored(target)):
            raise Refused(f"{path!r} is ignored by git (.gitignore) and is not readable")
        return rel, real

    def list_files(self, path: str) -> str:
        rel, real = self.resolve(path)
        if not real.is_dir():
            raise Refused(f"{path!r} is not a directory")
        entries = []
        for child in sorted(real.iterdir(), key=lambda p: p.name):
            child_rel = child.name if rel == "." else f"{rel}/{child.name}"
            try:
                _, resolved = self.resolve(child_rel)
            except Refused:
                continue
            entries.append(child_rel + ("/" if resolved.is_dir() else ""))
            if len(entries) >= LIST_ENTRIES:
                entries.append(f"[… more entries not shown; list a subdirectory of {rel}]")
                break
        return "\n".join(entries) or "(empty)"

    def read_file(self, path: str, *, start_line: int = 1, end_line: int | None = None) -> str:
        rel, real = self.resolve(path)
        lines = self._lines(rel, real)
        start = max(start_line, 1)
        end = min(end_line or start + READ_LINES - 1, start + READ_LINES - 1, len(lines))
        if start > len(lines):
            return f"{rel} has {len(lines)} lines; nothing from line {start}."
        self.files_read.append(rel)
        body = "\n".join(lines[start - 1 : end])
        return f"{rel} lines {start}-{end} of {len(lines)}:\n{body}"

    def grep(self, text: str, *, path: str = ".") -> str:
        if not text:
            raise Refused("grep needs a non-empty text to look for")
        rel, real = self.resolve(path)
        files = [real] if real.is_file() else sorted(p for p in real.rglob("*") if p.is_file())
        needle = text.lower()
        found: list[str] = []
        for file in files:
            file_rel = file.relative_to(real).as_posix() if real.is_dir() else rel
            if real.is_dir() and rel != ".":
                file_rel = f"{rel}/{file_rel}"
            try:
                _, resolved = self.resolve(file_rel)
                lines = self._lines(file_rel, resolved)
            except Refused:
                continue
            for number, line in enumerate(lines, start=1):
                if needle in line.lower():
                    found.append(f"{file_rel}:{number}: {line[:300]}")
                    if len(found) >= GREP_MATCHES:
                        return "\n".join([*found, "[… more matches not shown]"])
        return "\n".join(found) or f"no line contains {text!r}"

    def _lines(self, rel: str, real: Path) -> list[str]:
        if not real.is_file():
            raise Refused(f"{rel!r} is not a file")
        if real.stat().st_size > FILE_BYTES:
            raise Refused(f"{rel!r} is larger than {FILE_BYTES // 1024} KiB")
        data = real.read_bytes()
        if b"\0" in data[:8192]:
            raise Refused(f"{rel!r} is a binary file")
        return data.decode("utf-8", errors="replace").splitlines()


def _text_arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise Refused(f"the argument {name!r} must be a string")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(f"the argument {name!r} must be a whole number")
    return value


def _cap(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + f"\n[… {len(data) - limit} bytes cut]"


def check_new_path(tools: RepoTools, path: str) -> None:
    """A file an edit creates must not exist yet, and its folder must be readable."""
    parent = str(PurePosixPath(path).parent)
    tools.resolve(parent)
    name = PurePosixPath(path).name
    if is_secret_file_name(name):
        raise Refused(f"{path!r} looks like a secret file")
    if ".." in PurePosixPath(path).parts or path.startswith("/"):
        raise Refused(f"{path!r} leaves the repository")
