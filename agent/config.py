"""Settings, read from the environment (and overridden by command-line flags).

Every setting has a default pinned by a test, a docstring saying what it does, and
a validation message that tells the operator what to write instead. The
environment is a parameter, never read behind the caller's back, so tests pass
their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from agent.errors import ConfigError

#: The playbooks shipped with medic, used when MEDIC_PLAYBOOKS is not set.
BUNDLED_PLAYBOOKS = Path(__file__).resolve().parent.parent / "playbooks"

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


@dataclass(frozen=True)
class Settings:
    """How one medic process behaves. Defaults are pinned in tests/unit/test_config.py."""

    project: str | None = None
    """Compose project to supervise (MEDIC_PROJECT). Unset: medic's own container's
    project, else only containers labelled ``medic.enable=true``."""

    interval: float = 30.0
    """Seconds between polls (MEDIC_INTERVAL). Docker events trigger checks in between."""

    playbooks: Path = BUNDLED_PLAYBOOKS
    """Playbook file or folder (MEDIC_PLAYBOOKS)."""

    settle: float = 60.0
    """Seconds a container must stay healthy before its incidents are resolved (MEDIC_SETTLE)."""

    crash_loop_deaths: int = 3
    """Deaths within ``crash_loop_window`` that make a crash loop (MEDIC_CRASH_LOOP_DEATHS)."""

    crash_loop_window: float = 300.0
    """Seconds over which deaths are counted (MEDIC_CRASH_LOOP_WINDOW)."""

    manual_stop_grace: float = 300.0
    """A death this many seconds after a ``docker kill`` or ``docker stop`` is a person's
    doing, not a crash (MEDIC_MANUAL_STOP_GRACE)."""

    workers: int = 4
    """Containers healed at the same time (MEDIC_WORKERS); one container is never
    healed twice at once."""

    stop_timeout: float = 10.0
    """Seconds a restart or stop waits for the process to exit, when the playbook does
    not say (MEDIC_STOP_TIMEOUT). Also how long ``medic run`` waits for in-flight
    actions when asked to stop."""

    dry_run: bool = False
    """Detect and decide, but take no action (MEDIC_DRY_RUN, or ``--dry-run``)."""

    log_format: str = "text"
    """``text`` for people, ``json`` for one JSON object a line (MEDIC_LOG_FORMAT)."""

    log_level: str = "INFO"
    """Least severe log level shown (MEDIC_LOG_LEVEL)."""

    docker_retry_attempts: int = 4
    """Tries of one Docker call on a temporary error (MEDIC_DOCKER_RETRY_ATTEMPTS)."""

    docker_retry_max_delay: float = 8.0
    """Longest pause between two tries of one Docker call (MEDIC_DOCKER_RETRY_MAX_DELAY)."""

    database_url: str | None = None
    """libpq URL of the incident database (MEDIC_DATABASE_URL), like
    ``postgresql://medic:secret@db:5432/medic``. Unset: incidents are kept in memory only."""

    state_dir: Path = Path(".state")
    """Folder for medic's own files (MEDIC_STATE_DIR): the spool of incident changes
    written while Postgres is away (``spool.jsonl``)."""

    retention_days: int = 30
    """Days health observations are kept (MEDIC_RETENTION_DAYS); incidents are kept for good."""

    observation_interval: float = 300.0
    """A container's observation is stored when its state or health changed, or when this
    many seconds passed since the last one stored (MEDIC_OBSERVATION_INTERVAL)."""

    http_port: int = 8080
    """Port of /healthz, /readyz, /metrics and /status in ``medic run`` (MEDIC_HTTP_PORT);
    0 turns the server off."""

    notify_urls: str = ""
    """Where notifications go (MEDIC_NOTIFY_URLS): apprise URLs such as
    ``slack://…`` or ``json://host/path``, separated by commas or spaces."""

    notify_limit: int = 6
    """Notifications per hour for one service and signal (MEDIC_NOTIFY_LIMIT)."""

    # --- escalation: diagnosis (docs/escalation.md) ---------------------------------------

    llm_model: str = "claude-sonnet-5-5"
    """Claude model that diagnoses escalated incidents (MEDIC_LLM_MODEL). Used only when
    ANTHROPIC_API_KEY is set; without it the built-in rules diagnose alone."""

    llm_daily_tokens: int = 1_000_000
    """Tokens (input + output, across all incidents) medic may spend on Claude per UTC day
    (MEDIC_LLM_DAILY_TOKENS). When spent, the rule diagnosis stands and the output says so."""

    llm_incident_tokens: int = 150_000
    """Tokens one incident's diagnosis may spend (MEDIC_LLM_INCIDENT_TOKENS)."""

    llm_incident_calls: int = 12
    """API calls one incident's diagnosis may make (MEDIC_LLM_INCIDENT_CALLS)."""

    llm_max_steps: int = 8
    """Rounds of read-only repository tools Claude may use before it must answer
    (MEDIC_LLM_MAX_STEPS)."""

    llm_timeout: float = 120.0
    """Seconds one API call may take (MEDIC_LLM_TIMEOUT)."""

    llm_max_retries: int = 2
    """Retries of one API call on 429, 529, 5xx and time-outs, by the SDK
    (MEDIC_LLM_MAX_RETRIES)."""

    diagnosis_window: float = 86400.0
    """The same failure (its fingerprint) is diagnosed at most once this many seconds
    (MEDIC_DIAGNOSIS_WINDOW); a failed call is not retried within it either."""

    redact: str = ""
    """More redaction patterns (MEDIC_REDACT): regular expressions, one per line. Whatever
    they match is replaced before anything leaves the host."""

    # --- escalation: fix branches (docs/fixes.md) ------------------------------------------

    repo: Path | None = None
    """The git repository Claude may read and fix branches are made in (MEDIC_REPO). Its
    checked-out branch, index and working tree are never touched. Unset: no fix branches."""

    fix_paths: str = ""
    """Glob patterns of the files a fix may change (MEDIC_FIX_PATHS), separated by commas
    or spaces. Empty: every tracked file except the kinds medic always refuses."""

    fix_max_files: int = 5
    """Files one fix may touch (MEDIC_FIX_MAX_FILES)."""

    fix_max_lines: int = 200
    """Lines one fix may add and remove, together (MEDIC_FIX_MAX_LINES)."""

    fix_remote: str | None = None
    """A git remote of MEDIC_REPO that fix branches are pushed to (MEDIC_FIX_REMOTE)."""

    fix_allow: str = ""
    """Kinds of file a fix may change beyond application source and config
    (MEDIC_FIX_ALLOW), comma-separated, from ``compose``, ``dockerfile`` and
    ``dependencies``. Empty: none of them."""

    fix_push: str = "approved"
    """When a fix branch is pushed to MEDIC_FIX_REMOTE (MEDIC_FIX_PUSH): ``approved``
    (after a person approves it) or ``proposed`` (as soon as it is made, which runs the
    remote's CI, with its secrets, on what the model wrote)."""

    verify_cmd: str | None = None
    """A command run in a sandbox container holding a copy of each fix branch's tree
    (MEDIC_VERIFY_CMD), like ``pytest -q``; its exit status and output tail are stored
    with the fix. Never run on medic's host."""

    verify_image: str | None = None
    """The image MEDIC_VERIFY_CMD runs in (MEDIC_VERIFY_IMAGE). Unset: the fix's
    candidate image."""

    verify_timeout: float = 600.0
    """Seconds MEDIC_VERIFY_CMD may take (MEDIC_VERIFY_TIMEOUT)."""

    verify_build_timeout: float = 900.0
    """Seconds the candidate image's build may take (MEDIC_VERIFY_BUILD_TIMEOUT)."""

    verify_build_network: str = "none"
    """The network the candidate build's RUN steps get (MEDIC_VERIFY_BUILD_NETWORK):
    ``none``, or a network the operator names (``default``, ``bridge``, …)."""

    verify_memory_mb: int = 1024
    """Memory of a sandbox container, in MiB (MEDIC_VERIFY_MEMORY_MB)."""

    verify_pids: int = 256
    """Processes a sandbox container may run at once (MEDIC_VERIFY_PIDS)."""

    verify_cpus: float = 1.0
    """CPUs a sandbox container may use (MEDIC_VERIFY_CPUS)."""

    verify_settle: float = 60.0
    """Seconds the candidate must stay up (and healthy, with a health check) in the
    sandbox to count as healing the failure (MEDIC_VERIFY_SETTLE); 0 skips that check."""

    git_author: str = "medic <medic@localhost>"
    """Author and committer of fix commits (MEDIC_GIT_AUTHOR), as ``Name <email>``."""

    extra: Mapping[str, str] = field(default_factory=dict)
    """Unused environment variables that start with MEDIC_, kept for ``medic doctor``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``environ`` (default: the process environment), then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        known = set(cls.env_names())
        for f in fields(cls):
            if f.name == "extra":
                continue
            var = f"MEDIC_{f.name.upper()}"
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _convert(f.name, var, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        values["extra"] = {
            k: v for k, v in env.items() if k.startswith("MEDIC_") and k not in known
        }
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        """Every environment variable medic reads its settings from, in field order."""
        return tuple(f"MEDIC_{f.name.upper()}" for f in fields(cls) if f.name != "extra")

    @property
    def fix_allow_kinds(self) -> tuple[str, ...]:
        """MEDIC_FIX_ALLOW as a tuple of kinds, lower case."""
        return tuple(dict.fromkeys(k.lower() for k in re.split(r"[\s,]+", self.fix_allow) if k))

    @property
    def notify_targets(self) -> list[str]:
        return [u for u in re.split(r"[\s,]+", self.notify_urls) if u]

    def validate(self) -> None:
        """Raise ConfigError naming the first setting that cannot work."""
        if not 0 <= self.http_port <= 65535:
            raise ConfigError("MEDIC_HTTP_PORT must be a port from 1 to 65535, or 0 for none.")
        if self.notify_limit < 1:
            raise ConfigError("MEDIC_NOTIFY_LIMIT must be at least 1 notification an hour.")
        if self.interval <= 0:
            raise ConfigError("MEDIC_INTERVAL must be more than 0 seconds, like 30.")
        if self.workers < 1:
            raise ConfigError("MEDIC_WORKERS must be at least 1.")
        if self.crash_loop_deaths < 2:
            raise ConfigError("MEDIC_CRASH_LOOP_DEATHS must be at least 2.")
        if self.docker_retry_attempts < 1:
            raise ConfigError("MEDIC_DOCKER_RETRY_ATTEMPTS must be at least 1.")
        if self.retention_days < 1:
            raise ConfigError("MEDIC_RETENTION_DAYS must be at least 1, like 30.")
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError(
                "MEDIC_DATABASE_URL must be a libpq URL like "
                "postgresql://medic:secret@db:5432/medic."
            )
        for var, value, least in (
            ("MEDIC_LLM_DAILY_TOKENS", self.llm_daily_tokens, 0),
            ("MEDIC_LLM_INCIDENT_TOKENS", self.llm_incident_tokens, 1),
            ("MEDIC_LLM_INCIDENT_CALLS", self.llm_incident_calls, 1),
            ("MEDIC_LLM_MAX_STEPS", self.llm_max_steps, 1),
            ("MEDIC_LLM_MAX_RETRIES", self.llm_max_retries, 0),
            ("MEDIC_FIX_MAX_FILES", self.fix_max_files, 1),
            ("MEDIC_FIX_MAX_LINES", self.fix_max_lines, 1),
            ("MEDIC_VERIFY_MEMORY_MB", self.verify_memory_mb, 16),
            ("MEDIC_VERIFY_PIDS", self.verify_pids, 8),
        ):
            if value < least:
                raise ConfigError(f"{var} must be at least {least}.")
        unknown = sorted(set(self.fix_allow_kinds) - set(FIX_ALLOW_KINDS))
        if unknown:
            raise ConfigError(
                f"MEDIC_FIX_ALLOW names {', '.join(unknown)}; write a comma-separated list "
                f"of {', '.join(FIX_ALLOW_KINDS)}, or leave it empty."
            )
        if self.fix_push not in ("approved", "proposed"):
            raise ConfigError(
                f"MEDIC_FIX_PUSH must be approved or proposed, not {self.fix_push!r}."
            )
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
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"MEDIC_LOG_FORMAT must be text or json, not {self.log_format!r}.")
        if self.log_level.upper() not in ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"MEDIC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}."
            )


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, var: str, raw: str) -> object:
    """``raw`` as the type of setting ``name``; ConfigError saying what to write instead.

    The message names the variable and its value, then what to write, with no final
    period (the command adds it, see agent/errors.py).
    """
    field_ = {f.name: f for f in fields(Settings)}[name]
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
