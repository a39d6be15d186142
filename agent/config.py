"""Settings, read from the environment (and overridden by command-line flags).

Settings come in groups, one small frozen dataclass for each part of medic: the Docker
gateway takes ``DockerSettings``, the supervisor ``HealingSettings``, the fix maker
``FixesSettings``, and so on. ``Settings`` holds one of each and the few settings of the
whole process; the command line (agent/cli.py) reads it and hands each part its group.

Every setting names the environment variable it is read from in its field's metadata
(``field(metadata={"env": "MEDIC_…"})``), has a default pinned by a test, a docstring
saying what it does, and a validation message that tells the operator what to write
instead. A group checks its values when it is made, so an invalid one cannot exist.
The environment is a parameter, never read behind the caller's back, so tests pass
their own.
"""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from agent.errors import ConfigError

#: The playbooks shipped with medic, used when MEDIC_PLAYBOOKS is not set.
BUNDLED_PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

#: What MEDIC_LLM_PROVIDER may name, each with the model it asks when MEDIC_LLM_MODEL is
#: unset. ``openai`` is any server speaking OpenAI's chat completions; a local one
#: (Ollama, vLLM, llama.cpp's server) serves models by names of its own, so set
#: MEDIC_LLM_MODEL for it.
DEFAULT_MODELS: Mapping[str, str] = {"anthropic": "claude-sonnet-5-5", "openai": "gpt-4.1-mini"}

#: What MEDIC_FIX_ALLOW may name: the kinds of file a fix changes only when allowed.
FIX_ALLOW_KINDS = ("compose", "dockerfile", "dependencies")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``30``, ``"30"``, ``"30s"``, ``"5m"``, ``"1.5h"``; ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError("a duration cannot be true or false")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration; write seconds like 30, or 30s, 5m, 1h")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


def _at_least(checks: tuple[tuple[str, int, int], ...]) -> None:
    """ConfigError for the first ``(variable, value, least)`` whose value is too small."""
    for var, value, least in checks:
        if value < least:
            raise ConfigError(f"{var} must be at least {least}.")


def _split(text: str) -> list[str]:
    """The words of a list written with commas or spaces between them."""
    return [word for word in re.split(r"[\s,]+", text) if word]


@dataclass(frozen=True)
class DockerSettings:
    """How medic talks to the Docker engine (agent/engine/gateway.py)."""

    retry_attempts: int = field(default=4, metadata={"env": "MEDIC_DOCKER_RETRY_ATTEMPTS"})
    """Tries of one Docker call on a temporary error (MEDIC_DOCKER_RETRY_ATTEMPTS)."""

    retry_max_delay: float = field(default=8.0, metadata={"env": "MEDIC_DOCKER_RETRY_MAX_DELAY"})
    """Longest pause between two tries of one Docker call (MEDIC_DOCKER_RETRY_MAX_DELAY)."""

    def __post_init__(self) -> None:
        if self.retry_attempts < 1:
            raise ConfigError("MEDIC_DOCKER_RETRY_ATTEMPTS must be at least 1.")


@dataclass(frozen=True)
class StoreSettings:
    """Where incidents and observations are kept (agent/store/)."""

    database_url: str | None = field(default=None, metadata={"env": "MEDIC_DATABASE_URL"})
    """libpq URL of the incident database (MEDIC_DATABASE_URL), like
    ``postgresql://medic:secret@db:5432/medic``. Unset: incidents are kept in memory only."""

    state_dir: Path = field(default=Path(".state"), metadata={"env": "MEDIC_STATE_DIR"})
    """Folder for medic's own files (MEDIC_STATE_DIR): the spool of incident changes
    written while Postgres is away (``spool.jsonl``)."""

    retention_days: int = field(default=30, metadata={"env": "MEDIC_RETENTION_DAYS"})
    """Days health observations are kept (MEDIC_RETENTION_DAYS); incidents are kept for good."""

    observation_interval: float = field(
        default=300.0, metadata={"env": "MEDIC_OBSERVATION_INTERVAL"}
    )
    """A container's observation is stored when its state or health changed, or when this
    many seconds passed since the last one stored (MEDIC_OBSERVATION_INTERVAL)."""

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ConfigError("MEDIC_RETENTION_DAYS must be at least 1, like 30.")
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(
                "MEDIC_DATABASE_URL must be a libpq URL like "
                "postgresql://medic:secret@db:5432/medic."
            )


