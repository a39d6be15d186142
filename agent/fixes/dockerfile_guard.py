"""Dockerfile changes that run code from the internet, switch base images, run as root,
bake in secrets or widen what a build may do. Pure: no I/O.

A Dockerfile is a program: ``docker build`` runs it with network access, and the image it
makes runs next to the operator's data. A fix proposed by a model is untrusted, so by
default it may not touch a Dockerfile at all; when the operator opts in
(``MEDIC_FIX_ALLOW=dockerfile``) these checks still apply. The file is parsed the way
BuildKit parses it (parser directives and the ``# escape=`` character, line
continuations, comment lines, heredocs, exec and shell forms, the flags of RUN, ARG
before FROM, stage names), before and after the edit, and only what the edit adds is
refused: an instruction the Dockerfile already had is the operator's own.

Codes:

``dockerfile_unreadable``
    The edited file cannot be parsed (an unknown instruction, an unterminated heredoc,
    no FROM, a bad ``# escape=``): nothing else can be checked.
``dockerfile_fetch_execute``
    Code fetched at build or run time and executed: a download piped into anything but
    an archive or checksum tool, ``bash <(curl …)``, ``sh -c "$(curl …)"``, a file
    downloaded and then run, made executable or installed, a clone built, interpreter
    code that downloads and evaluates, any remote ``ADD``, and ``COPY --from`` or
    ``RUN --mount=from=`` of an image rather than a stage.
``dockerfile_from_changed``
    A base image (or the ``# syntax=`` frontend) from a repository the Dockerfile did not
    use before, after ARG defaults are substituted. A new tag or digest of the same
    repository passes; so does a stage name. A FROM whose image cannot be resolved is
    refused.
``dockerfile_user_root``
    ``USER root`` or user id 0 added (or a USER that cannot be resolved), or the final
    stage's non-root USER removed.
``dockerfile_secret``
    ``RUN --mount=type=secret`` or ``type=ssh`` added, or an ENV, ARG or LABEL whose name
    looks secret given a literal value (baked into the image's layers and history).
``dockerfile_privileged``
    ``RUN --security=insecure``, ``RUN --network=host``, or a RUN flag medic does not know.

Checks are allow-lists where they can be: a download may only be piped into the tools in
``SAFE_PIPE_CONSUMERS``; a RUN flag must be in ``RUN_FLAGS``.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agent.escalate.redact import is_secret_name
from agent.fixes.refusal import Refusal, show


def _names(text: str) -> frozenset[str]:
    """A set of names written one after another, as a long list reads best."""
    return frozenset(text.split())


_NAME_PATTERNS = (
    re.compile(r"(?:docker|container)file"),
    re.compile(r"(?:docker|container)file\..+"),
    re.compile(r".+\.(?:docker|container)file"),
)


def is_dockerfile(path: str) -> bool:
    """Dockerfile, Dockerfile.*, *.Dockerfile and the Containerfile spellings, any case.

    A compose file's ``build.dockerfile`` may name any file; a caller that knows such a
    name should treat it as a Dockerfile too.
    """
    name = path.rsplit("/", 1)[-1].lower()
    return any(pattern.fullmatch(name) for pattern in _NAME_PATTERNS)


# --- parsing ---------------------------------------------------------------------------------

INSTRUCTIONS = _names(
    """
    ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD RUN
    SHELL STOPSIGNAL USER VOLUME WORKDIR
    """
)
#: Instructions whose leading ``--name=value`` words are flags.
_FLAGGED = frozenset({"ADD", "COPY", "FROM", "RUN", "HEALTHCHECK"})
#: Instructions that may carry heredocs.
_HEREDOC_INSTRUCTIONS = frozenset({"ADD", "COPY", "RUN"})
#: The flags of RUN medic understands; any other is refused.
RUN_FLAGS = frozenset({"mount", "network", "security"})
#: Parser directives BuildKit knows; an unknown one ends the directives.
_DIRECTIVES = frozenset({"escape", "syntax", "check"})

_DIRECTIVE = re.compile(r"\s*#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"(?:^|(?<=\s))\d*<<(-?)\s*([\"']?)([A-Za-z0-9_.-]+)\2(?=\s|$|[;|&>)])")
_FLAG = re.compile(r"\s*--([A-Za-z][\w-]*)(?:=(\"[^\"]*\"|'[^']*'|\S*))?(?=\s|$)")


class DockerfileError(ValueError):
    """The text cannot be parsed as a Dockerfile."""


@dataclass(frozen=True)
class Heredoc:
    name: str
    body: str


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword, flags, the rest of its text and its heredocs."""

    keyword: str
    arguments: str
    flags: tuple[tuple[str, str], ...] = ()
    heredocs: tuple[Heredoc, ...] = ()
    line: int = 0

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON-array (exec) form's words, or None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        try:
            words = json.loads(text)
        except ValueError:
            return None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
        return None

    def flag_values(self, name: str) -> list[str]:
        return [value for key, value in self.flags if key == name]

    def key(self) -> str:
        """The instruction as compared before and after: whitespace does not count."""
        flags = " ".join(f"--{k}={v}" for k, v in self.flags)
        bodies = " ".join(" ".join(h.body.split()) for h in self.heredocs)
        return " ".join(f"{self.keyword} {flags} {self.arguments} {bodies}".split())


