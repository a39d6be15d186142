"""log_match and probe_failed: trouble that a container's health check does not show.

Some failures leave the process running and its health check green, or there is
no health check at all: Postgres logging ``remaining connection slots are
reserved``, a web app that stops answering on its port. A playbook that names
these signals says what to look for (``match.log``, ``match.probe``). Only the
containers such a playbook applies to are read or probed, so a stack without them
pays nothing extra per cycle.

Turning log lines and probe outcomes into findings is pure; reaching a container's
port is the ``Prober``'s job, behind a small interface with a real socket prober.
"""

from __future__ import annotations

import http.client
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from agent.model import ContainerRef, Finding, LogRule, ProbeKind, ProbeRule, Signal

#: How much of a matching log line a finding keeps.
LINE_LIMIT = 500


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def log_hits(
    rule: LogRule,
    lines: Sequence[tuple[datetime, str]],
    *,
    earlier: Sequence[datetime],
    now: datetime,
) -> tuple[list[datetime], str | None]:
    """The times of matching lines still within the window, and the newest matching text."""
    pattern = _compiled(rule.pattern)
    horizon = now - timedelta(seconds=rule.window)
    hits = [t for t in earlier if t >= horizon]
    last: str | None = None
    for at, text in lines:
        if pattern.search(text):
            last = text
            if at >= horizon:
                hits.append(at)
    return hits, last


def log_finding(
    container: ContainerRef,
    rule: LogRule,
    *,
    hits: Sequence[datetime],
    last_line: str | None,
    now: datetime,
) -> Finding | None:
    """A ``log_match`` finding once ``rule.count`` lines matched within the window."""
    if len(hits) < rule.count:
        return None
    return Finding(
        container=container,
        signal=Signal.LOG_MATCH,
        summary=(
            f"{container.label} logged /{rule.pattern}/ {len(hits)} time"
            f"{'s' if len(hits) != 1 else ''} in the last {rule.window:g} s."
        ),
        observed_at=now,
        evidence={
            "pattern": rule.pattern,
            "matches": len(hits),
            "window_seconds": rule.window,
            "last_line": (last_line or "")[:LINE_LIMIT],
        },
    )


def probe_finding(
    container: ContainerRef,
    rule: ProbeRule,
    *,
    failures: int,
    detail: str,
    now: datetime,
) -> Finding | None:
    """A ``probe_failed`` finding once ``rule.failures`` probes in a row failed."""
    if failures < rule.failures:
        return None
    return Finding(
        container=container,
        signal=Signal.PROBE_FAILED,
        summary=f"{container.label} failed {failures} {rule.describe()} probes in a row: {detail}.",
        observed_at=now,
        evidence={"probe": rule.describe(), "failures": failures, "last_error": detail},
    )


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    detail: str


class Prober(ABC):
    """Reaches a container's port the way a client would."""

    @abstractmethod
    def probe(self, rule: ProbeRule, address: str) -> ProbeOutcome: ...

    def probe_all(self, requests: Sequence[tuple[ProbeRule, str]]) -> list[ProbeOutcome]:
        """Every probe, in order; the default runs them one after another."""
        return [self.probe(rule, address) for rule, address in requests]


class SocketProber(Prober):
    """TCP connects and HTTP GETs from medic's own network namespace, in parallel."""

    def __init__(self, workers: int = 8) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medic-probe")

    def probe(self, rule: ProbeRule, address: str) -> ProbeOutcome:
        try:
            if rule.kind is ProbeKind.TCP:
                with socket.create_connection((address, rule.port), timeout=rule.timeout):
                    return ProbeOutcome(True, "accepted")
            conn = http.client.HTTPConnection(address, rule.port, timeout=rule.timeout)
            try:
                conn.request("GET", rule.path, headers={"User-Agent": "medic-probe"})
                status = conn.getresponse().status
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as e:
            return ProbeOutcome(False, f"{address}:{rule.port}: {e or type(e).__name__}")
        if status >= 400:
            return ProbeOutcome(False, f"GET {rule.path} answered {status}")
        return ProbeOutcome(True, f"GET {rule.path} answered {status}")

    def probe_all(self, requests: Sequence[tuple[ProbeRule, str]]) -> list[ProbeOutcome]:
        # In parallel: one slow container costs one timeout per cycle, not one each.
        futures = [self._pool.submit(self.probe, rule, address) for rule, address in requests]
        return [f.result() for f in futures]
