"""Why a proposed fix is refused: a stable code and one sentence for a person."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """One reason a proposal is refused: a stable ``code`` and a sentence for a person."""

    code: str
    message: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def show(path: str) -> str:
    """A path as a log line may show it: printable, and not too long."""
    printable = "".join(ch if ch.isprintable() else "?" for ch in path)
    return printable if len(printable) <= 200 else printable[:199] + "…"