@dataclass(frozen=True)
class HealingSettings:
    """How the supervisor watches, decides and acts (agent/supervisor.py, agent/healing/)."""

    interval: float = field(default=30.0, metadata={"env": "MEDIC_INTERVAL"})
    """Seconds between polls (MEDIC_INTERVAL, or ``--interval``). Docker events trigger
    checks in between."""

    playbooks: Path = field(default=BUNDLED_PLAYBOOKS, metadata={"env": "MEDIC_PLAYBOOKS"})
    """Playbook file or folder (MEDIC_PLAYBOOKS, or ``--playbooks``)."""

    settle: float = field(default=60.0, metadata={"env": "MEDIC_SETTLE"})
    """Seconds a container must stay healthy before its incidents are resolved (MEDIC_SETTLE)."""

    crash_loop_deaths: int = field(default=3, metadata={"env": "MEDIC_CRASH_LOOP_DEATHS"})
    """Deaths within ``crash_loop_window`` that make a crash loop (MEDIC_CRASH_LOOP_DEATHS)."""

    crash_loop_window: float = field(default=300.0, metadata={"env": "MEDIC_CRASH_LOOP_WINDOW"})
    """Seconds over which deaths are counted (MEDIC_CRASH_LOOP_WINDOW)."""

    manual_stop_grace: float = field(default=300.0, metadata={"env": "MEDIC_MANUAL_STOP_GRACE"})
    """A death this many seconds after a ``docker kill`` or ``docker stop`` is a person's
    doing, not a crash (MEDIC_MANUAL_STOP_GRACE)."""

    workers: int = field(default=4, metadata={"env": "MEDIC_WORKERS"})
    """Containers healed at the same time (MEDIC_WORKERS); one container is never
    healed twice at once."""

    stop_timeout: float = field(default=10.0, metadata={"env": "MEDIC_STOP_TIMEOUT"})
    """Seconds a restart or stop waits for the process to exit, when the playbook does
    not say (MEDIC_STOP_TIMEOUT). Also how long ``medic run`` waits for in-flight
    actions when asked to stop."""

    dry_run: bool = field(default=False, metadata={"env": "MEDIC_DRY_RUN"})
    """Detect and decide, but take no action (MEDIC_DRY_RUN, or ``--dry-run``)."""

    leader_election: bool = field(default=True, metadata={"env": "MEDIC_LEADER_ELECTION"})
    """With MEDIC_DATABASE_URL, the medics of one scope elect one leader by a lease in
    Postgres, and the others stand by (MEDIC_LEADER_ELECTION, docs/ha.md). ``false``:
    this medic always acts, also while Postgres is unreachable for longer than a lease;
    run only one medic per scope then. A dry run never takes the lease."""

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigError("MEDIC_INTERVAL must be more than 0 seconds, like 30.")
        if self.workers < 1:
            raise ConfigError("MEDIC_WORKERS must be at least 1.")
        if self.crash_loop_deaths < 2:
            raise ConfigError("MEDIC_CRASH_LOOP_DEATHS must be at least 2.")


@dataclass(frozen=True)
class NotifySettings:
    """Where notifications go and how many (agent/notify.py)."""

    urls: str = field(default="", metadata={"env": "MEDIC_NOTIFY_URLS"})
    """Where notifications go (MEDIC_NOTIFY_URLS): apprise URLs such as
    ``slack://…`` or ``json://host/path``, separated by commas or spaces."""

    limit: int = field(default=6, metadata={"env": "MEDIC_NOTIFY_LIMIT"})
    """Notifications per hour for one service and signal (MEDIC_NOTIFY_LIMIT)."""

    @property
    def targets(self) -> list[str]:
        """MEDIC_NOTIFY_URLS as a list of URLs."""
        return _split(self.urls)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ConfigError("MEDIC_NOTIFY_LIMIT must be at least 1 notification an hour.")


