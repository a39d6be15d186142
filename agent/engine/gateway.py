"""The one place medic talks to the Docker engine.

Only this module imports ``docker``. It turns the engine's JSON into typed
snapshots and events, translates the SDK's exceptions into ``agent.errors`` in a
single context manager, and retries temporary failures with tenacity (with an
injectable sleep, so tests can read the delays without waiting).

Every public method is one Docker API request, except ``exec`` (create, start,
inspect), ``recreate``, ``build_image`` and ``run_sandbox`` (which are several by
nature) and the retries themselves; the benchmark counts requests at the HTTP layer to
hold that promise.

``run_sandbox`` is where code nobody has approved yet runs (a fix branch's tests, the
candidate image of its service): a throwaway container with no network, no mounts, no
Docker socket, a non-root user, no capabilities and resource limits, removed
afterwards whatever happened. ``build_image`` builds such a candidate from a tar of
the fix's files, without network unless the operator names one, and within a time
limit.

Recreating a container from its inspect output lives here too, as the pure
function ``create_args_from_inspect``: it decides which settings were the
operator's and which only came from the image, and that decision needs Docker's
attribute names, which no other module reads.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from loguru import logger
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from agent.clock import SYSTEM_CLOCK, Clock
from agent.errors import (
    ContainerGone,
    DockerError,
    DockerRequestError,
    DockerServerError,
    DockerUnavailable,
    TemporaryError,
)
from agent.model import (
    IGNORE_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Health,
    State,
)

T = TypeVar("T")

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
        return _ref(self.container_id, self.name, self.attributes)


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

#: The user a sandbox runs as: ``nobody``, which owns the copied files and nothing else.
SANDBOX_USER = "65534:65534"

#: The environment a sandbox gets on top of the image's own, besides the request's.
SANDBOX_ENVIRONMENT = (("HOME", "/tmp"), ("TMPDIR", "/tmp"))

#: How often a sandbox that should stay up is looked at, in seconds.
SANDBOX_POLL = 0.5


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


class EventStream(ABC):
    """A live stream of events; iterate it, and close it from another thread to stop."""

    @abstractmethod
    def __iter__(self) -> Iterator[DockerEvent]: ...

    @abstractmethod
    def close(self) -> None: ...


class DockerGateway(ABC):
    """What medic needs from a Docker engine. ``DockerSDKGateway`` is the real one."""

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


# --- parsing: the only code that reads Docker's attribute names -------------------------

_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_IN_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 times with nanoseconds; None for empty or the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, rest = text.partition(".")
    if rest:
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        zone = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _state(text: str | None) -> State:
    try:
        return State(text or "created")
    except ValueError:
        return State.CREATED


def _ref(container_id: str, name: str, labels: Mapping[str, str]) -> ContainerRef:
    return ContainerRef(
        id=ContainerId(container_id),
        name=name.lstrip("/"),
        project=labels.get(PROJECT_LABEL),
        service=labels.get(SERVICE_LABEL),
    )


def snapshot_from_list(entry: Mapping[str, Any], now: datetime) -> ContainerSnapshot:
    """A snapshot from one entry of ``GET /containers/json``."""
    labels: dict[str, str] = dict(entry.get("Labels") or {})
    names = entry.get("Names") or [entry["Id"][:12]]
    status = str(entry.get("Status") or "")
    health_match = _HEALTH_IN_STATUS.search(status)
    health = Health.NONE
    if health_match:
        health = Health.STARTING if "starting" in health_match.group(1) else Health(health_match[1])
    exit_match = _EXIT_IN_STATUS.match(status)
    return ContainerSnapshot(
        ref=_ref(entry["Id"], names[0], labels),
        labels=labels,
        image=str(entry.get("Image") or ""),
        state=_state(entry.get("State")),
        health=health,
        exit_code=int(exit_match.group(1)) if exit_match else None,
        ip_addresses=_ip_addresses(entry.get("NetworkSettings")),
        observed_at=now,
    )


#: Docker's health-check interval when the container's configuration leaves it at 0.
DEFAULT_HEALTH_INTERVAL = 30.0


def _health_interval(config: Mapping[str, Any]) -> float:
    nanos = (config.get("Healthcheck") or {}).get("Interval") or 0
    return nanos / 1e9 if nanos else DEFAULT_HEALTH_INTERVAL


def snapshot_from_inspect(attrs: Mapping[str, Any], now: datetime) -> ContainerSnapshot:
    """A detailed snapshot from ``GET /containers/{id}/json``."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    labels: dict[str, str] = dict(config.get("Labels") or {})
    health_info = state.get("Health") or {}
    health = Health(health_info["Status"]) if health_info.get("Status") else Health.NONE
    log = health_info.get("Log") or []
    last_output = None
    if log:
        last = log[-1]
        last_output = f"exit {last.get('ExitCode')}: {str(last.get('Output') or '').strip()}"
        last_output = last_output[:OUTPUT_LIMIT]
    status = _state(state.get("Status"))
    policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or None
    return ContainerSnapshot(
        ref=_ref(attrs["Id"], str(attrs.get("Name") or attrs["Id"][:12]), labels),
        labels=labels,
        image=str(config.get("Image") or ""),
        state=status,
        health=health,
        exit_code=int(state["ExitCode"]) if status in (State.EXITED, State.DEAD) else None,
        observed_at=now,
        detailed=True,
        oom_killed=bool(state.get("OOMKilled")),
        restart_count=int(attrs.get("RestartCount") or 0),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        error=str(state.get("Error") or "") or None,
        health_output=last_output,
        failing_streak=int(health_info.get("FailingStreak") or 0),
        health_checked_at=parse_time(log[-1].get("Start")) if log else None,
        health_interval=_health_interval(config) if health_info else None,
        restart_policy=policy,
        ip_addresses=_ip_addresses(attrs.get("NetworkSettings")),
    )


