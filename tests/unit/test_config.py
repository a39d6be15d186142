"""Settings: every default pinned, every bad value named with what to write."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import BUNDLED_PLAYBOOKS, Settings, parse_duration
from agent.errors import ConfigError

#: Every variable medic reads, as the README and docs/*.md list them. Renaming one
#: breaks every deployment that sets it, so this list changes only on purpose.
ENV_NAMES = (
    "MEDIC_PROJECT",
    "MEDIC_INTERVAL",
    "MEDIC_PLAYBOOKS",
    "MEDIC_SETTLE",
    "MEDIC_CRASH_LOOP_DEATHS",
    "MEDIC_CRASH_LOOP_WINDOW",
    "MEDIC_MANUAL_STOP_GRACE",
    "MEDIC_WORKERS",
    "MEDIC_STOP_TIMEOUT",
    "MEDIC_DRY_RUN",
    "MEDIC_LOG_FORMAT",
    "MEDIC_LOG_LEVEL",
    "MEDIC_DOCKER_RETRY_ATTEMPTS",
    "MEDIC_DOCKER_RETRY_MAX_DELAY",
    "MEDIC_DATABASE_URL",
    "MEDIC_STATE_DIR",
    "MEDIC_RETENTION_DAYS",
    "MEDIC_OBSERVATION_INTERVAL",
    "MEDIC_HTTP_PORT",
    "MEDIC_NOTIFY_URLS",
    "MEDIC_NOTIFY_LIMIT",
    "MEDIC_LLM_MODEL",
    "MEDIC_LLM_DAILY_TOKENS",
    "MEDIC_LLM_INCIDENT_TOKENS",
    "MEDIC_LLM_INCIDENT_CALLS",
    "MEDIC_LLM_MAX_STEPS",
    "MEDIC_LLM_TIMEOUT",
    "MEDIC_LLM_MAX_RETRIES",
    "MEDIC_DIAGNOSIS_WINDOW",
    "MEDIC_REDACT",
    "MEDIC_REPO",
    "MEDIC_FIX_PATHS",
    "MEDIC_FIX_MAX_FILES",
    "MEDIC_FIX_MAX_LINES",
    "MEDIC_FIX_REMOTE",
    "MEDIC_FIX_ALLOW",
    "MEDIC_FIX_PUSH",
    "MEDIC_VERIFY_CMD",
    "MEDIC_VERIFY_IMAGE",
    "MEDIC_VERIFY_TIMEOUT",
    "MEDIC_VERIFY_BUILD_TIMEOUT",
    "MEDIC_VERIFY_BUILD_NETWORK",
    "MEDIC_VERIFY_MEMORY_MB",
    "MEDIC_VERIFY_PIDS",
    "MEDIC_VERIFY_CPUS",
    "MEDIC_VERIFY_SETTLE",
    "MEDIC_GIT_AUTHOR",
)


def test_the_environment_variables_are_exactly_the_documented_ones() -> None:
    assert sorted(Settings.env_names()) == sorted(ENV_NAMES)
    # Each one is read: none is left over as unknown for medic doctor.
    assert Settings.from_env(dict.fromkeys(ENV_NAMES, "")).extra == {}


def test_defaults_are_pinned() -> None:  # noqa: PLR0915 - one line per setting
    s = Settings.from_env({})
    assert s.project is None
    assert s.interval == 30.0
    assert s.playbooks == BUNDLED_PLAYBOOKS
    assert BUNDLED_PLAYBOOKS.name == "playbooks"
    assert s.settle == 60.0
    assert s.crash_loop_deaths == 3
    assert s.crash_loop_window == 300.0
    assert s.manual_stop_grace == 300.0
    assert s.workers == 4
    assert s.stop_timeout == 10.0
    assert s.dry_run is False
    assert s.log_format == "text"
    assert s.log_level == "INFO"
    assert s.docker_retry_attempts == 4
    assert s.docker_retry_max_delay == 8.0
    assert s.database_url is None
    assert s.state_dir == Path(".state")
    assert s.retention_days == 30
    assert s.observation_interval == 300.0
    assert s.http_port == 8080
    assert s.notify_urls == ""
    assert s.notify_targets == []
    assert s.notify_limit == 6
    assert s.llm_model == "claude-sonnet-5-5"
    assert s.llm_daily_tokens == 1_000_000
    assert s.llm_incident_tokens == 150_000
    assert s.llm_incident_calls == 12
    assert s.llm_max_steps == 8
    assert s.llm_timeout == 120.0
    assert s.llm_max_retries == 2
    assert s.diagnosis_window == 86400.0
    assert s.redact == ""
    assert s.repo is None
    assert s.fix_paths == ""
    assert s.fix_max_files == 5
    assert s.fix_max_lines == 200
    assert s.fix_remote is None
    assert s.fix_allow == ""
    assert s.fix_allow_kinds == ()
    assert s.fix_push == "approved"
    assert s.verify_cmd is None
    assert s.verify_image is None
    assert s.verify_timeout == 600.0
    assert s.verify_build_timeout == 900.0
    assert s.verify_build_network == "none"
    assert s.verify_memory_mb == 1024
    assert s.verify_pids == 256
    assert s.verify_cpus == 1.0
    assert s.verify_settle == 60.0
    assert s.git_author == "medic <medic@localhost>"


def test_store_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "MEDIC_DATABASE_URL": "postgresql://medic@db/medic",
            "MEDIC_STATE_DIR": "/var/lib/medic",
            "MEDIC_RETENTION_DAYS": "7",
            "MEDIC_OBSERVATION_INTERVAL": "10m",
        }
    )
    assert s.database_url == "postgresql://medic@db/medic"
    assert s.state_dir == Path("/var/lib/medic")
    assert s.retention_days == 7
    assert s.observation_interval == 600.0


def test_environment_is_read_with_units() -> None:
    s = Settings.from_env(
        {
            "MEDIC_PROJECT": "shop",
            "MEDIC_INTERVAL": "1m",
            "MEDIC_PLAYBOOKS": "/etc/medic/playbooks",
            "MEDIC_DRY_RUN": "yes",
            "MEDIC_WORKERS": "8",
            "MEDIC_UNKNOWN": "x",
        }
    )
    assert s.project == "shop"
    assert s.interval == 60.0
    assert s.playbooks == Path("/etc/medic/playbooks")
    assert s.dry_run is True
    assert s.workers == 8
    assert s.extra == {"MEDIC_UNKNOWN": "x"}


def test_flags_override_the_environment() -> None:
    s = Settings.from_env({"MEDIC_INTERVAL": "30"}, interval=5.0, project=None)
    assert s.interval == 5.0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MEDIC_INTERVAL": "soon"}, "MEDIC_INTERVAL='soon' is not valid"),
        ({"MEDIC_INTERVAL": "0"}, "MEDIC_INTERVAL must be more than 0"),
        ({"MEDIC_WORKERS": "many"}, "MEDIC_WORKERS='many' is not valid"),
        ({"MEDIC_DRY_RUN": "maybe"}, "write true or false"),
        ({"MEDIC_LOG_FORMAT": "xml"}, "MEDIC_LOG_FORMAT must be text or json"),
        ({"MEDIC_CRASH_LOOP_DEATHS": "1"}, "at least 2"),
        ({"MEDIC_RETENTION_DAYS": "0"}, "MEDIC_RETENTION_DAYS must be at least 1"),
        ({"MEDIC_DATABASE_URL": "db:5432"}, "MEDIC_DATABASE_URL must be a libpq URL"),
    ],
)
def test_bad_values_say_what_to_write(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"MEDIC_WORKERS": "x"}, "MEDIC_WORKERS='x' is not valid: write a whole number, like 4"),
        (
            {"MEDIC_WORKERS": "2.5"},
            "MEDIC_WORKERS='2.5' is not valid: write a whole number, like 4",
        ),
        (
            {"MEDIC_HTTP_PORT": "web"},
            "MEDIC_HTTP_PORT='web' is not valid: write a whole number, like 8080",
        ),
        (
            {"MEDIC_INTERVAL": "soon"},
            "MEDIC_INTERVAL='soon' is not valid: 'soon' is not a duration; "
            "write seconds like 30, or 30s, 5m, 1h",
        ),
    ],
)
def test_a_value_of_the_wrong_type_says_what_to_write_in_the_operators_words(
    env: dict[str, str], line: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)

    # No final period: the command finishes the sentence (see agent/errors.py).
    assert str(raised.value) == line
    assert "invalid literal" not in str(raised.value)


def test_durations() -> None:
    assert parse_duration("30") == 30
    assert parse_duration("1.5m") == 90
    assert parse_duration("2h") == 7200
    assert parse_duration("250ms") == 0.25
    assert parse_duration(7) == 7
    for bad in ("-1", "ten", "5 minutes", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_notify_urls_split_on_commas_and_spaces() -> None:
    s = Settings.from_env({"MEDIC_NOTIFY_URLS": "json://a/x, slack://t/b  mailto://c"})
    assert s.notify_targets == ["json://a/x", "slack://t/b", "mailto://c"]


def test_http_port_zero_turns_the_server_off_and_other_values_are_checked() -> None:
    assert Settings.from_env({"MEDIC_HTTP_PORT": "0"}).http_port == 0
    with pytest.raises(ConfigError, match="MEDIC_HTTP_PORT"):
        Settings.from_env({"MEDIC_HTTP_PORT": "70000"})


def test_escalation_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "MEDIC_LLM_MODEL": "claude-opus-5",
            "MEDIC_LLM_DAILY_TOKENS": "5000",
            "MEDIC_REPO": "/srv/shop",
            "MEDIC_FIX_PATHS": "app/**, compose.yml",
            "MEDIC_VERIFY_CMD": "pytest -q",
            "MEDIC_DIAGNOSIS_WINDOW": "6h",
        }
    )
    assert s.llm_model == "claude-opus-5"
    assert s.llm_daily_tokens == 5000
    assert s.repo == Path("/srv/shop")
    assert s.fix_paths == "app/**, compose.yml"
    assert s.verify_cmd == "pytest -q"
    assert s.diagnosis_window == 6 * 3600.0


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("MEDIC_FIX_MAX_FILES", "0", "MEDIC_FIX_MAX_FILES must be at least 1"),
        ("MEDIC_LLM_MAX_STEPS", "0", "MEDIC_LLM_MAX_STEPS must be at least 1"),
        ("MEDIC_GIT_AUTHOR", "medic", "MEDIC_GIT_AUTHOR must look like 'Name <email>'"),
    ],
)
def test_bad_escalation_settings_say_what_to_write(var: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({var: value})


def test_fix_allow_names_kinds_and_refuses_others() -> None:
    s = Settings.from_env({"MEDIC_FIX_ALLOW": "Compose, dependencies"})
    assert s.fix_allow_kinds == ("compose", "dependencies")
    with pytest.raises(ConfigError, match="MEDIC_FIX_ALLOW names makefile"):
        Settings.from_env({"MEDIC_FIX_ALLOW": "compose,makefile"})


def test_fix_push_and_sandbox_limits_are_checked() -> None:
    assert Settings.from_env({"MEDIC_FIX_PUSH": "proposed"}).fix_push == "proposed"
    with pytest.raises(ConfigError, match="MEDIC_FIX_PUSH"):
        Settings.from_env({"MEDIC_FIX_PUSH": "always"})
    with pytest.raises(ConfigError, match="MEDIC_VERIFY_PIDS"):
        Settings.from_env({"MEDIC_VERIFY_PIDS": "1"})
    with pytest.raises(ConfigError, match="MEDIC_VERIFY_BUILD_NETWORK"):
        Settings.from_env({"MEDIC_VERIFY_BUILD_NETWORK": "host; rm -rf /"})
    s = Settings.from_env({"MEDIC_VERIFY_BUILD_NETWORK": "default", "MEDIC_VERIFY_CPUS": "0.5"})
    assert (s.verify_build_network, s.verify_cpus) == ("default", 0.5)