#: The shortest console token medic accepts.
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class HttpSettings:
    """medic's own HTTP server in ``medic run`` (agent/http.py)."""

    port: int = field(default=8080, metadata={"env": "MEDIC_HTTP_PORT"})
    """Port of /healthz, /readyz, /metrics and /status in ``medic run`` (MEDIC_HTTP_PORT);
    0 turns the server off."""

    ui_token: str | None = field(default=None, repr=False, metadata={"env": "MEDIC_UI_TOKEN"})
    """The review console's secret (MEDIC_UI_TOKEN): people sign in with it, scripts send
    it as ``Authorization: Bearer``. Unset, the console and its API are off and only the
    health endpoints answer (docs/review.md)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError("MEDIC_HTTP_PORT must be a port from 1 to 65535, or 0 for none.")
        if self.ui_token is not None and len(self.ui_token.strip()) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"MEDIC_UI_TOKEN must be at least {MIN_TOKEN_LENGTH} characters, so that it "
                "cannot be guessed; make one with: openssl rand -base64 24"
            )


@dataclass(frozen=True)
class LlmSettings:
    """How escalated incidents are diagnosed (docs/escalation.md, agent/escalate/)."""

    provider: str = field(default="anthropic", metadata={"env": "MEDIC_LLM_PROVIDER"})
    """Who serves the model that diagnoses escalated incidents (MEDIC_LLM_PROVIDER):
    ``anthropic`` (Claude) or ``openai``, any server speaking OpenAI's chat completions,
    such as Ollama, vLLM or llama.cpp's server on your own host. Only the provider named
    is ever asked."""

    model: str | None = field(default=None, metadata={"env": "MEDIC_LLM_MODEL"})
    """The model, by the name its provider knows it (MEDIC_LLM_MODEL): for Ollama, a
    name ``ollama list`` shows. Unset: the provider's default (``DEFAULT_MODELS``;
    ``model_name`` is the one asked)."""

    base_url: str | None = field(default=None, metadata={"env": "MEDIC_LLM_BASE_URL"})
    """The provider's API address (MEDIC_LLM_BASE_URL), like ``http://ollama:11434/v1``.
    Unset: the SDK's own variable (ANTHROPIC_BASE_URL or OPENAI_BASE_URL), else the
    provider's public API."""

    api_key: str | None = field(default=None, repr=False, metadata={"env": "MEDIC_LLM_API_KEY"})
    """The key sent to the provider (MEDIC_LLM_API_KEY). Unset: the SDK's own variable
    (ANTHROPIC_API_KEY or OPENAI_API_KEY). A local server needs none."""

    daily_tokens: int = field(default=1_000_000, metadata={"env": "MEDIC_LLM_DAILY_TOKENS"})
    """Tokens (input + output, across all incidents) medic may spend on the model per UTC
    day (MEDIC_LLM_DAILY_TOKENS). When spent, the rule diagnosis stands and the output
    says so."""

    incident_tokens: int = field(default=150_000, metadata={"env": "MEDIC_LLM_INCIDENT_TOKENS"})
    """Tokens one incident's diagnosis may spend (MEDIC_LLM_INCIDENT_TOKENS)."""

    incident_calls: int = field(default=12, metadata={"env": "MEDIC_LLM_INCIDENT_CALLS"})
    """API calls one incident's diagnosis may make (MEDIC_LLM_INCIDENT_CALLS)."""

    max_steps: int = field(default=8, metadata={"env": "MEDIC_LLM_MAX_STEPS"})
    """Rounds of read-only repository tools the model may use before it must answer
    (MEDIC_LLM_MAX_STEPS)."""

    timeout: float = field(default=120.0, metadata={"env": "MEDIC_LLM_TIMEOUT"})
    """Seconds one API call may take (MEDIC_LLM_TIMEOUT)."""

    max_retries: int = field(default=2, metadata={"env": "MEDIC_LLM_MAX_RETRIES"})
    """Retries of one API call on 429, 529, 5xx and time-outs, by the SDK
    (MEDIC_LLM_MAX_RETRIES)."""

    diagnosis_window: float = field(default=86400.0, metadata={"env": "MEDIC_DIAGNOSIS_WINDOW"})
    """The same failure (its fingerprint) is diagnosed at most once this many seconds
    (MEDIC_DIAGNOSIS_WINDOW); a failed call is not retried within it either."""

    redact: str = field(default="", metadata={"env": "MEDIC_REDACT"})
    """More redaction patterns (MEDIC_REDACT): regular expressions, one per line. Whatever
    they match is replaced before anything leaves the host."""

    @property
    def model_name(self) -> str:
        """The model asked: MEDIC_LLM_MODEL, or the provider's default."""
        return self.model or DEFAULT_MODELS[self.provider]

    def __post_init__(self) -> None:
        if self.provider not in DEFAULT_MODELS:
            raise ConfigError(
                f"MEDIC_LLM_PROVIDER must be anthropic or openai, not {self.provider!r}; "
                "write openai for Ollama, vLLM, llama.cpp's server and other servers of "
                "OpenAI's chat completions."
            )
        if self.base_url is not None:
            parts = urllib.parse.urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"MEDIC_LLM_BASE_URL must be an http or https URL, like "
                    f"http://ollama:11434/v1, not {self.base_url!r}."
                )
        _at_least(
            (
                ("MEDIC_LLM_DAILY_TOKENS", self.daily_tokens, 0),
                ("MEDIC_LLM_INCIDENT_TOKENS", self.incident_tokens, 1),
                ("MEDIC_LLM_INCIDENT_CALLS", self.incident_calls, 1),
                ("MEDIC_LLM_MAX_STEPS", self.max_steps, 1),
                ("MEDIC_LLM_MAX_RETRIES", self.max_retries, 0),
            )
        )


