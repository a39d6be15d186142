"""Every rule on case files built from real failing containers (tests/fixtures/escalate)."""

from __future__ import annotations

import pytest
from escalate_support import case_from_fixture, fixture_names, load_fixture

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
