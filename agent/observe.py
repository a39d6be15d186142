"""Which containers medic supervises, and what it sees of them each poll.

A poll is one list request for the whole scope. Only containers whose summary
says something may be wrong get an inspect request: a healthy stack costs one
request per cycle, however many containers it has.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from agent.docker_gateway import DockerGateway
from agent.errors import ContainerGone, DockerError
from agent.model import (
    ENABLE_LABEL,
    IGNORE_LABEL,
    PROJECT_LABEL,
    ContainerId,
    ContainerSnapshot,
)

_CONTAINER_ID_IN_PATH = re.compile(r"/(?:docker/containers|docker)/([0-9a-f]{64})(?:/|$|\.scope)")
_TRUE = {"true", "1", "yes", "on"}


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Scope:
    """The containers medic may act on: one compose project, or those that opt in.

    medic's own container and any labelled ``medic.ignore=true`` are never in scope.
    """

    project: str | None
    own_id: ContainerId | None = None

    @property
    def label_filter(self) -> str:
        """The label the engine filters on, so out-of-scope containers cost nothing."""
        if self.project:
            return f"{PROJECT_LABEL}={self.project}"
        return f"{ENABLE_LABEL}=true"

    def includes(self, container_id: str, labels: Mapping[str, str]) -> bool:
        if self.own_id and container_id.startswith(self.own_id):
            return False
        if _is_true(labels.get(IGNORE_LABEL)):
            return False
        if self.project:
            return labels.get(PROJECT_LABEL) == self.project
        return _is_true(labels.get(ENABLE_LABEL))

    def describe(self) -> str:
        if self.project:
            return f"compose project {self.project!r}"
        return "containers labelled medic.enable=true"


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
