"""Compose changes that widen what a container may do, judged as compose reads them. Pure.

A fix may correct a compose file, but the model that wrote it is not trusted: it must
not make a service privileged, share a host namespace, gain capabilities, devices,
host paths or sockets, lose its hardening, publish ports to the world, swap its
image for another one, or drop data. The raw text of one file says little about
that: ``privileged: ${PRIV:-true}`` is true once interpolated, a second YAML document
or an ``include:``d file adds services, ``extends:`` pulls keys from elsewhere. So
every compose project the edit touches is read the way compose reads it (through
``agent.engine.compose_graph``, strict about unset variables) at the base commit and in the
fix's tree, and the resolved services are compared: only what the edit adds counts,
and what it adds must be on an allow-list.

Which projects: every tracked file named like a compose file is a root; in one folder
``compose.yaml`` (or ``docker-compose.yml``...) is read together with its
``*.override.y*ml``, as ``docker compose`` does without ``-f``. A project is checked
when any file it reads, before or after, is edited; an edited compose file always is.
Paths are repository-relative; anything that leaves the repository (``..``, absolute,
``//``, ``~``, into ``.git``) is outside, wherever the repository lives.

Refusal codes (each refusal names the root file and the service)::

    compose_unresolved          a ${VAR} unset without a default, ${VAR:?} unset, a bad $
    compose_multi_document      a compose file with more than one YAML document
    compose_unreadable          not YAML, not a mapping, a missing include, a cycle
    compose_outside_project     include/extends/env_file/label_file/secret/config file
                                outside the repository
    compose_privileged          privileged (service, build or hook) becomes true
    compose_cap_add             a capability added
    compose_cap_drop            a dropped capability no longer dropped
    compose_devices             devices, gpus or reserved devices added
    compose_device_cgroup_rules device cgroup rules added
    compose_security_opt        a security option other than no-new-privileges added,
                                or no-new-privileges removed
    compose_read_only           read_only: true removed
    compose_user_root           user becomes root, or a non-root user is removed
    compose_group_add           supplementary groups added
    compose_sysctls             kernel parameters added or changed
    compose_cgroup_parent       cgroup_parent changed
    compose_runtime             runtime changed
    compose_isolation           isolation changed
    compose_oom_kill_disable    oom_kill_disable becomes true
    compose_host_network        network_mode outside bridge, none, service:<service>
    compose_host_pid            pid outside private
    compose_host_ipc            ipc outside private, shareable, service:<service>
    compose_host_uts            uts outside private
    compose_host_cgroup         cgroup outside private
    compose_host_userns         userns_mode outside private
    compose_volumes_from        volumes_from added
    compose_host_root           the host's / mounted
    compose_docker_socket       docker.sock mounted, or use_api_socket
    compose_socket              another socket, /run, /var/run or a folder holding them
    compose_host_path           a bind mount (or bind volume) outside the repository, or
                                a mount type other than bind, volume and tmpfs
    compose_volume_driver       a named volume's driver, options, name or external changed
    compose_network             a network's driver, options, name or external changed
    compose_port_published      a port published on an address other than loopback
    compose_image               image from another repository, or pulled instead of built
    compose_logging             logging driver outside json-file, local, none, journald
    compose_build_context       build context or Dockerfile outside the repository, remote
    compose_build_network       build network outside default, none, bridge
    compose_build_option        build ssh, entitlements or additional_contexts changed
    compose_project_name        the project's name changed
    compose_key_not_allowed     a key compose does not know, or one never changed by a fix
                                (provider, credential_spec)
    compose_volume_removed      a service's volume, a service with volumes, or a named
                                volume removed: medic never drops data

What is fine: tags and digests, healthchecks, commands, environment (another check
scans it for secrets), labels, restart policies, resources, new services with nothing
on this list, ports on 127.0.0.1 or ::1, cap_drop and read_only added.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from agent.engine.compose_graph import (
    ComposeError,
    MultipleDocuments,
    UnreadableCompose,
    UnresolvedVariable,
    is_host_path,
    resolve_project,
    split_volume,
)
from agent.fixes.refusal import Refusal, show

#: Compose files, recognised by name the way ``docker compose`` looks for them.
COMPOSE_NAMES = ("compose*.yml", "compose*.yaml", "docker-compose*.yml", "docker-compose*.yaml")
#: The files ``docker compose`` reads without ``-f``, in its order, and their overrides.
DEFAULT_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_NAMES = (
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
)

#: A repository-relative path -> its content, None when the tree has no such file.
Content = Callable[[str], "bytes | None"]


def is_compose_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in COMPOSE_NAMES)


@overload
def compose_refusals(
    edited: Collection[str],
    *,
    before: Content,
    after: Content,
    tracked: Collection[str],
    variables: Mapping[str, str],
) -> list[Refusal]: ...


@overload
def compose_refusals(edited: str, before: bytes | None, after: bytes, /) -> list[Refusal]: ...


def compose_refusals(
    edited: Collection[str] | str,
    old: bytes | None = None,
    new: bytes | None = None,
    *,
    before: Content | None = None,
    after: Content | None = None,
    tracked: Collection[str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Refusal]:
    """Refusals for the compose changes among ``edited`` that widen what a container
    may do or drop data, comparing the projects read through ``before`` and ``after``
    with ``variables`` (the module's docstring lists the codes).

    The positional form ``compose_refusals(path, before_bytes, after_bytes)`` judges
    one file on its own, with no variables; it is kept for the caller written before
    projects were read whole, and does not judge images.
    """
    if isinstance(edited, str):
        return _single_file(edited, old, new)
    if before is None or after is None or tracked is None or variables is None:
        raise TypeError("compose_refusals needs before, after, tracked and variables")
    refusals: list[Refusal] = []
    for pair in _affected(edited, before=before, after=after, tracked=tracked, vars=variables):
        for refusal in pair.refusals():
            if refusal not in refusals:
                refusals.append(refusal)
    return refusals


def _single_file(path: str, before: bytes | None, after: bytes | None) -> list[Refusal]:
    refusals = compose_refusals(
        [path],
        before=lambda p: before if p == path else None,
        after=lambda p: after if p == path else None,
        tracked=[path],
        variables={},
    )
    return [r for r in refusals if r.code != "compose_image"]


def compose_effect(
    edited: Collection[str],
    *,
    before: Content,
    after: Content,
    tracked: Collection[str],
    variables: Mapping[str, str],
) -> tuple[str, ...]:
    """One line per resolved difference a person should see before approving, such as
    ``service web: image nginx:1.25 -> nginx:1.27``; empty when no compose project is
    affected. Environment values and build args are named, not shown: they may be
    secrets substituted from medic's own environment."""
    pairs = list(_affected(edited, before=before, after=after, tracked=tracked, vars=variables))
    lines: list[str] = []
    for pair in pairs:
        prefix = f"{show(pair.root)}: " if len(pairs) > 1 else ""
        for line in pair.effect():
            lines.append(prefix + line)
    return tuple(lines)


# --- which projects an edit touches ------------------------------------------------------


class _LeavesRepository(ComposeError):
    """A file compose would read lies outside the repository."""


@dataclass(frozen=True)
class _Loaded:
    config: dict[str, Any]
    files: frozenset[str]
    error: ComposeError | None = None


@dataclass
class _Pair:
    """One project at the base commit and in the fix's tree."""

    root: str
    was: _Loaded
    now: _Loaded
    written: dict[str, Any] = field(default_factory=dict)
    """The fix's project with values as written, to show what a value resolved from."""

    def refusals(self) -> list[Refusal]:
        if self.now.error is not None:
            return [_error_refusal(self.root, self.now.error)]
        return list(_Judge(self).refusals())

    def effect(self) -> list[str]:
        if self.now.error is not None:
            return [f"{show(self.root)} cannot be read: {_flat(str(self.now.error))}"]
        return [show(line) for line in _diff(self.was.config, self.now.config)]


def _projects(tracked: Collection[str], edited: Collection[str]) -> list[tuple[str, ...]]:
    """The compose projects of a tree: each a tuple of its files, the root first."""
    roots = sorted(
        {p for p in tracked if is_compose_file(p)} | {p for p in edited if is_compose_file(p)}
    )
    by_folder: dict[str, dict[str, str]] = {}
    for path in roots:
        folder, _, name = path.rpartition("/")
        by_folder.setdefault(folder, {})[name.lower()] = path
    projects: list[tuple[str, ...]] = []
    for names in by_folder.values():
        main = next((names[n] for n in DEFAULT_NAMES if n in names), None)
        overrides = [names[n] for n in OVERRIDE_NAMES if n in names]
        grouped: set[str] = set()
        if main is not None:
            projects.append((main, *overrides))
            grouped = {main, *overrides}
        projects.extend((path,) for path in sorted(names.values()) if path not in grouped)
    return projects


def _affected(
    edited: Collection[str],
    *,
    before: Content,
    after: Content,
    tracked: Collection[str],
    vars: Mapping[str, str],
) -> Iterator[_Pair]:
    edits = {posixpath.normpath(p) for p in edited}
    for files in _projects(tracked, edits):
        was = _load(files, before, vars, strict=False)
        now = _load(files, after, vars, strict=True)
        if not (files[0] in edits or (was.files | now.files) & edits):
            continue
        written = _load(files, after, vars, strict=False, as_written=True).config
        yield _Pair(files[0], was, now, written)


def _load(
    files: tuple[str, ...],
    content: Content,
    variables: Mapping[str, str],
    *,
    strict: bool,
    as_written: bool = False,
) -> _Loaded:
    """A project read through ``content``; a root absent from the tree is an empty one."""
    read_files: set[str] = set()

    def read(path: Path) -> str | None:
        where = inside_repository(str(path))
        if where is None:
            raise _LeavesRepository(str(path), file=path)
        raw = content(where)
        if raw is None:
            return None
        read_files.add(where)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UnreadableCompose(f"{where} is not UTF-8 text", file=path) from e

    present = [f for f in files if content(f) is not None]
    if not present:
        return _Loaded({}, frozenset())
    try:
        project = resolve_project(
            [Path(f) for f in present],
            working_dir=Path(posixpath.dirname(files[0]) or "."),
            environment=variables,
            read=read,
            strict=strict,
            as_written=as_written,
        )
    except ComposeError as e:
        return _Loaded({}, frozenset(read_files), e)
    return _Loaded(project.config, frozenset(read_files))


def _error_refusal(root: str, error: ComposeError) -> Refusal:
    if isinstance(error, _LeavesRepository):
        code = "compose_outside_project"
    elif isinstance(error, UnresolvedVariable):
        code = "compose_unresolved"
    elif isinstance(error, MultipleDocuments):
        code = "compose_multi_document"
    else:
        code = "compose_unreadable"
    what = _flat(str(error))
    if code == "compose_outside_project":
        what = f"compose would read {what}, which lies outside the repository"
    return Refusal(code, f"{show(root)}: {what}.", root)


def _flat(text: str) -> str:
    """An error's text on one printable line, at most 400 characters."""
    line = "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))
    return line if len(line) <= 400 else line[:399] + "…"


# --- paths -------------------------------------------------------------------------------

_DRIVE = re.compile(r"[A-Za-z]:")


def inside_repository(path: str) -> str | None:
    """``path`` (repository-relative) normalised, or None when it leaves the
    repository: absolute, ``~``, a drive or UNC path, ``..`` above the top, or into
    ``.git`` (which no fix may hand to a container)."""
    if not path or path.startswith(("~", "\\")) or posixpath.isabs(path) or _DRIVE.match(path):
        return None
    clean = posixpath.normpath(path)
    if clean == ".." or clean.startswith("../"):
        return None
    if ".git" in (part.lower() for part in clean.split("/")):
        return None
    return clean


_SOCKET_FOLDERS = ("/run", "/var/run")


def _host_path_problem(path: str) -> tuple[str, str] | None:
    """The refusal code and a phrase for mounting host ``path``, or None when it is a
    folder or file inside the repository that is not a socket."""
    absolute = re.sub("^/+", "/", posixpath.normpath(path)) if path.startswith("/") else path
    lower = absolute.lower()
    if absolute == "/":
        return "compose_host_root", "would mount the host's root folder"
    if "docker.sock" in lower:
        return "compose_docker_socket", f"would mount the docker socket ({path})"
    names = lower.rstrip("/").split("/")
    if absolute.startswith("/"):
        socket_folder = any(
            lower == folder or lower.startswith(folder + "/") or folder.startswith(lower + "/")
            for folder in _SOCKET_FOLDERS
        )
        if socket_folder or names[-1].endswith(".sock"):
            return "compose_socket", f"would mount {path}, where sockets live"
    elif any(name.endswith(".sock") for name in names):
        return "compose_socket", f"would mount the socket {path}"
    if inside_repository(path) is None:
        return "compose_host_path", f"would mount {path} from outside the repository"
    return None


# --- judging one project ---------------------------------------------------------------

_NAMESPACES = {
    "network_mode": ("compose_host_network", frozenset({"bridge", "none"})),
    "pid": ("compose_host_pid", frozenset({"private"})),
    "ipc": ("compose_host_ipc", frozenset({"private", "shareable"})),
    "uts": ("compose_host_uts", frozenset({"private"})),
    "cgroup": ("compose_host_cgroup", frozenset({"private"})),
    "userns_mode": ("compose_host_userns", frozenset({"private"})),
}
#: Namespaces a service may share with another service of the project.
_SHARED_WITH_SERVICE = frozenset({"network_mode", "ipc"})
_LOG_DRIVERS = frozenset({"json-file", "local", "none", "journald"})
_BUILD_NETWORKS = frozenset({"default", "none", "bridge"})
_LOOPBACK = frozenset({"127.0.0.1", "::1"})
_NO_NEW_PRIVILEGES = re.compile(r"no-new-privileges(?:[:=]true)?", re.IGNORECASE)
_MOUNT_TYPES = frozenset({"bind", "volume", "tmpfs"})

#: Every service key of the compose specification. Those the judge does not look at
#: are free to change; any other key (``x-`` aside) is refused, as compose would.
_SERVICE_KEYS = frozenset(
    [
        "annotations",
        "attach",
        "blkio_config",
        "build",
        "cap_add",
        "cap_drop",
        "cgroup",
        "cgroup_parent",
        "command",
        "configs",
        "container_name",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_quota",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "cpu_shares",
        "cpus",
        "cpuset",
        "credential_spec",
        "depends_on",
        "deploy",
        "develop",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "domainname",
        "entrypoint",
        "env_file",
        "environment",
        "expose",
        "external_links",
        "extra_hosts",
        "gpus",
        "group_add",
        "healthcheck",
        "hostname",
        "image",
        "init",
        "ipc",
        "isolation",
        "label_file",
        "labels",
        "links",
        "logging",
        "mac_address",
        "mem_limit",
        "mem_reservation",
        "mem_swappiness",
        "memswap_limit",
        "models",
        "network_mode",
        "networks",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "pids_limit",
        "platform",
        "ports",
        "post_start",
        "pre_stop",
        "privileged",
        "profiles",
        "provider",
        "pull_policy",
        "pull_refresh_after",
        "read_only",
        "restart",
        "runtime",
        "scale",
        "secrets",
        "security_opt",
        "shm_size",
        "stdin_open",
        "stop_grace_period",
        "stop_signal",
        "storage_opt",
        "sysctls",
        "tmpfs",
        "tty",
        "ulimits",
        "use_api_socket",
        "user",
        "userns_mode",
        "uts",
        "volumes",
        "volumes_from",
        "working_dir",
    ]
)
_NEVER_CHANGED = frozenset({"provider", "credential_spec"})
_BUILD_KEYS = frozenset(
    [
        "context",
        "dockerfile",
        "dockerfile_inline",
        "args",
        "ssh",
        "cache_from",
        "cache_to",
        "additional_contexts",
        "entitlements",
        "extra_hosts",
        "isolation",
        "privileged",
        "labels",
        "no_cache",
        "pull",
        "network",
        "shm_size",
        "target",
        "secrets",
        "tags",
        "ulimits",
        "platforms",
        "provenance",
        "sbom",
    ]
)
_BUILD_OPTIONS = ("ssh", "entitlements", "additional_contexts")
_TOP_LEVEL_KEYS = frozenset(
    {"version", "name", "services", "volumes", "networks", "secrets", "configs", "models"}
)


def _off(value: Any) -> bool:
    """Whether a boolean setting is clearly off, as compose reads ``false``, ``no``..."""
    if value is None or value is False:
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in ("false", "no", "n", "off", "0")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [f"{k}={v}" for k, v in value.items()]
    return [] if value is None else [value]


def _key(item: Any) -> str:
    return item if isinstance(item, str) else json.dumps(item, sort_keys=True, default=str)


def _added(was: Any, now: Any, normal: Callable[[Any], str] = _key) -> list[str]:
    old = {normal(i) for i in _items(was)}
    return sorted({normal(i) for i in _items(now)} - old)


def _capability(item: Any) -> str:
    return str(item).strip().upper().removeprefix("CAP_")


def _as_dict(value: Any) -> dict[str, Any]:
    """``KEY=VALUE`` lists and mappings alike, as a mapping."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    found: dict[str, Any] = {}
    for item in _items(value):
        name, _, setting = str(item).partition("=")
        found[name] = setting
    return found


def _root_user(user: Any) -> bool:
    uid, _, gid = str(user).strip().partition(":")

    def is_root(part: str) -> bool:
        part = part.strip().lower()
        return part == "root" or (part.isdigit() and int(part) == 0)

    return is_root(uid) or not uid.strip() or (bool(gid.strip()) and is_root(gid))


def repository_of(image: str) -> str:
    """An image reference's registry and repository, without tag or digest, with
    Docker Hub's defaults written out: ``nginx:1`` is ``docker.io/library/nginx``."""
    reference = image.strip().split("@", 1)[0]
    head, _, last = reference.rpartition("/")
    if ":" in last:
        last = last.rsplit(":", 1)[0]
    reference = f"{head}/{last}" if head else last
    parts = reference.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0], "/".join(parts[1:])
    else:
        registry, path = "docker.io", reference
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = "docker.io"
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{registry.lower()}/{path.lower()}"


