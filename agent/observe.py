"""Which containers medic supervises, and what it sees of them each poll.

A poll is one list request for the whole scope. Only containers whose summary
says something may be wrong get an inspect request: a healthy stack costs one
request per cycle, however many containers it has.
"""

from __future__ import annotations

import re
from pathlib import Path

from loguru import logger

from agent.docker_gateway import DockerGateway
from agent.errors import ContainerGone, DockerError
from agent.model import PROJECT_LABEL, ContainerId, ContainerSnapshot
from agent.scope import Scope, label_is_true

_CONTAINER_ID_IN_PATH = re.compile(r"/(?:docker/containers|docker)/([0-9a-f]{64})(?:/|$|\.scope)")

__all__ = ["Scope", "label_is_true", "own_container_id", "poll", "resolve_scope"]


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
    project: str | None, gateway: DockerGateway, *, own_id: ContainerId | None
) -> Scope:
    """MEDIC_PROJECT if set; else the project of medic's own container; else opt-in."""
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
    return Scope(project=None, own_id=own_id)


def poll(gateway: DockerGateway, scope: Scope) -> list[ContainerSnapshot]:
    """One list request, narrowed to the scope, then inspect only where needed.

    A container that vanishes between the two requests is skipped with a log line.
    """
    seen: list[ContainerSnapshot] = []
    for summary in gateway.list_containers(scope.label_filter):
        if not scope.includes(summary.ref.id, summary.labels):
            continue
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
