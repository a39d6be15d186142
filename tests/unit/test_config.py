"""Settings: every default pinned, every bad value named with what to write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from operator import attrgetter
from pathlib import Path

import pytest

from agent.config import (
    BUNDLED_PLAYBOOKS,
    GROUPS,
    DockerSettings,
    FixesSettings,
    HealingSettings,
    HttpSettings,
    LlmSettings,
    NotifySettings,
    Settings,
    StoreSettings,
    parse_duration,
)
from agent.errors import ConfigError

#: Every variable medic reads, as the README and docs/*.md list them. Renaming one
#: breaks every deployment that sets it, so this list changes only on purpose.
ENV_NAMES = (
    "MEDIC_PROJECT",
    "MEDIC_STACK",
    "MEDIC_INTERVAL",
    "MEDIC_PLAYBOOKS",
    "MEDIC_SETTLE",
    "MEDIC_CRASH_LOOP_DEATHS",
    "MEDIC_CRASH_LOOP_WINDOW",
    "MEDIC_MANUAL_STOP_GRACE",
    "MEDIC_WORKERS",
    "MEDIC_STOP_TIMEOUT",
    "MEDIC_DRY_RUN",
    "MEDIC_LEADER_ELECTION",
    "MEDIC_LOG_FORMAT",
    "MEDIC_LOG_LEVEL",
    "MEDIC_DOCKER_RETRY_ATTEMPTS",
    "MEDIC_DOCKER_RETRY_MAX_DELAY",
    "MEDIC_DATABASE_URL",
    "MEDIC_STATE_DIR",
    "MEDIC_RETENTION_DAYS",
    "MEDIC_OBSERVATION_INTERVAL",
    "MEDIC_HTTP_PORT",
    "MEDIC_UI_TOKEN",
    "MEDIC_NOTIFY_URLS",
    "MEDIC_NOTIFY_LIMIT",
    "MEDIC_LLM_PROVIDER",
    "MEDIC_LLM_MODEL",
    "MEDIC_LLM_BASE_URL",
    "MEDIC_LLM_API_KEY",
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


#: Each setting and its value when nothing is set.
DEFAULTS: tuple[tuple[str, object], ...] = (
    ("project", None),
    ("stack", None),
    ("log_format", "text"),
    ("log_level", "INFO"),
    ("extra", {}),
    ("docker.retry_attempts", 4),
    ("docker.retry_max_delay", 8.0),
    ("store.database_url", None),
    ("store.state_dir", Path(".state")),
    ("store.retention_days", 30),
    ("store.observation_interval", 300.0),
    ("healing.interval", 30.0),
    ("healing.playbooks", BUNDLED_PLAYBOOKS),
    ("healing.settle", 60.0),
    ("healing.crash_loop_deaths", 3),
    ("healing.crash_loop_window", 300.0),
    ("healing.manual_stop_grace", 300.0),
    ("healing.workers", 4),
    ("healing.stop_timeout", 10.0),
    ("healing.dry_run", False),
    ("healing.leader_election", True),
    ("notify.urls", ""),
    ("notify.targets", []),
    ("notify.limit", 6),
    ("http.port", 8080),
    ("http.ui_token", None),
    ("llm.provider", "anthropic"),
    ("llm.model", None),
    ("llm.model_name", "claude-sonnet-5-5"),
    ("llm.base_url", None),
    ("llm.api_key", None),
    ("llm.daily_tokens", 1_000_000),
    ("llm.incident_tokens", 150_000),
    ("llm.incident_calls", 12),
    ("llm.max_steps", 8),
    ("llm.timeout", 120.0),
    ("llm.max_retries", 2),
    ("llm.diagnosis_window", 86400.0),
    ("llm.redact", ""),
    ("fixes.repo", None),
    ("fixes.paths", ""),
    ("fixes.max_files", 5),
    ("fixes.max_lines", 200),
    ("fixes.remote", None),
    ("fixes.allow", ""),
    ("fixes.allow_kinds", ()),
    ("fixes.push", "approved"),
    ("fixes.verify_cmd", None),
    ("fixes.verify_image", None),
    ("fixes.verify_timeout", 600.0),
    ("fixes.verify_build_timeout", 900.0),
    ("fixes.verify_build_network", "none"),
    ("fixes.verify_memory_mb", 1024),
    ("fixes.verify_pids", 256),
    ("fixes.verify_cpus", 1.0),
    ("fixes.verify_settle", 60.0),
    ("fixes.git_author", "medic <medic@localhost>"),
)


def test_defaults_are_pinned() -> None:
    assert Settings.from_env({}) == Settings()
    assert BUNDLED_PLAYBOOKS.name == "playbooks"


def test_every_setting_is_in_the_defaults_table() -> None:
    top = {f.name for f in fields(Settings)} - set(GROUPS)
    grouped = {f"{group}.{f.name}" for group, kind in GROUPS.items() for f in fields(kind)}
    assert top | grouped <= {attribute for attribute, _ in DEFAULTS}


@pytest.mark.parametrize(("attribute", "value"), DEFAULTS)
def test_each_default_is_pinned(attribute: str, value: object) -> None:
    actual = attrgetter(attribute)(Settings.from_env({}))
    # The type too: None, False and 0 are not the same default.
    assert (type(actual), actual) == (type(value), value)


def test_the_groups_are_the_parts_of_settings() -> None:
    s = Settings()
    assert {name: type(getattr(s, name)) for name in GROUPS} == GROUPS
    top = {f.name for f in fields(Settings)} - set(GROUPS)
    assert top == {"project", "stack", "log_format", "log_level", "extra"}


#: Each variable, the attribute it sets, a value to write and what that value reads as.
EACH_VARIABLE: tuple[tuple[str, str, str, object], ...] = (
    ("MEDIC_PROJECT", "project", "shop", "shop"),
    ("MEDIC_STACK", "stack", "shop", "shop"),
    ("MEDIC_LOG_FORMAT", "log_format", "json", "json"),
    ("MEDIC_LOG_LEVEL", "log_level", "debug", "debug"),
    ("MEDIC_DOCKER_RETRY_ATTEMPTS", "docker.retry_attempts", "2", 2),
    ("MEDIC_DOCKER_RETRY_MAX_DELAY", "docker.retry_max_delay", "3s", 3.0),
    ("MEDIC_DATABASE_URL", "store.database_url", "postgres://db/m", "postgres://db/m"),
    ("MEDIC_STATE_DIR", "store.state_dir", "/var/lib/medic", Path("/var/lib/medic")),
    ("MEDIC_RETENTION_DAYS", "store.retention_days", "7", 7),
    ("MEDIC_OBSERVATION_INTERVAL", "store.observation_interval", "10m", 600.0),
    ("MEDIC_INTERVAL", "healing.interval", "1m", 60.0),
    ("MEDIC_PLAYBOOKS", "healing.playbooks", "/etc/medic", Path("/etc/medic")),
    ("MEDIC_SETTLE", "healing.settle", "5", 5.0),
    ("MEDIC_CRASH_LOOP_DEATHS", "healing.crash_loop_deaths", "5", 5),
    ("MEDIC_CRASH_LOOP_WINDOW", "healing.crash_loop_window", "1h", 3600.0),
    ("MEDIC_MANUAL_STOP_GRACE", "healing.manual_stop_grace", "90", 90.0),
    ("MEDIC_WORKERS", "healing.workers", "8", 8),
    ("MEDIC_STOP_TIMEOUT", "healing.stop_timeout", "20s", 20.0),
    ("MEDIC_DRY_RUN", "healing.dry_run", "yes", True),
    ("MEDIC_LEADER_ELECTION", "healing.leader_election", "false", False),
    ("MEDIC_NOTIFY_URLS", "notify.urls", "json://a/x", "json://a/x"),
    ("MEDIC_NOTIFY_LIMIT", "notify.limit", "2", 2),
    ("MEDIC_HTTP_PORT", "http.port", "9090", 9090),
    ("MEDIC_UI_TOKEN", "http.ui_token", "s" * 24, "s" * 24),
    ("MEDIC_LLM_PROVIDER", "llm.provider", "openai", "openai"),
    ("MEDIC_LLM_MODEL", "llm.model", "claude-opus-5", "claude-opus-5"),
    ("MEDIC_LLM_BASE_URL", "llm.base_url", "http://ollama:11434/v1", "http://ollama:11434/v1"),
    ("MEDIC_LLM_API_KEY", "llm.api_key", "sk-local-0000", "sk-local-0000"),
    ("MEDIC_LLM_DAILY_TOKENS", "llm.daily_tokens", "5000", 5000),
    ("MEDIC_LLM_INCIDENT_TOKENS", "llm.incident_tokens", "900", 900),
    ("MEDIC_LLM_INCIDENT_CALLS", "llm.incident_calls", "3", 3),
    ("MEDIC_LLM_MAX_STEPS", "llm.max_steps", "4", 4),
    ("MEDIC_LLM_TIMEOUT", "llm.timeout", "1m", 60.0),
    ("MEDIC_LLM_MAX_RETRIES", "llm.max_retries", "0", 0),
    ("MEDIC_DIAGNOSIS_WINDOW", "llm.diagnosis_window", "6h", 6 * 3600.0),
    ("MEDIC_REDACT", "llm.redact", "ACME-[0-9]+", "ACME-[0-9]+"),
    ("MEDIC_REPO", "fixes.repo", "/srv/shop", Path("/srv/shop")),
    ("MEDIC_FIX_PATHS", "fixes.paths", "app/**", "app/**"),
    ("MEDIC_FIX_MAX_FILES", "fixes.max_files", "2", 2),
    ("MEDIC_FIX_MAX_LINES", "fixes.max_lines", "50", 50),
    ("MEDIC_FIX_REMOTE", "fixes.remote", "origin", "origin"),
    ("MEDIC_FIX_ALLOW", "fixes.allow", "compose", "compose"),
    ("MEDIC_FIX_PUSH", "fixes.push", "proposed", "proposed"),
    ("MEDIC_VERIFY_CMD", "fixes.verify_cmd", "pytest -q", "pytest -q"),
    ("MEDIC_VERIFY_IMAGE", "fixes.verify_image", "python:3.12", "python:3.12"),
    ("MEDIC_VERIFY_TIMEOUT", "fixes.verify_timeout", "5m", 300.0),
    ("MEDIC_VERIFY_BUILD_TIMEOUT", "fixes.verify_build_timeout", "10m", 600.0),
    ("MEDIC_VERIFY_BUILD_NETWORK", "fixes.verify_build_network", "default", "default"),
    ("MEDIC_VERIFY_MEMORY_MB", "fixes.verify_memory_mb", "512", 512),
    ("MEDIC_VERIFY_PIDS", "fixes.verify_pids", "64", 64),
    ("MEDIC_VERIFY_CPUS", "fixes.verify_cpus", "0.5", 0.5),
    ("MEDIC_VERIFY_SETTLE", "fixes.verify_settle", "0", 0.0),
    ("MEDIC_GIT_AUTHOR", "fixes.git_author", "Ops <ops@shop>", "Ops <ops@shop>"),
)


def test_every_variable_is_in_the_table() -> None:
    assert sorted(var for var, *_ in EACH_VARIABLE) == sorted(ENV_NAMES)


@pytest.mark.parametrize(("var", "attribute", "raw", "value"), EACH_VARIABLE)
def test_each_variable_sets_its_attribute_and_no_other(
    var: str, attribute: str, raw: str, value: object
) -> None:
    default = Settings()
    s = Settings.from_env({var: raw})
    assert attrgetter(attribute)(default) != value
    assert attrgetter(attribute)(s) == value
    # With that one attribute put back, nothing differs from the defaults.
    group, _, name = attribute.rpartition(".")
    if group:
        back = replace(getattr(s, group), **{name: attrgetter(attribute)(default)})
        assert replace(s, **{group: back}) == default
    else:
        assert replace(s, **{name: getattr(default, name)}) == default


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: DockerSettings(retry_attempts=0), "MEDIC_DOCKER_RETRY_ATTEMPTS must be"),
        (lambda: StoreSettings(database_url="db:5432"), "MEDIC_DATABASE_URL must be a libpq"),
        (lambda: HealingSettings(interval=0), "MEDIC_INTERVAL must be more than 0"),
        (lambda: NotifySettings(limit=0), "MEDIC_NOTIFY_LIMIT must be at least 1"),
        (lambda: HttpSettings(port=70000), "MEDIC_HTTP_PORT must be a port"),
        (lambda: HttpSettings(ui_token="hunter2"), "MEDIC_UI_TOKEN must be at least 16"),
        (lambda: LlmSettings(max_steps=0), "MEDIC_LLM_MAX_STEPS must be at least 1"),
        (lambda: LlmSettings(provider="ollama"), "MEDIC_LLM_PROVIDER must be anthropic or openai"),
        (lambda: LlmSettings(base_url="ollama:11434"), "MEDIC_LLM_BASE_URL must be an http"),
        (lambda: FixesSettings(push="always"), "MEDIC_FIX_PUSH must be approved or proposed"),
        (lambda: Settings(log_format="xml"), "MEDIC_LOG_FORMAT must be text or json"),
    ],
)
def test_a_group_cannot_be_made_with_a_value_that_cannot_work(
    make: Callable[[], object], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        make()


def test_a_group_changed_by_replace_is_checked_again() -> None:
    with pytest.raises(ConfigError, match="MEDIC_WORKERS must be at least 1"):
        replace(HealingSettings(), workers=0)


def test_store_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env(
        {
            "MEDIC_DATABASE_URL": "postgresql://medic@db/medic",
            "MEDIC_STATE_DIR": "/var/lib/medic",
            "MEDIC_RETENTION_DAYS": "7",
            "MEDIC_OBSERVATION_INTERVAL": "10m",
        }
    )
    assert s.store == StoreSettings(
        database_url="postgresql://medic@db/medic",
        state_dir=Path("/var/lib/medic"),
        retention_days=7,
        observation_interval=600.0,
    )


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
    assert s.healing.interval == 60.0
    assert s.healing.playbooks == Path("/etc/medic/playbooks")
    assert s.healing.dry_run is True
    assert s.healing.workers == 8
    assert s.extra == {"MEDIC_UNKNOWN": "x"}


def test_flags_override_the_environment() -> None:
    s = Settings.from_env(
        {"MEDIC_INTERVAL": "30", "MEDIC_WORKERS": "2", "MEDIC_PROJECT": "shop"},
        project=None,
        log_level="DEBUG",
        healing={"interval": 5.0, "dry_run": True, "playbooks": None},
    )
    assert s.healing == HealingSettings(interval=5.0, workers=2, dry_run=True)
    # None leaves the environment's value.
    assert (s.project, s.log_level) == ("shop", "DEBUG")


def test_an_override_is_checked_like_the_environment() -> None:
    with pytest.raises(ConfigError, match="MEDIC_INTERVAL must be more than 0"):
        Settings.from_env({}, healing={"interval": 0.0})


@pytest.mark.parametrize(
    "overrides",
    [{"interval": 5.0}, {"healing": {"intervall": 5.0}}, {"healing": 5.0}],
)
def test_an_override_of_no_setting_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(TypeError):
        Settings.from_env({}, **overrides)


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
    assert s.notify.targets == ["json://a/x", "slack://t/b", "mailto://c"]


def test_http_port_zero_turns_the_server_off_and_other_values_are_checked() -> None:
    assert Settings.from_env({"MEDIC_HTTP_PORT": "0"}).http.port == 0
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
    assert s.llm.model == "claude-opus-5"
    assert s.llm.daily_tokens == 5000
    assert s.fixes.repo == Path("/srv/shop")
    assert s.fixes.paths == "app/**, compose.yml"
    assert s.fixes.verify_cmd == "pytest -q"
    assert s.llm.diagnosis_window == 6 * 3600.0


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("MEDIC_FIX_MAX_FILES", "0", "MEDIC_FIX_MAX_FILES must be at least 1"),
        ("MEDIC_LLM_MAX_STEPS", "0", "MEDIC_LLM_MAX_STEPS must be at least 1"),
        ("MEDIC_LLM_PROVIDER", "Anthropic", "not 'Anthropic'; write openai for Ollama"),
        ("MEDIC_LLM_BASE_URL", "file:///tmp/x", "like http://ollama:11434/v1, not 'file:"),
        ("MEDIC_GIT_AUTHOR", "medic", "MEDIC_GIT_AUTHOR must look like 'Name <email>'"),
    ],
)
def test_bad_escalation_settings_say_what_to_write(var: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({var: value})


def test_the_model_is_the_providers_default_unless_one_is_named() -> None:
    assert Settings.from_env({}).llm.model_name == "claude-sonnet-5-5"
    openai = Settings.from_env({"MEDIC_LLM_PROVIDER": "openai"}).llm
    assert (openai.model, openai.model_name) == (None, "gpt-4.1-mini")
    local = Settings.from_env({"MEDIC_LLM_PROVIDER": "openai", "MEDIC_LLM_MODEL": "qwen3:8b"})
    assert local.llm.model_name == "qwen3:8b"


def test_the_llm_api_key_is_kept_out_of_the_settings_repr() -> None:
    assert "sk-local-0000" not in repr(Settings.from_env({"MEDIC_LLM_API_KEY": "sk-local-0000"}))


def test_fix_allow_names_kinds_and_refuses_others() -> None:
    s = Settings.from_env({"MEDIC_FIX_ALLOW": "Compose, dependencies"})
    assert s.fixes.allow_kinds == ("compose", "dependencies")
    with pytest.raises(ConfigError, match="MEDIC_FIX_ALLOW names makefile"):
        Settings.from_env({"MEDIC_FIX_ALLOW": "compose,makefile"})


def test_fix_push_and_sandbox_limits_are_checked() -> None:
    assert Settings.from_env({"MEDIC_FIX_PUSH": "proposed"}).fixes.push == "proposed"
    with pytest.raises(ConfigError, match="MEDIC_FIX_PUSH"):
        Settings.from_env({"MEDIC_FIX_PUSH": "always"})
    with pytest.raises(ConfigError, match="MEDIC_VERIFY_PIDS"):
        Settings.from_env({"MEDIC_VERIFY_PIDS": "1"})
    with pytest.raises(ConfigError, match="MEDIC_VERIFY_BUILD_NETWORK"):
        Settings.from_env({"MEDIC_VERIFY_BUILD_NETWORK": "host; rm -rf /"})
    s = Settings.from_env({"MEDIC_VERIFY_BUILD_NETWORK": "default", "MEDIC_VERIFY_CPUS": "0.5"})
    assert (s.fixes.verify_build_network, s.fixes.verify_cpus) == ("default", 0.5)
