"""Every rule on case files built from real failing containers (tests/fixtures/escalate)."""

from __future__ import annotations

import pytest
from escalate_support import case_from_fixture, fixture_names, load_fixture

from agent.escalate import rules
from agent.escalate.rules import RULE_IDS, diagnose, matching
from agent.model import Confidence


def test_there_is_a_fixture_for_every_rule() -> None:
    expected = {load_fixture(name)["expect"] for name in fixture_names()}
    assert expected == set(RULE_IDS)


@pytest.mark.parametrize("name", fixture_names())
def test_each_real_failure_gets_its_rule(name: str) -> None:
    case = case_from_fixture(name)
    result = diagnose(case)
    assert result.rule_id == load_fixture(name)["expect"]


@pytest.mark.parametrize("name", fixture_names())
def test_evidence_is_quoted_verbatim_from_the_case_file(name: str) -> None:
    case = case_from_fixture(name)
    text = case.render()
    for result in matching(case) or [diagnose(case)]:
        assert result.evidence, result.rule_id
        for line in result.evidence:
            assert line in text, (result.rule_id, line)


def test_oom_kill_names_the_memory_limit() -> None:
    result = diagnose(case_from_fixture("oom_killed"))
    assert "48 MiB" in result.summary
    assert result.confidence is Confidence.HIGH
    assert "OOMKilled: true" in result.evidence
    assert "its peak is unknown" in result.root_cause


def test_missing_module_names_the_module() -> None:
    result = diagnose(case_from_fixture("missing_module"))
    assert "'requests'" in result.summary
    assert result.evidence == ("ModuleNotFoundError: No module named 'requests'",)


def test_command_not_found_names_the_command_from_the_log_or_the_engine() -> None:
    assert "'gunicorn'" in diagnose(case_from_fixture("command_not_found")).summary
    engine = diagnose(case_from_fixture("entrypoint_not_found"))
    assert "'/usr/local/bin/api-server'" in engine.summary
    assert any(line.startswith("Engine error: ") for line in engine.evidence)


def test_dependency_unreachable_names_the_service_and_its_state() -> None:
    refused = diagnose(case_from_fixture("dependency_refused"))
    assert "cannot reach db (Connection refused); db is running" in refused.summary
    assert "dependency db: running" in refused.evidence
    stopped = diagnose(case_from_fixture("dependency_stopped"))
    assert "db is exited (exit code 137)" in stopped.summary
    assert stopped.confidence is Confidence.HIGH


def test_a_killed_dependency_is_unreachable_not_a_failed_job() -> None:
    # db was stopped from outside (137); only a job that ended with its own error "failed".
    rules = [r.rule_id for r in matching(case_from_fixture("dependency_stopped"))]
    assert "dependency_failed" not in rules


def test_dependency_failed_names_the_one_shot_job() -> None:
    result = diagnose(case_from_fixture("dependency_failed"))
    assert result.summary == "app depends on migrate, which exited with code 1."
    assert result.confidence is Confidence.HIGH


def test_missing_mount_names_the_bind_mount_that_became_a_directory() -> None:
    result = diagnose(case_from_fixture("missing_mount"))
    assert "/etc/app/config.yml" in result.summary
    assert "created an empty directory" in result.root_cause
    assert any(line.startswith("Mount: bind ") for line in result.evidence)


def test_healthcheck_broken_when_the_service_works_but_the_check_command_is_missing() -> None:
    result = diagnose(case_from_fixture("healthcheck_broken"))
    assert "its command is missing" in result.summary
    assert result.evidence[0] == "Health check command: CMD curl -f http://localhost:8080/"


def test_a_health_check_failing_while_the_log_shows_errors_is_not_blamed_on_the_check() -> None:
    data = load_fixture("healthcheck_broken")
    case = case_from_fixture(
        "healthcheck_broken", log_lines=[*data["logs"], "ERROR: worker pool crashed"]
    )
    assert "healthcheck_broken" not in [r.rule_id for r in matching(case)]


def test_no_rule_applies_says_unknown_with_low_confidence() -> None:
    result = diagnose(case_from_fixture("unknown"))
    assert result.rule_id == "unknown"
    assert result.confidence is Confidence.LOW
    assert result.evidence == ("Exit code: 3",)


# --- failures of real programs (Debian's postgres, nginx, redis, node; see capture.py) ----


def test_missing_env_names_the_variable_the_official_postgres_entrypoint_asks_for() -> None:
    result = diagnose(case_from_fixture("postgres_missing_password"))
    assert result.rule_id == "missing_env"
    assert "POSTGRES_PASSWORD is not set in the container" in result.summary
    assert result.confidence is Confidence.HIGH
    assert any("superuser password is not specified" in line for line in result.evidence)


