"""An in-memory Docker engine behind the DockerGateway interface.

Honest about what matters to medic: containers filtered by label, ContainerGone
for unknown ids, restart/start/stop change state and emit the same events a real
engine does, in the same order, and the events stream can be dropped to test
reconnection. Every request is counted.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from agent.docker_gateway import (
    BuildRequest,
    BuildResult,
    DockerEvent,
    DockerGateway,
    EventStream,
    ExecResult,
    ProjectContainer,
)
from agent.errors import ContainerGone, DockerUnavailable
from agent.model import ContainerId, ContainerRef, ContainerSnapshot, Health, State


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    state: State = State.RUNNING
    health: Health = Health.NONE
    exit_code: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    log: list[tuple[datetime, str]] = field(default_factory=list)
    ip: str = "172.30.0.2"


class _Stream(EventStream):
    def __init__(self, owner: FakeDocker) -> None:
        self._owner = owner
        self.queue: queue.Queue[DockerEvent | Exception | None] = queue.Queue()

    def __iter__(self) -> Iterator[DockerEvent]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.queue.put(None)


class FakeDocker(DockerGateway):
    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.requests: list[str] = []
        self.streams: list[_Stream] = []
        self.refuse_events = 0
        self.history: list[DockerEvent] = []
        self._lock = threading.Lock()

    # --- test controls ---
    def add(self, name: str, labels: Mapping[str, str], **state: object) -> FakeContainer:
        c = FakeContainer(id=f"{len(self.containers) + 1:064x}", name=name, labels=dict(labels))
        for key, value in state.items():
            setattr(c, key, value)
        self.containers[c.id] = c
        return c

    def emit(self, container: FakeContainer, action: str, **attributes: str) -> None:
        event = DockerEvent(
            ContainerId(container.id),
            action,
            datetime.now(UTC),
            {"name": container.name, **container.labels, **attributes},
        )
        self.history.append(event)
        for stream in list(self.streams):
            stream.queue.put(event)

    def crash(self, container: FakeContainer, exit_code: int = 1) -> None:
        """The main process died by itself: state, code and the die event, as the engine does."""
        container.state, container.exit_code = State.EXITED, exit_code
        container.finished_at = datetime.now(UTC)
        self.emit(container, "die", exitCode=str(exit_code))

    def drop_events(self) -> None:
        """The engine went away: every open stream fails."""
        for stream in self.streams:
            stream.queue.put(DockerUnavailable("Reading Docker events: connection reset"))
        self.streams.clear()

    # --- the interface ---
    def _get(self, container_id: str) -> FakeContainer:
        found = self.containers.get(container_id)
        if found is None:
            raise ContainerGone(f"container {container_id[:12]}: no such container")
        return found

    def _snapshot(self, c: FakeContainer, *, detailed: bool) -> ContainerSnapshot:
        return ContainerSnapshot(
            ref=ContainerRef(
                ContainerId(c.id),
                c.name,
                c.labels.get("com.docker.compose.project"),
                c.labels.get("com.docker.compose.service"),
            ),
            labels=dict(c.labels),
            image="fake",
            state=c.state,
            health=c.health,
            exit_code=c.exit_code if c.state in (State.EXITED, State.DEAD) else None,
            observed_at=datetime.now(UTC),
            ip_addresses=(c.ip,) if c.state is State.RUNNING else (),
            detailed=detailed,
            started_at=c.started_at if detailed else None,
            finished_at=c.finished_at if detailed else None,
        )

    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        self.requests.append("list")
        key, _, value = label_filter.partition("=")
        return [
            self._snapshot(c, detailed=False)
            for c in self.containers.values()
            if c.labels.get(key) == value
        ]

    def inspect(self, container_id: str) -> ContainerSnapshot:
        self.requests.append("inspect")
        return self._snapshot(self._get(container_id), detailed=True)

    def restart(self, container_id: str, *, timeout: float) -> None:
        self.requests.append("restart")
        c = self._get(container_id)
        if c.state is State.RUNNING:
            self.emit(c, "kill", signal="15")
            self.emit(c, "die", exitCode="0")
            self.emit(c, "stop")
        self._run(c)
        self.emit(c, "restart")

    def start(self, container_id: str) -> None:
        self.requests.append("start")
        c = self._get(container_id)
        if c.state is not State.RUNNING:
            self._run(c)

    def stop(self, container_id: str, *, timeout: float, exit_code: int = 0) -> None:
        """As ``docker stop``: kill, the process ends, die, then stop."""
        self.requests.append("stop")
        c = self._get(container_id)
        self.emit(c, "kill", signal="15")
        c.state, c.exit_code, c.finished_at = State.EXITED, exit_code, datetime.now(UTC)
        self.emit(c, "die", exitCode=str(exit_code))
        self.emit(c, "stop")

    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult:
        self.requests.append("exec")
        self._get(container_id)
        return ExecResult(exit_code=0, output=" ".join(command))

    def recreate(
        self, container_id: str, *, timeout: float, network_mode: str | None = None
    ) -> ContainerId:
        """As the real gateway: stop, step aside, create and start the new one, remove the old."""
        self.requests.append("recreate")
        old = self._get(container_id)
        if old.state is State.RUNNING:
            self.stop(container_id, timeout=timeout)
        new = FakeContainer(
            id=uuid.uuid4().hex + uuid.uuid4().hex, name=old.name, labels=dict(old.labels)
        )
        self.containers[new.id] = new
        self.emit(new, "create")
        self._run(new)
        del self.containers[old.id]
        self.emit(old, "destroy")
        return ContainerId(new.id)

    def build_image(self, spec: BuildRequest) -> BuildResult:
        """Succeeds when the context folder holds the Dockerfile, as a real build would start."""
        self.requests.append("build")
        dockerfile = Path(spec.context) / (spec.dockerfile or "Dockerfile")
        if not dockerfile.is_file():
            return BuildResult(
                image_id=None, output=f"ERROR: Cannot locate specified Dockerfile: {dockerfile}\n"
            )
        image_id = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
        return BuildResult(
            image_id=image_id,
            output=f"Successfully built {image_id[7:19]}\nSuccessfully tagged {spec.tag}\n",
        )

    def project_containers(self, project: str) -> list[ProjectContainer]:
        """Fake containers have no network settings, so each has the default network mode."""
        self.requests.append("list")
        return [
            ProjectContainer(
                id=ContainerId(c.id),
                name=c.name,
                service=c.labels.get("com.docker.compose.service"),
                labels=dict(c.labels),
                state=c.state,
                network_mode="default",
                exit_code=c.exit_code if c.state is State.EXITED else None,
            )
            for c in self.containers.values()
            if c.labels.get("com.docker.compose.project") == project
        ]

    def events(self, label_filter: str, *, since: datetime | None) -> EventStream:
        self.requests.append("events")
        if self.refuse_events > 0:
            self.refuse_events -= 1
            raise DockerUnavailable("Subscribing to Docker events: connection refused")
        stream = _Stream(self)
        self.streams.append(stream)
        return stream

    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        self.requests.append("past_events")
        return [
            e for e in self.history if e.container_id == container_id and since <= e.at <= until
        ]

    def logs(
        self, container_id: str, *, since: datetime, limit: int = 1000
    ) -> list[tuple[datetime, str]]:
        self.requests.append("logs")
        lines = [line for line in self._get(container_id).log if line[0] > since]
        return lines[-limit:]

    def write_log(self, container: FakeContainer, text: str) -> None:
        container.log.append((datetime.now(UTC), text))

    def _run(self, c: FakeContainer) -> None:
        c.state, c.exit_code, c.started_at = State.RUNNING, 0, datetime.now(UTC)
        if c.health is Health.UNHEALTHY:
            c.health = Health.HEALTHY
        self.emit(c, "start")


def with_labels(snapshot: ContainerSnapshot, **labels: str) -> ContainerSnapshot:
    return replace(snapshot, labels={**snapshot.labels, **labels})
