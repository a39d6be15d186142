"""The values that flow through one incident, from observation to record.

Everything here is a frozen dataclass or an enum: the pipeline passes these
between functions instead of sharing mutable dicts, so each stage can be tested
on its own. Times are timezone-aware UTC datetimes; durations are seconds as
floats, because that is how playbooks and settings write them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NewType

ContainerId = NewType("ContainerId", str)
IncidentId = NewType("IncidentId", str)
AttemptId = NewType("AttemptId", str)

#: Labels medic reads. Compose sets the first two; people set the ``medic.*`` ones.
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
IGNORE_LABEL = "medic.ignore"
ENABLE_LABEL = "medic.enable"
PLAYBOOK_LABEL = "medic.playbook"

#: Labels Docker Swarm puts on every task container, and the one ``docker stack deploy``
#: adds (the stack's name). See ``SwarmTask``.
SWARM_SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
SWARM_SERVICE_ID_LABEL = "com.docker.swarm.service.id"
SWARM_TASK_ID_LABEL = "com.docker.swarm.task.id"
SWARM_TASK_NAME_LABEL = "com.docker.swarm.task.name"
SWARM_NODE_ID_LABEL = "com.docker.swarm.node.id"
STACK_LABEL = "com.docker.stack.namespace"

#: A task container's name: ``<service>.<replica number or node id>.<task id>``; task ids
#: are 25 lower-case letters and digits.
_TASK_NAME = re.compile(r"^(?P<slot>.+\.[^.]+)\.(?P<task>[0-9a-z]{25})$")

#: Evidence is flat so it serialises to JSON and prints as a table without surprises.
EvidenceValue = str | int | float | bool | None
Evidence = Mapping[str, EvidenceValue]


class State(StrEnum):
    """A container's state as Docker reports it."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


class Health(StrEnum):
    """A container's health-check status; ``none`` when it has no health check."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Signal(StrEnum):
    """What kind of trouble a finding reports. Order of severity: see ``SEVERITY``."""

    UNHEALTHY = "unhealthy"
    EXITED = "exited"
    OOM_KILLED = "oom_killed"
    CRASH_LOOP = "crash_loop"
    DEAD = "dead"
    LOG_MATCH = "log_match"
    PROBE_FAILED = "probe_failed"


class Source(StrEnum):
    """Where medic learns of a signal."""

    ENGINE = "engine"
    """The engine's list, inspect and events: state, health, exit code, deaths."""
    LOG = "log"
    """The container's log, read for a playbook's ``match.log`` rule."""
    PROBE = "probe"
    """medic's own HTTP or TCP probe, for a playbook's ``match.probe`` rule."""


class Recovery(StrEnum):
    """What "clear" means for a signal (agent/healing/lifecycle.py)."""

    HEALTHY = "healthy"
    """The container runs and passes its health check, or has none."""
    PROBE_PASSES = "probe_passes"
    """A probe passed and none failed since (and the container is healthy)."""
    LOG_QUIET = "log_quiet"
    """The rule's window went by with no matching line (and the container is healthy)."""


@dataclass(frozen=True)
class SignalKind:
    """Everything medic knows of one kind of signal, in one entry of ``SIGNAL_KINDS``."""

    signal: Signal
    source: Source
    recovery: Recovery
    summary: str
    """What it means: the "what it means" cell of its row in docs/signals.md."""

    @property
    def rule(self) -> str | None:
        """The playbook ``match`` key that asks for the signal to be looked for (``log``,
        ``probe``); None when the engine reports it anyway."""
        return None if self.source is Source.ENGINE else self.source.value


