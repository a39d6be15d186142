"""The rule diagnoser: medic's own explanation of a failure, before any LLM is asked.

Pure functions over a case file, one per known failure, each returning a stable rule
id, a summary, a root cause, a confidence and the evidence lines it rests on, quoted
verbatim from the case file's text. ``diagnose`` tries them in order of precedence
(the most specific explanation first) and says ``unknown``, honestly, when none
applies. Without a model configured this is the diagnosis; with one it is the model's
hint.

Confidence is calibrated: each rule says how sure the line it matched lets it be (a
rule that rests only on a generic line, "error" or "No such file", says ``low``), and
``CEILING`` caps that by what bench/diagnosis_eval.py measured on the failures captured
from real programs: ``high`` only for rules that were never wrong there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from agent.escalate.casefile import CaseFile, Mount, ServiceState
from agent.model import Confidence

RULE_IDS = (
    "oom_killed",
    "killed",
    "command_not_found",
    "exec_format",
    "port_in_use",
    "dependency_unreachable",
    "upstream_unresolvable",
    "missing_module",
    "missing_env",
    "missing_file",
    "data_dir_incompatible",
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


def _find_any(
    lines: Sequence[str], patterns: Sequence[re.Pattern[str]]
) -> tuple[str, re.Match[str]] | None:
    """The newest line matching any of ``patterns`` (the first that matches it), and the
    match."""
    for line in reversed(lines):
        for pattern in patterns:
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
    r"(?P<c>[\w./-]+): Permission denied|"
    # env(1) looking for an interpreter (a #! line naming one the image lacks)
    r"env: '?(?P<d>[\w./-]+)'?: No such file or directory|"
    # the runtime: an entrypoint that is missing, or whose #! interpreter is (a CRLF script)
    r"exec (?P<e>/[\w./-]+): no such file or directory)",
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
    r"address already in use|\bEADDRINUSE\b|port is already allocated|bind\(\) to \S+ failed|"
    r"Could not create server TCP listening socket|"
    r"Only one usage of each socket address",
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
    r"Cannot find package '(?P<esm>[^']+)' imported from|"
    r"cannot load such file -- (?P<ruby>[\w./-]+)|"
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
    elif groups["node"] or groups["esm"]:
        what, kind = groups["node"] or groups["esm"], "Node.js module"
    elif groups["ruby"]:
        what, kind = groups["ruby"], "Ruby library"
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


_PERMISSION = re.compile(
    r"permission denied|\bEACCES\b|operation not permitted|\bEPERM\b|AccessDeniedException|"
    r"is not writable|has wrong ownership|must be owned by",
    re.IGNORECASE,
)
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
    r"no space left on device|\bENOSPC\b|disk quota exceeded|could not extend file|disk full",
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


_READ_ONLY = re.compile(r"read-only file ?system|\bEROFS\b", re.IGNORECASE)


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


#: Lines that say a configuration does not parse or validate, and nothing else.
_BAD_CONFIG = re.compile(
    r"JSONDecodeError|yaml\.\w+\.\w*Error|ScannerError|ParserError|TOMLDecodeError|"
    r"invalid (?:configuration|config)|configuration (?:error|is invalid)|"
    r"(?:config|configuration|settings)\b.*\b(?:parse|syntax) error|"
    r"(?:parse|syntax) error.*\b(?:config|\.ya?ml|\.json|\.toml|\.ini|\.conf)\b|"
    r"unknown directive|unrecognized (?:option|configuration)|"
    r"FATAL CONFIG FILE ERROR|Bad directive or wrong number of arguments|"
    r"invalid number of arguments in \"[^\"]+\" directive|directive is not allowed here|"
    r"unexpected \"[^\"]*\" in \S+:\d+|unexpected end of file, expecting|"
    r"configuration file \"[^\"]+\" contains errors|unrecognized configuration parameter|"
    r"syntax error in file \"[^\"]+\" line \d+|unknown variable '[^']+'",
    re.IGNORECASE,
)
#: Lines that often come with a bad configuration but as often with other failures:
#: on their own they make a ``low`` diagnosis.
_MAYBE_CONFIG = re.compile(
    r"\[emerg\]|failed to parse|could not parse|ValidationError", re.IGNORECASE
)


def bad_config(case: CaseFile) -> RuleDiagnosis | None:
    found = _find(case.logs, _BAD_CONFIG)
    confidence = Confidence.MEDIUM
    if found is None:
        found = _find(case.logs, _MAYBE_CONFIG)
        confidence = Confidence.LOW
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
        confidence=confidence,
        evidence=_dedupe(evidence),
    )


_NO_SUCH = re.compile(r"no such file or directory|\bENOENT\b", re.IGNORECASE)
_WRONG_KIND = re.compile(r"is a directory|not a directory|\bEISDIR\b|\bENOTDIR\b", re.IGNORECASE)
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
        wrong_kind = _WRONG_KIND.search(line) is not None
        if not wrong_kind and not _NO_SUCH.search(line):
            continue
        # "No such file" on a file inside a mounted folder is missing_file's; the wrong
        # kind of file anywhere under the mount is this rule's.
        exact = not wrong_kind
        for mount in binds:
            if not mount.destination or mount.destination not in line:
                continue
            if exact and not re.search(rf"{re.escape(mount.destination)}(?![\w./-])", line):
                continue
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


def _failed_dependencies(case: CaseFile) -> list[ServiceState]:
    found = []
    for dep in case.dependencies():
        if dep.state not in ("exited", "dead") or dep.exit_code in (None, 0):
            continue
        if dep.exit_code in (137, 143) and not dep.must_complete:
            continue  # stopped from outside: a service that is down, not one that failed
        found.append(dep)
    return found


def dependency_failed(case: CaseFile) -> RuleDiagnosis | None:
    """A one-shot job this service waits for (``service_completed_successfully``) failed."""
    dep = next((d for d in _failed_dependencies(case) if d.must_complete), None)
    if dep is None:
        return None
    return _dependency_result(
        case,
        dep,
        f"The one-shot service {dep.service} (a migration or set-up job) that {_who(case)} "
        f"depends on failed, so {_who(case)} starts without what it needs.",
        Confidence.HIGH,
    )


def dependency_exited(case: CaseFile) -> RuleDiagnosis | None:
    """A service this one depends on ended with an error of its own.

    Tried after the rules that read this service's own log, so that a dependency that
    happens to be down does not hide a cause this service's log names."""
    dep = next((d for d in _failed_dependencies(case) if not d.must_complete), None)
    if dep is None:
        return None
    return _dependency_result(
        case,
        dep,
        f"{dep.service}, which {_who(case)} depends on, stopped with an error of its own "
        f"(exit code {dep.exit_code}), so {_who(case)} cannot use it.",
        Confidence.MEDIUM,
    )