def parse_log_line(text: str) -> LogLine | None:
    """``2026-11-21T16:20:01.123456789Z message`` (docker logs with timestamps)."""
    stamp, _, message = text.partition(" ")
    try:
        at = parse_time(stamp)
    except ValueError:
        return None
    return None if at is None else (at, message)


def _ip_addresses(settings: Mapping[str, Any] | None) -> tuple[str, ...]:
    networks = (settings or {}).get("Networks") or {}
    return tuple(str(n["IPAddress"]) for n in networks.values() if n and n.get("IPAddress"))


def event_from_json(raw: Mapping[str, Any]) -> DockerEvent | None:
    """A typed event from the stream's JSON; None for anything but container events."""
    if raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    nanos = raw.get("timeNano")
    at = (
        datetime.fromtimestamp(int(nanos) / 1e9, UTC)
        if nanos
        else datetime.fromtimestamp(int(raw.get("time") or 0), UTC)
    )
    return DockerEvent(
        container_id=ContainerId(str(actor.get("ID") or raw.get("id") or "")),
        action=str(raw.get("Action") or raw.get("status") or ""),
        at=at,
        attributes={str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()},
    )


def project_container_from_list(entry: Mapping[str, Any]) -> ProjectContainer:
    """The dependency-relevant part of one entry of ``GET /containers/json``."""
    labels: dict[str, str] = dict(entry.get("Labels") or {})
    names = entry.get("Names") or [entry["Id"][:12]]
    exit_match = _EXIT_IN_STATUS.match(str(entry.get("Status") or ""))
    return ProjectContainer(
        id=ContainerId(entry["Id"]),
        name=str(names[0]).lstrip("/"),
        service=labels.get(SERVICE_LABEL),
        labels=labels,
        state=_state(entry.get("State")),
        network_mode=str((entry.get("HostConfig") or {}).get("NetworkMode") or ""),
        exit_code=int(exit_match.group(1)) if exit_match else None,
    )


# --- recreating a container from what inspect says ----------------------------------------

#: Config keys copied only when they differ from the image's: equal ones were inherited,
#: and leaving them out lets a rebuilt image's new value take effect.
_INHERITED_CONFIG = ("User", "WorkingDir", "Healthcheck", "StopSignal", "Shell", "OnBuild")

#: Config keys that describe this container only and are passed on unchanged.
_OWN_CONFIG = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "NetworkDisabled",
    "MacAddress",
    "StopTimeout",
)

#: Network modes that are not a network to connect to.
_SPECIAL_NETWORK_MODES = ("host", "none")

#: Endpoint settings that can be given when connecting; the rest (IP, MAC, gateway,
#: endpoint id) are assigned by the engine and would pin the old container's values.
_ENDPOINT_KEYS = ("IPAMConfig", "Links", "DriverOpts")