def test_missing_env_reads_a_python_key_error_from_os_environ() -> None:
    result = diagnose(case_from_fixture("python_missing_env"))
    assert "DATABASE_URL" in result.summary
    assert result.evidence == ("KeyError: 'DATABASE_URL'",)


def test_a_key_error_outside_os_environ_is_not_a_missing_variable() -> None:
    data = load_fixture("python_missing_env")
    logs = [line for line in data["logs"] if "<frozen os>" not in line and "environ" not in line]
    assert "KeyError: 'DATABASE_URL'" in logs
    assert "missing_env" not in [
        r.rule_id for r in matching(case_from_fixture("python_missing_env", log_lines=logs))
    ]


def test_data_dir_incompatible_names_both_versions() -> None:
    result = diagnose(case_from_fixture("postgres_data_dir_incompatible"))
    assert result.rule_id == "data_dir_incompatible"
    assert "written by version 15; the image runs 17" in result.summary
    assert result.confidence is Confidence.HIGH
    assert any(line.startswith("Mount: volume ") for line in result.evidence)


def test_exec_format_sets_the_images_platform_against_the_engines() -> None:
    result = diagnose(case_from_fixture("exec_format_arch"))
    assert result.rule_id == "exec_format"
    assert "built for linux/arm64" in result.summary
    assert "the engine runs linux/amd64" in result.summary
    assert "Image platform: linux/arm64" in result.evidence
    assert result.confidence is Confidence.HIGH


def test_exec_format_with_matching_platforms_blames_the_file_not_the_cpu() -> None:
    result = diagnose(case_from_fixture("exec_format_script"))
    assert result.rule_id == "exec_format"
    assert "matches the engine's" in result.root_cause
    assert "#!" in result.root_cause
    assert result.confidence is Confidence.MEDIUM


def test_missing_file_names_the_path_and_the_mount_that_lacks_it() -> None:
    result = diagnose(case_from_fixture("nginx_missing_certificate"))
    assert result.rule_id == "missing_file"
    assert "/etc/nginx/certs/shop.crt" in result.summary
    assert "which does not hold shop.crt" in result.root_cause
    assert any(line.startswith("Mount: bind ") for line in result.evidence)
    assert result.confidence is Confidence.HIGH


def test_a_file_inside_a_mounted_folder_is_not_a_missing_mount() -> None:
    rules = [r.rule_id for r in matching(case_from_fixture("nginx_missing_certificate"))]
    assert "missing_mount" not in rules


def test_upstream_unresolvable_names_the_stopped_service() -> None:
    result = diagnose(case_from_fixture("nginx_upstream_unresolvable"))
    assert result.rule_id == "upstream_unresolvable"
    assert "its upstream api is exited" in result.summary
    assert result.culprit is not None
    assert result.culprit.service == "api"
    assert result.culprit.state.startswith("exited")
    assert result.confidence is Confidence.HIGH


def test_upstream_unresolvable_says_when_no_service_has_the_name() -> None:
    result = diagnose(case_from_fixture("nginx_upstream_missing"))
    assert result.rule_id == "upstream_unresolvable"
    assert "no service of the project has that name" in result.summary
    assert result.culprit is None


def test_an_unresolvable_upstream_is_not_called_a_bad_config() -> None:
    # nginx says "[emerg]" for both; the upstream rule comes first.
    rules = [r.rule_id for r in matching(case_from_fixture("nginx_upstream_unresolvable"))]
    assert rules[0] == "upstream_unresolvable"
    assert "bad_config" in rules


def test_bad_config_names_the_directive_nginx_and_redis_refuse() -> None:
    nginx = diagnose(case_from_fixture("nginx_bad_directive"))
    assert nginx.rule_id == "bad_config"
    assert any('unknown directive "proxy_passs"' in line for line in nginx.evidence)
    redis = diagnose(case_from_fixture("redis_bad_config"))
    assert redis.rule_id == "bad_config"
    assert any(
        "FATAL CONFIG FILE ERROR" in line or "Bad directive" in line for line in redis.evidence
    )


def test_node_missing_module_names_the_package() -> None:
    result = diagnose(case_from_fixture("node_missing_module"))
    assert "'express'" in result.summary
    assert "Node.js module" in result.summary


def test_a_warning_about_an_optional_file_does_not_hide_the_missing_module() -> None:
    case = case_from_fixture("python_missing_module_after_warning")
    found = {r.rule_id: r for r in matching(case)}
    assert diagnose(case).rule_id == "missing_module"
    assert found["missing_file"].confidence is Confidence.LOW


