"""The engine's JSON as medic's values: the pure half of the Docker gateway.

Snapshots and project containers from the list and inspect calls, events from the
event stream, log lines, and the other way round: the create request that makes a
container again from its inspect output (``create_args_from_inspect``, used by
``recreate``). That last one decides which settings were the operator's and which
only came from the image, and that decision needs Docker's attribute names, which no
module above the engine reads. Nothing here does I/O; ``agent.engine.docker_sdk``
makes the requests.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.engine.gateway import (
    OUTPUT_LIMIT,
    DockerEvent,
    LogLine,
    ProjectContainer,
    SwarmRestart,
    SwarmService,
    SwarmTaskStatus,
)
from agent.model import (
    SERVICE_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Health,
    State,
)

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


_STATES = {str(state): state for state in State}


def _state(text: str | None) -> State:
    return _STATES.get(text or "", State.CREATED)


def _ref(container_id: str, name: str, labels: Mapping[str, str]) -> ContainerRef:
    return ContainerRef.from_labels(container_id, name, labels)


def snapshot_from_list(entry: Mapping[str, Any], now: datetime) -> ContainerSnapshot:
    """A snapshot from one entry of ``GET /containers/json``."""
    return Lister().snapshots([entry], now)[0]


@dataclass(slots=True)
class _Known:
    """One container of the last listing: what never changes for its id and name (its
    labels, which Docker cannot change, the identity read from them, its creation
    time), and the parts of its entry that may, with the snapshot read from them."""

    labels: dict[str, str]
    ref: ContainerRef
    created_at: datetime | None
    listed: tuple[object, ...]
    snapshot: ContainerSnapshot


class Lister:
    """Snapshots from the list call, poll after poll.

    A container listed as it was at the last poll (same state, status text, image and
    networks) gets the last snapshot again, stamped with this poll's time; one listed
    anew is read in full, its labels only when its id or name is new. On a large host
    most containers are listed as they were, and reading each entry in full was most
    of a healthy cycle's cost. Only the containers of the last listing are kept.
    Another thread's listing at the same time costs the memory of the one before, never
    a wrong snapshot: what is kept for an id and name depends on nothing else.
    """

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], _Known] = {}

    def snapshots(
        self, entries: Iterable[Mapping[str, Any]], now: datetime
    ) -> list[ContainerSnapshot]:
        before, known = self._known, {}
        snapshots = []
        for entry in entries:
            cid = entry["Id"]
            names = entry.get("Names") or [cid[:12]]
            key = (cid, names[0])
            listed = (
                entry.get("State"),
                entry.get("Status"),
                entry.get("Image"),
                entry.get("NetworkSettings"),
            )
            last = before.get(key)
            if last is not None and last.listed == listed:
                # The same reading again: another thread's listing may restamp it too.
                snapshot = last.snapshot = _restamped(last.snapshot, now)
                known[key] = last
            else:
                if last is None:
                    labels: dict[str, str] = dict(entry.get("Labels") or {})
                    ref = ContainerRef.from_labels(cid, names[0], labels)
                    created_at = _unix_time(entry.get("Created"))
                else:
                    labels, ref, created_at = last.labels, last.ref, last.created_at
                snapshot = _from_entry(entry, now, labels, ref, created_at)
                known[key] = _Known(labels, ref, created_at, listed, snapshot)
            snapshots.append(snapshot)
        self._known = known
        return snapshots


def _from_entry(
    entry: Mapping[str, Any],
    now: datetime,
    labels: dict[str, str],
    ref: ContainerRef,
    created_at: datetime | None,
) -> ContainerSnapshot:
    status = str(entry.get("Status") or "")
    health_match = _HEALTH_IN_STATUS.search(status)
    health = Health.NONE
    if health_match:
        word = health_match.group(1)
        health = Health.STARTING if "starting" in word else Health(word)
    exit_match = _EXIT_IN_STATUS.match(status)
    return ContainerSnapshot(
        ref=ref,
        labels=labels,
        image=str(entry.get("Image") or ""),
        state=_state(entry.get("State")),
        health=health,
        exit_code=int(exit_match.group(1)) if exit_match else None,
        ip_addresses=_ip_addresses(entry.get("NetworkSettings")),
        observed_at=now,
        created_at=created_at,
    )


def _restamped(snapshot: ContainerSnapshot, now: datetime) -> ContainerSnapshot:
    """The same reading seen again at ``now``. Copied field by field rather than built
    through ``__init__`` (a frozen dataclass sets each of its 21 fields one call at a
    time): equal in every field to what ``__init__`` would build."""
    again = object.__new__(ContainerSnapshot)
    again.__dict__.update(snapshot.__dict__)
    again.__dict__["observed_at"] = now
    return again


def _unix_time(value: object) -> datetime | None:
    """The list call's ``Created``: Unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC)
    return None


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
        created_at=parse_time(attrs.get("Created")),
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


# --- Swarm services ---------------------------------------------------------------------


def swarm_service_from_inspect(
    attrs: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]] = ()
) -> SwarmService:
    """A service from ``GET /services/{id}`` and its tasks from ``GET /tasks``."""
    spec = attrs.get("Spec") or {}
    template = spec.get("TaskTemplate") or {}
    policy = template.get("RestartPolicy") or {}
    try:
        # Swarm's default when a service sets none is "any".
        restart = SwarmRestart(str(policy.get("Condition") or "any"))
    except ValueError:
        restart = SwarmRestart.ANY
    global_mode = "Global" in (spec.get("Mode") or {})
    return SwarmService(
        id=str(attrs.get("ID") or ""),
        name=str(spec.get("Name") or ""),
        version=int((attrs.get("Version") or {}).get("Index") or 0),
        force_update=int(template.get("ForceUpdate") or 0),
        global_mode=global_mode,
        restart=restart,
        max_attempts=int(policy.get("MaxAttempts") or 0),
        tasks=tuple(_task_status(t, global_mode) for t in tasks),
    )


def _task_status(task: Mapping[str, Any], global_mode: bool) -> SwarmTaskStatus:
    status = task.get("Status") or {}
    slot = task.get("Slot")
    return SwarmTaskStatus(
        id=str(task.get("ID") or ""),
        # A global service's tasks have no slot number: each node is its slot.
        slot=str(task.get("NodeID") or "") if global_mode or not slot else str(slot),
        desired_state=str(task.get("DesiredState") or ""),
        state=str(status.get("State") or ""),
        error=str(status.get("Err") or "") or None,
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