def _dependency_result(
    case: CaseFile, dep: ServiceState, cause: str, confidence: Confidence
) -> RuleDiagnosis:
    return RuleDiagnosis(
        rule_id="dependency_failed",
        summary=f"{_who(case)} depends on {dep.service}, which exited with code {dep.exit_code}.",
        root_cause=(
            f"{cause} Look at {dep.service}'s log first; healing {_who(case)} cannot help."
        ),
        confidence=confidence,
        evidence=(dep.line(),),
        culprit=Culprit.of(dep),
    )


_UNREACHABLE = re.compile(
    r"connection refused|\bECONNREFUSED\b|name or service not known|could not translate host "
    r"name|temporary failure in name resolution|nodename nor servname|no such host|bad address|"
    r"\bEAI_AGAIN\b|\bENOTFOUND\b|no route to host|could not connect to server|"
    r"connection timed out|"
    r"getaddrinfo failed|Can't connect to (?:local )?MySQL server|Is the server running on host",
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


_EXEC_FORMAT = re.compile(
    r"(?:exec (?P<path>/[\w./-]+): )?exec format error|cannot execute binary file",
    re.IGNORECASE,
)


def _arch(platform: str) -> str:
    """``arm64/v8`` from ``linux/arm64/v8``: what must match for a binary to run."""
    return platform.partition("/")[2]


def exec_format(case: CaseFile) -> RuleDiagnosis | None:
    engine = _EXEC_FORMAT.search(case.error) if case.error else None
    found = (case.error_line(), engine) if engine else _find(case.logs, _EXEC_FORMAT)
    if found is None:
        return None
    line, match = found
    path = match.group("path")
    what = f"{path}" if path else "its command"
    image, host = _arch(case.image_platform), _arch(case.engine_platform)
    evidence = [line, *case.platform_lines()]
    if image and host and image.split("/")[0] != host.split("/")[0]:
        return RuleDiagnosis(
            rule_id="exec_format",
            summary=(
                f"{_who(case)} cannot start: its image is built for {case.image_platform}, "
                f"but the engine runs {case.engine_platform}."
            ),
            root_cause=(
                f"The kernel cannot run {what}: the image was built for another CPU "
                f"architecture ({case.image_platform}) than this host's "
                f"({case.engine_platform}). Pull or build the image for "
                f"{case.engine_platform} (a multi-platform tag, or `platform:` in the compose "
                "file and a build on this host); emulation (binfmt/qemu) works but is slow."
            ),
            confidence=Confidence.HIGH,
            evidence=_dedupe(evidence),
        )
    same = bool(image and host)
    return RuleDiagnosis(
        rule_id="exec_format",
        summary=f"{_who(case)} cannot start: {what} is not a program this host can run.",
        root_cause=(
            f"The kernel refused to execute {what} (exec format error). "
            + (
                f"The image's platform matches the engine's ({case.engine_platform}), so the "
                "file itself is not runnable: most often a script without a valid first line "
                "(#!/bin/sh), one saved with Windows line endings, or a binary for another "
                "CPU copied into the image."
                if same
                else "Either the file is a script without a valid first line (#!/bin/sh) or "
                "it was built for another CPU architecture than this host's."
            )
        ),
        confidence=Confidence.MEDIUM,
        evidence=_dedupe(evidence),
    )


_ENV_NAME = r"[A-Z][A-Z0-9_]{2,}"
#: Lines naming a variable that must be set (the official images' entrypoints, frameworks).
_MISSING_ENV = (
    re.compile(rf"You must specify (?P<var>{_ENV_NAME}) to a non-empty value"),
    # The words in any case, the name in capitals: "Environment variable FOO is not set".
    re.compile(
        rf"(?i:environment variable|env var(?:iable)?)s?:? ['\"`]?(?P<var>{_ENV_NAME})['\"`]? "
        r"(?i:(?:is |was )?(?:not set|required|missing|must be set|empty|undefined|not defined))"
    ),
    re.compile(
        r"(?i:(?:missing|required|undefined|unset)(?: required)? environment variables?:?) "
        rf"['\"`]?(?P<var>{_ENV_NAME})"
    ),
    re.compile(rf"\b(?P<var>{_ENV_NAME}) (?:environment variable )?(?:is not set|must be set)\b"),
)
#: Lines saying some variable is missing, without a name a person could act on.
_MISSING_ENV_UNNAMED = re.compile(
    r"superuser password is not specified|You need to specify one of the following",
    re.IGNORECASE,
)
_KEY_ERROR = re.compile(rf"^KeyError: '(?P<var>{_ENV_NAME})'$")
_ENVIRON_FRAME = re.compile(r"<frozen os>|[/\\]os\.py\", line \d+, in __getitem__|os\.environ\[")
_LISTED_ENV = re.compile(rf"^\s*-\s+(?P<var>{_ENV_NAME})\s*$")


def _env_value(case: CaseFile, name: str) -> str | None:
    """The variable's (redacted) value in the container, or None when it is not set."""
    for entry in case.env:
        key, sep, value = entry.partition("=")
        if sep and key == name:
            return value
    return None


def missing_env(case: CaseFile) -> RuleDiagnosis | None:
    hit = _find_any(case.logs, _MISSING_ENV)
    named = (hit[0], hit[1].group("var")) if hit else None
    if named is None:
        key = _find(case.logs, _KEY_ERROR)
        if key is not None and any(_ENVIRON_FRAME.search(line) for line in case.logs):
            named = (key[0], key[1].group("var"))
    unnamed = _find(case.logs, _MISSING_ENV_UNNAMED)
    if named is None and unnamed is not None:
        # mysql and mariadb list the variables on the lines after the sentence
        index = case.logs.index(unnamed[0])
        for later in case.logs[index + 1 : index + 6]:
            listed = _LISTED_ENV.match(later)
            if listed:
                named = (later, listed.group("var"))
                break
    if named is None and unnamed is None:
        return None
    evidence = [unnamed[0]] if unnamed else []
    if named is None:
        return RuleDiagnosis(
            rule_id="missing_env",
            summary=f"{_who(case)} cannot start: a required environment variable is not set.",
            root_cause=(
                "The program stops at start because a setting it requires from the "
                "environment is missing; the log does not name it. Set it in the service's "
                "`environment:` or `env_file:` and recreate the container (a restart keeps "
                "the old environment)."
            ),
            confidence=Confidence.MEDIUM,
            evidence=_dedupe(evidence),
        )
    line, var = named
    evidence.append(line)
    value = _env_value(case, var)
    if value is None:
        state, confidence = "is not set in the container", Confidence.HIGH
    elif value == "":
        state, confidence = "is set but empty in the container", Confidence.HIGH
    else:
        state = "is set in the container, yet the program says it is missing"
        confidence = Confidence.LOW
        evidence.append(f"Env: {var}={value}")
    return RuleDiagnosis(
        rule_id="missing_env",
        summary=f"{_who(case)} cannot start: the environment variable {var} {state}.",
        root_cause=(
            f"The program requires the environment variable {var}, which {state}. "
            + (
                f"Set {var} in the service's `environment:` or `env_file:` (or a secret), then "
                "recreate the container: a restart keeps the old environment."
                if confidence is Confidence.HIGH
                else "Check the value's form and the variable's spelling where the program "
                "reads it."
            )
        ),
        confidence=confidence,
        evidence=_dedupe(evidence),
    )


#: (pattern, what wrote the data) — each with the versions where the program names them.
_DATA_DIR = (
    re.compile(
        r"initialized by PostgreSQL version (?P<old>[\d.]+), which is not compatible with this "
        r"version (?P<new>[\d.]+)"
    ),
    re.compile(r"database files are incompatible with server"),
    re.compile(r"Cannot upgrade from (?:MySQL )?(?P<old>[\d.]+) to (?:MySQL )?(?P<new>[\d.]+)"),
    re.compile(
        r"Invalid MySQL server downgrade: Cannot downgrade from (?P<old>\d+) to (?P<new>\d+)"
    ),
    re.compile(
        r"cannot upgrade a node from version \[(?P<old>[^\]]+)\] directly to version "
        r"\[(?P<new>[^\]]+)\]"
    ),
    re.compile(r"UPGRADE PROBLEM: Found an invalid featureCompatibilityVersion document"),
    re.compile(r"Can't handle RDB format version (?P<rdb>\d+)"),
)


def data_dir_incompatible(case: CaseFile) -> RuleDiagnosis | None:
    found: list[tuple[str, re.Match[str]]] = []
    for pattern in _DATA_DIR:
        hit = _find(case.logs, pattern)
        if hit is not None:
            found.append(hit)
    if not found:
        return None
    versions = next((m for _, m in found if "old" in m.groupdict() and m.group("old")), None)
    evidence = [line for line, _ in found]
    data = [m for m in case.mounts if m.type in ("volume", "bind")]
    evidence.extend(m.line() for m in data[:2])
    if versions is not None:
        old, new = versions.group("old"), versions.group("new")
        what = f"written by version {old}; the image runs {new}, which cannot read it"
    else:
        rdb = next((m.group("rdb") for _, m in found if "rdb" in m.groupdict()), None)
        what = (
            f"written by a newer version (RDB format {rdb}) than the image runs"
            if rdb
            else "written by another major version than the image runs"
        )
    where = f" on {data[0].source} ({data[0].destination})" if data else ""
    return RuleDiagnosis(
        rule_id="data_dir_incompatible",
        summary=f"{_who(case)} cannot start: its data directory was {what}.",
        root_cause=(
            f"The data directory{where} was {what}. This follows an image tag raised (or "
            "lowered) over an existing volume. Go back to the image version that wrote the "
            "data, then upgrade the data the program's way (pg_upgrade, or a dump restored "
            "into the new version); do not delete the volume to make it start."
        ),
        confidence=Confidence.HIGH,
        evidence=_dedupe(evidence),
    )


#: Lines naming a file the program was told to read (its configuration, a certificate or
#: key) that is not there; specific to one program each.
_MISSING_FILE = (
    re.compile(r'cannot load certificate(?: key)? "(?P<path>[^"]+)"'),
    re.compile(r'open\(\) "(?P<path>[^"]+)" failed \(2: No such file or directory\)'),
    re.compile(
        r"could not (?:load|open) (?:server certificate|private key|root certificate|"
        r'certificate revocation list)?\s*file "(?P<path>[^"]+)": No such file or directory'
    ),
    re.compile(r"can't open config file '(?P<path>[^']+)'"),
    # Python's FileNotFoundError, raised or printed
    re.compile(r"\[Errno 2\] No such file or directory: '(?P<path>/[^']+)'"),
    re.compile(r"ENOENT: no such file or directory, \w+ '(?P<path>/[^']+)'"),
    re.compile(r"\bopen (?P<path>/[\w./@+-]+): no such file or directory"),
    re.compile(r"java\.io\.FileNotFoundException: (?P<path>/\S+) \(No such file or directory\)"),
)
#: Any absolute path said not to exist: a generic line, hence ``low`` on its own.
_NO_SUCH_PATH = re.compile(
    r"(?P<path>/[\w./@+-]*[\w@+-])['\"]?\)?:? (?:\(\d+: )?No such file or directory", re.IGNORECASE
)
_WARNING = re.compile(r"\bwarn(?:ing)?\b", re.IGNORECASE)


def _covering_mount(case: CaseFile, path: str) -> Mount | None:
    """The mount whose folder holds ``path``, the deepest when several do."""
    covering = [
        m for m in case.mounts if m.destination and path.startswith(m.destination.rstrip("/") + "/")
    ]
    return max(covering, key=lambda m: len(m.destination), default=None)


def missing_file(case: CaseFile) -> RuleDiagnosis | None:
    specific = True
    found = _find_any(case.logs, _MISSING_FILE)
    if found is None:
        found = _find(case.logs, _NO_SUCH_PATH)
        specific = False
    if found is None:
        return None
    line, match = found
    path = match.group("path")
    folder = path.rsplit("/", 1)[0] or "/"
    mount = _covering_mount(case, path)
    evidence = [line]
    if mount is not None:
        evidence.append(mount.line())
        where = (
            f"{folder} comes from the {mount.type} mount of {mount.source}, which does not "
            f"hold {path.rsplit('/', 1)[1]}: the file is missing on the host side, or named "
            "differently there"
        )
    else:
        where = (
            f"no mount covers {folder}, so the file would have to be in the image: a mount the "
            "service is missing, a path that is wrong in the configuration, or an image that "
            "no longer ships the file"
        )
    confidence = Confidence.MEDIUM if mount is not None else Confidence.LOW
    if specific:
        confidence = Confidence.HIGH if mount is not None else Confidence.MEDIUM
    if _WARNING.search(line):
        confidence = Confidence.LOW  # a warning about an optional file need not be why it died
    return RuleDiagnosis(
        rule_id="missing_file",
        summary=f"{_who(case)} fails: the file {path} it is configured to read does not exist.",
        root_cause=f"The program opens {path}, which is not in the container: {where}.",
        confidence=confidence,
        evidence=_dedupe(evidence),
    )


#: A proxy that cannot resolve the upstream its configuration names.
_UPSTREAM = (
    re.compile(r'host not found in upstream "(?P<host>[^":/\s]+)(?::(?P<port>\d+))?'),
    re.compile(r"could not resolve address '(?P<host>[^'\s:]+)'"),
    re.compile(r"no resolver defined to resolve (?P<host>[\w.-]+)"),
)


def upstream_unresolvable(case: CaseFile) -> RuleDiagnosis | None:
    found = _find_any(case.logs, _UPSTREAM)
    if found is None:
        return None
    line, match = found
    host = match.group("host")
    short = host.split(".", 1)[0]
    target = next((s for s in case.services if s.service in (host, short)), None)
    evidence = [line]
    if target is not None:
        evidence.append(target.line())
        state = Culprit.of(target).state
        if target.state == "running":
            return RuleDiagnosis(
                rule_id="upstream_unresolvable",
                summary=(
                    f"{_who(case)} cannot resolve its upstream {host}; the service "
                    f"{target.service} is running."
                ),
                root_cause=(
                    f"{_who(case)} names {host} as an upstream, and {target.service} runs, but "
                    f"the name did not resolve when {_who(case)} started: the two services may "
                    f"not share a network, or {target.service} started after {_who(case)} "
                    "(nginx resolves upstream names once, at start). Check the networks, then "
                    f"restart {_who(case)}."
                ),
                confidence=Confidence.MEDIUM,
                evidence=_dedupe(evidence),
                culprit=Culprit.of(target),
            )
        return RuleDiagnosis(
            rule_id="upstream_unresolvable",
            summary=(
                f"{_who(case)} cannot start: its upstream {target.service} is {state}, so "
                f"the name {host} does not resolve."
            ),
            root_cause=(
                f"{_who(case)}'s configuration names {host} as an upstream. A compose "
                f"service's name resolves only while its container runs, and "
                f"{target.service} is {state}. Start {target.service} (or find why it "
                f"stopped, in its own log); healing {_who(case)} cannot help until then."
            ),
            confidence=Confidence.HIGH,
            evidence=_dedupe(evidence),
            culprit=Culprit.of(target),
        )
    known = bool(case.services) or bool(case.compose_service)
    return RuleDiagnosis(
        rule_id="upstream_unresolvable",
        summary=(
            f"{_who(case)} cannot start: its upstream {host} does not resolve"
            + (", and no service of the project has that name." if known else ".")
        ),
        root_cause=(
            f"{_who(case)}'s configuration names {host} as an upstream, but the name does not "
            "resolve. "
            + (
                "No service of the compose project is called that: a typo in the "
                "configuration, a service that was renamed or removed, or a host outside the "
                "project that this network cannot resolve."
                if known
                else "The project's other services are unknown, so medic cannot tell whether "
                "it is a service that is down or a name that is wrong."
            )
        ),
        confidence=Confidence.HIGH if known else Confidence.MEDIUM,
        evidence=_dedupe(evidence),
    )


def _is_error(line: str) -> bool:
    return re.search(r"(?i)\b(error|exception|traceback|fatal|panic)\b", line) is not None


#: Most specific first: an OOM kill explains exit 137, a failed job explains its
#: dependent's errors, a missing mount explains "No such file"; a proxy's unresolvable
#: upstream and a missing certificate explain its "[emerg]" before bad_config may; a
#: dependency that is down comes only after this service's own log had its say.
RULES: tuple[Rule, ...] = (
    oom_killed,
    dependency_failed,
    exec_format,
    missing_mount,
    command_not_found,
    missing_module,
    data_dir_incompatible,
    missing_env,
    upstream_unresolvable,
    port_in_use,
    disk_full,
    read_only_filesystem,
    permission_denied,
    missing_file,
    bad_config,
    dependency_exited,
    dependency_unreachable,
    healthcheck_broken,
    killed,
)

#: The most a rule may say, from bench/diagnosis_eval.py's figures on the failures
#: captured from real programs (docs/escalation.md): ``high`` only where the rule was
#: never wrong there. A rule that was wrong is capped at ``medium``; one with no fixture
#: to be measured on would be capped too (there is none).
CEILING: dict[str, Confidence] = {rule_id: Confidence.HIGH for rule_id in RULE_IDS}

_ORDER = {Confidence.LOW: 0, Confidence.MEDIUM: 1, Confidence.HIGH: 2}


def capped(result: RuleDiagnosis) -> RuleDiagnosis:
    """``result`` with its confidence no higher than its rule's ``CEILING``."""
    ceiling = CEILING.get(result.rule_id, Confidence.MEDIUM)
    if _ORDER[result.confidence] <= _ORDER[ceiling]:
        return result
    return replace(result, confidence=ceiling)


def unknown(case: CaseFile) -> RuleDiagnosis:
    return RuleDiagnosis(
        rule_id="unknown",
        summary=f"No built-in rule explains why {_who(case)} fails.",
        root_cause=(
            "None of medic's rules matched the exit code, the engine's state or the log. Read "
            "the log tail and the attempts in the case file; with a model configured, it is "
            "asked next."
        ),
        confidence=Confidence.LOW,
        evidence=(case.exit_line(),) if case.exit_code is not None else (),
    )


def matching(case: CaseFile) -> list[RuleDiagnosis]:
    """Every rule that applies, in order of precedence, each capped by its ``CEILING``."""
    return [capped(result) for rule in RULES if (result := rule(case)) is not None]


def diagnose(case: CaseFile) -> RuleDiagnosis:
    """The most specific rule that applies, or ``unknown``."""
    found = matching(case)
    return found[0] if found else unknown(case)