#: One entry per signal, most severe first: when a container shows several signals at
#: once, the most severe one is healed. To add a signal: a member of ``Signal``, its
#: entry here, the code that finds it (agent/healing/detect.py for the engine's,
#: agent/healing/signals.py and watch.py for the ones a rule looks for), its test and
#: its row in docs/signals.md. A test checks that every signal has an entry and a row.
SIGNAL_KINDS: Mapping[Signal, SignalKind] = {
    kind.signal: kind
    for kind in (
        SignalKind(
            Signal.CRASH_LOOP,
            Source.ENGINE,
            Recovery.HEALTHY,
            "`MEDIC_CRASH_LOOP_DEATHS` deaths within `MEDIC_CRASH_LOOP_WINDOW` (3 in 5 min)",
        ),
        SignalKind(
            Signal.OOM_KILLED,
            Source.ENGINE,
            Recovery.HEALTHY,
            "the kernel killed the container for memory (exit 137 with `OOMKilled`)",
        ),
        SignalKind(
            Signal.DEAD, Source.ENGINE, Recovery.HEALTHY, "Docker marked the container dead"
        ),
        SignalKind(
            Signal.EXITED,
            Source.ENGINE,
            Recovery.HEALTHY,
            "the container exited with a non-zero code (exit 0 is a finished job)",
        ),
        SignalKind(
            Signal.UNHEALTHY,
            Source.ENGINE,
            Recovery.HEALTHY,
            "the container's own HEALTHCHECK reports unhealthy; the last check's output is "
            "evidence",
        ),
        SignalKind(
            Signal.PROBE_FAILED,
            Source.PROBE,
            Recovery.PROBE_PASSES,
            "an HTTP or TCP probe from medic failed `failures` times in a row",
        ),
        SignalKind(
            Signal.LOG_MATCH,
            Source.LOG,
            Recovery.LOG_QUIET,
            "a regular expression matched in the container's log, `count` times within `window`",
        ),
    )
}

#: Signals from most to least severe.
SEVERITY: tuple[Signal, ...] = tuple(SIGNAL_KINDS)


class IncidentStatus(StrEnum):
    """Where an incident is in its life. See docs/incidents.md, "Lifecycle"."""

    OPEN = "open"
    HEALING = "healing"
    RESOLVED = "resolved"
    ESCALATED = "escalated"


ACTIVE_STATUSES = frozenset({IncidentStatus.OPEN, IncidentStatus.HEALING, IncidentStatus.ESCALATED})


@dataclass(frozen=True)
class SwarmTask:
    """What a Swarm task container's labels say of the task and its service.

    Swarm replaces a failed task by a new one, in a new container with a new id and
    name, in the same *slot*: the replica number of a replicated service, the node of a
    global one. medic keeps one failure episode per slot (``slot_name``), so a task
    Swarm replaces goes on as the same incident, and it heals through the service
    (agent/healing/swarm.py), never by restarting a task container.
    """

    service_id: str
    service_name: str
    """The Swarm service's name: ``<stack>_<service>`` for a service of a stack."""
    task_id: str
    task_name: str
    node_id: str
    stack: str | None = None

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> SwarmTask | None:
        """The task a container's labels describe; None for a container Swarm did not make."""
        service_id = labels.get(SWARM_SERVICE_ID_LABEL)
        service_name = labels.get(SWARM_SERVICE_NAME_LABEL)
        task_id = labels.get(SWARM_TASK_ID_LABEL)
        if not (service_id and service_name and task_id):
            return None
        return cls(
            service_id=service_id,
            service_name=service_name,
            task_id=task_id,
            task_name=labels.get(SWARM_TASK_NAME_LABEL) or f"{service_name}.?.{task_id}",
            node_id=labels.get(SWARM_NODE_ID_LABEL) or "",
            stack=labels.get(STACK_LABEL) or None,
        )

    @property
    def service(self) -> str:
        """The service's name as its stack file writes it (``web`` for ``shop_web``), so a
        playbook's ``services: [web]`` matches it under compose and under Swarm alike."""
        if self.stack and self.service_name.startswith(f"{self.stack}_"):
            return self.service_name[len(self.stack) + 1 :]
        return self.service_name

    @property
    def slot(self) -> str:
        """The replica number (replicated service) or node id (global service) the task
        runs in, read from its name ``<service>.<slot>.<task id>``."""
        middle = self.task_name.removeprefix(f"{self.service_name}.").removesuffix(
            f".{self.task_id}"
        )
        if middle and middle != self.task_name and "." not in middle and middle != "?":
            return middle
        return self.node_id or self.task_id

    @property
    def slot_name(self) -> str:
        """``<service>.<slot>``: the task's name without its task id, the same for every
        task Swarm puts in this slot."""
        return f"{self.service_name}.{self.slot}"


def task_slot_name(container_name: str) -> str | None:
    """``shop_web.1`` for a task container named ``shop_web.1.<task id>``; None for a name
    Swarm did not give. For a container known only by what the store keeps (no labels)."""
    found = _TASK_NAME.match(container_name.lstrip("/"))
    return found.group("slot") if found else None


