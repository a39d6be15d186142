"""How the CLI prints: aligned tables for people, one JSON document for machines.

Much of what medic prints comes from containers and models: log lines, evidence
quotes, the diff of a proposed fix. Any of it may hold terminal escapes that move the
cursor or erase a line, or bidirectional controls that show text in another order than
git stores it, so that a person approves something else than they read. Everything
the CLI writes for people therefore goes through ``safe_text`` (``SafeStream`` wraps
stdout once, in ``agent.cli.main``): such characters are shown as visible escapes
(``\\x1b``, ``\\u202e``). JSON is written with ``ensure_ascii``, so it carries them
escaped as well.
"""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from agent.secrets import INVISIBLE

#: Controls other than tab and newline (a carriage return too: it overprints), and
#: characters that reorder or hide text.
_UNSAFE = re.compile(rf"[\x00-\x08\x0b-\x1f\x7f-\x9f{INVISIBLE}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_text(text: str) -> str:
    """``text`` with every control character but tab and newline, and every bidi or
    invisible formatting character, written as a visible escape."""
    return _UNSAFE.sub(_escape, text)


class SafeStream(io.TextIOBase):
    """A text stream that writes through ``safe_text`` to another one."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        self.inner.write(safe_text(text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.inner, "encoding", "utf-8"))


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return safe_text(str(value).replace("\n", " "))


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    out: TextIO | None = None,
    max_width: int = 80,
) -> None:
    """Print rows under headers, columns aligned; long cells are cut with an ellipsis."""
    stream = out or sys.stdout
    texts = [[cell(v) for v in row] for row in rows]
    texts = [[t if len(t) <= max_width else t[: max_width - 1] + "…" for t in row] for row in texts]
    widths = [len(h) for h in headers]
    for row in texts:
        widths = [max(w, len(t)) for w, t in zip(widths, row, strict=True)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    stream.write(line.rstrip() + "\n")
    for row in texts:
        stream.write(
            "  ".join(t.ljust(w) for t, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def json_default(value: object) -> object:
    """What ``json.dumps`` cannot write by itself: times as ISO text, sets and tuples as
    lists."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dump_json(document: object, *, out: TextIO | None = None) -> None:
    """One JSON document on stdout."""
    stream = out or sys.stdout
    stream.write(json.dumps(document, indent=2, default=json_default) + "\n")
