"""Which containers medic may look at and act on. Pure: no I/O.

One scope decides for every part of medic: the poll, the events stream, and every
action the actor carries out (restart_dependents included). A container is out of
scope when it belongs to another compose project or Swarm stack (or does not opt in
when medic runs with neither), when it is labelled ``medic.ignore`` with any true
value, or when it is medic's own container. Label truthiness has one parser,
``label_is_true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.model import ENABLE_LABEL, IGNORE_LABEL, PROJECT_LABEL, STACK_LABEL, ContainerId

#: Spellings of "true" in a label value, compared without case or surrounding spaces.
TRUE_VALUES = frozenset({"true", "1", "yes", "on"})


def label_is_true(value: str | None) -> bool:
    """Whether a label value says yes: ``true``, ``1``, ``yes`` or ``on``, in any case."""
    return (value or "").strip().lower() in TRUE_VALUES


@dataclass(frozen=True)
class Scope:
    """The containers medic may act on: one compose project, one Swarm stack (the tasks
    of ``docker stack deploy -c FILE STACK``), or those that opt in.

    medic's own container (``own_id``, read from /proc by ``observe.own_container_id``)
    and any labelled ``medic.ignore=true`` are never in scope.
    """

    project: str | None
    own_id: ContainerId | None = None
    stack: str | None = None

    @property
    def label_filter(self) -> str:
        """The label the engine filters on, so out-of-scope containers cost nothing."""
        if self.stack:
            return f"{STACK_LABEL}={self.stack}"
        if self.project:
            return f"{PROJECT_LABEL}={self.project}"
        return f"{ENABLE_LABEL}=true"

    def is_own(self, container_id: str) -> bool:
        """Whether the container is medic's own (ids may be given in short form)."""
        if not self.own_id or not container_id:
            return False
        if container_id.startswith(self.own_id):
            return True
        return len(container_id) >= 12 and self.own_id.startswith(container_id)

    def includes(self, container_id: str, labels: Mapping[str, str]) -> bool:
        if self.is_own(container_id):
            return False
        if label_is_true(labels.get(IGNORE_LABEL)):
            return False
        if self.stack:
            return labels.get(STACK_LABEL) == self.stack
        if self.project:
            return labels.get(PROJECT_LABEL) == self.project
        return label_is_true(labels.get(ENABLE_LABEL))

    def refusal(self, container_id: str, labels: Mapping[str, str]) -> str | None:
        """Why medic must not act on the container, or None when it may."""
        if self.is_own(container_id):
            return "it is medic's own container"
        if label_is_true(labels.get(IGNORE_LABEL)):
            return f"it is labelled {IGNORE_LABEL}={labels.get(IGNORE_LABEL)}"
        if not self.includes(container_id, labels):
            return f"it is not in medic's scope ({self.describe()})"
        return None

    def describe(self) -> str:
        if self.stack:
            return f"Swarm stack {self.stack!r}"
        if self.project:
            return f"compose project {self.project!r}"
        return "containers labelled medic.enable=true"
