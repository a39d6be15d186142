"""From a snapshot of one container to the trouble it shows. Pure: no I/O, no clock.

What the snapshot alone cannot say (how often the container died lately, whether
a person stopped it, whether medic's own action left it stopped) is passed in from
the container's history (agent/healing/history.py), which learns it from Docker's events.
Every time compared here is the engine's: deaths with deaths, health-check times
with the end of medic's last action.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from agent.healing.history import History
from agent.model import ContainerSnapshot, Finding, Health, Signal, State


@dataclass(frozen=True)
class CrashLoopRule:
    """``deaths`` deaths within ``window`` seconds make a crash loop."""

    deaths: int = 3
    window: float = 300.0


def deaths_within(deaths: Sequence[datetime], *, window: float) -> list[datetime]:
    """The deaths within ``window`` seconds of the newest one.

    Counted against each other, never against the host's clock: death times are the
    engine's, and the engine's clock may be minutes off medic's.
    """
    if not deaths:
        return []
    horizon = max(deaths) - timedelta(seconds=window)
    return [d for d in deaths if d >= horizon]


def detect(
    snapshot: ContainerSnapshot,
    *,
    deaths: Sequence[datetime] = (),
    stopped_by_person: bool = False,
    crash_loop: CrashLoopRule = CrashLoopRule(),
    acted_at: datetime | None = None,
    stopped_by_medic: bool = False,
) -> list[Finding]:
    """Every finding the snapshot shows, most severe first.

    Exit code 0 is a finished job, not trouble. A container a person stopped
    (``docker stop``, ``docker kill``, ``compose stop``) is left alone. An
    ``unhealthy`` status from a health check that ran before medic's last action
    (``acted_at``, the engine's time when that action was over) says nothing about
    that action yet: Docker keeps the old status until the check runs again, so it is
    not a finding. A container medic's own ``stop`` action left stopped
    (``stopped_by_medic``) is no more trouble than one a person stopped.
    """
    now = snapshot.observed_at
    who = snapshot.ref.label
    findings: list[Finding] = []
    left_alone = stopped_by_person or stopped_by_medic

    recent = deaths_within(deaths, window=crash_loop.window)
    down = not snapshot.is_healthy or snapshot.state is State.RESTARTING
    if len(recent) >= crash_loop.deaths and down and not left_alone:
        findings.append(
            Finding(
                container=snapshot.ref,
                signal=Signal.CRASH_LOOP,
                summary=(f"{who} died {len(recent)} times in the last {_span(crash_loop.window)}."),
                observed_at=now,
                evidence={
                    "deaths": len(recent),
                    "window_seconds": crash_loop.window,
                    "last_death": max(recent).isoformat(),
                    "exit_code": snapshot.exit_code,
                    "restart_count": snapshot.restart_count,
                },
            )
        )

    if snapshot.state is State.DEAD:
        findings.append(
            Finding(
                container=snapshot.ref,
                signal=Signal.DEAD,
                summary=f"{who} is dead: Docker could not stop or remove it cleanly.",
                observed_at=now,
                evidence={"error": snapshot.error, "exit_code": snapshot.exit_code},
            )
        )
    elif snapshot.state is State.EXITED and snapshot.exit_code and not left_alone:
        if snapshot.oom_killed:
            signal = Signal.OOM_KILLED
            summary = (
                f"{who} was killed for running out of memory (exit code {snapshot.exit_code})."
            )
        else:
            signal = Signal.EXITED
            summary = f"{who} exited with code {snapshot.exit_code}."
        findings.append(
            Finding(
                container=snapshot.ref,
                signal=signal,
                summary=summary,
                observed_at=now,
                evidence={
                    "exit_code": snapshot.exit_code,
                    "finished_at": (
                        snapshot.finished_at.isoformat() if snapshot.finished_at else None
                    ),
                    "restart_count": snapshot.restart_count,
                    "error": snapshot.error,
                },
            )
        )

    if (
        snapshot.state is State.RUNNING
        and snapshot.health is Health.UNHEALTHY
        and not health_is_stale(snapshot, acted_at)
    ):
        streak = snapshot.failing_streak
        failed = f" {streak} times in a row" if streak > 1 else ""
        findings.append(
            Finding(
                container=snapshot.ref,
                signal=Signal.UNHEALTHY,
                summary=f"{who} is unhealthy: its health check failed{failed}.",
                observed_at=now,
                evidence={"health_output": snapshot.health_output, "failing_streak": streak},
            )
        )
    return findings


def detect_in(
    snapshot: ContainerSnapshot, history: History, crash_loop: CrashLoopRule
) -> list[Finding]:
    """``detect`` with what the container's history knows (agent/healing/history.py)."""
    return detect(
        snapshot,
        deaths=history.deaths,
        stopped_by_person=history.stopped_by_person,
        stopped_by_medic=history.stopped_by_medic,
        crash_loop=crash_loop,
        acted_at=history.acted_until,
    )


def health_is_stale(snapshot: ContainerSnapshot, acted_at: datetime | None) -> bool:
    """Whether the health status predates medic's last action on the container (both
    engine times)."""
    checked = snapshot.health_checked_at
    return acted_at is not None and checked is not None and checked <= acted_at


def _span(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
