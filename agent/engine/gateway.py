"""What medic needs from a Docker engine: the ``DockerGateway`` interface and its values.

Everything above the engine (the supervisor, the healing actions, the escalation and
the fix sandbox) talks to Docker through ``DockerGateway`` and the values here, never
through the docker SDK. Nothing here does I/O. ``agent.engine.docker_sdk`` holds the
real gateway, the only module that imports ``docker``; ``agent.engine.translate``
turns the engine's JSON into these values; ``tests/fakes.py`` holds an in-memory one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from agent.model import (
    IGNORE_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Health,
    State,
)

#: The container events medic reacts to. ``health_status`` matches all its variants.
#: (Passed to the SDK as a list: its filter encoder turns any other sequence into one string.)
WATCHED_EVENTS = ("die", "oom", "start", "stop", "kill", "health_status", "destroy")

#: One log line: when Docker received it, and the text.
LogLine = tuple[datetime, str]

#: How much of an exec's or a health check's output is kept as evidence.
OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class DockerEvent:
    """One container event from the engine."""

    container_id: ContainerId
    action: str
    at: datetime
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``health_status: unhealthy`` → ``health_status``; the others are unchanged."""
        return self.action.split(":", 1)[0].strip()

    @property
    def detail(self) -> str:
        """``health_status: unhealthy`` → ``unhealthy``; empty for the others."""
        parts = self.action.split(":", 1)
        return parts[1].strip() if len(parts) == 2 else ""

    @property
    def name(self) -> str:
        return self.attributes.get("name", self.container_id[:12])

    @property
    def ref(self) -> ContainerRef:
        """Who the event is about; events carry the container's labels as attributes."""
        return ContainerRef.from_labels(self.container_id, self.name, self.attributes)


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a container returned."""

    exit_code: int | None
    output: str


@dataclass(frozen=True)
class BuildRequest:
    """What to build, tagged ``tag``: a local context folder, or a tar of the context.

    The defaults are ``docker build``'s, which the rebuild action wants (the operator's
    own Dockerfile, from their folder). A candidate build of a fix sets ``archive``,
    ``network_mode`` (``none`` unless the operator names a network), ``time_limit``
    and ``proxy=False``.
    """

    context: str
    """The context folder; with ``archive``, only what messages call it."""
    tag: str
    dockerfile: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    archive: bytes | None = None
    """The context as an uncompressed tar, sent instead of reading ``context``."""
    network_mode: str | None = None
    """The network the RUN steps get: ``none``, a network's name, or None for the
    engine's default."""
    time_limit: float | None = None
    """Seconds the whole build may take; past it the build is stopped and failed."""
    memory_mb: int | None = None
    """Memory (and memory with swap) of each RUN step's container."""
    labels: tuple[tuple[str, str], ...] = ()
    proxy: bool = True
    """Pass the docker CLI's configured proxies as build args, as ``docker build`` does."""


@dataclass(frozen=True)
class BuildResult:
    """How a build went: the new image's id, or None when it failed, and what it printed."""

    image_id: str | None
    output: str
    timed_out: bool = False
    """The build ran past its time limit and was stopped."""

    @property
    def ok(self) -> bool:
        return self.image_id is not None


#: Labels on every sandbox container: medic never heals, restarts or counts one
#: (``medic.ignore``), and a stale one left by a crash is easy to find and remove.
SANDBOX_LABEL = "medic.sandbox"
SANDBOX_LABELS = ((SANDBOX_LABEL, "true"), (IGNORE_LABEL, "true"))


class SandboxUntil(StrEnum):
    """How long a sandbox container runs."""

    EXIT = "exit"
    """Until its command ends, or is killed at the time limit (MEDIC_VERIFY_CMD)."""
    SETTLED = "settled"
    """For the whole time limit, ended early when it exits or turns unhealthy (whether
    a candidate image stays up)."""


@dataclass(frozen=True)
class SandboxLimits:
    """The resources a sandbox container may use."""

    memory_mb: int = 1024
    """Memory, and memory with swap (so it cannot swap), in MiB."""
    pids: int = 256
    cpus: float = 1.0


