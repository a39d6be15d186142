"""Where a benchmark writes its figures: one block between two markers in a docs page.

Each benchmark prints its figures and puts the same text in its block of the page,
replacing the block of its last run; the first run adds the block at the end, under
the heading it gives.
"""

from __future__ import annotations

from pathlib import Path


def write_block(path: Path, block: str, begin: str, end: str, *, heading: str = "") -> None:
    """``block`` (from ``begin`` to ``end``, markers included) in place of the page's
    block, or after the page's text under ``heading`` when it has none yet."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + heading + block + "\n"
    path.write_text(text, encoding="utf-8")