def create_args_from_inspect(
    container_attrs: Mapping[str, Any], image_attrs: Mapping[str, Any]
) -> dict[str, Any]:
    """How to create the container again: ``{"name", "config", "connect"}``.

    ``config`` is the body of ``POST /containers/create`` (with ``HostConfig`` and
    ``NetworkingConfig`` for the first network); ``connect`` lists the other networks
    as ``{"network", "aliases", "links", "ipv4_address", "ipv6_address",
    "link_local_ips", "driver_opt"}`` to connect afterwards. ``image_attrs`` is the
    inspect output of the image the container was created from: settings equal to
    that image's are left out, so the recreated container inherits them afresh.

    Anonymous volumes are bound by name, so their data stays with the new container.
    The engine's own additions (the short id as hostname and network alias) are left
    out; it adds them again for the new container.
    """
    attrs = container_attrs
    config: Mapping[str, Any] = attrs.get("Config") or {}
    image: Mapping[str, Any] = image_attrs.get("Config") or {}
    host: dict[str, Any] = dict(attrs.get("HostConfig") or {})
    short_id = str(attrs["Id"])[:12]

    body: dict[str, Any] = {"Image": config.get("Image") or attrs.get("Image")}
    for key in _OWN_CONFIG:
        if config.get(key) not in (None, "", False):
            body[key] = config[key]
    for key in _INHERITED_CONFIG:
        value = config.get(key)
        if value not in (None, "", [], {}) and value != image.get(key):
            body[key] = value
    mode = str(host.get("NetworkMode") or "default")
    # A container on another's network stack (or the host's) has that one's hostname,
    # and the engine refuses to be given one; otherwise the short id is its default.
    shared_stack = mode.startswith("container:") or mode == "host"
    hostname = config.get("Hostname")
    if hostname and hostname != short_id and not shared_stack:
        body["Hostname"] = hostname
    if shared_stack:
        body.pop("Domainname", None)

    image_env = set(image.get("Env") or ())
    env = [item for item in config.get("Env") or () if item not in image_env]
    if env:
        body["Env"] = env

    image_labels = image.get("Labels") or {}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    if labels:
        body["Labels"] = labels

    # The engine takes the image's Cmd only when no Entrypoint is given, so Cmd can be
    # left to the image only together with an inherited Entrypoint.
    entrypoint, cmd = config.get("Entrypoint"), config.get("Cmd")
    if entrypoint and entrypoint != image.get("Entrypoint"):
        body["Entrypoint"] = entrypoint
        if cmd:
            body["Cmd"] = cmd
    elif cmd and cmd != image.get("Cmd"):
        body["Cmd"] = cmd

    image_ports = image.get("ExposedPorts") or {}
    ports = {p: v for p, v in (config.get("ExposedPorts") or {}).items() if p not in image_ports}
    if ports:
        body["ExposedPorts"] = ports

    host = _host_config(host, attrs)
    networks: Mapping[str, Any] = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    connect: list[dict[str, Any]] = []
    if not mode.startswith("container:") and mode not in _SPECIAL_NETWORK_MODES and networks:
        first = _primary_network(mode, networks)
        endpoint = _endpoint(networks[first], short_id)
        body["NetworkingConfig"] = {"EndpointsConfig": {first: endpoint}}
        for name in networks:
            if name != first:
                connect.append(_connect_args(name, _endpoint(networks[name], short_id)))
    body["HostConfig"] = host
    return {"name": str(attrs.get("Name") or "").lstrip("/"), "config": body, "connect": connect}


def _host_config(host: dict[str, Any], attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HostConfig as inspect gives it, with anonymous volumes named and legacy links fixed."""
    host = dict(host)
    binds = list(host.get("Binds") or [])
    mounts = [dict(m) for m in host.get("Mounts") or []]
    runtime_mounts = attrs.get("Mounts") or []
    by_target = {str(m.get("Destination")): m for m in runtime_mounts}
    # A --mount volume without a source is anonymous: give it the name it got.
    for mount in mounts:
        if mount.get("Type") == "volume" and not mount.get("Source"):
            found = by_target.get(str(mount.get("Target")))
            if found and found.get("Name"):
                mount["Source"] = found["Name"]
    covered = {_bind_target(b) for b in binds} | {str(m.get("Target")) for m in mounts}
    # Volumes that neither Binds nor Mounts name came from `-v /path` or the image's
    # VOLUME: anonymous. Binding them by name keeps their data; a fresh container
    # would get new, empty ones.
    for mount in runtime_mounts:
        target = str(mount.get("Destination"))
        if mount.get("Type") == "volume" and mount.get("Name") and target not in covered:
            binds.append(f"{mount['Name']}:{target}{'' if mount.get('RW', True) else ':ro'}")
    if binds:
        host["Binds"] = binds
    if mounts:
        host["Mounts"] = mounts
    # Inspect writes legacy links as "/other:/this/alias"; create takes "other:alias".
    links = host.get("Links")
    if links:
        host["Links"] = [_legacy_link(link) for link in links]
    return host


def _bind_target(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _legacy_link(link: str) -> str:
    source, _, alias = link.partition(":")
    return f"{source.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else source.lstrip("/")


def _primary_network(mode: str, networks: Mapping[str, Any]) -> str:
    """The network the container is created on: the one its NetworkMode names."""
    if mode in ("default", "bridge") and "bridge" in networks:
        return "bridge"
    for name, settings in networks.items():
        if mode in (name, (settings or {}).get("NetworkID")):
            return name
    return next(iter(networks))


def _endpoint(settings: Mapping[str, Any] | None, short_id: str) -> dict[str, Any]:
    settings = settings or {}
    endpoint = {key: settings[key] for key in _ENDPOINT_KEYS if settings.get(key)}
    aliases = [a for a in settings.get("Aliases") or () if a != short_id]
    if aliases:
        endpoint["Aliases"] = aliases
    return endpoint


def _connect_args(network: str, endpoint: Mapping[str, Any]) -> dict[str, Any]:
    ipam = endpoint.get("IPAMConfig") or {}
    return {
        "network": network,
        "aliases": endpoint.get("Aliases") or None,
        "links": endpoint.get("Links") or None,
        "ipv4_address": ipam.get("IPv4Address") or None,
        "ipv6_address": ipam.get("IPv6Address") or None,
        "link_local_ips": ipam.get("LinkLocalIPs") or None,
        "driver_opt": endpoint.get("DriverOpts") or None,
    }


def _build_output(chunks: Iterator[Mapping[str, Any]]) -> BuildResult:
    """Reads the build's JSON stream: its text, and the image id or the error."""
    lines: list[str] = []
    image_id: str | None = None
    failed = False
    for chunk in chunks:
        if "stream" in chunk:
            lines.append(str(chunk["stream"]))
        if "error" in chunk:
            failed = True
            lines.append(f"ERROR: {chunk['error']}\n")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    output = "".join(lines)
    if image_id is None:
        # Engines that send no "aux" message still end with this line.
        found = _BUILT.findall(output)
        image_id = found[-1] if found else None
    return BuildResult(image_id=None if failed else image_id, output=output)


_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)\s*$", re.MULTILINE)