@dataclass(frozen=True)
class ContainerRef:
    """Who a container is: enough to name it in a log line, a table or a database row.

    For a Swarm task, ``project`` is its stack and ``service`` its service's name in the
    stack file; ``swarm`` says the rest (None for any other container, and for one read
    back from the store, which keeps only the four fields above).
    """

    id: ContainerId
    name: str
    project: str | None
    service: str | None
    swarm: SwarmTask | None = field(default=None, compare=False)

    @classmethod
    def from_labels(cls, container_id: str, name: str, labels: Mapping[str, str]) -> ContainerRef:
        """The container's identity from its labels: compose's, else Swarm's."""
        swarm = SwarmTask.from_labels(labels)
        return cls(
            id=ContainerId(container_id),
            name=name.lstrip("/"),
            project=labels.get(PROJECT_LABEL) or (swarm.stack if swarm else None),
            service=labels.get(SERVICE_LABEL) or (swarm.service if swarm else None),
            swarm=swarm,
        )

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def label(self) -> str:
        """How log lines name the container: its service where compose or Swarm gave one."""
        if self.swarm is not None:
            return f"{self.name} (Swarm service {self.swarm.service_name})"
        if self.service and self.service != self.name:
            return f"{self.name} (service {self.service})"
        return self.name


@dataclass(frozen=True)
class ContainerSnapshot:
    """What medic saw of one container at one moment.

    A snapshot from the list call (``detailed=False``) carries state, health and the
    exit code; one from inspect (``detailed=True``) adds the rest. Only the Docker
    gateway builds these, so it is the only code that reads Docker's attributes.
    """

    ref: ContainerRef
    labels: Mapping[str, str]
    image: str
    state: State
    health: Health
    exit_code: int | None
    observed_at: datetime
    detailed: bool = False
    oom_killed: bool = False
    restart_count: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    health_output: str | None = None
    failing_streak: int = 0
    health_checked_at: datetime | None = None
    health_interval: float | None = None
    ip_addresses: tuple[str, ...] = ()
    restart_policy: str | None = None
    created_at: datetime | None = None
    """When the container was made (engine time): which of a Swarm slot's task containers
    is the current one."""

    @property
    def is_healthy(self) -> bool:
        """Running, and either passing its health check or having none."""
        return self.state is State.RUNNING and self.health in (Health.HEALTHY, Health.NONE)

    @property
    def needs_closer_look(self) -> bool:
        """Whether the list call's summary is not enough to tell that all is well."""
        if self.state is State.RUNNING:
            return self.health is Health.UNHEALTHY
        if self.state is State.EXITED:
            return self.exit_code != 0
        return self.state in (State.DEAD, State.RESTARTING)


@dataclass(frozen=True)
class Finding:
    """One piece of trouble seen on one container."""

    container: ContainerRef
    signal: Signal
    summary: str
    observed_at: datetime
    evidence: Evidence = field(default_factory=dict)


#: The values an action's options take: a duration or number, a text, a flag, a
#: command (its words), or several commands.
OptionValue = float | str | bool | tuple[str, ...] | tuple[tuple[str, ...], ...]