@dataclass(frozen=True)
class Dockerfile:
    directives: Mapping[str, str]
    instructions: tuple[Instruction, ...]


def parse_dockerfile(text: str) -> Dockerfile:
    """The Dockerfile's directives and instructions. Raises DockerfileError."""
    lines = [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]
    directives: dict[str, str] = {}
    index = 0
    while index < len(lines):
        match = _DIRECTIVE.fullmatch(lines[index])
        if match is None or match.group(1).lower() not in _DIRECTIVES:
            break
        name = match.group(1).lower()
        if name in directives:
            raise DockerfileError(f"the {name} directive is given twice")
        directives[name] = match.group(2)
        index += 1
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise DockerfileError(f"the escape directive must be \\ or `, not {escape!r}")
    instructions: list[Instruction] = []
    while index < len(lines):
        if _is_blank_or_comment(lines[index]):
            index += 1
            continue
        first = index
        logical, index = _logical_line(lines, index, escape)
        instruction, index = _instruction(logical, lines, index, first + 1)
        instructions.append(instruction)
    if not instructions:
        raise DockerfileError("it has no instructions")
    for instruction in instructions:
        if instruction.keyword == "FROM":
            break
        if instruction.keyword != "ARG":
            raise DockerfileError(f"{instruction.keyword} at line {instruction.line} precedes FROM")
    else:
        raise DockerfileError("it has no FROM")
    return Dockerfile(directives, tuple(instructions))


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


def _logical_line(lines: list[str], index: int, escape: str) -> tuple[str, int]:
    """One instruction's line with its continuations joined, as BuildKit joins them:
    the escape character at the end of a line is dropped, comment and empty lines
    inside a continuation are skipped."""
    parts: list[str] = []
    while index < len(lines):
        line = lines[index].rstrip(" \t")
        index += 1
        if not line.endswith(escape):
            parts.append(line)
            break
        parts.append(line[: -len(escape)])
        while index < len(lines) and _is_blank_or_comment(lines[index]):
            index += 1
    return "".join(parts), index


def _instruction(
    logical: str, lines: list[str], index: int, line_number: int
) -> tuple[Instruction, int]:
    head, _, rest = logical.strip().partition(" ")
    if "\t" in head:
        head, _, more = head.partition("\t")
        rest = more + " " + rest
    keyword = head.upper()
    if keyword not in INSTRUCTIONS:
        raise DockerfileError(f"unknown instruction {head[:40]!r} at line {line_number}")
    rest = rest.strip()
    flags: list[tuple[str, str]] = []
    if keyword in _FLAGGED:
        while match := _FLAG.match(rest):
            value = match.group(2) or ""
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            flags.append((match.group(1).lower(), value))
            rest = rest[match.end() :].lstrip()
    heredocs: list[Heredoc] = []
    if keyword in _HEREDOC_INSTRUCTIONS and not rest.startswith("["):
        for match in _HEREDOC.finditer(rest):
            chomp, name = match.group(1) == "-", match.group(3)
            body: list[str] = []
            while True:
                if index >= len(lines):
                    raise DockerfileError(
                        f"the heredoc {name} opened at line {line_number} is never closed"
                    )
                line = lines[index]
                index += 1
                if chomp:
                    line = line.lstrip("\t")
                if line.rstrip() == name:
                    break
                body.append(line)
            heredocs.append(Heredoc(name, "\n".join(body)))
    if keyword == "FROM" and not rest:
        raise DockerfileError(f"FROM at line {line_number} names no image")
    return Instruction(keyword, rest, tuple(flags), tuple(heredocs), line_number), index


# --- variables -------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+])(?P<word>.*))?", re.S)
#: Arguments BuildKit sets itself; their values only pick a platform.
_AUTOMATIC_ARGS = _names(
    """
    BUILDARCH BUILDOS BUILDPLATFORM BUILDVARIANT TARGETARCH TARGETOS TARGETPLATFORM
    TARGETVARIANT
    """
)


def expand(text: str, values: Mapping[str, str | None]) -> str | None:
    """``$X``, ``${X}``, ``${X:-word}``, ``${X:+word}`` as Docker substitutes them, with
    the defaults in ``values``; None when a variable has no value and no default."""
    unresolved = False

    def one(match: re.Match[str]) -> str:
        nonlocal unresolved
        spec = match.group("braced") if match.group("braced") is not None else match["bare"]
        parsed = _BRACED.fullmatch(spec)
        if parsed is None:
            unresolved = True
            return ""
        name, op, word = parsed["name"], parsed["op"], parsed["word"] or ""
        value = values.get(name)
        if value is None and name in _AUTOMATIC_ARGS:
            value = name.lower()
        if op is None:
            if value is None:
                unresolved = True
            return value or ""
        is_set = value is not None and (value != "" or not op.startswith(":"))
        if op.endswith("-"):
            return value if is_set and value is not None else word
        return word if is_set else ""

    result = _VARIABLE.sub(one, text)
    return None if unresolved else result


