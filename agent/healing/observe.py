"""Which containers medic supervises, and what it sees of them each poll.

A poll is one list request for the whole scope. Only containers whose summary
says something may be wrong get an inspect request: a healthy stack costs one
request per cycle, however many containers it has. Of a Swarm slot's task
containers only the newest is seen; a plan for a Swarm task is reviewed against its
service as a manager sees it (``review_for_swarm``) before anything is recorded.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from loguru import logger

from agent.engine.gateway import DockerGateway, SwarmService
from agent.errors import ContainerGone, DockerError, NotSwarmManager
from agent.healing import swarm
from agent.healing.history import (
    SAME_DEATH,
    History,
    note_death,
    on_inspect,
    reaches_death,
    unexplained_death,
    with_past_events,
)
from agent.model import (
    PROJECT_LABEL,
    STACK_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Decision,
    Finding,
    Plan,
    State,
    SwarmTask,
)
from agent.scope import Scope, label_is_true

_CONTAINER_ID_IN_PATH = re.compile(r"/(?:docker/containers|docker)/([0-9a-f]{64})(?:/|$|\.scope)")

__all__ = [
    "Scope",
    "explain",
    "label_is_true",
    "look_again",
    "own_container_id",
    "poll",
    "resolve_scope",
    "review_for_swarm",
]


def own_container_id(proc: Path = Path("/proc")) -> ContainerId | None:
    """medic's own container id when it runs in a Docker container, read from /proc."""
    for name in ("self/mountinfo", "self/cgroup"):
        try:
            text = (proc / name).read_text(errors="replace")
        except OSError:
            continue
        found = _CONTAINER_ID_IN_PATH.search(text)
        if found:
            return ContainerId(found.group(1))
    return None


def resolve_scope(
    project: str | None,
    gateway: DockerGateway,
    *,
    own_id: ContainerId | None,
    stack: str | None = None,
) -> Scope:
    """MEDIC_PROJECT or MEDIC_STACK if set; else the compose project or Swarm stack of
    medic's own container; else opt-in."""
    if stack:
        return Scope(project=None, own_id=own_id, stack=stack)
    if project:
        return Scope(project=project, own_id=own_id)
    if own_id is not None:
        try:
            me = gateway.inspect(own_id)
        except ContainerGone:
            logger.warning(
                "medic could not inspect its own container {}; supervising only containers "
                "labelled medic.enable=true. Set MEDIC_PROJECT to choose a project.",
                own_id[:12],
            )
        else:
            detected = me.labels.get(PROJECT_LABEL)
            if detected:
                return Scope(project=detected, own_id=own_id)
            # Deployed by docker stack deploy: medic supervises the stack it is part of.
            in_stack = me.labels.get(STACK_LABEL)
            if in_stack:
                return Scope(project=None, own_id=own_id, stack=in_stack)
    return Scope(project=None, own_id=own_id)


def poll(gateway: DockerGateway, scope: Scope) -> list[ContainerSnapshot]:
    """One list request, narrowed to the scope, then inspect only where needed.

    A container that vanishes between the two requests is skipped with a log line.
    """
    seen: list[ContainerSnapshot] = []
    listed = [
        s for s in gateway.list_containers(scope.label_filter) if scope.includes(s.ref.id, s.labels)
    ]
    for summary in swarm.current_tasks(listed):
        if not summary.needs_closer_look:
            seen.append(summary)
            continue
        try:
            seen.append(gateway.inspect(summary.ref.id))
        except ContainerGone:
            logger.info(
                "Container {} was removed while medic looked at it; skipping it.", summary.ref.label
            )
        except DockerError as e:
            logger.warning(
                "Could not inspect {}: {}. It is checked again next poll.", summary.ref.label, e
            )
    return seen


def look_again(gateway: DockerGateway, scope: Scope, ref: ContainerRef) -> ContainerSnapshot | None:
    """A fresh snapshot of one container between polls; None when it cannot be had now
    (said in a warning) or is no longer in scope. Raises ContainerGone when it is gone."""
    try:
        snapshot = gateway.inspect(ref.id)
    except ContainerGone:
        raise
    except DockerError as e:
        logger.warning("Could not inspect {}: {}. The next poll looks again.", ref.label, e)
        return None
    return snapshot if scope.includes(snapshot.ref.id, snapshot.labels) else None