@dataclass(frozen=True, init=False)
class Action:
    """One step of a playbook: a kind and the options the playbook gave it.

    ``kind`` names an entry of the action registry (agent/healing/actions.py), which
    says what options the kind takes and what it does. Options left at their default
    (None, empty, false) are not kept, so two ways of writing the same action are
    equal. ``Action("exec", command=("sh", "-c", "..."))`` builds one in code.
    """

    kind: str
    options: tuple[tuple[str, OptionValue], ...]

    def __init__(self, kind: str, **options: OptionValue | list[str] | None) -> None:
        object.__setattr__(self, "kind", str(kind))
        kept = (
            (k, tuple(v) if isinstance(v, list) else v)
            for k, v in options.items()
            if v is not None and v not in ((), [], False)
        )
        object.__setattr__(self, "options", tuple(sorted(kept)))

    def __repr__(self) -> str:
        given = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"Action({self.kind!r}{given})"

    def option(self, name: str) -> OptionValue | None:
        return dict(self.options).get(name)

    def seconds(self, name: str) -> float | None:
        value = self.option(name)
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    def text(self, name: str) -> str | None:
        value = self.option(name)
        return value if isinstance(value, str) else None

    def flag(self, name: str) -> bool:
        return self.option(name) is True

    def words(self, name: str) -> tuple[str, ...]:
        """A command option: its words."""
        value = self.option(name)
        return tuple(w for w in value if isinstance(w, str)) if isinstance(value, tuple) else ()

    def commands(self, name: str) -> tuple[tuple[str, ...], ...]:
        """An option holding several commands."""
        value = self.option(name)
        if not isinstance(value, tuple):
            return ()
        return tuple(c for c in value if isinstance(c, tuple))


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts on one container, kubelet style."""

    initial: float = 10.0
    factor: float = 2.0
    max: float = 300.0
    reset_after: float = 600.0

    def delay(self, attempts_so_far: int) -> float:
        """Seconds to wait after the last attempt, when ``attempts_so_far`` were made."""
        if attempts_so_far <= 0:
            return 0.0
        return float(min(self.max, self.initial * self.factor ** (attempts_so_far - 1)))


@dataclass(frozen=True)
class Escalation:
    """When to stop acting and ask a person: ``after_attempts`` attempts ``within`` seconds."""

    after_attempts: int = 3
    within: float = 1800.0


@dataclass(frozen=True)
class LogRule:
    """``log_match``: ``pattern`` (a regular expression) in ``count`` log lines within
    ``window`` seconds."""

    pattern: str
    count: int = 1
    window: float = 120.0


class ProbeKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"


@dataclass(frozen=True)
class ProbeRule:
    """``probe_failed``: ``failures`` probes in a row failed. An HTTP probe fails on no
    answer or a status of 400 or more; a TCP probe when the port does not accept."""

    kind: ProbeKind
    port: int
    path: str = "/"
    timeout: float = 2.0
    failures: int = 3

    def describe(self) -> str:
        if self.kind is ProbeKind.HTTP:
            return f"HTTP GET :{self.port}{self.path}"
        return f"TCP connect :{self.port}"


@dataclass(frozen=True)
class Match:
    """Which findings a playbook handles. Empty ``services`` or ``labels`` match anything.

    ``log`` and ``probe`` are what the ``log_match`` and ``probe_failed`` signals look
    for; only containers a playbook with such a rule applies to are read or probed.
    """

    signals: frozenset[Signal]
    services: frozenset[str] = frozenset()
    labels: Mapping[str, str] = field(default_factory=dict)
    log: LogRule | None = None
    probe: ProbeRule | None = None

    def applies_to(self, container: ContainerRef, labels: Mapping[str, str]) -> bool:
        """Whether the container is one this playbook is about, whatever the signal."""
        if self.services and container.service not in self.services:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())

    def matches(self, finding: Finding, labels: Mapping[str, str]) -> bool:
        if finding.signal not in self.signals:
            return False
        return self.applies_to(finding.container, labels)


@dataclass(frozen=True)
class Playbook:
    """A named, ordered list of actions for the findings it matches."""

    name: str
    match: Match
    actions: tuple[Action, ...]
    backoff: Backoff = field(default_factory=Backoff)
    escalation: Escalation = field(default_factory=Escalation)
    description: str = ""
    source: str = "<memory>"
    line: int | None = None


@dataclass(frozen=True)
class Relapse:
    """An attempt that healed the container, which then failed again."""

    attempt: datetime
    """The attempt's start (one of ``HealingState.attempts``)."""
    lasted: float
    """Seconds from when medic first saw it well after the attempt to when it saw it fail."""


