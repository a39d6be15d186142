"""Compose changes that widen a service's power over the host, or drop its data. Pure.

A fix may correct a compose file, but it must not make a service privileged, put it
in the host's network, pid or ipc namespace, give it capabilities, devices or the
docker socket, or remove its volumes. The file is parsed before and after the edit
and the two are compared service by service, so only what the edit adds counts.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
from typing import Any

import yaml

from agent.fixes.refusal import Refusal, show

#: Compose files, recognised by name the way ``docker compose`` looks for them.
COMPOSE_NAMES = ("compose*.yml", "compose*.yaml", "docker-compose*.yml", "docker-compose*.yaml")


def is_compose_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in COMPOSE_NAMES)


_SOCKET_SOURCES = frozenset({"/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run"})


def compose_refusals(path: str, before: bytes | None, after: bytes) -> list[Refusal]:
    """Refusals for compose changes that widen a service's power over the host or drop
    data: privileged, host network/pid/ipc, new capabilities or devices, the docker
    socket or the host's root mounted, volumes removed."""
    old = _compose_services(before)
    new = _compose_services(after)
    if new is None:
        return []  # not a mapping: parse_problem or the compose file's owner will say so
    old = old or {}
    shown = show(path)
    refusals: list[Refusal] = []

    def refuse(code: str, service: str, what: str) -> None:
        refusals.append(Refusal(code, f"{shown}: service {service} {what}.", path))

    for name, definition in new.items():
        service = str(name)
        previous = old.get(name)
        was: dict[Any, Any] = previous if isinstance(previous, dict) else {}
        now: dict[Any, Any] = definition if isinstance(definition, dict) else {}
        if _truthy(now.get("privileged")) and not _truthy(was.get("privileged")):
            refuse("compose_privileged", service, "would become privileged")
        for key, code in (
            ("network_mode", "compose_host_network"),
            ("pid", "compose_host_pid"),
            ("ipc", "compose_host_ipc"),
            ("userns_mode", "compose_host_userns"),
        ):
            if now.get(key) == "host" and was.get(key) != "host":
                refuse(code, service, f"would get {key}: host")
        added_caps = _as_set(now.get("cap_add")) - _as_set(was.get("cap_add"))
        if added_caps:
            refuse(
                "compose_cap_add",
                service,
                f"would gain capabilities {', '.join(sorted(added_caps))}",
            )
        added_devices = _as_set(now.get("devices")) - _as_set(was.get("devices"))
        if added_devices:
            refuse(
                "compose_devices", service, f"would get devices {', '.join(sorted(added_devices))}"
            )
        added_security = _as_set(now.get("security_opt")) - _as_set(was.get("security_opt"))
        if added_security:
            refuse(
                "compose_security_opt",
                service,
                f"would get security options {', '.join(sorted(added_security))}",
            )
        old_mounts = _mounts(was.get("volumes"))
        new_mounts = _mounts(now.get("volumes"))
        for target, source in new_mounts.items():
            if old_mounts.get(target) == source or source is None:
                continue
            clean = posixpath.normpath(source) if source.startswith("/") else source
            if clean in _SOCKET_SOURCES or clean.endswith("docker.sock"):
                refuse(
                    "compose_docker_socket", service, f"would mount the docker socket ({source})"
                )
            elif clean == "/":
                refuse("compose_host_root", service, "would mount the host's root folder")
        removed = sorted(set(old_mounts) - set(new_mounts))
        if removed:
            refuse(
                "compose_volume_removed", service, f"would lose the volumes at {', '.join(removed)}"
            )
    for name, definition in old.items():
        if name not in new and isinstance(definition, dict) and _mounts(definition.get("volumes")):
            refuse("compose_volume_removed", str(name), "would be removed with its volumes")
    old_volumes = _top_level_volumes(before)
    gone = sorted(old_volumes - _top_level_volumes(after))
    if gone:
        refusals.append(
            Refusal(
                "compose_volume_removed",
                f"{shown}: the named volumes {', '.join(gone)} would be removed.",
                path,
            )
        )
    return refusals


def _load_mapping(raw: bytes | None) -> dict[Any, Any] | None:
    if raw is None:
        return None
    try:
        document = yaml.safe_load(raw.decode("utf-8", errors="replace"))
    except yaml.YAMLError:
        return None
    return document if isinstance(document, dict) else None


def _compose_services(raw: bytes | None) -> dict[Any, Any] | None:
    document = _load_mapping(raw)
    if document is None:
        return None
    services = document.get("services")
    return services if isinstance(services, dict) else {}


def _top_level_volumes(raw: bytes | None) -> set[str]:
    document = _load_mapping(raw) or {}
    volumes = document.get("volumes")
    return {str(k) for k in volumes} if isinstance(volumes, dict) else set()


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "on", "1")
    return bool(value)


def _as_set(value: Any) -> set[str]:
    if isinstance(value, list):
        return {str(v) if not isinstance(v, dict) else json.dumps(v, sort_keys=True) for v in value}
    if isinstance(value, dict):
        return {f"{k}={v}" for k, v in value.items()}
    return set() if value is None else {str(value)}


def _mounts(value: Any) -> dict[str, str | None]:
    """A service's volumes as target path -> source (None for an anonymous volume)."""
    mounts: dict[str, str | None] = {}
    if not isinstance(value, list):
        return mounts
    for entry in value:
        if isinstance(entry, str):
            parts = entry.split(":")
            if len(parts) == 1:
                mounts[parts[0]] = None
            else:
                mounts[parts[1]] = parts[0]
        elif isinstance(entry, dict):
            target = entry.get("target")
            source = entry.get("source")
            if target is not None:
                mounts[str(target)] = None if source is None else str(source)
    return mounts