def _arg_definitions(arguments: str) -> Iterator[tuple[str, str | None]]:
    for word in _words(arguments):
        name, sep, default = word.partition("=")
        yield name, default if sep else None


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError as e:
        raise DockerfileError(f"unbalanced quotes in {text[:60]!r}") from e


def _assignments(instruction: Instruction) -> list[tuple[str, str]]:
    """ENV and LABEL pairs; ``ENV NAME value`` is the legacy one-pair form."""
    text = instruction.arguments
    words = _words(text)
    if not words:
        return []
    if instruction.keyword == "ENV" and "=" not in words[0]:
        name, _, value = text.strip().partition(" ")
        return [(name, " ".join(_words(value)))]
    return [(name, value) for name, _, value in (w.partition("=") for w in words)]


# --- image references ------------------------------------------------------------------------

_REFERENCE = re.compile(r"[a-z0-9][a-z0-9._:/@+-]*")
_DOCKER_HUB = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def repository(reference: str) -> str | None:
    """``python:3.12`` → ``docker.io/library/python``: the registry and repository of an
    image reference without its tag or digest. None when it is not a reference."""
    ref = reference.strip().lower()
    if not _REFERENCE.fullmatch(ref):
        return None
    ref = ref.split("@", 1)[0]
    if ref.rfind(":") > ref.rfind("/"):
        ref = ref[: ref.rfind(":")]
    first, slash, remainder = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", ref
    if registry in _DOCKER_HUB:
        registry = "docker.io"
        if "/" not in path:
            path = "library/" + path
    if not path or "//" in path or path.endswith("/"):
        return None
    return f"{registry}/{path}"


# --- the model of a Dockerfile ---------------------------------------------------------------


@dataclass
class _Stage:
    index: int
    name: str | None
    variables: dict[str, str | None] = field(default_factory=dict)
    downloads: dict[str, int] = field(default_factory=dict)
    """Files fetched so far, by name, with the instruction that fetched each."""
    folders: dict[str, int] = field(default_factory=dict)
    """Folders cloned so far, by name, with the instruction that cloned each."""

    def downloaded(self, word: str) -> int | None:
        """The instruction that fetched the file or folder a word names, if any did."""
        path = word.strip("'\"")
        where = self.downloads.get(_basename(path))
        if where is not None:
            return where
        parts = [p.lower() for p in path.split("/") if p]
        return next((self.folders[p] for p in parts if p in self.folders), None)


@dataclass(frozen=True)
class _Finding:
    code: str
    message: str
    involved: frozenset[int]


@dataclass(frozen=True)
class _From:
    index: int
    raw: str
    repository: str | None
    """None when the reference cannot be resolved; "" for a stage or scratch."""


# --- the check -------------------------------------------------------------------------------


def dockerfile_refusals(path: str, before: bytes | None, after: bytes | None) -> list[Refusal]:
    """Refusals for what the edit adds to a Dockerfile; see the module docstring."""
    if after is None:
        return []
    shown = show(path)
    try:
        new = parse_dockerfile(_decode(after))
    except DockerfileError as e:
        return [
            Refusal("dockerfile_unreadable", f"{shown} cannot be parsed: {show(str(e))}.", path)
        ]
    old: Dockerfile | None = None
    if before is not None:
        try:
            old = parse_dockerfile(_decode(before))
        except DockerfileError:
            old = None  # everything in the new file counts as added
    old_keys = [i.key() for i in old.instructions] if old else []
    added = _added(old_keys, [i.key() for i in new.instructions])

    try:
        findings = list(_findings(new))
    except DockerfileError as e:
        return [
            Refusal("dockerfile_unreadable", f"{shown} cannot be parsed: {show(str(e))}.", path)
        ]
    refusals: list[Refusal] = []
    seen: set[tuple[str, str]] = set()

    def refuse(code: str, message: str) -> None:
        if (code, message) not in seen:
            seen.add((code, message))
            # The message quotes the model's text: show() escapes what a terminal would obey.
            refusals.append(Refusal(code, f"{shown}: {show(message)}.", path))

    for finding in findings:
        if finding.involved & added:
            refuse(finding.code, finding.message)
    for code, message in _base_image_changes(old, new):
        refuse(code, message)
    removed = _final_user_removed(old, new)
    if removed:
        refuse("dockerfile_user_root", removed)
    return refusals


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DockerfileError("it is not UTF-8 text") from e