def _timed_build(stream: Iterator[Mapping[str, Any]], time_limit: float) -> BuildResult:
    """Reads a build's stream for at most ``time_limit`` seconds, then stops it.

    A watchdog shuts the response's socket down at the limit, which ends a read that
    waits on a silent RUN step; closing the connection makes the engine cancel the
    build and remove its intermediate container (``forcerm``).
    """
    response = _response_of(stream)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        if response is not None:
            try:
                response.raw.shutdown()
            except (AttributeError, ValueError, RuntimeError, OSError) as e:
                logger.debug("Shutting down a build's connection at its time limit: {}.", e)

    watchdog = threading.Timer(time_limit, expire)
    watchdog.daemon = True
    watchdog.start()
    chunks: list[Mapping[str, Any]] = []
    broken: BaseException | None = None
    try:
        for chunk in stream:
            if expired.is_set():
                break
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as e:
        broken = e
    finally:
        watchdog.cancel()
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if response is not None:
            response.close()
    if expired.is_set() or isinstance(
        broken, urllib3.exceptions.ReadTimeoutError | requests.exceptions.ReadTimeout
    ):
        partial = _build_output(iter(chunks))
        return BuildResult(
            image_id=None,
            output=partial.output
            + f"ERROR: the build did not finish within {time_limit:g} s and was stopped.\n",
            timed_out=True,
        )
    if broken is not None:
        raise DockerUnavailable(f"the engine stopped sending the build's output ({broken})")
    return _build_output(iter(chunks))


def _response_of(stream: Any) -> Any:
    """The HTTP response a build's output stream reads (the SDK's generator holds it),
    or None; the watchdog needs it to interrupt a read."""
    frame = getattr(stream, "gi_frame", None)
    return None if frame is None else frame.f_locals.get("response")


def _healthcheck(spec: HealthcheckSpec | None) -> dict[str, Any] | None:
    """A health check in the engine's terms (durations in nanoseconds)."""
    if spec is None:
        return None
    check: dict[str, Any] = {"test": list(spec.test)}
    for key, seconds in (
        ("interval", spec.interval),
        ("timeout", spec.timeout),
        ("start_period", spec.start_period),
    ):
        if seconds is not None:
            check[key] = round(seconds * 1e9)
    if spec.retries is not None:
        check["retries"] = spec.retries
    return check


# --- errors: the one place the SDK's exceptions are translated ----------------------------


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn docker and requests exceptions into medic's, naming what was being done."""
    try:
        yield
    except docker.errors.NotFound as e:
        raise ContainerGone(f"{what}: the container no longer exists") from e
    except docker.errors.APIError as e:
        explanation = _clause(e.explanation or str(e))
        if e.status_code is not None and e.status_code >= 500:
            raise DockerServerError(f"{what}: the Docker engine failed: {explanation}") from e
        raise DockerRequestError(f"{what}: the Docker engine refused: {explanation}") from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise DockerUnavailable(f"{what}: the Docker engine did not answer ({e})") from e
    except docker.errors.DockerException as e:
        raise DockerUnavailable(f"{what}: {_clause(str(e))}") from e


def _clause(text: str) -> str:
    """The library's text without its final period: medic's messages end without one
    (see agent/errors.py), so they can sit inside a sentence."""
    text = text.strip()
    return text[:-1] if text.endswith(".") and not text.endswith("...") else text


#: Where the docker SDK (and the docker CLI) connect when DOCKER_HOST is not set.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@contextmanager
def connecting(host: str) -> Iterator[None]:
    """Turn a failure to reach the engine at ``host`` into one line saying what to check.

    Connecting is where a user meets a wrong DOCKER_HOST or a missing socket, and the
    SDK's own text (urllib3's connection pool, its retries, the URL it asked for) does
    not say what to do. Other Docker errors pass through unchanged.
    """
    try:
        yield
    except DockerUnavailable as e:
        raise DockerUnavailable(unreachable_message(host, e)) from e