@dataclass(frozen=True)
class FixesSettings:
    """How fix branches are made, checked and pushed (docs/fixes.md, agent/fixes/)."""

    repo: Path | None = field(default=None, metadata={"env": "MEDIC_REPO"})
    """The git repository the model may read and fix branches are made in (MEDIC_REPO). Its
    checked-out branch, index and working tree are never touched. Unset: no fix branches."""

    paths: str = field(default="", metadata={"env": "MEDIC_FIX_PATHS"})
    """Glob patterns of the files a fix may change (MEDIC_FIX_PATHS), separated by commas
    or spaces. Empty: every tracked file except the kinds medic always refuses."""

    max_files: int = field(default=5, metadata={"env": "MEDIC_FIX_MAX_FILES"})
    """Files one fix may touch (MEDIC_FIX_MAX_FILES)."""

    max_lines: int = field(default=200, metadata={"env": "MEDIC_FIX_MAX_LINES"})
    """Lines one fix may add and remove, together (MEDIC_FIX_MAX_LINES)."""

    remote: str | None = field(default=None, metadata={"env": "MEDIC_FIX_REMOTE"})
    """A git remote of MEDIC_REPO that fix branches are pushed to (MEDIC_FIX_REMOTE)."""

    allow: str = field(default="", metadata={"env": "MEDIC_FIX_ALLOW"})
    """Kinds of file a fix may change beyond application source and config
    (MEDIC_FIX_ALLOW), comma-separated, from ``compose``, ``dockerfile`` and
    ``dependencies``. Empty: none of them."""

    push: str = field(default="approved", metadata={"env": "MEDIC_FIX_PUSH"})
    """When a fix branch is pushed to MEDIC_FIX_REMOTE (MEDIC_FIX_PUSH): ``approved``
    (after a person approves it) or ``proposed`` (as soon as it is made, which runs the
    remote's CI, with its secrets, on what the model wrote)."""

    verify_cmd: str | None = field(default=None, metadata={"env": "MEDIC_VERIFY_CMD"})
    """A command run in a sandbox container holding a copy of each fix branch's tree
    (MEDIC_VERIFY_CMD), like ``pytest -q``; its exit status and output tail are stored
    with the fix. Never run on medic's host."""

    verify_image: str | None = field(default=None, metadata={"env": "MEDIC_VERIFY_IMAGE"})
    """The image MEDIC_VERIFY_CMD runs in (MEDIC_VERIFY_IMAGE). Unset: the fix's
    candidate image."""

    verify_timeout: float = field(default=600.0, metadata={"env": "MEDIC_VERIFY_TIMEOUT"})
    """Seconds MEDIC_VERIFY_CMD may take (MEDIC_VERIFY_TIMEOUT)."""

    verify_build_timeout: float = field(
        default=900.0, metadata={"env": "MEDIC_VERIFY_BUILD_TIMEOUT"}
    )
    """Seconds the candidate image's build may take (MEDIC_VERIFY_BUILD_TIMEOUT)."""

    verify_build_network: str = field(
        default="none", metadata={"env": "MEDIC_VERIFY_BUILD_NETWORK"}
    )
    """The network the candidate build's RUN steps get (MEDIC_VERIFY_BUILD_NETWORK):
    ``none``, or a network the operator names (``default``, ``bridge``, …)."""

    verify_memory_mb: int = field(default=1024, metadata={"env": "MEDIC_VERIFY_MEMORY_MB"})
    """Memory of a sandbox container, in MiB (MEDIC_VERIFY_MEMORY_MB)."""

    verify_pids: int = field(default=256, metadata={"env": "MEDIC_VERIFY_PIDS"})
    """Processes a sandbox container may run at once (MEDIC_VERIFY_PIDS)."""

    verify_cpus: float = field(default=1.0, metadata={"env": "MEDIC_VERIFY_CPUS"})
    """CPUs a sandbox container may use (MEDIC_VERIFY_CPUS)."""

    verify_settle: float = field(default=60.0, metadata={"env": "MEDIC_VERIFY_SETTLE"})
    """Seconds the candidate must stay up (and healthy, with a health check) in the
    sandbox to count as healing the failure (MEDIC_VERIFY_SETTLE); 0 skips that check."""

    git_author: str = field(default="medic <medic@localhost>", metadata={"env": "MEDIC_GIT_AUTHOR"})
    """Author and committer of fix commits (MEDIC_GIT_AUTHOR), as ``Name <email>``."""

    @property
    def allow_kinds(self) -> tuple[str, ...]:
        """MEDIC_FIX_ALLOW as a tuple of kinds, lower case."""
        return tuple(dict.fromkeys(k.lower() for k in _split(self.allow)))

    def __post_init__(self) -> None:
        _at_least(
            (
                ("MEDIC_FIX_MAX_FILES", self.max_files, 1),
                ("MEDIC_FIX_MAX_LINES", self.max_lines, 1),
                ("MEDIC_VERIFY_MEMORY_MB", self.verify_memory_mb, 16),
                ("MEDIC_VERIFY_PIDS", self.verify_pids, 8),
            )
        )
        unknown = sorted(set(self.allow_kinds) - set(FIX_ALLOW_KINDS))
        if unknown:
            raise ConfigError(
                f"MEDIC_FIX_ALLOW names {', '.join(unknown)}; write a comma-separated list "
                f"of {', '.join(FIX_ALLOW_KINDS)}, or leave it empty."
            )
        if self.push not in ("approved", "proposed"):
            raise ConfigError(f"MEDIC_FIX_PUSH must be approved or proposed, not {self.push!r}.")
        if self.verify_cpus <= 0:
            raise ConfigError("MEDIC_VERIFY_CPUS must be more than 0, like 1 or 0.5.")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.verify_build_network):
            raise ConfigError(
                "MEDIC_VERIFY_BUILD_NETWORK must be none or the name of a network, not "
                f"{self.verify_build_network!r}."
            )
        if not re.fullmatch(r"[^<>]+ <[^<>\s]+>", self.git_author):
            raise ConfigError(
                f"MEDIC_GIT_AUTHOR must look like 'Name <email>', not {self.git_author!r}."
            )


