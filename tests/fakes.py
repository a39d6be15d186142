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
  injected clock reaches the time it was told to come back;
* Swarm services (``add_service``, ``add_task``) keep their tasks as a manager does:
  a task container carries Swarm's labels and name, ``force_update`` replaces each
  slot's task by a new one in a new container (stop first, as Swarm's default update
  order), ``swarm_replaces`` does what a restart policy does, and a worker
  (``manager = False``) refuses both with ``NotSwarmManager``.

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
    SwarmRestart,
    SwarmService,
    SwarmTaskStatus,
)
from agent.errors import (
    ContainerGone,
    DockerError,
    DockerRequestError,
    DockerUnavailable,
    NotSwarmManager,
)
from agent.model import (
    STACK_LABEL,
    SWARM_NODE_ID_LABEL,
    SWARM_SERVICE_ID_LABEL,
    SWARM_SERVICE_NAME_LABEL,
    SWARM_TASK_ID_LABEL,
    SWARM_TASK_NAME_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Health,
    State,
)

#: The node id of the fake engine, as a swarm of one node would have.
NODE_ID = "node0fakeengine0000000000"

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
    created_at: datetime | None = None


@dataclass
class FakeService:
    """A Swarm service of the fake engine, and its tasks as the manager keeps them."""

    id: str
    name: str
    stack: str | None = None
    restart: SwarmRestart = SwarmRestart.ANY
    max_attempts: int = 0
    global_mode: bool = False
    version: int = 1
    force_update: int = 0
    container_labels: dict[str, str] = field(default_factory=dict)
    tasks: list[SwarmTaskStatus] = field(default_factory=list)
    containers: dict[str, str] = field(default_factory=dict)
    """Each task's container id, by task id."""

    def status(self, task_id: str, **changes: str) -> None:
        self.tasks = [replace(t, **changes) if t.id == task_id else t for t in self.tasks]


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
        self.services: dict[str, FakeService] = {}
        self.manager = True
        """Whether the engine is a Swarm manager (a worker cannot read or update services)."""

    # --- test controls ---
    def engine_now(self) -> datetime:
        """The engine's clock: the injected one, ``skew`` seconds off."""
        return self.clock.now() + self.skew

    def add(self, name: str, labels: Mapping[str, str], **state: object) -> FakeContainer:
        self._count += 1
        c = FakeContainer(id=f"{self._count:064x}", name=name, labels=dict(labels))
        c.started_at = self.engine_now()
        # Made one after another, even within one tick of the injected clock.
        c.created_at = c.started_at + timedelta(microseconds=self._count)
        for key, value in state.items():
            setattr(c, key, value)
        if c.state is State.EXITED and c.finished_at is None:
            c.finished_at = self.engine_now()
        self.containers[c.id] = c
        return c

    def add_service(
        self,
        name: str,
        *,
        stack: str | None = None,
        restart: SwarmRestart = SwarmRestart.ANY,
        max_attempts: int = 0,
        labels: Mapping[str, str] | None = None,
    ) -> FakeService:
        """A Swarm service (``stack``: deployed by docker stack deploy, named
        ``<stack>_<name>``); its task containers get ``labels`` besides Swarm's."""
        full = f"{stack}_{name}" if stack else name
        service = FakeService(
            id=uuid.uuid4().hex[:25],
            name=full,
            stack=stack,
            restart=restart,
            max_attempts=max_attempts,
            container_labels=dict(labels or {}),
        )
        self.services[service.id] = service
        return service

    def add_task(self, service: FakeService, slot: str = "1", **state: object) -> FakeContainer:
        """A new task of ``service`` in ``slot``, running unless ``state`` says otherwise,
        in a container named and labelled as Swarm does; its start event is emitted."""
        task_id = uuid.uuid4().hex[:25]
        labels = {
            **service.container_labels,
            SWARM_SERVICE_ID_LABEL: service.id,
            SWARM_SERVICE_NAME_LABEL: service.name,
            SWARM_TASK_ID_LABEL: task_id,
            SWARM_TASK_NAME_LABEL: f"{service.name}.{slot}.{task_id}",
            SWARM_NODE_ID_LABEL: NODE_ID,
            "com.docker.swarm.task": "",
        }
        if service.stack:
            labels[STACK_LABEL] = service.stack
        c = self.add(f"{service.name}.{slot}.{task_id}", labels, **state)
        running = c.state is State.RUNNING
        service.tasks.append(
            SwarmTaskStatus(
                id=task_id,
                slot=slot,
                desired_state="running",
                state="running" if running else "failed",
            )
        )
        service.containers[task_id] = c.id
        if running:
            self.emit(c, "start")
        return c

    def swarm_replaces(self, container: FakeContainer) -> FakeContainer:
        """What a restart policy does with an ended task: it is failed and shut down,
        and a new task starts in its slot."""
        service, task_id, slot = self._task_of(container)
        service.status(task_id, desired_state="shutdown", state="failed")
        return self.add_task(service, slot)

    def swarm_stops(self, container: FakeContainer, *, desired: str = "shutdown") -> None:
        """Swarm stops a task's container (SIGTERM, its events), as it does for an update
        or an unhealthy task; no request of medic's. ``desired`` shutdown: the task is
        marked shut down on purpose, as an update does (else leave it to the caller)."""
        self._stop(container, timeout=10)
        if desired == "shutdown":
            service, task_id, _ = self._task_of(container)
            service.status(task_id, desired_state="shutdown", state="shutdown")

    def task_failed(self, container: FakeContainer) -> None:
        """Swarm saw the task's container end and did not replace it (its restart policy
        says no, or its attempts are used up)."""
        service, task_id, _ = self._task_of(container)
        service.status(task_id, desired_state="shutdown", state="failed")

    def _task_of(self, container: FakeContainer) -> tuple[FakeService, str, str]:
        service = self.services[container.labels[SWARM_SERVICE_ID_LABEL]]
        task_id = container.labels[SWARM_TASK_ID_LABEL]
        status = next(t for t in service.tasks if t.id == task_id)
        return service, task_id, status.slot

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
            ref=ContainerRef.from_labels(c.id, c.name, c.labels),
            created_at=c.created_at,
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

    def swarm_service(self, service_id: str) -> SwarmService:
        self._request("swarm_service")
        return self._service_view(self._service(service_id), tasks=True)

    def force_update(self, service_id: str) -> SwarmService:
        """As a manager: the counter and the version go up, and each slot's task is
        replaced (the old container stopped first, then the new one started)."""
        self._request("force_update")
        service = self._service(service_id)
        service.force_update += 1
        service.version += 1
        slots = dict.fromkeys(t.slot for t in service.tasks)
        for slot in slots:
            for task in [t for t in service.tasks if t.slot == slot and t.meant_to_run]:
                old = self.containers.get(service.containers.get(task.id, ""))
                if old is not None and old.state is State.RUNNING:
                    self._stop(old, timeout=10)
                service.status(task.id, desired_state="shutdown", state="shutdown")
            self.add_task(service, slot)
        return self._service_view(service, tasks=False)

    def _service(self, service_id: str) -> FakeService:
        if not self.manager:
            raise NotSwarmManager(
                "Reading Swarm service: this Docker engine is not a Swarm manager"
            )
        found = self.services.get(service_id)
        if found is None:
            raise DockerRequestError(f"Swarm service {service_id[:12]}: no longer exists")
        return found

    @staticmethod
    def _service_view(service: FakeService, *, tasks: bool) -> SwarmService:
        return SwarmService(
            id=service.id,
            name=service.name,
            version=service.version,
            force_update=service.force_update,
            global_mode=service.global_mode,
            restart=service.restart,
            max_attempts=service.max_attempts,
            tasks=tuple(service.tasks) if tasks else (),
        )

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
