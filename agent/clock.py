"""One clock for the whole process, injected wherever time is read or waited for.

medic compares two kinds of time and must never mix them: the host's (when medic
started an action, when it will look again) and the engine's (event times,
``finished_at``, health check times, log timestamps). Both are read through a
Clock so that tests drive them without sleeping; the engine's own timestamps
arrive inside snapshots and events, never from here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


def utcnow() -> datetime:
    """The host's time, timezone-aware UTC. The only place medic calls ``datetime.now``."""
    return datetime.now(UTC)


class Clock(Protocol):
    """What time it is, and a way to wait."""

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return utcnow()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def steady() -> float:
    """Seconds on a clock that never steps back and keeps counting while this process is
    stopped or the host is suspended (``CLOCK_BOOTTIME`` on Linux, else the monotonic
    clock). A medic measures how long ago it renewed its lease on it: a pause of the
    process, a frozen VM or a suspended laptop all count, where a wall clock could be
    set back and the plain monotonic clock stands still while the host sleeps."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()
