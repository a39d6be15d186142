"""What to do about a container's findings. Pure: the clock and the history are inputs.

This is where backoff and the circuit breaker live. The rules, per container:

* The most severe finding that some playbook handles is the one acted on.
* Never two actions at once: while an action runs, findings are skipped.
* The first attempt is immediate; after ``n`` attempts the next waits
  ``backoff.delay(n)`` (10 s, 20 s, 40 s, ... capped at 5 min by default).
* When ``escalation.after_attempts`` attempts were made within
  ``escalation.within`` seconds and the trouble is still there, escalate: the
  circuit opens and no automatic action is taken until the container recovers or
  a person resolves the incident. The reason says whether each attempt healed the
  container for a while (``HealingState.relapses``) or none did.
* The streak of attempts is forgotten after ``backoff.reset_after`` seconds healthy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from agent.model import (
    PLAYBOOK_LABEL,
    SEVERITY,
    Decision,
    Escalate,
    Finding,
    HealingState,
    Plan,
    Playbook,
    Relapse,
    Skip,
    Wait,
)


def by_severity(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITY.index(f.signal))


def select_playbook(
    finding: Finding, labels: Mapping[str, str], playbooks: Sequence[Playbook]
) -> Playbook | None:
    """The playbook pinned by ``medic.playbook`` if it handles the signal, else the
    first playbook (in file order) whose match fits."""
    pinned = labels.get(PLAYBOOK_LABEL)
    if pinned:
        for playbook in playbooks:
            if playbook.name == pinned and finding.signal in playbook.match.signals:
                return playbook
    for playbook in playbooks:
        if playbook.match.matches(finding, labels):
            return playbook
    return None


def decide(
    findings: Sequence[Finding],
    *,
    labels: Mapping[str, str],
    state: HealingState,
    playbooks: Sequence[Playbook],
    now: datetime,
    used: Sequence[str] = (),
) -> Decision | None:
    """One decision for one container, or None when it shows no trouble.

    ``used`` names the playbooks whose attempts make up the current streak (a crash
    loop is often healed first as exits): an escalation names those.
    """
    if not findings:
        return None
    ordered = by_severity(findings)
    chosen: tuple[Finding, Playbook] | None = None
    for finding in ordered:
        playbook = select_playbook(finding, labels, playbooks)
        if playbook is not None:
            chosen = (finding, playbook)
            break
    if chosen is None:
        worst = ordered[0]
        return Skip(worst, f"no playbook handles the signal {worst.signal}")
    finding, playbook = chosen

    if state.circuit_open:
        return Skip(
            finding,
            "healing is escalated and paused until the container recovers "
            "or a person resolves the incident",
        )
    if state.busy:
        return Skip(finding, "an action on this container is still running")

    rule = playbook.escalation
    horizon = now - timedelta(seconds=rule.within)
    recent = [at for at in state.attempts if at >= horizon]
    if len(recent) >= rule.after_attempts:
        names = list(dict.fromkeys(used)) or [playbook.name]
        by = f"playbook {names[0]}" if len(names) == 1 else f"playbooks {', '.join(names)}"
        lasted = [r.lasted for r in state.relapses if r.attempt in recent]
        if len(lasted) == len(recent):
            return Escalate(
                finding,
                playbook,
                f"{finding.container.label} was healed {len(recent)} "
                f"time{'s' if len(recent) != 1 else ''} by {by} and failed again within "
                f"{_up_to(max(lasted))} each time (within {_minutes(rule.within)})",
                relapsing=True,
            )
        return Escalate(
            finding,
            playbook,
            f"{finding.container.label} still shows {finding.signal} after "
            f"{len(recent)} attempt{'s' if len(recent) != 1 else ''} by {by} "
            f"within {_minutes(rule.within)}",
        )

    made = len(state.attempts)
    if made:
        last = max(state.attempts)
        due = last + timedelta(seconds=playbook.backoff.delay(made))
        if now < due:
            return Wait(
                finding,
                playbook,
                due,
                f"backoff: attempt {made + 1} is due at {due:%H:%M:%S}, "
                f"{playbook.backoff.delay(made):g} s after attempt {made}",
            )
    return Plan(finding, playbook, playbook.actions, attempt=made + 1)


def after_attempt(state: HealingState, *, at: datetime, playbook: Playbook) -> HealingState:
    """The state once an attempt started at ``at`` has finished."""
    return replace(
        state,
        attempts=(*state.attempts, at),
        busy=False,
        reset_after=playbook.backoff.reset_after,
    )


def after_healthy(state: HealingState, *, healthy_since: datetime, now: datetime) -> HealingState:
    """Forget the streak once the container has been healthy for ``reset_after``."""
    if state.attempts and (now - healthy_since).total_seconds() >= state.reset_after:
        return replace(state, attempts=(), relapses=())
    return state


def after_relapse(state: HealingState, *, attempt: datetime, lasted: float) -> HealingState:
    """The attempt started at ``attempt`` healed the container, and after ``lasted``
    seconds it failed again."""
    return replace(state, relapses=(*state.relapses, Relapse(attempt, lasted)))


def _up_to(seconds: float) -> str:
    """A time span rounded up, so that "within" it stays true."""
    if seconds < 120:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


def _minutes(seconds: float) -> str:
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