@dataclass(frozen=True)
class HealingState:
    """What ``decide`` needs to know about past healing of one container.

    ``attempts`` holds the start times of the current streak: they are cleared once
    the container has stayed healthy for ``reset_after`` seconds. ``relapses`` holds
    those of the streak's attempts that healed it before it failed again.
    """

    attempts: tuple[datetime, ...] = ()
    circuit_open: bool = False
    busy: bool = False
    reset_after: float = 600.0
    relapses: tuple[Relapse, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Run ``actions`` on the container now."""

    finding: Finding
    playbook: Playbook
    actions: tuple[Action, ...]
    attempt: int


@dataclass(frozen=True)
class Wait:
    """The container needs healing, but its backoff says not before ``until``."""

    finding: Finding
    playbook: Playbook
    until: datetime
    reason: str


@dataclass(frozen=True)
class Escalate:
    """Healing is not working: stop acting on this container and ask a person."""

    finding: Finding
    playbook: Playbook
    reason: str
    relapsing: bool = False
    """Each attempt healed the container, and it failed again each time."""


@dataclass(frozen=True)
class Skip:
    """Nothing will be done for this finding, and why."""

    finding: Finding
    reason: str


Decision = Plan | Wait | Escalate | Skip


@dataclass(frozen=True)
class ActionResult:
    """How one action went."""

    action: Action
    ok: bool
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    output: str = ""
    replaced_by: ContainerId | None = None
    """Set when the action replaced the container (recreate, rebuild): the new id."""

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


class AttemptStatus(StrEnum):
    """Where an attempt stands. It is recorded when its plan starts and completed when
    the plan ends, so a medic killed in between leaves it ``running``."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    """medic stopped (a crash, a kill -9) before the attempt ended; the next medic found
    it still running and recorded what the engine says happened since."""


@dataclass(frozen=True)
class Attempt:
    """One action taken for one incident, as recorded."""

    id: AttemptId
    incident_id: IncidentId
    playbook: str
    action: str
    started_at: datetime
    finished_at: datetime | None
    """None while it runs, and for an interrupted attempt (when it ended is unknown)."""
    ok: bool
    error: str | None = None
    output: str = ""
    status: AttemptStatus = AttemptStatus.FINISHED

    @property
    def duration(self) -> float | None:
        """Seconds it took; None when its end is unknown."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class EvidenceEntry:
    """One finding's evidence, kept on the incident it was added to."""

    observed_at: datetime
    summary: str
    evidence: Evidence = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    """Trouble of one kind on one container, from first finding to resolution."""

    id: IncidentId
    container: ContainerRef
    signal: Signal
    status: IncidentStatus
    opened_at: datetime
    updated_at: datetime
    summary: str
    resolved_at: datetime | None = None
    evidence: tuple[EvidenceEntry, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    note: str | None = None
    scope: str | None = None
    """Which medic opened it: its scope and Docker engine (see ``agent.store.base.Identity``);
    None for an incident stored before medics had one."""

    @property
    def fingerprint(self) -> str:
        """Groups incidents of the same kind on the same service across container ids."""
        who = self.container.service or self.container.name
        return f"{self.container.project or '-'}/{who}/{self.signal}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


# --- escalation: diagnoses and fixes ------------------------------------------------------

DiagnosisId = NewType("DiagnosisId", str)
FixId = NewType("FixId", str)


class Confidence(StrEnum):
    """How sure a diagnosis is of its root cause."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class DiagnosisSource(StrEnum):
    """Who diagnosed: medic's built-in rules, or the LLM."""

    RULES = "rules"
    LLM = "llm"


@dataclass(frozen=True)
class Edit:
    """One exact search/replace edit of one file, as proposed: untrusted until checked.

    ``old`` must occur exactly once in the file; an empty ``old`` creates a new file.
    """

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Diagnosis:
    """What is wrong with an escalated incident's container, and why, by one source.

    ``case_file`` is the exact, redacted text that was sent (or, for the rules, read),
    kept so a person can audit what left the host. ``rule_id`` is the rule that
    matched (``unknown`` when none did); for an LLM diagnosis it is the rule hint given.
    """

    id: DiagnosisId
    incident_id: IncidentId
    source: DiagnosisSource
    created_at: datetime
    summary: str
    root_cause: str
    confidence: Confidence
    evidence: tuple[str, ...] = ()
    rule_id: str | None = None
    model: str | None = None
    edits: tuple[Edit, ...] = ()
    no_edits_reason: str | None = None
    case_file: str = ""
    fingerprint: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    error: str | None = None
    reused_from: DiagnosisId | None = None
    unverified_evidence: tuple[str, ...] = ()
    """Evidence quotes that were not found verbatim in what the model was shown; when
    there are any, ``confidence`` has been lowered to ``low``."""
    cause_service: str | None = None
    """The other service of the stack (the compose project) where the cause lies, when it
    lies outside this incident's service: an upstream that is down, a dependency that
    cannot be reached, a one-shot job that failed. Always one the case file listed."""
    cause_state: str | None = None
    """That service's state when the diagnosis was made, as the case file had it
    (``running``, ``exited (exit code 1)``, ``no container``), never the model's words."""


class FixStatus(StrEnum):
    """Where a proposed fix is in its review."""

    PROPOSED = "proposed"
    REFUSED = "refused"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Verification:
    """What medic found when it tried a fix branch before a person looks at it.

    ``built`` is None when the service has no build context in the repository;
    ``exit_status`` is None when no MEDIC_VERIFY_CMD is set (or it did not finish).
    ``image`` is the candidate image's tag when one was built
    (``medic-candidate/<service>:<fix short id>``); ``command_image`` the image the
    command ran in, in a sandbox. ``healing`` is the verdict of running the candidate in
    a sandbox (None when that was not tried): ``starts and passes its health check in a
    sandbox``, ``starts and stays up for 60 s in a sandbox`` or ``still fails: ...``.
    """

    built: bool | None = None
    build_log: str = ""
    image: str | None = None
    command: str | None = None
    exit_status: int | None = None
    output: str = ""
    error: str | None = None
    command_image: str | None = None
    healing: str | None = None
    healing_ok: bool | None = None
    healing_log: str = ""
    compose_effect: tuple[str, ...] = ()
    """What the fix changes in the resolved compose configuration, one line each."""

    @property
    def ok(self) -> bool:
        return (
            self.built is not False
            and self.exit_status in (None, 0)
            and self.error is None
            and self.healing_ok is not False
        )


@dataclass(frozen=True)
class Fix:
    """A diagnosis's edits turned into a git branch for a person to approve, or refused."""

    id: FixId
    incident_id: IncidentId
    diagnosis_id: DiagnosisId
    status: FixStatus
    created_at: datetime
    summary: str
    files: tuple[str, ...] = ()
    branch: str | None = None
    base: str | None = None
    """The commit the branch was made on (the repository's HEAD then)."""
    base_branch: str | None = None
    """The branch checked out when the fix was made; approving merges into it."""
    commit: str | None = None
    refusal_reasons: tuple[str, ...] = ()
    verification: Verification | None = None
    pushed_to: str | None = None
    push_error: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ReviewMark:
    """Where one incident's review stands, for a listing: the rule its newest rule
    diagnosis named, and its newest fix and that fix's status."""

    rule_id: str | None = None
    fix_id: FixId | None = None
    fix_status: FixStatus | None = None

    @classmethod
    def of(cls, diagnoses: Sequence[Diagnosis], fixes: Sequence[Fix]) -> ReviewMark:
        """The mark of an incident with these diagnoses and fixes."""
        rules = [d for d in diagnoses if d.source is DiagnosisSource.RULES and d.error is None]
        newest = max(fixes, key=lambda f: f.created_at, default=None)
        return cls(
            rule_id=rules[-1].rule_id if rules else None,
            fix_id=newest.id if newest else None,
            fix_status=newest.status if newest else None,
        )


# --- what people were told ----------------------------------------------------------------

NotificationId = NewType("NotificationId", str)


class NotificationOutcome(StrEnum):
    """What became of one notification about an incident."""

    DELIVERED = "delivered"
    """Every destination accepted it."""
    FAILED = "failed"
    """It was sent, and at least one destination did not accept it; ``error`` says why."""
    HELD_BACK = "held_back"
    """Not sent: the rate limit for its service and signal was reached. The next
    notification that goes out for them says how many were held back."""
    DROPPED = "dropped"
    """Not sent: the queue of notifications waiting to be sent was full."""


@dataclass(frozen=True)
class NotificationRecord:
    """One notification of an incident and its outcome, for the incident's timeline.

    ``kind`` is the notification's kind (``opened``, ``escalated``, ``resolved``, …) as
    text, so the store need not know the notifier. ``at`` is when the outcome was
    known: when the destinations answered (delivered, failed), or when it was held
    back or dropped. A repeat of something already said is not sent and not recorded.
    """

    id: NotificationId
    incident_id: IncidentId
    kind: str
    title: str
    at: datetime
    outcome: NotificationOutcome
    error: str | None = None
    """For a failed one: the error, on one line."""