#: The groups of ``Settings``, by the name of the attribute that holds each.
GROUPS: Mapping[str, type[Any]] = {
    "docker": DockerSettings,
    "store": StoreSettings,
    "healing": HealingSettings,
    "notify": NotifySettings,
    "http": HttpSettings,
    "llm": LlmSettings,
    "fixes": FixesSettings,
}


@dataclass(frozen=True)
class Settings:
    """How one medic process behaves: the settings of the whole process, and one group
    for each part. Defaults are pinned in tests/unit/test_config.py."""

    project: str | None = field(default=None, metadata={"env": "MEDIC_PROJECT"})
    """Compose project to supervise (MEDIC_PROJECT, or ``--project``). Unset: medic's own
    container's project (or Swarm stack), else only containers labelled
    ``medic.enable=true``."""

    stack: str | None = field(default=None, metadata={"env": "MEDIC_STACK"})
    """Swarm stack to supervise (MEDIC_STACK): the tasks of ``docker stack deploy -c FILE
    STACK`` on this node's engine. Unset: as for MEDIC_PROJECT (docs/swarm.md)."""

    log_format: str = field(default="text", metadata={"env": "MEDIC_LOG_FORMAT"})
    """``text`` for people, ``json`` for one JSON object a line (MEDIC_LOG_FORMAT)."""

    log_level: str = field(default="INFO", metadata={"env": "MEDIC_LOG_LEVEL"})
    """Least severe log level shown (MEDIC_LOG_LEVEL, or ``--debug`` for DEBUG)."""

    docker: DockerSettings = field(default_factory=DockerSettings)
    """How medic talks to the Docker engine (MEDIC_DOCKER_*)."""

    store: StoreSettings = field(default_factory=StoreSettings)
    """Where incidents and observations are kept (MEDIC_DATABASE_URL and friends)."""

    healing: HealingSettings = field(default_factory=HealingSettings)
    """How containers are watched and healed (MEDIC_INTERVAL, MEDIC_PLAYBOOKS, …)."""

    notify: NotifySettings = field(default_factory=NotifySettings)
    """Where notifications go (MEDIC_NOTIFY_*)."""

    http: HttpSettings = field(default_factory=HttpSettings)
    """medic's HTTP server (MEDIC_HTTP_PORT)."""

    llm: LlmSettings = field(default_factory=LlmSettings)
    """How escalated incidents are diagnosed (MEDIC_LLM_* and friends)."""

    fixes: FixesSettings = field(default_factory=FixesSettings)
    """How fix branches are made (MEDIC_REPO, MEDIC_FIX_*, MEDIC_VERIFY_*, …)."""

    extra: Mapping[str, str] = field(default_factory=dict)
    """Environment variables that start with MEDIC_ but name no setting: ``medic run``
    warns of each at start and ``medic doctor`` lists them (``unknown_variables``)."""

    def __post_init__(self) -> None:
        if self.project and self.stack:
            raise ConfigError(
                "Set MEDIC_PROJECT (a compose project) or MEDIC_STACK (a Swarm stack), not both."
            )
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"MEDIC_LOG_FORMAT must be text or json, not {self.log_format!r}.")
        if self.log_level.upper() not in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"MEDIC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}."
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``environ`` (default: the process environment), then ``overrides``.

        An override names a setting of the whole process (``project="shop"``) or a group
        and the settings in it to override (``healing={"interval": 5.0}``). None leaves
        a setting as the environment has it. Every variable is converted before any group
        is made, so a value of the wrong type is reported before a value out of range.
        """
        env = os.environ if environ is None else environ
        top = _read(cls, env)
        groups = {name: _read(group, env) for name, group in GROUPS.items()}
        for name, value in overrides.items():
            if name in groups:
                if not isinstance(value, Mapping):
                    raise TypeError(f"the override of {name} must map its settings to values")
                groups[name].update({k: v for k, v in value.items() if v is not None})
            elif value is not None:
                top[name] = value
        extra = unread_variables(env)
        made = {name: GROUPS[name](**values) for name, values in groups.items()}
        return cls(**top, **made, extra=extra)  # type: ignore[arg-type]

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        """Every environment variable medic reads its settings from."""
        return tuple(
            _env_name(f)
            for owner in (cls, *GROUPS.values())
            for f in fields(owner)
            if "env" in f.metadata
        )


def unread_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that start with MEDIC_ but name no setting."""
    known = set(Settings.env_names())
    return {k: v for k, v in env.items() if k.startswith("MEDIC_") and k not in known}