@dataclass(frozen=True)
class HealthcheckSpec:
    """A health check in Docker's terms (compose's ``healthcheck:``, durations in seconds)."""

    test: tuple[str, ...]
    """``("CMD", ...)``, ``("CMD-SHELL", "...")``, or ``("NONE",)`` to turn the image's off."""
    interval: float | None = None
    timeout: float | None = None
    retries: int | None = None
    start_period: float | None = None


@dataclass(frozen=True)
class SandboxRequest:
    """What to run in a sandbox container, and for how long.

    ``workspace`` is a tar whose entries lie under ``workspace/``; it is copied into the
    container at ``/`` before it starts (a copy: nothing of the host is mounted).
    ``command`` and ``entrypoint`` None keep the image's; a given ``entrypoint`` drops
    the image's command, as ``docker run --entrypoint`` does.
    """

    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workspace: bytes | None = None
    working_dir: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    healthcheck: HealthcheckSpec | None = None
    """None keeps the image's own health check, if it has one."""
    time_limit: float = 600.0
    until: SandboxUntil = SandboxUntil.EXIT
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    labels: tuple[tuple[str, str], ...] = ()
    output_lines: int = 200
    """How many of its last log lines are kept."""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandbox container ran. It has been removed by the time this is returned."""

    exit_code: int | None
    """Its exit code when it ended by itself; None when it was still running."""
    output: str
    """The tail of its log, stdout and stderr together."""
    still_running: bool = False
    """It was still running when the time was up (then it was killed)."""
    health: Health = Health.NONE
    """Its last health status; ``none`` when it has no health check."""
    health_output: str | None = None
    """The last health check's output."""
    oom_killed: bool = False


@dataclass(frozen=True)
class ProjectContainer:
    """One container of a compose project, as far as dependencies are concerned."""

    id: ContainerId
    name: str
    service: str | None
    labels: Mapping[str, str]
    state: State
    #: ``HostConfig.NetworkMode``: ``container:<id>`` ties it to another container.
    network_mode: str
    #: The exit code of an exited container, from the list call's status text.
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        """Never started, or ended by itself with code 0: a one-shot job that is done."""
        return self.state is State.CREATED or (self.state is State.EXITED and self.exit_code == 0)


class SwarmRestart(StrEnum):
    """A Swarm service's ``restart_policy.condition``: when Swarm replaces a task that
    ended."""

    ANY = "any"
    ON_FAILURE = "on-failure"
    NONE = "none"


#: Task states (``docker service ps``) in which the task's container has ended.
TASK_ENDED_STATES = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})

#: Desired states in which Swarm means a task to run: ``running``, or ``ready`` while a
#: replacement waits out the restart policy's delay.
TASK_MEANT_TO_RUN = frozenset({"new", "pending", "assigned", "accepted", "ready", "running"})


@dataclass(frozen=True)
class SwarmTaskStatus:
    """One task of a Swarm service as the manager sees it (``docker service ps``)."""

    id: str
    slot: str
    """The replica number of a replicated service, the node id of a global one: the
    same as ``SwarmTask.slot`` of its container."""
    desired_state: str
    """What Swarm wants of the task: ``running``, ``ready``, ``shutdown``…"""
    state: str
    """Where the task is: ``running``, ``failed``, ``shutdown``, ``complete``…"""
    error: str | None = None
    """Why it failed (``task: non-zero exit (1)``), when it did."""

    @property
    def meant_to_run(self) -> bool:
        return self.desired_state in TASK_MEANT_TO_RUN


@dataclass(frozen=True)
class SwarmService:
    """A Swarm service as a manager sees it, with the tasks it keeps (running ones and
    the last few ended ones, ``task_history_limit``)."""

    id: str
    name: str
    version: int
    """The spec's version index; every update raises it."""
    force_update: int
    """``TaskTemplate.ForceUpdate``: the counter ``docker service update --force`` raises."""
    global_mode: bool
    restart: SwarmRestart
    max_attempts: int = 0
    """``restart_policy.max_attempts``; 0: no limit."""
    tasks: tuple[SwarmTaskStatus, ...] = ()

    def in_slot(self, slot: str) -> tuple[SwarmTaskStatus, ...]:
        return tuple(t for t in self.tasks if t.slot == slot)

    def task(self, task_id: str) -> SwarmTaskStatus | None:
        return next((t for t in self.tasks if t.id == task_id), None)


