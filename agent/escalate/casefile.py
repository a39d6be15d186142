"""The case file: the bounded, redacted evidence about one escalated incident.

It is what the rules read, what is sent to Claude, and what is stored with each
diagnosis so that a person can audit exactly what left the host. Building it is
pure (``build_case_file`` from typed inputs); reading the engine, the store and
the compose files is ``gather``'s job, through the small Protocols below.

Every string from the container (inspect, logs, health output, attempts, compose
text) passes the ``Redactor`` before it is kept, and every section has a cap:
200 log lines, cut in the middle with error-looking lines kept first, a byte cap
per section and one for the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from agent.engine.compose_graph import compose_dependencies
from agent.errors import ActionError
from agent.escalate.redact import Redactor
from agent.model import Diagnosis, Incident, IncidentId, State

#: Log lines asked of the engine (``tail``) and kept at most.
LOG_LINES = 200
#: One log line, health output or attempt output is cut to this many characters.
LINE_CHARS = 400
#: Bytes of log lines kept; the rest is cut in the middle.
LOG_BYTES = 16 * 1024
#: Bytes any other section may take in the rendered text.
SECTION_BYTES = 6 * 1024
#: Bytes the whole rendered case file may take.
TOTAL_BYTES = 48 * 1024
#: Earlier incidents of the same service shown, newest first.
EARLIER_INCIDENTS = 10
#: Health check runs shown, newest last.
HEALTH_RUNS = 5
#: History entries (the incident's findings) shown, newest last.
HISTORY_ENTRIES = 20

ERROR_LOOKING = re.compile(
    r"(?i)(error|exception|traceback|fatal|panic|fail|critical|refused|denied|not found|"
    r"no such|cannot|can't|unable|killed|out of memory|segmentation|timed? ?out|invalid|"
    r"errno|unreachable|read-only|no space)"
)


class Sibling(Protocol):
    """Another container of the same compose project (``ProjectContainer`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def service(self) -> str | None: ...

    @property
    def state(self) -> State: ...

    @property
    def exit_code(self) -> int | None: ...


class EvidenceSource(Protocol):
    """What the case file reads from the engine; ``docker_sdk.DockerSDKGateway`` implements it."""

    def inspect_attrs(self, container_id: str) -> Mapping[str, Any]:
        """The raw inspect JSON of one container."""
        ...

    def log_tail(self, container_id: str, *, lines: int) -> list[str]:
        """The last ``lines`` log lines (stdout and stderr), read with the engine's tail."""
        ...

    def project_containers(self, project: str) -> Sequence[Sibling]:
        """Every container of a compose project."""
        ...

    def image_platform(self, image_id: str) -> str:
        """The platform an image was built for, as ``os/arch[/variant]`` (``linux/arm64``)."""
        ...

    def engine_platform(self) -> str:
        """The engine's own platform, in the same form (``linux/amd64``)."""
        ...


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    destination: str
    read_write: bool

    def line(self) -> str:
        mode = "rw" if self.read_write else "ro"
        return f"Mount: {self.type} {self.source} -> {self.destination} ({mode})"


@dataclass(frozen=True)
class HealthRun:
    exit_code: int | None
    output: str

    def line(self) -> str:
        return f"Health check: exit {self.exit_code}: {self.output}"


@dataclass(frozen=True)
class ServiceState:
    """Another service of the project: its state, and whether this service depends on it."""

    service: str
    state: str
    exit_code: int | None
    depended_on: bool
    must_complete: bool = False
    """Compose's ``condition: service_completed_successfully``: a one-shot job."""

    def line(self) -> str:
        code = f" (exit code {self.exit_code})" if self.exit_code is not None else ""
        role = "dependency" if self.depended_on else "service"
        return f"{role} {self.service}: {self.state}{code}"


@dataclass(frozen=True)
class CaseFile:
    """Everything known about one incident's container, redacted and bounded."""

    incident_id: str
    summary: str
    signal: str
    status: str
    container_name: str
    container_id: str
    project: str | None
    service: str | None
    image: str = ""
    image_id: str = ""
    image_platform: str = ""
    """``os/arch[/variant]`` the image was built for; empty when unknown."""
    engine_platform: str = ""
    """``os/arch`` of the engine that runs it; empty when unknown."""
    state: str = ""
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    restart_count: int = 0
    started_at: str = ""
    finished_at: str = ""
    command: str = ""
    user: str = ""
    working_dir: str = ""
    read_only: bool = False
    memory_limit: int | None = None
    restart_policy: str = ""
    env: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    tmpfs: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    healthcheck: str = ""
    health: tuple[HealthRun, ...] = ()
    logs: tuple[str, ...] = ()
    logs_cut: int = 0
    history: tuple[str, ...] = ()
    attempts: tuple[str, ...] = ()
    earlier: tuple[str, ...] = ()
    compose_service: str = ""
    services: tuple[ServiceState, ...] = ()
    notes: tuple[str, ...] = ()
    evidence: Mapping[str, str] = field(default_factory=dict)
    """The incident's latest finding evidence, as text (``memory_peak`` among others)."""
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)
    """The redactor the case file was built with; anything else sent with it (files the
    model reads) passes it too."""

    # --- lines the rules quote; ``render`` prints exactly these ----------------------

    def exit_line(self) -> str:
        return f"Exit code: {self.exit_code}"

    def oom_line(self) -> str:
        return f"OOMKilled: {'true' if self.oom_killed else 'false'}"

    def memory_line(self) -> str:
        if self.memory_limit:
            return f"Memory limit: {_mib(self.memory_limit)} ({self.memory_limit} bytes)"
        return "Memory limit: none"

    def error_line(self) -> str:
        return f"Engine error: {self.error}"

    def healthcheck_line(self) -> str:
        return f"Health check command: {self.healthcheck}"

    def read_only_line(self) -> str:
        return f"Read-only root filesystem: {'true' if self.read_only else 'false'}"

    def user_line(self) -> str:
        return f"User: {self.user or '(image default)'}"

    def command_line(self) -> str:
        return f"Command: {self.command}"

    def platform_lines(self) -> tuple[str, ...]:
        """The image's and the engine's platforms, each when known."""
        lines = []
        if self.image_platform:
            lines.append(f"Image platform: {self.image_platform}")
        if self.engine_platform:
            lines.append(f"Engine platform: {self.engine_platform}")
        return tuple(lines)

    def dependencies(self) -> tuple[ServiceState, ...]:
        return tuple(s for s in self.services if s.depended_on)

    def render(self) -> str:
        """The text that is sent and stored: deterministic, capped at TOTAL_BYTES."""
        sections = [
            ("Incident", self._incident_lines()),
            ("Container", self._container_lines()),
            ("Configuration", self._configuration_lines()),
            ("Health checks", [self.healthcheck_line(), *(h.line() for h in self.health)]),
            ("History of this incident", list(self.history)),
            ("Attempts", list(self.attempts) or ["none"]),
            (f"Log (last {len(self.logs)} lines kept, {self.logs_cut} cut)", list(self.logs)),
            ("Compose service definition", self.compose_service.splitlines() or ["unknown"]),
            ("Other services of the project", [s.line() for s in self.services] or ["unknown"]),
            ("Earlier incidents of this service", list(self.earlier) or ["none"]),
            ("Notes", list(self.notes) or ["none"]),
        ]
        parts = []
        for title, lines in sections:
            cap = LOG_BYTES + 2048 if title.startswith("Log") else SECTION_BYTES
            parts.append(f"## {title}\n{_cap_text(chr(10).join(lines), cap)}\n")
        return _cap_text("\n".join(parts), TOTAL_BYTES)

    def _incident_lines(self) -> list[str]:
        lines = [
            f"Incident: {self.incident_id}",
            f"Signal: {self.signal}",
            f"Status: {self.status}",
            f"Summary: {self.summary}",
        ]
        lines.extend(f"Finding evidence: {k}={v}" for k, v in sorted(self.evidence.items()))
        return lines

    def _container_lines(self) -> list[str]:
        lines = [
            f"Container: {self.container_name} ({self.container_id})",
            f"Project: {self.project or '-'}",
            f"Service: {self.service or '-'}",
            f"Image: {self.image} ({self.image_id or 'id unknown'})",
            *self.platform_lines(),
            f"State: {self.state}",
            self.exit_line(),
            self.oom_line(),
            f"Restart count: {self.restart_count}",
            f"Started at: {self.started_at or '-'}",
            f"Finished at: {self.finished_at or '-'}",
        ]
        if self.error:
            lines.append(self.error_line())
        return lines

    def _configuration_lines(self) -> list[str]:
        lines = [
            self.command_line(),
            self.user_line(),
            f"Working dir: {self.working_dir or '(image default)'}",
            self.read_only_line(),
            self.memory_line(),
            f"Restart policy: {self.restart_policy or 'no'}",
        ]
        lines.extend(m.line() for m in self.mounts)
        lines.extend(f"Tmpfs: {t}" for t in self.tmpfs)
        lines.extend(f"Port: {p}" for p in self.ports)
        lines.extend(f"Env: {e}" for e in self.env)
        lines.extend(f"Label: {label}" for label in self.labels)
        return lines


# --- building: pure ----------------------------------------------------------------------


def build_case_file(
    *,
    incident: Incident,
    inspect: Mapping[str, Any] | None,
    log_lines: Sequence[str],
    siblings: Sequence[Sibling] = (),
    compose: Mapping[str, Any] | None = None,
    earlier: Sequence[Incident] = (),
    earlier_diagnoses: Mapping[IncidentId, Sequence[Diagnosis]] | None = None,
    notes: Sequence[str] = (),
    redact_patterns: Sequence[re.Pattern[str]] = (),
    image_platform: str = "",
    engine_platform: str = "",
) -> CaseFile:
    """The case file from what was gathered; every string redacted, every section capped."""
    attrs = inspect or {}
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    env_entries = [str(e) for e in config.get("Env") or []]
    service_name = incident.container.service
    definition = _service_definition(compose, service_name)
    redactor = Redactor.build(
        env=[*_env_pairs(env_entries), *_env_pairs(_compose_env(definition))],
        patterns=redact_patterns,
    )
    r = redactor.redact
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    exit_code = state.get("ExitCode") if state else None
    health = (state.get("Health") or {}).get("Log") or []
    # Redacted as one text, so that a secret spanning lines (a key block) is caught whole.
    # Lines are pre-cut well beyond LINE_CHARS: what lies past it is dropped after redaction
    # anyway, and a secret starting before it is shorter than the margin.
    joined = r("\n".join(line[: LINE_CHARS * 5].rstrip() for line in log_lines[-LOG_LINES:]))
    kept_logs, cut = bound_log(joined.split("\n") if log_lines else [])
    depended = _depended_on(compose, service_name)
    one_shots = _must_complete(definition)
    latest = incident.evidence[-1].evidence if incident.evidence else {}
    return CaseFile(
        incident_id=incident.id,
        summary=r(incident.summary),
        signal=str(incident.signal),
        status=str(incident.status),
        container_name=incident.container.name,
        container_id=incident.container.short_id,
        project=incident.container.project,
        service=service_name,
        image=r(str(config.get("Image") or "")),
        image_id=str(attrs.get("Image") or ""),
        image_platform=_clip(r(image_platform), 60),
        engine_platform=_clip(r(engine_platform), 60),
        state=str(state.get("Status") or "unknown (not inspected)"),
        exit_code=None if exit_code is None else int(exit_code),
        oom_killed=bool(state.get("OOMKilled")),
        error=_clip(r(str(state.get("Error") or ""))),
        restart_count=int(attrs.get("RestartCount") or 0),
        started_at=_time_text(state.get("StartedAt")),
        finished_at=_time_text(state.get("FinishedAt")),
        command=_clip(r(" ".join(_quote(str(c)) for c in command)), 1000),
        user=str(config.get("User") or ""),
        working_dir=str(config.get("WorkingDir") or ""),
        read_only=bool(host.get("ReadonlyRootfs")),
        memory_limit=int(host.get("Memory") or 0) or None,
        restart_policy=str((host.get("RestartPolicy") or {}).get("Name") or ""),
        env=tuple(_clip(e, 300) for e in redactor.env_list(env_entries)),
        labels=tuple(
            _clip(r(f"{k}={v}"), 300) for k, v in sorted((config.get("Labels") or {}).items())
        ),
        mounts=tuple(
            Mount(
                type=str(m.get("Type") or ""),
                source=r(str(m.get("Source") or m.get("Name") or "")),
                destination=str(m.get("Destination") or ""),
                read_write=bool(m.get("RW", True)),
            )
            for m in attrs.get("Mounts") or []
        ),
        tmpfs=tuple(f"{k} {v}".strip() for k, v in sorted((host.get("Tmpfs") or {}).items())),
        ports=_ports(host.get("PortBindings") or {}),
        healthcheck=r(_healthcheck_text(config.get("Healthcheck"))),
        health=tuple(
            HealthRun(
                exit_code=None if h.get("ExitCode") is None else int(h["ExitCode"]),
                output=_clip(r(_one_line(str(h.get("Output") or "")))),
            )
            for h in health[-HEALTH_RUNS:]
        ),
        logs=tuple(kept_logs),
        logs_cut=cut,
        history=tuple(
            _clip(r(f"{e.observed_at:%Y-%m-%d %H:%M:%S} {e.summary} {_evidence_text(e.evidence)}"))
            for e in incident.evidence[-HISTORY_ENTRIES:]
        ),
        attempts=tuple(
            _clip(
                r(
                    f"{a.started_at:%Y-%m-%d %H:%M:%S} {a.action} (playbook {a.playbook}): "
                    f"{'ok' if a.ok else 'failed'}"
                    + (f": {_one_line(a.error)}" if a.error else "")
                    + (f"; output: {_one_line(a.output)}" if a.output else "")
                )
            )
            for a in incident.attempts
        ),
        earlier=tuple(_earlier_lines(earlier, earlier_diagnoses or {}, r)),
        compose_service=_clip(
            _compose_text(definition, redactor) if definition is not None else "", 4000
        ),
        services=_services(siblings, compose, service_name, depended, one_shots),
        notes=tuple(r(n) for n in notes),
        evidence={str(k): _clip(r(str(v)), 200) for k, v in latest.items()},
        redactor=redactor,
    )


def bound_log(lines: Sequence[str]) -> tuple[list[str], int]:
    """At most LOG_LINES lines and LOG_BYTES bytes, and how many lines were cut.

    When the lines do not fit, the cut is in the middle: error-looking lines are kept
    first (newest first), then the newest lines, then the first ones; each gap is
    marked with one ``[… N lines cut …]`` line.
    """
    clipped = [_clip(line) for line in lines][-LOG_LINES:]
    dropped = len(lines) - len(clipped)
    if _size(clipped) <= LOG_BYTES:
        return clipped, dropped
    n = len(clipped)
    errors = [i for i in range(n - 1, -1, -1) if ERROR_LOOKING.search(clipped[i])]
    order = [*errors, *range(n - 1, max(n - 41, -1), -1), *range(min(20, n)), *range(n - 1, -1, -1)]
    keep: set[int] = set()
    used = 0
    for i in order:
        if i in keep:
            continue
        cost = len(clipped[i].encode()) + 1
        if used + cost > LOG_BYTES - 512:
            continue
        keep.add(i)
        used += cost
    out: list[str] = []
    gap = 0
    for i in range(n):
        if i in keep:
            if gap:
                out.append(f"[… {gap} lines cut …]")
                gap = 0
            out.append(clipped[i])
        else:
            gap += 1
    if gap:
        out.append(f"[… {gap} lines cut …]")
    return out, dropped + (n - len(keep))


def _size(lines: Iterable[str]) -> int:
    return sum(len(line.encode()) + 1 for line in lines)


def _clip(text: str, limit: int = LINE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap_text(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    head = data[: limit // 2].decode(errors="ignore")
    tail = data[-(limit // 2 - 64) :].decode(errors="ignore")
    return f"{head}\n[… {len(data) - limit} bytes cut …]\n{tail}"


def _one_line(text: str) -> str:
    return " | ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _quote(arg: str) -> str:
    return arg if arg and not re.search(r"\s|['\"]", arg) else repr(arg)


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB"


def _time_text(value: Any) -> str:
    text = str(value or "")
    return "" if not text or text.startswith("0001-01-01") else text


def _env_pairs(entries: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        name, sep, value = entry.partition("=")
        if sep:
            pairs.append((name, value))
    return pairs


def _evidence_text(evidence: Mapping[str, Any]) -> str:
    if not evidence:
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in sorted(evidence.items())) + ")"


def _healthcheck_text(check: Mapping[str, Any] | None) -> str:
    test = list((check or {}).get("Test") or [])
    if not test or test == ["NONE"]:
        return "none"
    kind, *args = test
    if kind == "CMD-SHELL":
        return f"CMD-SHELL {' '.join(args)}"
    return f"{kind} {' '.join(_quote(a) for a in args)}"


def _ports(bindings: Mapping[str, Any]) -> tuple[str, ...]:
    out = []
    for port, binds in sorted(bindings.items()):
        for b in binds or []:
            out.append(f"{port} -> {b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort') or '?'}")
    return tuple(out)


def _service_definition(
    compose: Mapping[str, Any] | None, service: str | None
) -> Mapping[str, Any] | None:
    if not compose or not service:
        return None
    services = compose.get("services")
    if not isinstance(services, Mapping):
        return None
    definition = services.get(service)
    return definition if isinstance(definition, Mapping) else None


def _compose_env(definition: Mapping[str, Any] | None) -> list[str]:
    env = (definition or {}).get("environment")
    if isinstance(env, Mapping):
        return [f"{k}={'' if v is None else v}" for k, v in env.items()]
    if isinstance(env, list):
        return [str(e) for e in env]
    return []


def _compose_text(definition: Mapping[str, Any], redactor: Redactor) -> str:
    shown = dict(definition)
    env = shown.get("environment")
    if isinstance(env, Mapping):
        shown["environment"] = {
            str(k): None if v is None else redactor.env_value(str(k), str(v))
            for k, v in env.items()
        }
    elif isinstance(env, list):
        shown["environment"] = redactor.env_list(str(e) for e in env)
    text = yaml.safe_dump(shown, sort_keys=False, default_flow_style=False, width=1000)
    return redactor.redact(text)


def _depended_on(compose: Mapping[str, Any] | None, service: str | None) -> frozenset[str]:
    if not compose or not service:
        return frozenset()
    try:
        return compose_dependencies(compose).get(service, frozenset())
    except ActionError:
        return frozenset()


def _must_complete(definition: Mapping[str, Any] | None) -> frozenset[str]:
    depends = (definition or {}).get("depends_on")
    if not isinstance(depends, Mapping):
        return frozenset()
    return frozenset(
        str(name)
        for name, spec in depends.items()
        if isinstance(spec, Mapping) and spec.get("condition") == "service_completed_successfully"
    )


def _services(
    siblings: Sequence[Sibling],
    compose: Mapping[str, Any] | None,
    service: str | None,
    depended: frozenset[str],
    one_shots: frozenset[str],
) -> tuple[ServiceState, ...]:
    states: dict[str, ServiceState] = {}
    for s in siblings:
        if not s.service or s.service == service:
            continue
        states[s.service] = ServiceState(
            service=s.service,
            state=str(s.state),
            exit_code=s.exit_code if s.state in (State.EXITED, State.DEAD) else None,
            depended_on=s.service in depended,
            must_complete=s.service in one_shots,
        )
    declared = (compose or {}).get("services")
    if isinstance(declared, Mapping):
        for name in declared:
            if str(name) != service and str(name) not in states:
                states[str(name)] = ServiceState(
                    service=str(name),
                    state="no container",
                    exit_code=None,
                    depended_on=str(name) in depended,
                    must_complete=str(name) in one_shots,
                )
    return tuple(states[k] for k in sorted(states))[:40]


def _earlier_lines(
    earlier: Sequence[Incident],
    diagnoses: Mapping[IncidentId, Sequence[Diagnosis]],
    r: Callable[[str], str],
) -> list[str]:
    lines = []
    for inc in earlier[:EARLIER_INCIDENTS]:
        lines.append(
            _clip(
                r(
                    f"{inc.opened_at:%Y-%m-%d %H:%M:%S} incident {inc.id[:12]} {inc.signal} "
                    f"({inc.status}): {inc.summary}"
                )
            )
        )
        for d in diagnoses.get(inc.id, ()):
            who = f"{d.source} {d.rule_id or d.model or ''}".strip()
            lines.append(_clip(r(f"  diagnosis ({who}, {d.confidence}): {d.summary}")))
    return lines