def unreachable_message(host: str, error: BaseException) -> str:
    """``cannot reach the Docker engine at HOST: REASON; WHAT TO CHECK`` for ``error``."""
    found = _os_error(error)
    number = found.errno if found is not None else None
    if number == errno.ENOENT:
        reason = "there is no socket there"
        check = (
            "start the Docker engine, or mount its socket into medic's container "
            "(-v /var/run/docker.sock:/var/run/docker.sock), or set DOCKER_HOST to where it "
            "listens"
        )
    elif number in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
        check = (
            "give medic's user the socket's group (DOCKER_GID with compose/medic.yml, see "
            "README) or run medic as root"
        )
    elif number == errno.ECONNREFUSED:
        reason = "connection refused"
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    elif isinstance(found, socket.gaierror):
        reason = "its host name does not resolve"
        check = "check the host name in DOCKER_HOST"
    elif found is not None and found.strerror:
        reason = found.strerror[:1].lower() + found.strerror[1:]
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    elif _chain_has(error, requests.exceptions.Timeout):
        reason = "it did not answer in time"
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    else:
        reason = _last_words(error)
        check = "check DOCKER_HOST (unset, medic uses the local socket)"
    return f"cannot reach the Docker engine at {host}: {reason}; {check}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: causes, contexts, urllib3's ``reason``, and args."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(arg for arg in current.args if isinstance(arg, BaseException))
        todo.extend(e for e in linked if isinstance(e, BaseException))


def _os_error(error: BaseException) -> OSError | None:
    """The operating system's own error under the library wrappers, if there is one."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
    return None


def _chain_has(error: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(error))


def _last_words(error: BaseException) -> str:
    """The innermost message, on one line and short: the SDK's outer text is its plumbing."""
    *_, innermost = _causes(error)
    text = " ".join(str(innermost).split()) or type(innermost).__name__
    return text if len(text) <= 160 else f"{text[:157]}..."


def _since_param(at: datetime) -> str:
    # Docker takes fractional Unix seconds; the SDK's own datetime conversion assumes naive UTC.
    return f"{at.timestamp():.9f}"