def test_a_dependency_that_failed_on_its_own_is_named_with_its_state() -> None:
    result = diagnose(case_from_fixture("app_upstream_db_missing_password"))
    assert result.rule_id == "dependency_failed"
    assert result.culprit is not None
    assert (result.culprit.service, result.culprit.state) == ("db", "exited (exit code 1)")
    assert "stopped with an error of its own" in result.root_cause


def test_a_down_dependency_does_not_hide_this_services_own_cause() -> None:
    # The app's own log names a missing module; db being down is beside the point.
    data = load_fixture("app_upstream_db_missing_password")
    module = load_fixture("missing_module")["logs"]
    case = case_from_fixture("app_upstream_db_missing_password", log_lines=[*data["logs"], *module])
    assert diagnose(case).rule_id == "missing_module"


# --- generic lines and the ceiling -----------------------------------------------------------


def test_a_rule_resting_on_a_generic_line_says_low() -> None:
    logs = load_fixture("unknown")["logs"]
    emerg = case_from_fixture("unknown", log_lines=[*logs, "nginx: [emerg] 1#1: still could not"])
    assert diagnose(emerg).rule_id == "bad_config"
    assert diagnose(emerg).confidence is Confidence.LOW
    enoent = case_from_fixture(
        "unknown", log_lines=[*logs, "cannot stat /srv/data/state.db: No such file or directory"]
    )
    assert diagnose(enoent).rule_id == "missing_file"
    assert diagnose(enoent).confidence is Confidence.LOW


def test_a_rule_never_says_more_than_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    case = case_from_fixture("oom_killed")
    assert diagnose(case).confidence is Confidence.HIGH
    monkeypatch.setitem(rules.CEILING, "oom_killed", Confidence.MEDIUM)
    assert diagnose(case).confidence is Confidence.MEDIUM
    assert matching(case)[0].confidence is Confidence.MEDIUM


def test_node_esm_names_the_package_it_cannot_find() -> None:
    result = diagnose(case_from_fixture("node_esm_missing_package"))
    assert "the Node.js module 'express' is missing" in result.summary


def test_a_missing_secret_file_without_a_mount_says_the_image_or_a_mount_lacks_it() -> None:
    result = diagnose(case_from_fixture("python_missing_secret_file"))
    assert result.rule_id == "missing_file"
    assert "/run/secrets/db_password" in result.summary
    assert "no mount covers /run/secrets" in result.root_cause
    assert result.confidence is Confidence.MEDIUM


@pytest.mark.parametrize(
    ("line", "rule_id"),
    [
        # Phrasings of programs that are not in Debian (quoted from their messages), for
        # the patterns no captured fixture exercises.
        (
            "java.nio.file.AccessDeniedException: /usr/share/elasticsearch/data/nodes",
            "permission_denied",
        ),
        ("GF_PATHS_DATA='/var/lib/grafana' is not writable.", "permission_denied"),
        (
            "<internal:/usr/lib/ruby/3.1.0/rubygems/core_ext/kernel_require.rb>:85:in `require': "
            "cannot load such file -- sinatra (LoadError)",
            "missing_module",
        ),
        (
            "[ERROR] [MY-013171] [InnoDB] Cannot upgrade from 8.0.36 to 5.7.44",
            "data_dir_incompatible",
        ),
        ("Can't handle RDB format version 11", "data_dir_incompatible"),
        (
            "[ALERT] (1) : config : parsing [/usr/local/etc/haproxy/haproxy.cfg:12] : "
            "'server api' : could not resolve address 'api'.",
            "upstream_unresolvable",
        ),
        ("You need to specify one of the following as an environment variable:", "missing_env"),
        ("open /etc/traefik/certs/site.key: no such file or directory", "missing_file"),
    ],
)
def test_phrasings_of_other_programs(line: str, rule_id: str) -> None:
    logs = load_fixture("unknown")["logs"]
    assert diagnose(case_from_fixture("unknown", log_lines=[*logs, line])).rule_id == rule_id


def test_env_not_finding_the_interpreter_names_it() -> None:
    data = load_fixture("unknown")
    inspect = {**data["inspect"], "State": {**data["inspect"]["State"], "ExitCode": 127}}
    line = "env: 'python': No such file or directory"
    result = diagnose(
        case_from_fixture("unknown", inspect=inspect, log_lines=[*data["logs"], line])
    )
    assert result.rule_id == "command_not_found"
    assert "'python'" in result.summary