def unknown_variables(extra: Mapping[str, str]) -> list[str]:
    """A sentence for each MEDIC_ variable medic does not read (``Settings.extra``),
    naming the one it reads whose name is closest, as a misspelling usually is."""
    known = Settings.env_names()
    lines = []
    for name in sorted(extra):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; it is ignored."
        lines.append(f"{name} is not a setting medic reads{hint}")
    return lines


def _env_name(field_: Field[Any]) -> str:
    name: str = field_.metadata["env"]
    return name


def _read(owner: type[Any], env: Mapping[str, str]) -> dict[str, object]:
    """The settings of ``owner`` (Settings or a group) that ``env`` sets, converted."""
    values: dict[str, object] = {}
    for f in fields(owner):
        if "env" not in f.metadata:
            continue
        raw = env.get(_env_name(f))
        if raw is None or raw.strip() == "":
            continue
        values[f.name] = _convert(f, raw)
    return values


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _convert(field_: Field[Any], raw: str) -> object:
    """``raw`` as the type of setting ``field_``; ConfigError saying what to write instead.

    The message names the variable and its value, then what to write, with no final
    period (the command adds it, see agent/errors.py).
    """
    var = _env_name(field_)
    annotation = field_.type
    text = raw.strip()
    try:
        if annotation == "float":
            return parse_duration(text)
        if annotation == "int":
            if not re.fullmatch(r"[+-]?\d+", text):
                raise ValueError(f"write a whole number, like {field_.default}")
            return int(text)
        if annotation == "bool":
            if text.lower() in _BOOL_TRUE:
                return True
            if text.lower() in _BOOL_FALSE:
                return False
            raise ValueError("write true or false")
        if annotation in ("Path", "Path | None"):
            return Path(text)
    except ValueError as e:
        raise ConfigError(f"{var}={raw!r} is not valid: {e}") from e
    return text