class _SDKEventStream(EventStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[DockerEvent]:
        with translate_errors("Reading Docker events"):
            for raw in self._stream:
                event = event_from_json(raw)
                if event is not None and event.container_id:
                    yield event

    def close(self) -> None:
        # Closing from another thread makes the iteration above end; errors while the
        # socket is torn down mean only that it is already closed.
        try:
            self._stream.close()
        except Exception as e:
            logger.debug("Closing the Docker events stream raised {}; it is closed anyway.", e)


class DockerSDKGateway(DockerGateway):
    """The real gateway, over the docker SDK's low-level API client."""

    #: Where the engine is, as the operator wrote it (DOCKER_HOST); set by from_env.
    host: str = "the configured Docker host"

    def __init__(
        self,
        client: Any,
        *,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` stamps snapshots (``observed_at``, the host's time) and waits between
        retries; ``sleep`` replaces only the waiting, for tests that read the delays."""
        self._client = client
        self._api = client.api
        self._now = clock.now
        self._retry_attempts = retry_attempts
        self._retry_max_delay = retry_max_delay
        self._sleep = sleep or clock.sleep

    @classmethod
    def from_env(
        cls,
        environment: Mapping[str, str] | None = None,
        *,
        pool_size: int = 10,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> DockerSDKGateway:
        """Connect the way the docker CLI does (DOCKER_HOST, else the local socket).

        A failure to reach the engine raises DockerUnavailable with one line that names
        the host and what to check (see ``connecting``).
        """
        env = os.environ if environment is None else environment
        host = env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        with connecting(host), translate_errors("Connecting to the Docker engine"):
            client = docker.from_env(
                environment=dict(environment) if environment is not None else None,
                max_pool_size=pool_size,
            )
        gateway = cls(
            client, retry_attempts=retry_attempts, retry_max_delay=retry_max_delay, clock=clock
        )
        gateway.host = host
        return gateway

    @property
    def api_client(self) -> Any:
        """The SDK's low-level client, for the benchmark's request counter."""
        return self._api

    def ping(self, *, retry: bool = True) -> None:
        what = "Pinging the Docker engine"
        with connecting(self.host):
            if retry:
                self._call(what, self._api.ping)
                return
            with translate_errors(what):
                self._api.ping()

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "{} failed ({}); trying again in {:.1f} s (try {} of {}).",
                what,
                error,
                delay,
                state.attempt_number + 1,
                self._retry_attempts,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_random_exponential(multiplier=0.5, max=self._retry_max_delay),
            retry=retry_if_exception_type(TemporaryError),
            before_sleep=log_retry,
            reraise=True,
        )
        retrying = retrying.copy(sleep=self._sleep)
        for attempt in retrying:
            with attempt, translate_errors(what):
                return fn(*args, **kwargs)
        raise DockerError(f"{what}: gave up")  # pragma: no cover - reraise=True returns above

    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        entries = self._call(
            "Listing containers",
            self._api.containers,
            all=True,
            filters={"label": [label_filter]},
        )
        now = self._now()
        return [snapshot_from_list(e, now) for e in entries]

    def inspect(self, container_id: str) -> ContainerSnapshot:
        attrs = self._call(
            f"Inspecting container {container_id[:12]}",
            self._api.inspect_container,
            container_id,
        )
        return snapshot_from_inspect(attrs, self._now())

    def restart(self, container_id: str, *, timeout: float) -> None:
        self._call(
            f"Restarting container {container_id[:12]}",
            self._api.restart,
            container_id,
            timeout=round(timeout),
        )

    def start(self, container_id: str) -> None:
        self._call(f"Starting container {container_id[:12]}", self._api.start, container_id)

    def stop(self, container_id: str, *, timeout: float) -> None:
        self._call(
            f"Stopping container {container_id[:12]}",
            self._api.stop,
            container_id,
            timeout=round(timeout),
        )

    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult:
        what = f"Running {' '.join(command)!r} in container {container_id[:12]}"
        created = self._call(
            what, self._api.exec_create, container_id, list(command), user=user or ""
        )
        exec_id = created["Id"]
        # The engine has no exec timeout, so the output is read on a helper thread and
        # abandoned (not killed: Docker cannot kill an exec) when it runs too long.
        done: Future[bytes] = Future()

        def read() -> None:
            try:
                with translate_errors(what):
                    done.set_result(self._api.exec_start(exec_id))
            except BaseException as e:  # handed to the waiting thread
                done.set_exception(e)

        threading.Thread(target=read, name=f"exec-{exec_id[:8]}", daemon=True).start()
        try:
            raw = done.result(timeout=timeout)
        except TimeoutError:
            return ExecResult(
                exit_code=None,
                output=f"the command did not finish within {timeout:g} s; it may still be running",
            )
        info = self._call(what, self._api.exec_inspect, exec_id)
        output = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        code = info.get("ExitCode")
        return ExecResult(exit_code=int(code) if code is not None else None, output=output)

    def recreate(
        self, container_id: str, *, timeout: float, network_mode: str | None = None
    ) -> ContainerId:
        short = container_id[:12]
        attrs = self._call(
            f"Inspecting container {short}", self._api.inspect_container, container_id
        )
        if (attrs.get("HostConfig") or {}).get("AutoRemove"):
            # Stopping it would make the engine remove it, anonymous volumes and all.
            raise DockerRequestError(
                f"Recreating container {short}: it was started with --rm (AutoRemove), and "
                "stopping it would delete it with its anonymous volumes; medic leaves it alone"
            )
        image_attrs = self._call(
            f"Inspecting the image of container {short}", self._api.inspect_image, attrs["Image"]
        )
        args = create_args_from_inspect(attrs, image_attrs)
        if network_mode is not None:
            args["config"]["HostConfig"]["NetworkMode"] = network_mode
            args["config"].pop("NetworkingConfig", None)
            args["connect"] = []
        name = args["name"]
        was_running = bool((attrs.get("State") or {}).get("Running"))
        self.stop(container_id, timeout=timeout)
        # The old container steps aside under another name instead of being removed
        # first: if the new one cannot be made or started, the old one comes back.
        aside = f"{name}-replaced-{uuid.uuid4().hex[:8]}"
        self._call(f"Renaming container {short}", self._api.rename, container_id, aside)
        new_id: str | None = None
        try:
            created = self._call(
                f"Creating container {name}",
                self._api.create_container_from_config,
                args["config"],
                name=name,
            )
            new_id = str(created["Id"])
            for connect in args["connect"]:
                network = connect.pop("network")
                self._call(
                    f"Connecting container {new_id[:12]} to network {network}",
                    self._api.connect_container_to_network,
                    new_id,
                    network,
                    **connect,
                )
            self.start(new_id)
        except ContainerGone as e:
            self._put_back(container_id, name, new_id, restart=was_running)
            # A 404 here is about what the new container needs, not the old one.
            raise DockerRequestError(
                f"Recreating container {name}: the engine could not find the image "
                f"{args['config'].get('Image')} or a network or volume it uses ({e.__cause__}); "
                "the old container was put back"
            ) from e
        except DockerError:
            self._put_back(container_id, name, new_id, restart=was_running)
            raise
        try:
            self._call(
                f"Removing container {short}", self._api.remove_container, container_id, v=False
            )
        except DockerError as e:
            # The new container runs; the old one (stopped, renamed) is only clutter.
            logger.warning(
                "Container {} was replaced by {}, but removing the old one failed ({}); "
                "remove {} by hand.",
                short,
                new_id[:12],
                e,
                aside,
            )
        logger.info("Container {} ({}) was recreated as {}.", name, short, new_id[:12])
        return ContainerId(new_id)

    def _put_back(self, old_id: str, name: str, new_id: str | None, *, restart: bool) -> None:
        """Undo a failed recreate: drop the new container, give the old one its name back."""
        try:
            if new_id is not None:
                self._call(
                    f"Removing container {new_id[:12]}",
                    self._api.remove_container,
                    new_id,
                    v=False,
                    force=True,
                )
            self._call(f"Renaming container {old_id[:12]}", self._api.rename, old_id, name)
            if restart:
                self.start(old_id)
        except DockerError as e:
            logger.error(
                "Recreating container {} failed, and putting the old one back failed too ({}).",
                name,
                e,
            )

    def build_image(self, spec: BuildRequest) -> BuildResult:
        what = f"Building image {spec.tag} from {spec.context}"
        kwargs: dict[str, Any] = {
            "tag": spec.tag,
            "dockerfile": spec.dockerfile,
            "buildargs": dict(spec.args) or None,
            "target": spec.target,
            "rm": True,
            "forcerm": True,
            "decode": True,
        }
        if spec.archive is not None:
            kwargs.update(fileobj=io.BytesIO(spec.archive), custom_context=True)
        else:
            kwargs["path"] = spec.context
        if spec.network_mode is not None:
            kwargs["network_mode"] = spec.network_mode
        if spec.memory_mb is not None:
            memory = spec.memory_mb * 1024 * 1024
            kwargs["container_limits"] = {"memory": memory, "memswap": memory}
        if spec.labels:
            kwargs["labels"] = dict(spec.labels)
        if not spec.proxy:
            kwargs["use_config_proxy"] = False
        if spec.time_limit is not None:
            # The HTTP timeout limits each wait for output; the watchdog in
            # _timed_build limits the whole build.
            kwargs["timeout"] = max(spec.time_limit, 1.0)
        # Not retried: a build is long and not idempotent in time; the playbook's
        # backoff decides when to try again.
        with translate_errors(what):
            stream = self._api.build(**kwargs)
            if spec.time_limit is None:
                return _build_output(stream)
            return _timed_build(stream, spec.time_limit)

    def remove_image(self, tag: str) -> bool:
        what = f"Removing image {tag}"
        try:
            with translate_errors(what):
                try:
                    self._api.remove_image(tag)
                except docker.errors.ImageNotFound:
                    return False
        except ContainerGone:
            # The engine answers 404 for a tag that went away between two calls too.
            return False
        return True

    def run_sandbox(self, request: SandboxRequest) -> SandboxResult:
        what = f"Running a sandbox container of image {request.image}"
        container_id = self._create_sandbox(request, what)
        short = container_id[:12]
        try:
            with translate_errors(what):
                if request.workspace is not None and not self._api.put_archive(
                    container_id, "/", request.workspace
                ):
                    raise DockerRequestError(
                        f"{what}: the engine did not take the copy of the files"
                    )
                self._api.start(container_id)
            if request.until is SandboxUntil.EXIT:
                return self._sandbox_until_exit(container_id, request, what)
            return self._sandbox_settled(container_id, request, what)
        finally:
            try:
                with translate_errors(f"Removing sandbox container {short}"):
                    self._api.remove_container(container_id, v=True, force=True)
            except DockerError as e:
                logger.warning(
                    "Sandbox container {} could not be removed ({}); remove it with docker rm "
                    "-f {} (sandbox containers carry the label {}=true).",
                    short,
                    e,
                    short,
                    SANDBOX_LABEL,
                )

    def _create_sandbox(self, request: SandboxRequest, what: str) -> str:
        limits = request.limits
        memory = limits.memory_mb * 1024 * 1024
        with translate_errors(what):
            host_config = self._api.create_host_config(
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
                mem_limit=memory,
                memswap_limit=memory,
                pids_limit=limits.pids,
                nano_cpus=round(limits.cpus * 1e9),
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={max(limits.memory_mb // 4, 16)}m,mode=1777"},
                # Its log is read back by medic: the json-file driver whatever the engine's
                # default, and small, so a chatty command cannot fill the disk.
                log_config={"type": "json-file", "config": {"max-size": "4m", "max-file": "1"}},
            )
            environment = dict(SANDBOX_ENVIRONMENT)
            environment.update(request.environment)
            try:
                created = self._api.create_container(
                    request.image,
                    command=list(request.command) if request.command is not None else None,
                    entrypoint=list(request.entrypoint) if request.entrypoint is not None else None,
                    user=SANDBOX_USER,
                    working_dir=request.working_dir,
                    environment=[f"{k}={v}" for k, v in environment.items()],
                    labels={**dict(request.labels), **dict(SANDBOX_LABELS)},
                    host_config=host_config,
                    network_disabled=True,
                    healthcheck=_healthcheck(request.healthcheck),
                    hostname="sandbox",
                    name=f"medic-sandbox-{uuid.uuid4().hex[:12]}",
                    detach=True,
                )
            except docker.errors.ImageNotFound as e:
                raise DockerRequestError(
                    f"{what}: there is no image {request.image} on the engine"
                ) from e
        return str(created["Id"])

    def _sandbox_until_exit(
        self, container_id: str, request: SandboxRequest, what: str
    ) -> SandboxResult:
        exit_code: int | None = None
        still_running = False
        try:
            with translate_errors(what):
                try:
                    status = self._api.wait(container_id, timeout=max(request.time_limit, 0.001))
                    exit_code = int(status.get("StatusCode", -1))
                except requests.exceptions.ReadTimeout:
                    still_running = True
        except DockerUnavailable:
            # The SDK reports some read time-outs of a unix socket as a broken connection;
            # the container's state says which it was.
            still_running = True
        if still_running:
            attrs = self._sandbox_state(container_id, what)
            state = attrs.get("State") or {}
            if state.get("Running"):
                self._kill_sandbox(container_id, what)
            else:
                still_running = False
                exit_code = int(state.get("ExitCode") or 0)
        return self._sandbox_result(container_id, request, what, exit_code, still_running)

    def _sandbox_settled(
        self, container_id: str, request: SandboxRequest, what: str
    ) -> SandboxResult:
        deadline = self._now() + timedelta(seconds=request.time_limit)
        while True:
            state = self._sandbox_state(container_id, what).get("State") or {}
            if not state.get("Running"):
                exit_code = int(state.get("ExitCode") or 0)
                return self._sandbox_result(container_id, request, what, exit_code, False)
            health = (state.get("Health") or {}).get("Status")
            left = (deadline - self._now()).total_seconds()
            if health == Health.UNHEALTHY or left <= 0:
                self._kill_sandbox(container_id, what)
                # Health as it was while it ran: a killed container reads as unhealthy.
                return self._sandbox_result(container_id, request, what, None, True, seen=state)
            self._sleep(min(SANDBOX_POLL, left))

    def _sandbox_state(self, container_id: str, what: str) -> Mapping[str, Any]:
        with translate_errors(what):
            attrs: Mapping[str, Any] = self._api.inspect_container(container_id)
        return attrs

    def _kill_sandbox(self, container_id: str, what: str) -> None:
        try:
            with translate_errors(what):
                self._api.kill(container_id)
        except DockerRequestError:
            pass  # it ended between the look and the kill

    def _sandbox_result(
        self,
        container_id: str,
        request: SandboxRequest,
        what: str,
        exit_code: int | None,
        still_running: bool,
        *,
        seen: Mapping[str, Any] | None = None,
    ) -> SandboxResult:
        attrs = self._sandbox_state(container_id, what)
        state = attrs.get("State") or {}
        health_info = (seen if seen is not None else state).get("Health") or {}
        log = health_info.get("Log") or []
        with translate_errors(what):
            raw = self._api.logs(
                container_id, stdout=True, stderr=True, tail=max(request.output_lines, 1)
            )
        output = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return SandboxResult(
            exit_code=exit_code,
            output=output,
            still_running=still_running,
            health=Health(health_info["Status"]) if health_info.get("Status") else Health.NONE,
            health_output=str(log[-1].get("Output") or "").strip()[:OUTPUT_LIMIT] if log else None,
            oom_killed=bool(state.get("OOMKilled")),
        )

    def project_containers(self, project: str) -> list[ProjectContainer]:
        entries = self._call(
            f"Listing the containers of project {project}",
            self._api.containers,
            all=True,
            filters={"label": [f"{PROJECT_LABEL}={project}"]},
        )
        return [project_container_from_list(e) for e in entries]

    def events(self, label_filter: str, *, since: datetime | None) -> EventStream:
        kwargs: dict[str, Any] = {
            "decode": True,
            "filters": {
                "type": "container",
                "label": [label_filter],
                "event": list(WATCHED_EVENTS),
            },
        }
        if since is not None:
            kwargs["since"] = _since_param(since)
        # No retries here: the supervisor reconnects the stream with its own backoff.
        with translate_errors("Subscribing to Docker events"):
            stream = self._api.events(**kwargs)
        return _SDKEventStream(stream)

    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        stream = self._call(
            f"Reading past events of container {container_id[:12]}",
            self._api.events,
            since=_since_param(since),
            until=_since_param(until),
            filters={
                "type": "container",
                "container": [container_id],
                "event": list(WATCHED_EVENTS),
            },
            decode=True,
        )
        with translate_errors(f"Reading past events of container {container_id[:12]}"):
            found = [event_from_json(raw) for raw in stream]
        return [e for e in found if e is not None]

    def logs(self, container_id: str, *, since: datetime, limit: int = 1000) -> list[LogLine]:
        raw = self._call(
            f"Reading the log of container {container_id[:12]}",
            self._api.logs,
            container_id,
            stdout=True,
            stderr=True,
            timestamps=True,
            since=max(since.timestamp(), 0.001),
            tail=limit,
        )
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return [line for line in map(parse_log_line, text.splitlines()) if line is not None]

    def close(self) -> None:
        self._client.close()

    # --- evidence for a case file (agent/escalate/casefile.py's EvidenceSource) ----------

    def inspect_attrs(self, container_id: str) -> Mapping[str, Any]:
        """The raw inspect JSON of one container (one request)."""
        attrs: Mapping[str, Any] = self._call(
            f"Inspecting container {container_id[:12]}",
            self._api.inspect_container,
            container_id,
        )
        return attrs

    def log_tail(self, container_id: str, *, lines: int) -> list[str]:
        """The last ``lines`` log lines, stdout and stderr, read with the engine's ``tail``
        so that a container with gigabytes of logs costs no more than one with a few."""
        raw = self._call(
            f"Reading the log of container {container_id[:12]}",
            self._api.logs,
            container_id,
            stdout=True,
            stderr=True,
            timestamps=False,
            tail=max(lines, 1),
        )
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()

    # --- identity (agent/store/base.py's Identity) ---------------------------------------

    def engine_id(self) -> str:
        """The engine's own ID (``docker info``'s ``ID``), which tells this host's incidents
        from another host's in a shared database; one request."""
        info = self._call("Reading the Docker engine's ID", self._api.info)
        found = info.get("ID") if isinstance(info, Mapping) else None
        if not isinstance(found, str) or not found.strip():
            raise DockerError(
                "The Docker engine did not give its ID in `docker info`; medic needs it to tell "
                "its incidents from those of medics on other hosts."
            )
        return found.strip()
