"""Small builders for model values, so each test states only what it is about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
