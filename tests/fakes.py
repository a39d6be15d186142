"""An in-memory Docker engine behind the DockerGateway interface, and a test clock.

Honest about what matters to medic:

* containers are filtered by label, and ``ContainerGone`` is raised for unknown ids;
* restart, start, stop and recreate change state and record the events a real
  engine records, in the same order, with the real exit codes: a process that
  handles SIGTERM exits with its own code (143 by default, as a shell killed by
  SIGTERM does); one that ignores it is killed when the stop timeout runs out
  (a second ``kill`` with signal 9, exit code 137), after the timeout has passed
  on the injected clock;
* the events stream is filtered as the engine filters it for the gateway: only
  the container's labels matching the filter and only ``WATCHED_EVENTS`` reach
  it (``create`` and ``restart`` are recorded in ``history`` but never streamed);
* event times are the engine's clock: the injected clock plus ``skew``, so a test
  can put the engine minutes off the host as a remote DOCKER_HOST may be;
* any request can be made to fail with the gateway's real errors (``fail``), and
  the events stream can be dropped, or the whole engine stopped and restarted,
  which loses its in-memory event history as the real one does;
* the engine can be away for a while (``engine_down``): every request, ``ping``
  included, fails with ``DockerUnavailable`` until ``engine_up`` or until the
  injected clock reaches the time it was told to come back.

Every request is counted in ``requests``, and stamped with the injected clock's
time in ``timeline``.
"""

from __future__ import annotations

import io
import queue
import tarfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.clock import SYSTEM_CLOCK, Clock
from agent.engine.gateway import (
    WATCHED_EVENTS,
    BuildRequest,
    BuildResult,
    DockerEvent,
    DockerGateway,
    EventStream,
    ExecResult,
    ProjectContainer,
    SandboxRequest,
    SandboxResult,
)
from agent.errors import ContainerGone, DockerError, DockerRequestError, DockerUnavailable
from agent.model import ContainerId, ContainerRef, ContainerSnapshot, Health, State

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)

#: Exit code of a process ended by SIGTERM (128 + 15) and by SIGKILL (128 + 9).
SIGTERM_EXIT = 143
SIGKILL_EXIT = 137


class FakeClock:
    """A clock that moves only when told to (or when something sleeps on it)."""

    def __init__(self, start: datetime = T0) -> None:
        self._now = start
        self._start = start
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def steady(self) -> float:
        """Seconds since the clock's start: a steady clock (``agent.clock.steady``) that
        moves with this one."""
        with self._lock:
            return (self._now - self._start).total_seconds()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


@dataclass
class FakeContainer:
    id: str
    name: str
    labels: dict[str, str]
    state: State = State.RUNNING
    health: Health = Health.NONE
    exit_code: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log: list[tuple[datetime, str]] = field(default_factory=list)
    ip: str = "172.30.0.2"
    term_exit_code: int | None = SIGTERM_EXIT
    """The exit code when it gets SIGTERM; None: it ignores SIGTERM and is killed."""
    health_checked_at: datetime | None = None


