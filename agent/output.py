"""How the CLI prints: aligned tables for people, one JSON document for machines."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value).replace("\n", " ")


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


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dump_json(document: object, *, out: TextIO | None = None) -> None:
    """One JSON document on stdout."""
    stream = out or sys.stdout
    stream.write(json.dumps(document, indent=2, default=_default) + "\n")