class EventStream(ABC):
    """A live stream of events; iterate it, and close it from another thread to stop."""

    @abstractmethod
    def __iter__(self) -> Iterator[DockerEvent]: ...

    @abstractmethod
    def close(self) -> None: ...


class DockerGateway(ABC):
    """What medic needs from a Docker engine; ``docker_sdk.DockerSDKGateway`` is the real one."""

    @abstractmethod
    def ping(self, *, retry: bool = True) -> None:
        """Whether the engine answers, by its cheapest request (``GET /_ping``);
        DockerUnavailable when it does not. ``retry=False`` asks once, for a caller that
        asks again on its own schedule (the supervisor while the engine is away)."""

    @abstractmethod
    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        """Every container, running or not, carrying ``label_filter`` (``key=value``)."""

    @abstractmethod
    def inspect(self, container_id: str) -> ContainerSnapshot:
        """A detailed snapshot; raises ContainerGone when it no longer exists."""

    @abstractmethod
    def restart(self, container_id: str, *, timeout: float) -> None: ...

    @abstractmethod
    def start(self, container_id: str) -> None: ...

    @abstractmethod
    def stop(self, container_id: str, *, timeout: float) -> None: ...

    @abstractmethod
    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult: ...

    @abstractmethod
    def recreate(
        self, container_id: str, *, timeout: float, network_mode: str | None = None
    ) -> ContainerId:
        """Stop the container, replace it by one made with the same settings, start that.

        Returns the new container's id. ``network_mode`` overrides the old setting
        (used when the container it shared a network stack with was itself replaced).
        Volumes are kept, anonymous ones included; if anything fails before the old
        container is removed, the old one is put back as it was.
        """

    @abstractmethod
    def swarm_service(self, service_id: str) -> SwarmService:
        """The Swarm service and its tasks (two requests). ``NotSwarmManager`` when this
        engine is not a manager of its swarm (only managers know services);
        DockerRequestError when the service is gone."""

    @abstractmethod
    def force_update(self, service_id: str) -> SwarmService:
        """``docker service update --force``: raise the service's ``ForceUpdate`` counter,
        so that Swarm replaces its tasks by its update policy. Returns the service as it
        is after the update (without its tasks). ``NotSwarmManager`` as above."""

    @abstractmethod
    def build_image(self, spec: BuildRequest) -> BuildResult:
        """``docker build``; a build that fails or runs past ``spec.time_limit`` is a result
        with ``image_id`` None, not an error."""

    @abstractmethod
    def remove_image(self, tag: str) -> bool:
        """``docker rmi TAG`` (the tag, and the image when no other tag holds it); False
        when there is no such image. An image a container uses is an error."""

    @abstractmethod
    def run_sandbox(self, request: SandboxRequest) -> SandboxResult:
        """Run ``request.image`` in a throwaway sandbox container (see ``SandboxRequest``)
        and remove it, also when anything fails. The container has no network, no mounts,
        no Docker socket, user 65534, no capabilities, no new privileges and the request's
        limits. A command that fails is a result, not an error; DockerError when the
        engine cannot create or run the container (a missing image included)."""

    @abstractmethod
    def project_containers(self, project: str) -> list[ProjectContainer]:
        """Every container of a compose project with what links it to others (one request)."""

    @abstractmethod
    def events(self, label_filter: str, *, since: datetime | None) -> EventStream:
        """Events of containers carrying ``label_filter``, from ``since`` (or now) on."""

    @abstractmethod
    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        """The engine's recorded events of one container in a past interval."""

    @abstractmethod
    def logs(self, container_id: str, *, since: datetime, limit: int = 1000) -> list[LogLine]:
        """Log lines (stdout and stderr) written after ``since``, oldest first, at most
        the last ``limit``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