class _Stream(EventStream):
    def __init__(self, label_filter: str) -> None:
        self.label_filter = label_filter
        self.queue: queue.Queue[DockerEvent | Exception | None] = queue.Queue()

    def wants(self, event: DockerEvent) -> bool:
        key, _, value = self.label_filter.partition("=")
        return event.kind in WATCHED_EVENTS and event.attributes.get(key) == value

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
    def __init__(self, clock: Clock = SYSTEM_CLOCK, *, skew: float = 0.0) -> None:
        self.clock = clock
        self.skew = timedelta(seconds=skew)
        self.containers: dict[str, FakeContainer] = {}
        self.requests: list[str] = []
        self.streams: list[_Stream] = []
        self.refuse_events = 0
        self.history: list[DockerEvent] = []
        self.failures: dict[str, list[Exception]] = {}
        self.timeline: list[tuple[str, datetime]] = []
        self._down = False
        self._back_at: datetime | None = None
        self._count = 0
        self.builds: list[BuildRequest] = []
        self.images: dict[str, str] = {}
        """Images built here, by tag."""
        self.known_images: set[str] = set()
        """Other images the engine has (MEDIC_VERIFY_IMAGE, say)."""
        self.sandboxes: list[SandboxRequest] = []
        self.sandbox_results: list[SandboxResult] = []

    # --- test controls ---
    def engine_now(self) -> datetime:
        """The engine's clock: the injected one, ``skew`` seconds off."""
        return self.clock.now() + self.skew

    def add(self, name: str, labels: Mapping[str, str], **state: object) -> FakeContainer:
        self._count += 1
        c = FakeContainer(id=f"{self._count:064x}", name=name, labels=dict(labels))
        c.started_at = self.engine_now()
        for key, value in state.items():
            setattr(c, key, value)
        if c.state is State.EXITED and c.finished_at is None:
            c.finished_at = self.engine_now()
        self.containers[c.id] = c
        return c

    def fail(self, request: str, error: Exception, times: int = 1) -> None:
        """Make the next ``times`` requests of that kind fail with ``error``."""
        self.failures.setdefault(request, []).extend([error] * times)

    def emit(self, container: FakeContainer, action: str, **attributes: str) -> None:
        event = DockerEvent(
            ContainerId(container.id),
            action,
            self.engine_now(),
            {"name": container.name, **container.labels, **attributes},
        )
        self.history.append(event)
        for stream in list(self.streams):
            if stream.wants(event):
                stream.queue.put(event)

    def crash(self, container: FakeContainer, exit_code: int = 1) -> None:
        """The main process died by itself: state, code and the die event, as the engine does."""
        container.state, container.exit_code = State.EXITED, exit_code
        container.finished_at = self.engine_now()
        self.emit(container, "die", exitCode=str(exit_code))

    def drop_events(self) -> None:
        """The engine went away: every open stream fails."""
        for stream in self.streams:
            stream.queue.put(DockerUnavailable("Reading Docker events: connection reset"))
        self.streams.clear()

    def engine_stopping(self, *, stop_timeout: float = 10) -> None:
        """The engine shuts down: SIGTERM to every running container, with the same
        events as ``docker stop``."""
        for c in list(self.containers.values()):
            if c.state is State.RUNNING:
                self._stop(c, timeout=stop_timeout)

    def engine_restarted(self) -> None:
        """The engine went away and came back: streams fail, its in-memory event
        history is lost."""
        self.drop_events()
        self.history.clear()

    def engine_down(self, *, for_seconds: float | None = None) -> None:
        """The engine goes away: streams fail and every request fails until ``engine_up``,
        or (``for_seconds``) until the injected clock has moved on that far. Coming back
        loses the in-memory event history, as a restart of the real engine does."""
        self._down = True
        self._back_at = None
        if for_seconds is not None:
            self._back_at = self.clock.now() + timedelta(seconds=for_seconds)
        self.drop_events()

    def engine_up(self) -> None:
        self._down, self._back_at = False, None
        self.history.clear()

    def _answers(self) -> bool:
        if self._down and self._back_at is not None and self.clock.now() >= self._back_at:
            self.engine_up()
        return not self._down

    # --- the interface ---
    def _request(self, kind: str) -> None:
        self.requests.append(kind)
        self.timeline.append((kind, self.clock.now()))
        if not self._answers():
            raise DockerUnavailable(
                "cannot reach the Docker engine at unix:///var/run/docker.sock: connection refused"
            )
        pending = self.failures.get(kind)
        if pending:
            raise pending.pop(0)

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
            observed_at=self.clock.now(),
            ip_addresses=(c.ip,) if c.state is State.RUNNING else (),
            detailed=detailed,
            started_at=c.started_at if detailed else None,
            finished_at=c.finished_at if detailed else None,
            health_checked_at=c.health_checked_at if detailed else None,
            health_interval=30.0 if detailed and c.health is not Health.NONE else None,
        )

    def ping(self, *, retry: bool = True) -> None:
        self._request("ping")

    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        self._request("list")
        key, _, value = label_filter.partition("=")
        return [
            self._snapshot(c, detailed=False)
            for c in self.containers.values()
            if c.labels.get(key) == value
        ]

    def inspect(self, container_id: str) -> ContainerSnapshot:
        self._request("inspect")
        return self._snapshot(self._get(container_id), detailed=True)

    def _stop(self, c: FakeContainer, *, timeout: float, exit_code: int | None = None) -> None:
        """SIGTERM; the process exits with its code, or is killed when the timeout runs out."""
        self.emit(c, "kill", signal="15")
        if exit_code is None:
            exit_code = c.term_exit_code
            if exit_code is None:
                self.clock.sleep(timeout)
                self.emit(c, "kill", signal="9")
                exit_code = SIGKILL_EXIT
        c.state, c.exit_code, c.finished_at = State.EXITED, exit_code, self.engine_now()
        self.emit(c, "die", exitCode=str(exit_code))
        self.emit(c, "stop")

    def restart(self, container_id: str, *, timeout: float) -> None:
        self._request("restart")
        c = self._get(container_id)
        if c.state is State.RUNNING:
            self._stop(c, timeout=timeout)
        self._run(c)
        self.emit(c, "restart")

    def start(self, container_id: str) -> None:
        self._request("start")
        c = self._get(container_id)
        if c.state is not State.RUNNING:
            self._run(c)

    def stop(self, container_id: str, *, timeout: float, exit_code: int | None = None) -> None:
        """As ``docker stop``: kill, the process ends, die, then stop. ``exit_code``
        overrides the container's own reaction to SIGTERM."""
        self._request("stop")
        self._stop(self._get(container_id), timeout=timeout, exit_code=exit_code)

    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult:
        self._request("exec")
        self._get(container_id)
        return ExecResult(exit_code=0, output=" ".join(command))

    def recreate(
        self, container_id: str, *, timeout: float, network_mode: str | None = None
    ) -> ContainerId:
        """As the real gateway: stop, step aside, create and start the new one, remove the old."""
        self._request("recreate")
        old = self._get(container_id)
        if old.state is State.RUNNING:
            self._stop(old, timeout=timeout)
        new = FakeContainer(
            id=uuid.uuid4().hex + uuid.uuid4().hex,
            name=old.name,
            labels=dict(old.labels),
            term_exit_code=old.term_exit_code,
        )
        old.name = f"{old.name}-replaced-{uuid.uuid4().hex[:8]}"
        self.containers[new.id] = new
        self.emit(new, "create")
        self._run(new)
        del self.containers[old.id]
        self.emit(old, "destroy")
        return ContainerId(new.id)

    def build_image(self, spec: BuildRequest) -> BuildResult:
        """Succeeds when the context (the folder, or the tar in ``spec.archive``) holds the
        Dockerfile, as a real build would start. Every request is kept in ``builds`` and
        every image made is in ``images``."""
        self._request("build")
        self.builds.append(spec)
        name = spec.dockerfile or "Dockerfile"
        if spec.archive is not None:
            with tarfile.open(fileobj=io.BytesIO(spec.archive)) as tar:
                found = name in tar.getnames()
            where = name
        else:
            dockerfile = Path(spec.context) / name
            found, where = dockerfile.is_file(), str(dockerfile)
        if not found:
            return BuildResult(
                image_id=None, output=f"ERROR: Cannot locate specified Dockerfile: {where}\n"
            )
        image_id = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.images[spec.tag] = image_id
        return BuildResult(
            image_id=image_id,
            output=f"Successfully built {image_id[7:19]}\nSuccessfully tagged {spec.tag}\n",
        )

    def remove_image(self, tag: str) -> bool:
        """As the engine: False for an unknown tag; ``fail("remove_image", ...)`` for errors."""
        self._request("remove_image")
        return self.images.pop(tag, None) is not None

    def run_sandbox(self, request: SandboxRequest) -> SandboxResult:
        """Answers with the next of ``sandbox_results`` (a clean exit with no output when
        none is left); the image must exist, as on the engine. Every request is kept in
        ``sandboxes``; no container is left behind."""
        self._request("sandbox")
        self.sandboxes.append(request)
        if request.image not in self.images and request.image not in self.known_images:
            raise DockerRequestError(
                f"Running a sandbox container of image {request.image}: there is no image "
                f"{request.image} on the engine"
            )
        if self.sandbox_results:
            return self.sandbox_results.pop(0)
        return SandboxResult(exit_code=0, output="")

    def project_containers(self, project: str) -> list[ProjectContainer]:
        """Fake containers have no network settings, so each has the default network mode."""
        self._request("list")
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
        self._request("events")
        if self.refuse_events > 0:
            self.refuse_events -= 1
            raise DockerUnavailable("Subscribing to Docker events: connection refused")
        stream = _Stream(label_filter)
        self.streams.append(stream)
        return stream

    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        self._request("past_events")
        return [
            e
            for e in self.history
            if e.container_id == container_id
            and since <= e.at <= until
            and e.kind in WATCHED_EVENTS
        ]

    def logs(
        self, container_id: str, *, since: datetime, limit: int = 1000
    ) -> list[tuple[datetime, str]]:
        self._request("logs")
        lines = [line for line in self._get(container_id).log if line[0] > since]
        return lines[-limit:]

    def write_log(self, container: FakeContainer, text: str) -> None:
        container.log.append((self.engine_now(), text))

    def _run(self, c: FakeContainer) -> None:
        c.state, c.exit_code, c.started_at = State.RUNNING, 0, self.engine_now()
        if c.health is Health.UNHEALTHY:
            c.health = Health.HEALTHY
        self.emit(c, "start")


def with_labels(snapshot: ContainerSnapshot, **labels: str) -> ContainerSnapshot:
    return replace(snapshot, labels={**snapshot.labels, **labels})


__all__ = ["DockerError", "FakeClock", "FakeContainer", "FakeDocker", "with_labels"]