def explain(
    gateway: DockerGateway,
    history: History,
    snapshot: ContainerSnapshot,
    *,
    grace: float,
    window: float,
) -> History | None:
    """What medic knows of the container after this snapshot (agent/healing/history.py).

    A death no event explained (the stream was down, or medic was not running) is a
    crash or a person's stop; the engine's event history says which. When that
    history cannot be read, the container is left as it is until the next poll
    (None): guessing would either fight a person's stop or ignore a crash. When it
    can be read but no longer reaches back to the death (a busy engine keeps about a
    minute of events), the death is taken for a crash, with a warning saying so.
    """
    history = on_inspect(history, snapshot)
    died = unexplained_death(history, snapshot) if snapshot.detailed else None
    if died is None:
        return history
    if snapshot.state is not State.EXITED or snapshot.ref.swarm is not None:
        # Nobody stops a Swarm task for medic to respect: Swarm stops the tasks it
        # replaces, and a person's docker stop is a failed task to Swarm. Whether Swarm
        # replaces it is for the review against its service (review_for_swarm).
        return note_death(history, died, window=window)
    since = died - timedelta(seconds=grace)
    if snapshot.started_at is not None:
        since = max(since, snapshot.started_at)
    try:
        past = gateway.past_events(snapshot.ref.id, since=since, until=died + SAME_DEATH)
    except DockerError as e:
        logger.bind(container=snapshot.ref.name).warning(
            "Could not read the event history of {} to tell whether a person stopped it "
            "({}); medic leaves it as it is and looks again at the next poll.",
            snapshot.ref.label,
            e,
        )
        return None
    events = tuple((e.kind, e.at, e.attributes.get("signal")) for e in past)
    history, by_person = with_past_events(history, died, events, window=window)
    if not by_person and not reaches_death(events, died):
        # The engine dropped its events of that death (it keeps its last 256, and none
        # across its restarts): a person's stop then looks like a crash, and is healed.
        logger.bind(container=snapshot.ref.name).warning(
            "The Docker engine's event history no longer goes back to when {} stopped at "
            "{:%H:%M:%S} (the engine keeps only its last 256 events, and none from before "
            "it restarted), so medic cannot tell a person's stop from a crash and takes it "
            "for a crash. If a person stopped it on purpose, stop it again while medic runs: "
            "medic sees that stop and leaves the container stopped.",
            snapshot.ref.label,
            died,
        )
    if by_person:
        logger.bind(container=snapshot.ref.name).info(
            "{} was stopped by a person (docker stop or kill at {:%H:%M:%S}, from the engine's "
            "event history); medic leaves it stopped until it is started again.",
            snapshot.ref.label,
            history.stopped_at,
        )
    return history


def review_for_swarm(
    gateway: DockerGateway, decision: Decision | None, findings: list[Finding]
) -> tuple[Decision | None, list[Finding]]:
    """A plan for a Swarm task container, reviewed against its service as the manager
    sees it (agent/healing/swarm.py): what to do instead, and the findings to record
    (none when Swarm ended the task on purpose). Anything else passes unchanged."""
    if not isinstance(decision, Plan) or decision.finding.container.swarm is None:
        return decision, findings
    task = decision.finding.container.swarm
    service, unreadable = _read_service(gateway, task)
    review = swarm.under_swarm(decision, task, service, unreadable=unreadable)
    for note in review.notes:
        logger.bind(container=decision.finding.container.name).info("{}.", note)
    return review.decision, [] if review.dismissed else findings


def _read_service(
    gateway: DockerGateway, task: SwarmTask
) -> tuple[SwarmService | None, str | None]:
    try:
        return gateway.swarm_service(task.service_id), None
    except NotSwarmManager as e:
        return None, str(e)
    except DockerError as e:
        logger.warning(
            "Could not read Swarm service {}: {}. medic leaves its task to Swarm and looks "
            "again at the next poll.",
            task.service_name,
            e,
        )
        return None, str(e)
