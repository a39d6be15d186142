"""The rule diagnoser: medic's own explanation of a failure, before any LLM is asked.

Pure functions over a case file, one per known failure, each returning a stable rule
id, a summary, a root cause, a confidence and the evidence lines it rests on, quoted
verbatim from the case file's text. ``diagnose`` tries them in order of precedence
(the most specific explanation first) and says ``unknown``, honestly, when none
applies. Without an API key this is the diagnosis; with one it is Claude's hint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.escalate.casefile import CaseFile, Mount, ServiceState
from agent.model import Confidence

RULE_IDS = (
    "oom_killed",
    "killed",
    "command_not_found",
    "port_in_use",
    "dependency_unreachable",
    "missing_module",
    "permission_denied",
    "disk_full",
    "read_only_filesystem",
    "healthcheck_broken",
    "bad_config",
    "missing_mount",
    "dependency_failed",
    "unknown",
)


@dataclass(frozen=True)
class Culprit:
    """Another service of the stack where the cause lies, and its state as medic saw it."""

    service: str
    state: str
    """As the case file says it: ``running``, ``exited (exit code 1)``, ``no container``."""

    @classmethod
    def of(cls, other: ServiceState) -> Culprit:
        return cls(service=other.service, state=other.line().split(": ", 1)[1])


@dataclass(frozen=True)
class RuleDiagnosis:
    """What one rule concluded."""

    rule_id: str
    summary: str
    root_cause: str
    confidence: Confidence
    evidence: tuple[str, ...]
    culprit: Culprit | None = None
    """Set when the cause lies in another service of the stack, not in this one."""


Rule = Callable[[CaseFile], RuleDiagnosis | None]


def _who(case: CaseFile) -> str:
    return case.service or case.container_name


def _find(lines: Sequence[str], pattern: re.Pattern[str]) -> tuple[str, re.Match[str]] | None:
    """The newest line matching ``pattern``, and the match."""
    for line in reversed(lines):
        match = pattern.search(line)
        if match:
            return line, match
    return None


def _dedupe(lines: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(line for line in lines if line))


# --- the rules ---------------------------------------------------------------------------


def oom_killed(case: CaseFile) -> RuleDiagnosis | None:
    if not case.oom_killed:
        return None
    limit = case.memory_line().removeprefix("Memory limit: ")
    peak = case.evidence.get("memory_peak") or case.evidence.get("memory_usage")
    peak_text = f"; its peak was {peak}" if peak else "; its peak is unknown"
    return RuleDiagnosis(
        rule_id="oom_killed",
        summary=f"{_who(case)} was killed for running out of memory (limit {limit}).",
        root_cause=(
            f"The kernel's OOM killer ended the process when the container reached its memory "
            f"limit of {limit}{peak_text}. Either the limit is too low for the workload or the "
            "process uses more memory than it should (a leak, or loading too much at once)."
        ),
        confidence=Confidence.HIGH,
        evidence=(case.oom_line(), case.memory_line(), case.exit_line()),
    )


def killed(case: CaseFile) -> RuleDiagnosis | None:
    if case.exit_code not in (137, 143) or case.oom_killed:
        return None
    signal = "SIGKILL" if case.exit_code == 137 else "SIGTERM"
    return RuleDiagnosis(
        rule_id="killed",
        summary=f"{_who(case)} was killed by {signal} from outside, not by running out of memory.",
        root_cause=(
            f"Exit code {case.exit_code} means the process received {signal}, and the engine "
            "reports no OOM kill: something stopped it (docker kill or stop, a stop timeout "
            "that ran out, an orchestrator, or the host's OOM killer acting outside the "
            "container's limit)."
        ),
        confidence=Confidence.MEDIUM,
        evidence=(case.exit_line(), case.oom_line()),
    )


_NOT_FOUND = re.compile(
    r"(?:exec: \"?(?P<a>[^\s\":]+)\"?: (?:stat [^:]+: )?(?:no such file or directory|"
    r"executable file not found)|(?P<b>[\w./-]+): (?:command )?not found|"
    r"exec format error|(?P<c>[\w./-]+): Permission denied)",
    re.IGNORECASE,
)


def command_not_found(case: CaseFile) -> RuleDiagnosis | None:
    engine = _NOT_FOUND.search(case.error) if case.error else None
    found = _find(case.logs, _NOT_FOUND)
    if case.exit_code not in (126, 127) and engine is None:
        return None
    evidence: list[str] = [case.exit_line()]
    match = engine
    if engine is not None:
        evidence.append(case.error_line())
    elif found is not None:
        evidence.append(found[0])
        match = found[1]
    command = next((g for g in (match.groups() if match else ()) if g), None)
    what = f"the command {command!r}" if command else "its command"
    cause = (
        "cannot be executed (exit code 126: found but not executable)"
        if case.exit_code == 126
        else "was not found in the container (not installed in the image, a wrong path, "
        "or a typo in the command or entrypoint)"
    )
    return RuleDiagnosis(
        rule_id="command_not_found",
        summary=f"{_who(case)} cannot start: {what} {cause.split(' (', maxsplit=1)[0]}.",
        root_cause=f"The container's {what} {cause}. {case.command_line()}.",
        confidence=Confidence.HIGH if match else Confidence.MEDIUM,
        evidence=_dedupe([*evidence, case.command_line()]),
    )


_PORT = re.compile(
    r"address already in use|EADDRINUSE|port is already allocated|bind\(\) to \S+ failed",
    re.IGNORECASE,
)


def port_in_use(case: CaseFile) -> RuleDiagnosis | None:
    found = _find([*case.logs, case.error], _PORT)
    if found is None:
        return None
    line = found[0]
    port = re.search(r":(\d{2,5})\b", line) or _find(case.logs, re.compile(r":(\d{2,5})\b"))
    port_text = ""
    if isinstance(port, re.Match):
        port_text = f" {port.group(1)}"
    elif port is not None:
        port_text = f" {port[1].group(1)}"
    evidence = [
        case.error_line() if line == case.error else line,
        *(f"Port: {p}" for p in case.ports),
    ]
    return RuleDiagnosis(
        rule_id="port_in_use",
        summary=f"{_who(case)} cannot listen: port{port_text} is already in use.",
        root_cause=(
            f"The process tried to bind port{port_text}, but another process (in the same "
            "container, or on the host for a published port) already holds it: a second "
            "instance, a leftover process, or two services configured with the same port."
        ),
        confidence=Confidence.HIGH,
        evidence=_dedupe(evidence),
    )


_MODULE = re.compile(
    r"(?:ModuleNotFoundError: No module named '?(?P<py>[\w.]+)'?|"
    r"ImportError: (?:No module named '?(?P<py2>[\w.]+)'?|cannot import name '?(?P<name>\w+)'?)|"
    r"Error: Cannot find module '(?P<node>[^']+)'|"
    r"error while loading shared libraries: (?P<lib>[^:\s]+): cannot open shared object file)"
)


def missing_module(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _MODULE)
    if found is None:
        return None
    line, match = found
    groups = match.groupdict()
    if groups["lib"]:
        what, kind = groups["lib"], "shared library"
    elif groups["node"]:
        what, kind = groups["node"], "Node.js module"
    elif groups["name"]:
        what, kind = groups["name"], "Python name"
    else:
        what, kind = groups["py"] or groups["py2"] or "?", "Python module"
    return RuleDiagnosis(
        rule_id="missing_module",
        summary=f"{_who(case)} fails at start: the {kind} {what!r} is missing.",
        root_cause=(
            f"The program imports the {kind} {what!r}, which is not installed in the image "
            "(missing from the requirements or package list, installed in another environment "
            "than the one that runs, or a base image that changed)."
        ),
        confidence=Confidence.HIGH,
        evidence=(line,),
    )


_PERMISSION = re.compile(r"permission denied|EACCES|operation not permitted|EPERM", re.IGNORECASE)
_PATH = re.compile(r"(?:'|\"|\s)(/[\w./-]+)")


def permission_denied(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _PERMISSION)
    if found is None:
        return None
    line = found[0]
    path = _PATH.search(line)
    where = f" on {path.group(1)}" if path else ""
    return RuleDiagnosis(
        rule_id="permission_denied",
        summary=f"{_who(case)} fails: permission denied{where}.",
        root_cause=(
            f"The process, running as {case.user or 'the image default user'}, is not allowed "
            f"to access{where or ' a file or resource it needs'}: the file's owner or mode, "
            "the container's user, or a volume owned by another user."
        ),
        confidence=Confidence.MEDIUM,
        evidence=(line, case.user_line()),
    )


_DISK = re.compile(
    r"no space left on device|ENOSPC|disk quota exceeded|could not extend file|disk full",
    re.IGNORECASE,
)


def disk_full(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _DISK)
    if found is None:
        return None
    line = found[0]
    path = _PATH.search(line)
    tmpfs = [t for t in case.tmpfs if path and path.group(1).startswith(t.split()[0])]
    where = f" writing {path.group(1)}" if path else ""
    on = f" (a tmpfs: {tmpfs[0]})" if tmpfs else ""
    return RuleDiagnosis(
        rule_id="disk_full",
        summary=f"{_who(case)} fails: no space left on device{where}.",
        root_cause=(
            f"The filesystem the process writes to is full{on}: a size limit too small for the "
            "data, files that are never cleaned up, or logs or caches growing without bound."
        ),
        confidence=Confidence.HIGH,
        evidence=_dedupe([line, *(f"Tmpfs: {t}" for t in tmpfs)]),
    )


_READ_ONLY = re.compile(r"read-only file ?system|EROFS", re.IGNORECASE)


def read_only_filesystem(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _READ_ONLY)
    if found is None:
        return None
    line = found[0]
    path = _PATH.search(line)
    where = f" {path.group(1)}" if path else " a file"
    return RuleDiagnosis(
        rule_id="read_only_filesystem",
        summary=f"{_who(case)} fails: it writes to{where} on a read-only filesystem.",
        root_cause=(
            f"The process writes to{where}, but "
            + (
                "the container's root filesystem is read-only (read_only: true); give the "
                "path a tmpfs or a volume, or make the program write elsewhere."
                if case.read_only
                else "that path is on a read-only mount."
            )
        ),
        confidence=Confidence.HIGH,
        evidence=_dedupe([line, case.read_only_line() if case.read_only else ""]),
    )


_HEALTH_BROKEN = re.compile(
    r"executable file not found|command not found|: not found|no such file or directory|"
    r"timed out|exceeded timeout|Health check exceeded",
    re.IGNORECASE,
)


def healthcheck_broken(case: CaseFile) -> RuleDiagnosis | None:
    if case.state != "running" or not case.health:
        return None
    failing = [h for h in case.health if h.exit_code != 0]
    if not failing or not _HEALTH_BROKEN.search(failing[-1].output):
        return None
    recent = case.logs[-20:]
    if any(_is_error(line) for line in recent):
        return None
    last = failing[-1]
    timed_out = re.search(r"timed out|exceeded timeout", last.output, re.IGNORECASE) is not None
    why = (
        "takes longer than its timeout"
        if timed_out
        else "cannot run: its command is missing from the image"
    )
    return RuleDiagnosis(
        rule_id="healthcheck_broken",
        summary=f"{_who(case)} runs, but its health check {why}.",
        root_cause=(
            f"The service is running and its log shows no errors, but the health check {why}, "
            "so the engine marks it unhealthy. Fix the check (a command the image has, such as "
            "wget or the program's own probe, or a longer timeout), not the service."
        ),
        confidence=Confidence.HIGH if not timed_out else Confidence.MEDIUM,
        evidence=(case.healthcheck_line(), last.line()),
    )


_BAD_CONFIG = re.compile(
    r"JSONDecodeError|yaml\.\w+\.\w*Error|ScannerError|ParserError|TOMLDecodeError|"
    r"invalid (?:configuration|config)|configuration (?:error|is invalid)|"
    r"(?:config|configuration|settings)\b.*\b(?:parse|syntax) error|"
    r"(?:parse|syntax) error.*\b(?:config|\.ya?ml|\.json|\.toml|\.ini|\.conf)\b|"
    r"unknown directive|\[emerg\]|failed to parse|could not parse|ValidationError|"
    r"unrecognized (?:option|configuration)",
    re.IGNORECASE,
)


def bad_config(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _BAD_CONFIG)
    if found is None:
        return None
    line = found[0]
    file_line = _find(case.logs, re.compile(r"[\w./-]+\.(?:json|ya?ml|toml|ini|conf|cfg|env)\b"))
    evidence = [line]
    where = ""
    if file_line is not None:
        where = f" ({file_line[1].group(0)})"
        evidence.insert(0, file_line[0])
    return RuleDiagnosis(
        rule_id="bad_config",
        summary=f"{_who(case)} fails reading its configuration{where}: it does not parse.",
        root_cause=(
            f"A configuration file{where} has a syntax or validation error, so the program "
            "stops at start; the log line names the position."
        ),
        confidence=Confidence.MEDIUM,
        evidence=_dedupe(evidence),
    )


_MOUNT_ERROR = re.compile(
    r"is a directory|not a directory|no such file or directory|EISDIR|ENOTDIR|ENOENT",
    re.IGNORECASE,
)
_ENGINE_MOUNT = re.compile(
    r"bind source path does not exist|trying to mount a directory onto a file|"
    r"not a directory: unknown|error mounting",
    re.IGNORECASE,
)


def missing_mount(case: CaseFile) -> RuleDiagnosis | None:
    binds = [m for m in case.mounts if m.type == "bind"]
    if case.error and _ENGINE_MOUNT.search(case.error):
        return _mount_result(case, binds[0] if binds else None, case.error_line(), engine=True)
    for line in reversed(case.logs):
        if not _MOUNT_ERROR.search(line):
            continue
        for mount in binds:
            if mount.destination and mount.destination in line:
                return _mount_result(case, mount, line, engine=False)
    return None


def _mount_result(case: CaseFile, mount: Mount | None, line: str, *, engine: bool) -> RuleDiagnosis:
    target = mount.destination if mount else "a bind mount"
    source = mount.source if mount else "its source"
    became_dir = "is a directory" in line.lower()
    cause = (
        f"The bind mount source {source} did not exist when the container was created, so the "
        f"engine created an empty directory there; the program expects a file at {target}."
        if became_dir
        else f"The bind mount for {target} does not provide what the program expects: its "
        f"source {source} is missing or of the wrong kind."
    )
    return RuleDiagnosis(
        rule_id="missing_mount",
        summary=f"{_who(case)} fails: the bind-mounted {target} is missing or a directory.",
        root_cause=cause
        + (" The engine refused to create the container." if engine else "")
        + " Create the file on the host (or fix the path in the compose file) and recreate.",
        confidence=Confidence.HIGH,
        evidence=_dedupe([line, mount.line() if mount else ""]),
    )


def dependency_failed(case: CaseFile) -> RuleDiagnosis | None:
    for dep in case.dependencies():
        if dep.state != "exited" or dep.exit_code in (None, 0):
            continue
        if dep.exit_code in (137, 143) and not dep.must_complete:
            continue  # stopped from outside: a service that is down, not a job that failed
        return RuleDiagnosis(
            rule_id="dependency_failed",
            summary=(
                f"{_who(case)} depends on {dep.service}, which exited with code {dep.exit_code}."
            ),
            root_cause=(
                f"The one-shot service {dep.service} (a migration or set-up job) that "
                f"{_who(case)} depends on failed, so {_who(case)} starts without what it needs. "
                f"Look at {dep.service}'s log first; healing {_who(case)} cannot help."
            ),
            confidence=Confidence.HIGH if dep.must_complete else Confidence.MEDIUM,
            evidence=(dep.line(),),
            culprit=Culprit.of(dep),
        )
    return None


_UNREACHABLE = re.compile(
    r"connection refused|ECONNREFUSED|name or service not known|could not translate host name|"
    r"temporary failure in name resolution|nodename nor servname|no such host|bad address|"
    r"EAI_AGAIN|ENOTFOUND|no route to host|could not connect to server|connection timed out|"
    r"getaddrinfo failed",
    re.IGNORECASE,
)


def dependency_unreachable(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _UNREACHABLE)
    if found is None:
        return None
    line, match = found
    others = [s for s in case.services]
    target, naming = _named_service(case, line, others)
    reason = match.group(0)
    evidence = [line]
    if naming and naming != line:
        evidence.insert(0, naming)
    if target is None:
        return RuleDiagnosis(
            rule_id="dependency_unreachable",
            summary=f"{_who(case)} cannot reach a service it needs ({reason}).",
            root_cause=(
                f"A connection failed with '{reason}'. The log does not name a service of the "
                "compose project, so the target may be outside it (check the host name and port)."
            ),
            confidence=Confidence.LOW,
            evidence=_dedupe(evidence),
        )
    evidence.append(target.line())
    running = target.state == "running"
    state = target.line().split(": ", 1)[1]
    cause = (
        f"{target.service} is running, but nothing accepts connections on the port used: it may "
        "still be starting, listen on another port or interface, or have crashed inside."
        if running
        else f"{target.service} is not running ({state}), so its name does not resolve or its "
        "port refuses; start it or find out why it stopped."
    )
    return RuleDiagnosis(
        rule_id="dependency_unreachable",
        summary=(
            f"{_who(case)} cannot reach {target.service} ({reason}); {target.service} is {state}."
        ),
        root_cause=f"The connection from {_who(case)} to {target.service} fails with '{reason}'. "
        + cause,
        confidence=Confidence.MEDIUM if running else Confidence.HIGH,
        evidence=_dedupe(evidence),
        culprit=Culprit.of(target),
    )


def _named_service(
    case: CaseFile, line: str, services: Sequence[ServiceState]
) -> tuple[ServiceState | None, str | None]:
    def mentions(text: str, service: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(service)}(?![\w-])", text) is not None

    for s in services:
        if mentions(line, s.service):
            return s, line
    for text in reversed(case.logs):
        for s in services:
            if mentions(text, s.service):
                return s, text
    deps = [s for s in services if s.depended_on]
    down = [s for s in deps if s.state != "running"]
    if down or len(deps) == 1:
        return (down or deps)[0], None
    return None, None


def _is_error(line: str) -> bool:
    return re.search(r"(?i)\b(error|exception|traceback|fatal|panic)\b", line) is not None


#: Most specific first: an OOM kill explains exit 137, a failed job explains its
#: dependent's errors, a missing mount explains "No such file".
RULES: tuple[Rule, ...] = (
    oom_killed,
    dependency_failed,
    missing_mount,
    command_not_found,
    missing_module,
    port_in_use,
    disk_full,
    read_only_filesystem,
    permission_denied,
    bad_config,
    dependency_unreachable,
    healthcheck_broken,
    killed,
)


def unknown(case: CaseFile) -> RuleDiagnosis:
    return RuleDiagnosis(
        rule_id="unknown",
        summary=f"No built-in rule explains why {_who(case)} fails.",
        root_cause=(
            "None of medic's rules matched the exit code, the engine's state or the log. Read "
            "the log tail and the attempts in the case file; with an API key set, Claude is "
            "asked next."
        ),
        confidence=Confidence.LOW,
        evidence=(case.exit_line(),) if case.exit_code is not None else (),
    )


def matching(case: CaseFile) -> list[RuleDiagnosis]:
    """Every rule that applies, in order of precedence."""
    return [result for rule in RULES if (result := rule(case)) is not None]


def diagnose(case: CaseFile) -> RuleDiagnosis:
    """The most specific rule that applies, or ``unknown``."""
    found = matching(case)
    return found[0] if found else unknown(case)
