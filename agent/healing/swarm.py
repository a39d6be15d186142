"""What medic does about a Swarm task's trouble, so that it never fights the orchestrator.

Pure: the service as the manager sees it is an input (agent/healing/observe.py reads it).

Swarm runs a service's tasks and replaces a task whose container ends or turns
unhealthy, by the service's restart policy. A restart, start or recreate of a task
container by anyone else fights that: Swarm takes the stopped container for a failed
task and starts another, and a container medic started again is one Swarm no longer
counts. So, for a plan ``decide`` made for a task container:

* a finding on a task Swarm shut down on purpose (an update, a scale-down, a removal)
  is no failure at all (``dismissed``);
* when Swarm replaces the task by itself (another task of the slot is meant to run, or
  the task's end is one its restart policy restarts), medic records the incident and
  leaves it to Swarm; a crash loop it keeps replacing is escalated instead, since
  another restart would not help;
* when Swarm will not (``restart_policy: condition: none``, or its ``max_attempts`` are
  used up) or cannot know (a log rule or a probe of medic's), the plan runs, translated
  by each action kind's ``under_swarm`` (agent/healing/actions.py): restart, start and
  recreate become one forced update of the service, a cache_clear's restart too, what
  runs inside the container stays, and stop, rebuild and restart_dependents are refused,
  each with its reason.

Which tasks of a slot are its current one is decided here too (``current_tasks``): a
slot keeps the containers of its last few tasks, and only the newest is judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.engine.gateway import SwarmRestart, SwarmService
from agent.healing import actions
from agent.model import (
    SIGNAL_KINDS,
    Action,
    ContainerSnapshot,
    Decision,
    Escalate,
    Plan,
    Signal,
    Skip,
    Source,
    State,
    SwarmTask,
)

#: Task states of a task Swarm ended on purpose: not a failure of its container.
ENDED_ON_PURPOSE = frozenset({"shutdown", "complete", "remove"})


@dataclass(frozen=True)
class Review:
    """A plan reviewed for a Swarm task: the decision to carry out instead, and whether
    the findings are no failure (``dismissed``: nothing is recorded)."""

    decision: Decision
    dismissed: bool = False
    notes: tuple[str, ...] = ()
    """What was translated or refused, one sentence each, for the log."""


def under_swarm(
    plan: Plan, task: SwarmTask, service: SwarmService | None, *, unreadable: str | None = None
) -> Review:
    """What to do instead of ``plan`` on the task container of ``task``.

    ``service`` is its service with its tasks as a manager sees them; None when medic
    could not read it (``unreadable`` says why, e.g. this node is not a manager).
    """
    finding = plan.finding
    name = service.name if service is not None and service.name else task.service_name
    if service is None:
        return Review(
            Skip(
                finding,
                f"medic cannot read Swarm service {name} ({unreadable or 'no answer'}), so it "
                "cannot tell whether Swarm replaces the task; it records the incident and "
                "leaves the task to Swarm",
            )
        )
    seen_by_swarm = SIGNAL_KINDS[finding.signal].source is Source.ENGINE
    own = service.task(task.task_id)
    if (
        seen_by_swarm
        and own is not None
        and own.desired_state in ENDED_ON_PURPOSE
        and own.state in ENDED_ON_PURPOSE
    ):
        return Review(
            Skip(
                finding,
                f"Swarm shut task {task.task_name} down on purpose (an update, a scale-down "
                f"or a removal of service {name}); that is no failure",
            ),
            dismissed=True,
        )
    if seen_by_swarm:
        swarm_acts = _swarm_replaces(task, service)
        if swarm_acts is not None:
            if finding.signal is Signal.CRASH_LOOP:
                return Review(
                    Escalate(
                        finding,
                        plan.playbook,
                        f"Swarm keeps replacing the task of {task.slot_name} and each new task "
                        f"fails again ({swarm_acts}); another restart would not help",
                    )
                )
            return Review(
                Skip(finding, f"{swarm_acts}; medic records the incident and does not act")
            )
    return translate(plan, name)


def _swarm_replaces(task: SwarmTask, service: SwarmService) -> str | None:
    """How Swarm replaces the task by itself, in words; None when it will not."""
    others = [t for t in service.in_slot(task.slot) if t.id != task.task_id and t.meant_to_run]
    if others:
        return f"Swarm has already put task {others[0].id[:12]} in its place"
    own = service.task(task.task_id)
    if own is None or not own.meant_to_run:
        # Ended, and nothing in its place: the policy said no, or its attempts ran out.
        return None
    if service.restart is SwarmRestart.NONE:
        return None
    # Every signal medic finds from the engine is a failure to Swarm (a non-zero exit,
    # an unhealthy check, a kill), so "on-failure" restarts it as "any" does.
    limit = f", at most {service.max_attempts} times" if service.max_attempts else ""
    return (
        f"Swarm restarts the task by service {service.name}'s restart policy "
        f"(condition {service.restart}{limit})"
    )


def translate(plan: Plan, service_name: str) -> Review:
    """The plan with each action as its kind does it on a Swarm task: restarts become one
    forced update of the service, refused actions are left out with their reason."""
    kept: list[Action] = []
    notes: list[str] = []
    refused: list[str] = []
    for action in plan.actions:
        entry = actions.KINDS.get(action.kind)
        if entry is None:
            kept.append(action)  # the actor says it does not know the kind
            continue
        becomes = entry.under_swarm(action)
        if isinstance(becomes, str):
            refused.append(f"{actions.describe(action)}: {becomes}")
            continue
        if becomes != (action,):
            instead = ", then ".join(actions.describe(a) for a in becomes)
            notes.append(
                f"{actions.describe(action)} of playbook {plan.playbook.name} becomes {instead} "
                f"of Swarm service {service_name}: medic restarts no task container"
            )
        kept.extend(becomes)
    kept = _once(kept, actions.FORCE_UPDATE)
    notes.extend(
        f"Under Swarm medic refuses {why} (playbook {plan.playbook.name})" for why in refused
    )
    if not kept:
        return Review(
            Skip(
                plan.finding,
                f"every action of playbook {plan.playbook.name} is refused under Swarm "
                f"({'; '.join(refused)})",
            ),
            notes=tuple(notes),
        )
    return Review(
        Plan(plan.finding, plan.playbook, tuple(kept), attempt=plan.attempt), notes=tuple(notes)
    )


def _once(kept: list[Action], kind: str) -> list[Action]:
    """Several restarts of one plan are one update of the service: the first is kept."""
    seen = False
    result = []
    for action in kept:
        if action.kind == kind:
            if seen:
                continue
            seen = True
        result.append(action)
    return result


def current_tasks(snapshots: Sequence[ContainerSnapshot]) -> list[ContainerSnapshot]:
    """The snapshots with, of each Swarm slot, only its newest task container: the
    containers of the slot's earlier tasks (Swarm keeps a few) are its past, not its
    present. Other containers pass through; the order is kept."""
    newest: dict[str, ContainerSnapshot] = {}
    for snapshot in snapshots:
        task = snapshot.ref.swarm
        if task is None:
            continue
        held = newest.get(task.slot_name)
        if held is None or _newer(snapshot, held):
            newest[task.slot_name] = snapshot
    chosen = {id(s) for s in newest.values()}
    return [s for s in snapshots if s.ref.swarm is None or id(s) in chosen]


def _newer(a: ContainerSnapshot, b: ContainerSnapshot) -> bool:
    if a.created_at is not None and b.created_at is not None and a.created_at != b.created_at:
        return a.created_at > b.created_at
    # Without times (or with equal ones) a running container is the current one.
    return a.state is State.RUNNING and b.state is not State.RUNNING
