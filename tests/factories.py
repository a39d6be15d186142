"""Small builders for model values and for a supervisor on the fake engine, so each
test states only what it is about."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fakes import FakeDocker

from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.model import (
    Action,
    Backoff,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Escalation,
    Finding,
    Health,
    Match,
    Playbook,
    Signal,
    State,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


REF = ContainerRef(id=ContainerId("c" * 64), name="shop-web-1", project="shop", service="web")


def snapshot(
    *,
    state: State = State.RUNNING,
    health: Health = Health.NONE,
    exit_code: int | None = None,
    oom_killed: bool = False,
    seconds: float = 0,
    labels: dict[str, str] | None = None,
) -> ContainerSnapshot:
    return ContainerSnapshot(
        ref=REF,
        labels=labels or {},
        image="shop/web",
        state=state,
        health=health,
        exit_code=exit_code,
        observed_at=at(seconds),
        detailed=True,
        oom_killed=oom_killed,
        health_output="exit 1: connection refused" if health is Health.UNHEALTHY else None,
        failing_streak=3 if health is Health.UNHEALTHY else 0,
    )


def finding(signal: Signal = Signal.UNHEALTHY, seconds: float = 0) -> Finding:
    return Finding(container=REF, signal=signal, summary=f"{signal}", observed_at=at(seconds))


def playbook(
    name: str = "restart-unhealthy",
    signals: tuple[Signal, ...] = (Signal.UNHEALTHY,),
    *,
    kind: str = "restart",
    services: frozenset[str] = frozenset(),
    backoff: Backoff | None = None,
    escalation: Escalation | None = None,
) -> Playbook:
    return Playbook(
        name=name,
        match=Match(signals=frozenset(signals), services=services),
        actions=(Action(kind),),
        backoff=backoff or Backoff(),
        escalation=escalation or Escalation(),
    )


def supervisor_on(
    fake: FakeDocker,
    playbooks: Sequence[Playbook],
    *,
    store: MemoryStore | None = None,
    clock: Clock = SYSTEM_CLOCK,
    healing: HealingSettings | None = None,
    scope: Scope | None = None,
    **options: Any,
) -> Supervisor:
    """A supervisor of compose project "shop" on the fake engine.

    Default healing settings and a fresh store unless given; ``options`` go to
    Supervisor as they are (notifier, prober, escalation, reconnect_delays, ...).
    """
    return Supervisor(
        healing=healing or HealingSettings(),
        gateway=fake,
        store=MemoryStore() if store is None else store,
        playbooks=playbooks,
        scope=scope or Scope(project="shop"),
        clock=clock,
        **options,
    )


def compose_build_folder(folder: Path, service: str, *, dockerfile: bool = True) -> dict[str, str]:
    """Write a compose project in ``folder`` whose ``service`` builds from ./app.

    Returns the labels Compose gives that service's container, so that medic finds
    the project again from it (for recreate and rebuild).
    """
    (folder / "app").mkdir()
    if dockerfile:
        (folder / "app" / "Dockerfile").write_text("FROM scratch\n")
    (folder / "compose.yml").write_text(f"services:\n  {service}:\n    build: ./app\n")
    return {
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": service,
        "com.docker.compose.project.working_dir": str(folder),
        "com.docker.compose.project.config_files": "compose.yml",
    }