@dataclass(frozen=True)
class Port:
    """One published port, normalised from the short or the long syntax."""

    host_ip: str
    published: str
    target: str
    protocol: str

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        head = ":".join(p for p in (ip, self.published) if p) if self.host_ip else self.published
        if self.host_ip and not self.published:
            head = f"{ip}:"
        return f"{head + ':' if head else ''}{self.target}/{self.protocol}"


def ports_of(value: Any) -> list[Port]:
    """A service's ``ports`` as compose reads them (``"80"``, ``"8080:80"``,
    ``"127.0.0.1:8080:80/udp"``, ``"[::1]:8080:80"``, or the long syntax)."""
    found: list[Port] = []
    for entry in _items(value):
        if isinstance(entry, dict):
            found.append(
                Port(
                    str(entry.get("host_ip") or ""),
                    str(entry.get("published") or ""),
                    str(entry.get("target") or ""),
                    str(entry.get("protocol") or "tcp").lower(),
                )
            )
            continue
        text = str(entry).strip()
        text, _, protocol = text.partition("/")
        host_ip = ""
        if text.startswith("["):
            host_ip, _, text = text[1:].partition("]")
            text = text.removeprefix(":")
            parts = text.split(":")
            published, target = (parts[0], parts[-1]) if len(parts) > 1 else ("", parts[0])
        else:
            parts = text.rsplit(":", 2)
            if len(parts) == 3:
                host_ip, published, target = parts
            elif len(parts) == 2:
                published, target = parts
            else:
                published, target = "", parts[0]
        found.append(Port(host_ip, published, target, (protocol or "tcp").lower()))
    return found


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes``: a bind, a named or anonymous volume..."""

    kind: str
    source: str | None
    target: str
    read_only: bool

    def __str__(self) -> str:
        where = f"{self.source}:{self.target}" if self.source else self.target
        return f"{where}{':ro' if self.read_only else ''}" + (
            "" if self.kind in ("bind", "volume") else f" ({self.kind})"
        )


def mounts_of(value: Any) -> list[Mount]:
    """A service's ``volumes``, short or long syntax, as mounts."""
    found: list[Mount] = []
    for entry in _items(value):
        if isinstance(entry, dict):
            kind = str(entry.get("type") or "volume")
            source = entry.get("source")
            found.append(
                Mount(
                    kind,
                    None if source is None else str(source),
                    str(entry.get("target")),
                    not _off(entry.get("read_only")),
                )
            )
            continue
        source, target, mode = split_volume(str(entry))
        read_only = "ro" in (mode or "").split(",")
        if source is None:
            found.append(Mount("volume", None, target, read_only))
        else:
            kind = "bind" if is_host_path(source) else "volume"
            found.append(Mount(kind, source, target, read_only))
    return found