def _added(old: list[str], new: list[str]) -> frozenset[int]:
    """Indexes of the new instructions that are not the old ones in the same order."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    added: set[int] = set()
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            added.update(range(j1, j2))
    return frozenset(added)


def _stage_names(dockerfile: Dockerfile) -> list[str]:
    names = []
    for instruction in dockerfile.instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            if len(words) >= 3 and words[1].lower() == "as":
                names.append(words[2].lower())
    return names


def _froms(dockerfile: Dockerfile) -> Iterator[_From]:
    """Every FROM with the repository it pulls, after global ARG defaults."""
    global_args: dict[str, str | None] = {}
    stages: list[str] = []
    in_stages = False
    for index, instruction in enumerate(dockerfile.instructions):
        if instruction.keyword == "ARG" and not in_stages:
            global_args.update(_arg_definitions(instruction.arguments))
            continue
        if instruction.keyword != "FROM":
            continue
        in_stages = True
        words = instruction.arguments.split()
        raw = words[0]
        stage_name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
        resolved = expand(raw, global_args)
        if resolved is not None and (resolved.lower() in stages or resolved.lower() == "scratch"):
            yield _From(index, raw, "")
        else:
            yield _From(index, raw, repository(resolved) if resolved is not None else None)
        if stage_name:
            stages.append(stage_name)


def _base_image_changes(old: Dockerfile | None, new: Dockerfile) -> Iterator[tuple[str, str]]:
    known: set[str] = set()
    unresolved: set[str] = set()
    if old is not None:
        for source in _froms(old):
            if source.repository is None:
                unresolved.add(source.raw)
            elif source.repository:
                known.add(source.repository)
    for source in _froms(new):
        line = new.instructions[source.index].line
        if source.repository is None and source.raw not in unresolved:
            yield (
                "dockerfile_from_changed",
                f"the image of FROM {source.raw} at line {line} cannot be resolved",
            )
        elif source.repository and source.repository not in known:
            yield (
                "dockerfile_from_changed",
                f"FROM at line {line} would pull from {source.repository}, "
                "a repository it did not use before",
            )
    new_syntax = new.directives.get("syntax")
    old_syntax = old.directives.get("syntax") if old else None
    if new_syntax is not None and new_syntax != old_syntax:
        new_repo = repository(new_syntax)
        if new_repo is None or old_syntax is None or repository(old_syntax) != new_repo:
            yield (
                "dockerfile_from_changed",
                f"the syntax directive would run the frontend image {new_syntax}",
            )


def _final_user_removed(old: Dockerfile | None, new: Dockerfile) -> str | None:
    if old is None:
        return None
    old_user = _final_user(old)
    if old_user is None or _is_root(old_user):
        return None
    if _final_user(new) is None:
        return f"the final stage would no longer run as {old_user} but as the image's default"
    return None


def _final_user(dockerfile: Dockerfile) -> str | None:
    user = None
    for instruction in dockerfile.instructions:
        if instruction.keyword == "FROM":
            user = None
        elif instruction.keyword == "USER":
            user = instruction.arguments.strip()
    return user


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip().lower()
    return name == "root" or (name.isdigit() and int(name) == 0)


def _findings(dockerfile: Dockerfile) -> Iterator[_Finding]:
    """What each instruction does that a fix may not add, with the instructions involved."""
    all_stages = set(_stage_names(dockerfile))
    global_args: dict[str, str | None] = {}
    stage: _Stage | None = None
    stage_count = 0
    for index, instruction in enumerate(dockerfile.instructions):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            stage = _Stage(stage_count, name, variables=dict(global_args))
            stage_count += 1
            continue
        if stage is None:
            if instruction.keyword == "ARG":
                global_args.update(_arg_definitions(instruction.arguments))
            continue
        yield from _instruction_findings(instruction, index, stage, all_stages)
        if instruction.keyword == "ONBUILD":
            inner, _ = _instruction(instruction.arguments, [], 0, instruction.line)
            yield from _instruction_findings(inner, index, stage, all_stages)


def _instruction_findings(
    instruction: Instruction, index: int, stage: _Stage, stages: set[str]
) -> Iterator[_Finding]:
    keyword, line = instruction.keyword, instruction.line
    here = frozenset({index})

    def finding(code: str, message: str, involved: frozenset[int] = here) -> _Finding:
        return _Finding(code, f"{keyword} at line {line} {message}", involved)

    if keyword in ("ARG", "ENV", "LABEL"):
        pairs = (
            list(_arg_definitions(instruction.arguments))
            if keyword == "ARG"
            else _assignments(instruction)
        )
        for name, value in pairs:
            if keyword == "ARG" and value is None and name in stage.variables:
                pass  # ``ARG X`` in a stage takes the global default
            elif keyword != "LABEL":
                known = value if value is None else expand(value, stage.variables)
                stage.variables[name] = known if known is not None else value
            if value and is_secret_name(name) and not _is_reference(value):
                yield finding("dockerfile_secret", f"gives {name} a literal value")
    elif keyword == "USER":
        user = expand(instruction.arguments.strip(), stage.variables)
        if user is None:
            yield finding("dockerfile_user_root", "names a user that cannot be resolved")
        elif _is_root(user):
            yield finding("dockerfile_user_root", "switches to root")
    elif keyword == "ADD":
        for source in _copy_sources(instruction):
            if _is_remote(source):
                yield finding("dockerfile_fetch_execute", f"fetches {source}")
        yield from _from_image(instruction, stages, finding)
    elif keyword == "COPY":
        yield from _from_image(instruction, stages, finding)
    elif keyword == "RUN":
        yield from _run_flags(instruction, stages, finding)
    if keyword in ("RUN", "CMD", "ENTRYPOINT", "HEALTHCHECK", "SHELL"):
        for problem, involved in _command_problems(instruction, index, stage):
            yield finding("dockerfile_fetch_execute", problem, involved)


def _is_reference(value: str) -> bool:
    return re.fullmatch(r"\$(?:[A-Za-z_]\w*|\{[A-Za-z_]\w*\})", value.strip()) is not None


def _copy_sources(instruction: Instruction) -> list[str]:
    words = instruction.exec_form
    if words is None:
        words = [w for w in instruction.arguments.split() if not w.startswith("<<")]
    return words[:-1]


def _is_remote(source: str) -> bool:
    lowered = source.lower()
    return "://" in lowered or lowered.startswith(("git@", "github.com/", "gitlab.com/"))


def _names_a_stage(value: str, stages: set[str]) -> bool:
    return value.isdigit() or value.lower() in stages


def _from_image(
    instruction: Instruction, stages: set[str], finding: _FindingFactory
) -> Iterator[_Finding]:
    for value in instruction.flag_values("from"):
        if not _names_a_stage(value, stages):
            yield finding("dockerfile_fetch_execute", f"copies from the image {value}")


def _mount_options(spec: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        options[key.strip().lower()] = value.strip() if sep else "true"
    return options


def _run_flags(
    instruction: Instruction, stages: set[str], finding: _FindingFactory
) -> Iterator[_Finding]:
    for name, value in instruction.flags:
        if name not in RUN_FLAGS:
            yield finding("dockerfile_privileged", f"uses the flag --{name}")
        elif name == "network" and value.lower() == "host":
            yield finding("dockerfile_privileged", "uses the host's network")
        elif name == "security" and value.lower() != "sandbox":
            yield finding("dockerfile_privileged", f"runs with --security={value}")
        elif name == "mount":
            options = _mount_options(value)
            kind = options.get("type", "bind").lower()
            if kind in ("secret", "ssh"):
                yield finding("dockerfile_secret", f"mounts a {kind}")
            source = options.get("from")
            if source is not None and not _names_a_stage(source, stages):
                yield finding("dockerfile_fetch_execute", f"mounts the image {source}")


class _FindingFactory(Protocol):
    """The ``finding`` helper inside _instruction_findings."""

    def __call__(self, code: str, message: str, involved: frozenset[int] = ...) -> _Finding: ...


# --- shell commands --------------------------------------------------------------------------

#: Tools a download may be piped into: they unpack, check or print; none runs its input.
SAFE_PIPE_CONSUMERS = _names(
    """
    base64 bunzip2 bzip2 cat cut egrep fgrep gpg grep gunzip gzip head jq md5sum sed
    sha1sum sha256sum sha512sum shasum sort tail tar tee tr uniq unxz unzstd wc xz zcat
    zstd
    """
)
#: Commands that may name a downloaded file without running it.
SAFE_WITH_DOWNLOADS = SAFE_PIPE_CONSUMERS | _names(
    "[ cd cmp cp diff du echo file gpgv ln ls mkdir mv printf rm rmdir stat test unzip"
)
#: Programs that fetch from the network.
FETCHERS = _names(
    """
    aria2c aws axel certutil curl fetch ftp get gh git gsutil hg http https
    invoke-restmethod invoke-webrequest irm iwr lwp-download lwp-request lynx nc ncat
    oras socat svn tftp w3m wget
    """
)
_SHELLS = frozenset(
    {"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh", "pwsh"}
)
_INTERPRETER = re.compile(
    r"(?:python|pypy|perl|ruby|php|lua|luajit|tclsh|node|nodejs|deno|bun|rscript|irb|"
    r"powershell|osascript|jshell|groovy)[0-9.]*"
)
#: Commands that only run another: skipped to find the one that runs.
_WRAPPERS = _names(
    """
    builtin busybox command doas env exec ionice nice nohup setsid stdbuf sudo time
    timeout unbuffer
    """
)
_WRAPPER_OPTIONS_WITH_VALUE = frozenset({"-u", "-g", "-C", "-D", "-p", "-r", "-t", "-U", "-n"})
#: Wrappers whose first word is a user, not a command.
_USER_WRAPPERS = frozenset({"gosu", "su-exec"})
_SHELL_KEYWORDS = frozenset(
    {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}"}
)
_FETCH_API = re.compile(
    r"urlopen|urlretrieve|urllib|requests\.get|http\.client|httpx|LWP|HTTP::Tiny|open-uri|"
    r"URI\.open|Net::HTTP|https?\.get|fetch\(|axios|Invoke-WebRequest|DownloadString|"
    r"WebClient|curl_exec|file_get_contents\(\s*['\"]https?",
    re.I,
)
_EXEC_API = re.compile(
    r"\bexec\b|\beval\b|os\.system|subprocess|popen|spawn|child_process|Function\(|\bsystem\b|"
    r"runpy|compile\(|instance_eval|\bIEX\b|Invoke-Expression|`",
    re.I,
)
_MAX_DEPTH = 8


@dataclass
class _Word:
    text: str
    substitutions: list[tuple[str, str]] = field(default_factory=list)
    """(``$`` or ``<``, inner script): command and process substitutions in the word."""


@dataclass
class _Command:
    words: list[_Word] = field(default_factory=list)
    redirects: list[tuple[str, str]] = field(default_factory=list)


def _lex(script: str) -> list[list[_Command]]:
    """A shell script as pipelines of simple commands, as far as a check needs: quotes,
    escapes, ``$(…)``, backticks, ``<(…)``, redirections, ``| || && ; &``, comments."""
    lexer = _Lexer(script)
    lexer.run()
    return [
        [c for c in pipeline if c.words or c.redirects]
        for pipeline in lexer.pipelines
        if any(c.words for c in pipeline)
    ]


class _Lexer:
    def __init__(self, script: str) -> None:
        self.script = script
        self.pipelines: list[list[_Command]] = [[_Command()]]
        self.word: list[str] = []
        self.subs: list[tuple[str, str]] = []
        self.in_word = False
        self.redirect: str | None = None

    def add(self, text: str) -> None:
        self.word.append(text)
        self.in_word = True

    def end_word(self) -> None:
        if self.in_word:
            command = self.pipelines[-1][-1]
            text = "".join(self.word)
            if self.redirect is not None:
                command.redirects.append((self.redirect, text))
                self.redirect = None
            else:
                command.words.append(_Word(text, self.subs))
        self.word, self.subs, self.in_word = [], [], False

    def new_command(self, *, pipe: bool) -> None:
        self.end_word()
        if pipe:
            self.pipelines[-1].append(_Command())
        else:
            self.pipelines.append([_Command()])

    def substitution(self, kind: str, inner: str) -> None:
        self.subs.append((kind, inner))
        self.add("$(…)" if kind == "$" else "<(…)")

    def run(self) -> None:
        script, i = self.script, 0
        while i < len(script):
            i = self.step(script, i)
        self.end_word()

    def step(self, script: str, i: int) -> int:
        """Consume what starts at ``i``; the index after it."""
        c = script[i]
        nxt = script[i + 1 : i + 2]
        if c == "\\":
            if nxt != "\n":
                self.add(nxt)
            return i + 2
        if c == "'":
            end = _find(script, "'", i + 1)
            self.add(script[i + 1 : end])
            return end + 1
        if c == '"':
            self.in_word = True
            return _double_quoted(script, i + 1, self.word, self.subs)
        if c == "`" or (c == "$" and nxt == "("):
            inner, after = _backquoted(script, i) if c == "`" else _balanced(script, i + 1)
            self.substitution("$", inner)
            return after
        if c in "<>" and nxt == "(":
            self.end_word()
            inner, after = _balanced(script, i + 1)
            self.substitution("<", inner)
            return after
        if c in " \t":
            self.end_word()
            return i + 1
        if c == "#" and not self.in_word:
            return _find(script, "\n", i)
        if c in "\n;()":
            self.new_command(pipe=False)
            return i + 1
        if c == "&" and nxt != ">":
            self.new_command(pipe=False)
            return i + (2 if nxt == "&" else 1)
        if c == "|":
            self.new_command(pipe=nxt != "|")
            return i + (2 if nxt in "|&" and nxt else 1)
        if c in "<>&":
            return self.redirection(script, i)
        self.add(c)
        return i + 1

    def redirection(self, script: str, i: int) -> int:
        if self.in_word and "".join(self.word).isdigit():
            self.word, self.in_word = [], False  # a file descriptor: 2>
        self.end_word()
        operator = script[i]
        i += 1
        while i < len(script) and script[i] in "<>|&":
            operator += script[i]
            i += 1
        if operator.endswith("&") and operator != "&":
            self.redirect = "&"  # 2>&1: a descriptor, not a file
        else:
            self.redirect = "<" if operator.startswith("<") else ">"
        return i


def _find(script: str, needle: str, start: int) -> int:
    found = script.find(needle, start)
    return len(script) if found < 0 else found


def _backquoted(script: str, i: int) -> tuple[str, int]:
    end = _find(script, "`", i + 1)
    return script[i + 1 : end], end + 1


def _double_quoted(script: str, i: int, word: list[str], subs: list[tuple[str, str]]) -> int:
    n = len(script)
    while i < n and script[i] != '"':
        c = script[i]
        if c == "\\" and i + 1 < n:
            word.append(script[i + 1])
            i += 2
        elif c == "$" and i + 1 < n and script[i + 1] == "(":
            inner, i = _balanced(script, i + 1)
            subs.append(("$", inner))
            word.append("$(…)")
        elif c == "`":
            inner, i = _backquoted(script, i)
            subs.append(("$", inner))
            word.append("$(…)")
        else:
            word.append(c)
            i += 1
    return i + 1


def _balanced(script: str, i: int) -> tuple[str, int]:
    """The text inside the parentheses opening at ``i`` and the index after them."""
    depth, j, quote = 0, i, ""
    while j < len(script):
        c = script[j]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                j += 1
        elif c in "'\"":
            quote = c
        elif c == "\\":
            j += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return script[i + 1 : j], j + 1
        j += 1
    return script[i + 1 :], len(script)


def _basename(word: str) -> str:
    return word.rstrip("/").rsplit("/", 1)[-1].lower()


def _effective(words: list[_Word]) -> list[_Word]:
    """The words from the command that actually runs: after assignments, shell keywords
    and wrappers such as sudo, env, nice, gosu."""
    i = 0
    while i < len(words):
        text = words[i].text
        name = _basename(text)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", text, re.S) or text in _SHELL_KEYWORDS:
            i += 1
        elif name in _WRAPPERS:
            i += 1
            while i < len(words) and (
                words[i].text.startswith("-") or re.fullmatch(r"\w+=.*", words[i].text, re.S)
            ):
                takes_value = words[i].text in _WRAPPER_OPTIONS_WITH_VALUE
                i += 2 if takes_value else 1
            if name == "timeout" and i < len(words):
                i += 1  # the duration
        elif name in _USER_WRAPPERS:
            i += 2
        else:
            break
    return words[i:]


def _is_interpreter(name: str) -> bool:
    return name in _SHELLS or _INTERPRETER.fullmatch(name) is not None


@dataclass(frozen=True)
class _Call:
    """What an interpreter call runs: an inline script or code, a file, or its stdin."""

    script: str | None = None
    code: str | None = None
    reads_stdin: bool = False


def _interpreter_call(name: str, args: list[str]) -> _Call:
    if name in ("eval",):
        return _Call(script=" ".join(args))
    if name in ("source", "."):
        return _Call(reads_stdin=bool(args) and args[0] in ("/dev/stdin", "-"))
    inline_flags = {"-c"} if name in _SHELLS else {"-c", "-e", "-E", "-r", "-p", "--eval"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg == "-":
            return _Call(reads_stdin=True)
        if not arg.startswith(("-", "+")):
            break
        short = arg.startswith("-") and not arg.startswith("--")
        takes_inline = arg in inline_flags or (name in _SHELLS and short and "c" in arg[1:])
        if takes_inline and i + 1 < len(args):
            text = args[i + 1]
            return _Call(script=text) if name in _SHELLS else _Call(code=text)
        if name in _SHELLS and short and "s" in arg[1:]:
            return _Call(reads_stdin=True)
        i += 1
    return _Call(reads_stdin=i >= len(args))


#: The option that names a fetching tool's output file, short and long.
_OUTPUT_OPTIONS = {
    "curl": ("o", ("--output",)),
    "wget": ("O", ("--output-document",)),
    "aria2c": ("o", ("--out",)),
}
#: Tools that save a download under the URL's last name unless told otherwise.
_SAVES_BY_NAME = frozenset({"wget", "aria2c", "axel", "lwp-download", "fetch"})


def _downloads(name: str, args: list[str], redirects: list[tuple[str, str]]) -> set[str]:
    """The names of the files a fetching command writes (curl -o, -O, wget, ``> file``)."""
    outputs = {_basename(target) for kind, target in redirects if kind == ">"}
    urls = [a for a in args if "://" in a]
    letter, long_options = _OUTPUT_OPTIONS.get(name, ("o", ()))
    explicit = remote_name = False
    i = 0
    while i < len(args):
        arg = args[i]
        following = args[i + 1] if i + 1 < len(args) else ""
        i += 1
        option, equals, value = arg.partition("=")
        if option in long_options:
            explicit = True
            if not equals:
                value = following
                i += 1
            outputs.add(_basename(value))
        elif option in ("--remote-name", "--remote-name-all"):
            remote_name = True
        elif re.fullmatch(r"-[A-Za-z].*", arg) and not arg.startswith("--"):
            letters = arg[1:]
            position = letters.find(letter)
            if name == "curl" and "O" in (letters if position < 0 else letters[:position]):
                remote_name = True
            if position >= 0:
                explicit = True
                tail = letters[position + 1 :]
                if not tail:
                    tail = following
                    i += 1
                outputs.add(_basename(tail))
    if remote_name or (name in _SAVES_BY_NAME and not explicit):
        outputs.update(_basename(u.split("?", 1)[0].split("#", 1)[0]) for u in urls)
    return outputs - {"", "-"}


def _clones(args: list[str]) -> set[str]:
    """The folder ``git clone`` writes."""
    if "clone" not in args:
        return set()
    rest = [a for a in args[args.index("clone") + 1 :] if not a.startswith("-")]
    if len(rest) >= 2:
        return {_basename(rest[1])}
    return {_basename(rest[0]).removesuffix(".git")} if rest else set()


def _script_has_fetcher(script: str, depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return True
    for pipeline in _lex(script):
        for command in pipeline:
            if _is_fetcher(command, depth + 1):
                return True
    return False


def _is_fetcher(command: _Command, depth: int) -> bool:
    words = _effective(command.words)
    if not words:
        return False
    name = _basename(words[0].text)
    texts = [w.text for w in words]
    if name in FETCHERS or any("://" in t for t in texts):
        return True
    if _is_interpreter(name) or name in ("eval", "source", "."):
        call = _interpreter_call(name, texts[1:])
        if call.code is not None and _FETCH_API.search(call.code):
            return True
        if call.script is not None and _script_has_fetcher(call.script, depth + 1):
            return True
    return any(_script_has_fetcher(inner, depth + 1) for w in words for _, inner in w.substitutions)


Problem = tuple[str, frozenset[int]]
"""Why a command fetches and executes code, and the instructions that do it."""


def _script_problems(script: str, stage: _Stage, index: int, depth: int = 0) -> Iterator[Problem]:
    """Why running this shell script fetches and executes code; empty when it does not.
    Records what it downloads in the stage, for the instructions after it."""
    here = frozenset({index})
    if depth > _MAX_DEPTH:
        yield "nests commands too deeply to be checked", here
        return
    inside: int | None = None  # the instruction that cloned the folder the script is in
    for pipeline in _lex(script):
        producers: list[_Command] = []
        for command in pipeline:
            words = _effective(command.words)
            if not words:
                producers.append(command)
                continue
            name = _basename(words[0].text)
            texts = [w.text for w in words]
            fetcher = _is_fetcher(command, depth)
            interpreter = _is_interpreter(name) or name in ("eval", "source", ".")
            call = _interpreter_call(name, texts[1:]) if interpreter else _Call()
            if any(_is_fetcher(p, depth) for p in producers) and name not in SAFE_PIPE_CONSUMERS:
                yield f"pipes a download into {name}", here
            elif producers and call.reads_stdin and not _only_local(producers):
                yield f"pipes a command's output into {name}", here
            if call.script is not None:
                yield from _script_problems(call.script, stage, index, depth + 1)
            code = call.code or ""
            if _FETCH_API.search(code) and _EXEC_API.search(code):
                yield f"runs {name} code that downloads and executes", here
            for position, word in enumerate(words):
                for kind, inner in word.substitutions:
                    yield from _script_problems(inner, stage, index, depth + 1)
                    if not _script_has_fetcher(inner, depth + 1):
                        continue
                    if kind == "$" and position == 0:
                        yield "runs a command it downloads", here
                    elif (kind == "<" and name not in SAFE_PIPE_CONSUMERS) or (
                        kind == "$" and interpreter
                    ):
                        yield f"runs {name} on a download", here
            _record_downloads(name, texts, command, stage, index, fetcher=fetcher)
            if name == "cd" and len(texts) > 1:
                inside = stage.downloaded(texts[1])
            elif not fetcher and name not in SAFE_WITH_DOWNLOADS:
                yield from _runs_download(name, texts, command, stage, here=here, inside=inside)
            producers.append(command)


def _record_downloads(
    name: str, texts: list[str], command: _Command, stage: _Stage, index: int, *, fetcher: bool
) -> None:
    if fetcher:
        if name == "git":
            for folder in _clones(texts[1:]):
                stage.folders.setdefault(folder, index)
        for output in _downloads(name, texts[1:], command.redirects):
            stage.downloads.setdefault(output, index)
    elif (
        name in ("mv", "cp", "ln")
        and len(texts) >= 3
        and not texts[-1].endswith("/")
        and any(stage.downloaded(t) is not None for t in texts[1:-1])
    ):
        stage.downloads.setdefault(_basename(texts[-1]), index)


def _runs_download(
    name: str,
    texts: list[str],
    command: _Command,
    stage: _Stage,
    *,
    here: frozenset[int],
    inside: int | None,
) -> Iterator[Problem]:
    for text in texts + [target for kind, target in command.redirects if kind == "<"]:
        where = stage.downloaded(text)
        if where is not None:
            yield f"runs {name} on the download {text}", here | {where}
            return
    if inside is not None:
        yield f"runs {name} in a cloned folder", here | {inside}


def _only_local(producers: Iterable[_Command]) -> bool:
    for command in producers:
        words = _effective(command.words)
        if not words:
            continue
        if _basename(words[0].text) not in ("echo", "printf", "cat", "true", ":"):
            return False
        if any(w.substitutions or "://" in w.text for w in words):
            return False
    return True


def _command_problems(instruction: Instruction, index: int, stage: _Stage) -> list[Problem]:
    """Problems of the commands an instruction runs, each with the instructions involved
    (a download in an earlier RUN counts as much as the one that runs it)."""
    arguments = instruction.arguments
    if instruction.keyword == "HEALTHCHECK":
        head, _, arguments = arguments.strip().partition(" ")
        if head.upper() != "CMD":
            return []
        instruction = Instruction("CMD", arguments.strip())
    problems: list[Problem] = []
    words = instruction.exec_form
    if words is not None:
        if instruction.keyword == "SHELL":
            words = [*words, "true"]  # what the shell would run for ``RUN true``
        problems.extend(_script_problems(shlex.join(words), stage, index))
    elif instruction.keyword != "SHELL":
        problems.extend(_script_problems(_HEREDOC.sub(" ", arguments), stage, index))
        for heredoc in instruction.heredocs:
            problems.extend(_script_problems(heredoc.body, stage, index))
            if _FETCH_API.search(heredoc.body) and _EXEC_API.search(heredoc.body):
                problems.append(("runs code that downloads and executes", frozenset({index})))
    return list(dict.fromkeys(problems))