class _Judge:
    """The refusals for one project's change."""

    def __init__(self, pair: _Pair) -> None:
        self.pair = pair
        self.shown = show(pair.root)
        self.was = pair.was.config
        self.now = pair.now.config
        self.found: list[Refusal] = []

    def refuse(self, code: str, service: str | None, what: str) -> None:
        subject = f"service {show(service)} " if service is not None else ""
        self.found.append(Refusal(code, f"{self.shown}: {subject}{what}.", self.pair.root))

    def resolved(self, service: str, key: str, value: Any) -> str:
        """`` (key: ${X:-y} resolves to y)`` when the file wrote it with a variable."""
        written = _mapping(_mapping(self.pair.written.get("services")).get(service)).get(key)
        if isinstance(written, str) and "$" in written and written != str(value):
            return f" ({key}: {written} resolves to {value})"
        return ""

    def refusals(self) -> list[Refusal]:
        was_services = _mapping(self.was.get("services"))
        now_services = _mapping(self.now.get("services"))
        for name, definition in now_services.items():
            self.service(str(name), _mapping(was_services.get(name)), _mapping(definition))
        for name, definition in was_services.items():
            if name not in now_services and mounts_of(_mapping(definition).get("volumes")):
                self.refuse(
                    "compose_volume_removed", str(name), "would be removed with its volumes"
                )
        self.top_level()
        return self.found

    def service(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        if not _off(now.get("privileged")) and _off(was.get("privileged")):
            self.refuse(
                "compose_privileged",
                name,
                "would become privileged"
                + self.resolved(name, "privileged", now.get("privileged")),
            )
        self.capabilities(name, was, now)
        self.hardening(name, was, now)
        self.namespaces(name, was, now)
        self.mounts(name, was, now)
        self.files(name, was, now)
        self.ports(name, was, now)
        self.image(name, was, now)
        self.build(name, _build(was.get("build")), _build(now.get("build")))
        self.hooks(name, was, now)
        for key in sorted(set(now) | set(was)):
            if key.startswith("x-") or was.get(key) == now.get(key):
                continue
            if key not in _SERVICE_KEYS or key in _NEVER_CHANGED:
                self.refuse(
                    "compose_key_not_allowed",
                    name,
                    f"would change {show(key)}, which a fix may not",
                )

    def capabilities(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        added = _added(was.get("cap_add"), now.get("cap_add"), _capability)
        if added:
            self.refuse("compose_cap_add", name, f"would gain capabilities {', '.join(added)}")
        kept = _added(now.get("cap_drop"), was.get("cap_drop"), _capability)
        if kept:
            self.refuse("compose_cap_drop", name, f"would no longer drop {', '.join(kept)}")
        devices = _added(was.get("devices"), now.get("devices"))
        if devices:
            self.refuse("compose_devices", name, f"would get devices {', '.join(devices)}")
        reserved = ("deploy", "resources", "reservations", "devices")
        if now.get("gpus") not in (None, was.get("gpus")) or _dig(now, reserved) not in (
            None,
            _dig(was, reserved),
        ):
            self.refuse("compose_devices", name, "would get GPUs or other reserved devices")
        rules = _added(was.get("device_cgroup_rules"), now.get("device_cgroup_rules"))
        if rules:
            self.refuse(
                "compose_device_cgroup_rules", name, f"would get device rules {', '.join(rules)}"
            )
        groups = _added(was.get("group_add"), now.get("group_add"), str)
        if groups:
            self.refuse("compose_group_add", name, f"would join the groups {', '.join(groups)}")
        old, new = _as_dict(was.get("sysctls")), _as_dict(now.get("sysctls"))
        changed = sorted(k for k, v in new.items() if k not in old or str(old[k]) != str(v))
        if changed:
            self.refuse(
                "compose_sysctls", name, f"would set kernel parameters {', '.join(changed)}"
            )

    def hardening(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        options = [str(o) for o in _added(was.get("security_opt"), now.get("security_opt"), str)]
        widening = [o for o in options if not _NO_NEW_PRIVILEGES.fullmatch(o.strip())]
        if widening:
            self.refuse(
                "compose_security_opt", name, f"would get security options {', '.join(widening)}"
            )

        def has_nnp(service: dict[str, Any]) -> bool:
            return any(
                _NO_NEW_PRIVILEGES.fullmatch(str(o).strip())
                for o in _items(service.get("security_opt"))
            )

        if has_nnp(was) and not has_nnp(now):
            self.refuse("compose_security_opt", name, "would lose no-new-privileges")
        if not _off(was.get("read_only")) and _off(now.get("read_only")):
            self.refuse("compose_read_only", name, "would no longer have a read-only root folder")
        old_user, new_user = was.get("user"), now.get("user")
        if (
            new_user is not None
            and _root_user(new_user)
            and (old_user is None or not _root_user(old_user))
        ):
            self.refuse(
                "compose_user_root",
                name,
                f"would run as root (user {new_user})" + self.resolved(name, "user", new_user),
            )
        elif new_user is None and old_user is not None and not _root_user(old_user):
            self.refuse("compose_user_root", name, f"would no longer run as user {old_user}")
        for key, code in (
            ("cgroup_parent", "compose_cgroup_parent"),
            ("runtime", "compose_runtime"),
            ("isolation", "compose_isolation"),
        ):
            if now.get(key) is not None and now.get(key) != was.get(key):
                self.refuse(
                    code,
                    name,
                    f"would get {key}: {now[key]}" + self.resolved(name, key, now[key]),
                )
        if not _off(now.get("oom_kill_disable")) and _off(was.get("oom_kill_disable")):
            self.refuse("compose_oom_kill_disable", name, "would be spared by the OOM killer")
        if not _off(now.get("use_api_socket")) and _off(was.get("use_api_socket")):
            self.refuse("compose_docker_socket", name, "would get the docker API socket")
        driver = _mapping(now.get("logging")).get("driver")
        if (
            driver is not None
            and driver != _mapping(was.get("logging")).get("driver")
            and driver not in _LOG_DRIVERS
        ):
            self.refuse("compose_logging", name, f"would send its logs through {driver}")

    def namespaces(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        services = _mapping(self.now.get("services"))
        for key, (code, allowed) in _NAMESPACES.items():
            value = now.get(key)
            if value is None or value == was.get(key) or str(value) in allowed:
                continue
            other = str(value).removeprefix("service:")
            if key in _SHARED_WITH_SERVICE and str(value).startswith("service:"):
                peer = _mapping(services.get(other)).get(key)
                if other in services and other != name and (peer is None or str(peer) in allowed):
                    continue
            self.refuse(code, name, f"would get {key}: {value}" + self.resolved(name, key, value))

    def mounts(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        old = mounts_of(was.get("volumes"))
        new = mounts_of(now.get("volumes"))
        volumes = _mapping(self.now.get("volumes"))
        for mount in new:
            if mount in old:
                continue
            if mount.kind == "bind" and mount.source is not None:
                problem = _host_path_problem(mount.source)
            elif mount.kind == "volume" and mount.source is not None:
                problem = _volume_problem(_mapping(volumes.get(mount.source)))
            elif mount.kind in _MOUNT_TYPES:
                problem = None
            else:
                problem = ("compose_host_path", f"would get a {mount.kind} mount at {mount.target}")
            if problem is not None:
                self.refuse(problem[0], name, problem[1])
        removed = sorted({m.target for m in old} - {m.target for m in new})
        if removed:
            self.refuse(
                "compose_volume_removed", name, f"would lose the volumes at {', '.join(removed)}"
            )
        sources = _added(was.get("volumes_from"), now.get("volumes_from"), str)
        if sources:
            self.refuse(
                "compose_volumes_from", name, f"would mount the volumes of {', '.join(sources)}"
            )

    def files(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        for key in ("env_file", "label_file"):
            for path in _added(_paths(was.get(key)), _paths(now.get(key)), str):
                if inside_repository(path) is None:
                    self.refuse(
                        "compose_outside_project",
                        name,
                        f"would read the {key} {path}, outside the repository",
                    )

    def ports(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        old = ports_of(was.get("ports"))
        wider = [
            p for p in ports_of(now.get("ports")) if p not in old and p.host_ip not in _LOOPBACK
        ]
        if wider:
            shown = ", ".join(str(p) for p in wider)
            self.refuse(
                "compose_port_published",
                name,
                f"would publish {shown} beyond this host (use 127.0.0.1)",
            )

    def image(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        old, new = was.get("image"), now.get("image")
        if new is None:
            return
        if old is not None and repository_of(str(old)) != repository_of(str(new)):
            self.refuse(
                "compose_image",
                name,
                f"would run the image {new} instead of {old}" + self.resolved(name, "image", new),
            )
        elif was.get("build") is not None and now.get("build") is None:
            self.refuse("compose_image", name, f"would pull the image {new} instead of building it")

    def build(self, name: str, was: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
        if now is None:
            return
        was = was or {}
        context = now.get("context", ".")
        if context != was.get("context", ".") or now.get("dockerfile") != was.get("dockerfile"):
            text = str(context)
            if "://" in text or text.startswith("git@"):
                self.refuse("compose_build_context", name, f"would be built from {text}")
            elif inside_repository(text) is None:
                self.refuse(
                    "compose_build_context",
                    name,
                    f"would be built from {text}, outside the repository",
                )
            elif now.get("dockerfile") is not None and (
                inside_repository(posixpath.join(text, str(now["dockerfile"]))) is None
            ):
                self.refuse(
                    "compose_build_context",
                    name,
                    f"would be built with the Dockerfile {now['dockerfile']}, "
                    "outside the repository",
                )
        network = now.get("network")
        if network is not None and network != was.get("network") and network not in _BUILD_NETWORKS:
            self.refuse("compose_build_network", name, f"would be built with network {network}")
        if not _off(now.get("privileged")) and _off(was.get("privileged")):
            self.refuse("compose_privileged", name, "would be built privileged")
        for key in _BUILD_OPTIONS:
            if now.get(key) is not None and now.get(key) != was.get(key):
                self.refuse("compose_build_option", name, f"would be built with {key}")
        for key in sorted(set(now) - _BUILD_KEYS):
            if now.get(key) != was.get(key):
                self.refuse(
                    "compose_key_not_allowed",
                    name,
                    f"would change build.{show(key)}, which a fix may not",
                )

    def hooks(self, name: str, was: dict[str, Any], now: dict[str, Any]) -> None:
        for key in ("post_start", "pre_stop"):
            old = [_key(h) for h in _items(was.get(key))]
            for hook in _items(now.get(key)):
                if _key(hook) in old or not isinstance(hook, dict):
                    continue
                if not _off(hook.get("privileged")):
                    self.refuse("compose_privileged", name, f"would run a privileged {key} hook")
                user = hook.get("user")
                if (
                    user is not None
                    and _root_user(user)
                    and not _root_user(now.get("user") or "root")
                ):
                    self.refuse("compose_user_root", name, f"would run a {key} hook as root")

    def top_level(self) -> None:
        for key in sorted(set(self.now) | set(self.was)):
            if key.startswith("x-") or self.was.get(key) == self.now.get(key):
                continue
            if key == "name":
                self.refuse(
                    "compose_project_name",
                    None,
                    f"the project's name would change to {self.now.get(key)}",
                )
            elif key not in _TOP_LEVEL_KEYS:
                self.refuse(
                    "compose_key_not_allowed",
                    None,
                    f"the key {show(key)} would change, which a fix may not",
                )
        was_volumes = _mapping(self.was.get("volumes"))
        now_volumes = _mapping(self.now.get("volumes"))
        for volume, definition in now_volumes.items():
            old, new = _mapping(was_volumes.get(volume)), _mapping(definition)
            if old == new:
                continue
            problem = _volume_problem(new, old)
            if problem is not None:
                self.refuse(problem[0], None, f"the volume {show(str(volume))} {problem[1]}")
        gone = sorted(str(v) for v in set(was_volumes) - set(now_volumes))
        if gone:
            self.refuse(
                "compose_volume_removed",
                None,
                f"the named volumes {', '.join(gone)} would be removed",
            )
        was_networks = _mapping(self.was.get("networks"))
        for network, definition in _mapping(self.now.get("networks")).items():
            old, new = _mapping(was_networks.get(network)), _mapping(definition)
            for key in ("driver", "driver_opts", "external", "name"):
                value = new.get(key)
                if value == old.get(key) or (key == "driver" and value in (None, "bridge")):
                    continue
                if key == "external" and _off(value):
                    continue
                self.refuse(
                    "compose_network",
                    None,
                    f"the network {show(str(network))} would get {key}: {_text(value)}",
                )
        for kind in ("secrets", "configs"):
            old_files = {_mapping(d).get("file") for d in _mapping(self.was.get(kind)).values()}
            for entry, definition in _mapping(self.now.get(kind)).items():
                path = _mapping(definition).get("file")
                if path is None or path in old_files or inside_repository(str(path)) is not None:
                    continue
                self.refuse(
                    "compose_outside_project",
                    None,
                    f"the {kind[:-1]} {show(str(entry))} would be read from {path}, "
                    "outside the repository",
                )


def _volume_problem(
    new: dict[str, Any], old: dict[str, Any] | None = None
) -> tuple[str, str] | None:
    """A named volume definition that would widen what its users see: a bind of a host
    path, another driver, options, or another volume taken over by name. ``old`` is the
    definition before; None judges the definition as it is (a service newly using it)."""
    before = old if old is not None else {}
    options = _mapping(new.get("driver_opts"))
    device = options.get("device")
    bind = "bind" in str(options.get("o", "")).split(",") or str(options.get("type")) == "none"
    if options and (old is None or options != _mapping(before.get("driver_opts"))):
        if bind and device is not None:
            problem = _host_path_problem(str(device))
            if problem is not None:
                return problem[0], problem[1].replace("would mount", "would bind")
        elif not bind:
            return "compose_volume_driver", "would get driver options"
    if old is None:
        return None
    if new.get("driver") not in (None, "local", before.get("driver")):
        return "compose_volume_driver", f"would use the driver {new.get('driver')}"
    if new.get("name") != before.get("name") and new.get("name") is not None:
        return "compose_volume_driver", f"would be the existing volume {new.get('name')}"
    if not _off(new.get("external")) and _off(before.get("external")):
        return "compose_volume_driver", "would be an external volume"
    return None


def _paths(value: Any) -> list[str]:
    return [
        str(item.get("path")) if isinstance(item, dict) else str(item) for item in _items(value)
    ]


def _build(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    return {"context": str(value)}


def _dig(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = _mapping(value).get(key)
    return value


# --- what a person sees -------------------------------------------------------------------

#: Keys whose values are named but not shown: they may hold secrets.
_HIDDEN = ("environment.", "build.args.")


def _diff(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if was.get("name") != now.get("name"):
        lines.append(
            f"project name {was.get('name') or '(unset)'} -> {now.get('name') or '(unset)'}"
        )
    for kind, label in (
        ("services", "service"),
        ("volumes", "volume"),
        ("networks", "network"),
        ("secrets", "secret"),
        ("configs", "config"),
    ):
        old, new = _mapping(was.get(kind)), _mapping(now.get(kind))
        for name in sorted({str(n) for n in set(old) | set(new)}):
            subject = f"{label} {name}"
            if name not in old:
                lines.append(f"{subject}: added")
            elif name not in new:
                lines.append(f"{subject}: removed")
                continue
            lines.extend(
                f"{subject}: {change}"
                for change in _changes(_mapping(old.get(name)), _mapping(new.get(name)), kind)
            )
    return lines


def _changes(old: dict[str, Any], new: dict[str, Any], kind: str) -> list[str]:
    before, after = _flatten(old, kind), _flatten(new, kind)
    changes: list[str] = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if isinstance(was, frozenset) or isinstance(now, frozenset):
            old_items = was if isinstance(was, frozenset) else frozenset()
            new_items = now if isinstance(now, frozenset) else frozenset()
            changes.extend(f"{key} + {item}" for item in sorted(new_items - old_items))
            changes.extend(f"{key} - {item}" for item in sorted(old_items - new_items))
        elif key.startswith(_HIDDEN):
            state = "set" if was is None else "removed" if now is None else "changed"
            changes.append(f"{key} {state}")
        else:
            changes.append(f"{key} {_text(was)} -> {_text(now)}")
    return changes


def _flatten(definition: dict[str, Any], kind: str, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to scalars, and sequences to sets of their items as text."""
    found: dict[str, Any] = {}
    for key, value in definition.items():
        dotted = f"{prefix}{key}"
        if kind == "services" and not prefix and key == "ports":
            found[dotted] = frozenset(str(p) for p in ports_of(value))
        elif kind == "services" and not prefix and key in ("environment", "labels", "sysctls"):
            found.update(_flatten(_as_dict(value), kind, dotted + "."))
        elif isinstance(value, dict):
            found.update(_flatten(value, kind, dotted + "."))
        elif isinstance(value, list):
            found[dotted] = frozenset(_key(item) for item in value)
        else:
            found[dotted] = value
    return found


def _text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
