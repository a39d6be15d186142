"""medic doctor: every check says what is wrong and what to do, in one run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fake_anthropic import FakeAnthropic, error, message
from fake_openai import FakeOpenAI, text

from agent.config import BUNDLED_PLAYBOOKS, LlmSettings
from agent.doctor import (
    check_database,
    check_llm,
    check_playbooks,
    check_repository,
    check_settings,
    run_checks,
)
from agent.engine.docker_sdk import DockerSDKGateway
from agent.errors import DockerUnavailable, StoreUnavailable
from agent.escalate.claude import ask_model, make_client
from agent.escalate.llm import LLMError
from agent.escalate.providers import Endpoint, ask


def unreachable() -> DockerSDKGateway:
    raise DockerUnavailable("Connecting to the Docker engine: no such file /var/run/docker.sock")


def test_an_unreachable_engine_fails_docker_and_scope_and_the_other_checks_still_run(
    tmp_path: Path,
) -> None:
    results = run_checks(
        {},
        project=None,
        playbooks=tmp_path / "missing.yml",
        connect=unreachable,
        probe_database=None,
    )
    by_name = {r.name: r for r in results}
    assert list(by_name) == [
        "docker",
        "scope",
        "playbooks",
        "database",
        "repository",
        "llm",
        "settings",
    ]
    assert not by_name["docker"].ok
    assert "DOCKER_HOST" in by_name["docker"].fix
    assert not by_name["scope"].ok
    assert not by_name["playbooks"].ok
    assert "medic playbooks validate" in by_name["playbooks"].fix
    assert not by_name["database"].ok
    assert "MEDIC_DATABASE_URL" in by_name["database"].fix


def test_a_misspelt_setting_is_named_with_the_one_it_was_probably_meant_to_be() -> None:
    result = check_settings(
        {"MEDIC_INTERVALL": "10s", "MEDIC_SETTLE": "30", "MEDIC_COLOUR": "blue", "HOME": "/"}
    )
    assert result.optional
    assert result.detail == (
        "MEDIC_COLOUR is not a setting medic reads; it is ignored. "
        "MEDIC_INTERVALL is not a setting medic reads; did you mean MEDIC_INTERVAL?"
    )
    assert check_settings({"MEDIC_SETTLE": "30"}).detail == (
        "every MEDIC_ variable set is one medic reads"
    )


def test_bundled_playbooks_pass() -> None:
    result = check_playbooks(BUNDLED_PLAYBOOKS)
    assert result.ok
    assert result.detail.startswith("5 playbooks")


def test_database_probe_failure_is_reported_with_what_to_check() -> None:
    def down(url: str) -> str:
        raise StoreUnavailable("connection to 127.0.0.1:5432 refused")

    result = check_database({"MEDIC_DATABASE_URL": "postgresql://x@127.0.0.1/db"}, down)
    assert not result.ok
    assert "refused" in result.detail
    ok = check_database({"MEDIC_DATABASE_URL": "postgresql://x@h/db"}, lambda url: "Postgres 16")
    assert ok.ok and ok.detail == "Postgres 16"


def test_repository_must_be_a_git_repository_when_set(tmp_path: Path) -> None:
    assert check_repository({}).optional
    assert not check_repository({"MEDIC_REPO": str(tmp_path / "nope")}).ok
    assert not check_repository({"MEDIC_REPO": str(tmp_path)}).ok
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert check_repository({"MEDIC_REPO": str(tmp_path)}).ok


def test_a_missing_llm_key_is_optional() -> None:
    missing = check_llm({})
    assert missing.ok and missing.optional
    assert "ANTHROPIC_API_KEY" in missing.fix
    assert check_llm({"ANTHROPIC_API_KEY": "k"}).detail.startswith("ANTHROPIC_API_KEY is set")
    own = check_llm({}, settings=LlmSettings(api_key="k", base_url="http://gateway:8080"))
    assert own.detail.startswith("MEDIC_LLM_API_KEY is set (for http://gateway:8080)")


def test_choosing_openai_without_naming_a_server_fails_the_check() -> None:
    result = check_llm({"ANTHROPIC_API_KEY": "k"}, settings=LlmSettings(provider="openai"))
    assert not result.ok
    assert "neither MEDIC_LLM_BASE_URL nor an API key is set" in result.detail
    assert "MEDIC_LLM_BASE_URL" in result.fix and "http://ollama:11434/v1" in result.fix


def test_a_local_server_is_checked_by_its_address_and_model_without_a_key() -> None:
    settings = LlmSettings(provider="openai", base_url="http://ollama:11434/v1", model="qwen3:8b")
    result = check_llm({"ANTHROPIC_API_KEY": "k"}, settings=settings)
    assert result.ok and not result.optional
    assert result.detail.startswith(
        "MEDIC_LLM_PROVIDER is openai: the model qwen3:8b at http://ollama:11434/v1, with no key"
    )
    keyed = check_llm({"OPENAI_API_KEY": "sk-x"}, settings=LlmSettings(provider="openai"))
    assert "gpt-4.1-mini at OpenAI's API, with the key from OPENAI_API_KEY" in keyed.detail


def test_the_repository_check_names_the_branch_fixes_merge_into(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(tmp_path)], check=True)
    result = check_repository({"MEDIC_REPO": str(tmp_path)})
    assert result.ok and not result.optional
    assert result.detail.endswith("on branch trunk")


def test_with_llm_the_model_is_asked_and_its_answer_shown() -> None:
    asked: list[Endpoint] = []

    def ask(found: Endpoint) -> str:
        asked.append(found)
        return "claude-sonnet-5-5 answered 'ready' (12 tokens)"

    result = check_llm({"ANTHROPIC_API_KEY": "sk-ant-k"}, ask)
    assert [(e.provider, e.api_key, e.model) for e in asked] == [
        ("anthropic", "sk-ant-k", "claude-sonnet-5-5")
    ]
    assert result.ok and "answered 'ready'" in result.detail


def test_with_llm_a_model_that_does_not_answer_fails_the_check() -> None:
    def ask(found: Endpoint) -> str:
        raise LLMError("the Claude API answered 401: invalid x-api-key")

    result = check_llm({"ANTHROPIC_API_KEY": "bad", "ANTHROPIC_BASE_URL": "http://proxy"}, ask)
    assert not result.ok
    assert "the model at http://proxy did not answer" in result.detail
    assert "401" in result.detail
    assert "ANTHROPIC_API_KEY" in result.fix


def test_ask_model_makes_one_tiny_call_through_the_real_sdk() -> None:
    fake = FakeAnthropic([message([{"type": "text", "text": "ready"}], stop_reason="end_turn")])
    with fake.running():
        client = make_client(api_key="sk-ant-test", base_url=fake.url, strict=True)
        answer = ask_model(client, "claude-sonnet-5-5")
    assert answer.startswith("claude-sonnet-5-5 answered 'ready'")
    [body] = fake.bodies
    assert body["model"] == "claude-sonnet-5-5"
    assert body["max_tokens"] <= 16
    assert "tools" not in body


def test_ask_model_turns_an_api_error_into_one_sentence() -> None:
    fake = FakeAnthropic([error(401, "authentication_error", "invalid x-api-key")])
    with fake.running():
        client = make_client(api_key="sk-ant-test", base_url=fake.url, max_retries=0)
        with pytest.raises(LLMError, match="answered 401: invalid x-api-key"):
            ask_model(client, "claude-sonnet-5-5")


def test_doctor_llm_with_openai_asks_the_local_server_and_never_anthropic() -> None:
    anthropic = FakeAnthropic([message([{"type": "text", "text": "wrong"}])])
    local = FakeOpenAI([text("ready", prompt_tokens=9, completion_tokens=1)])
    with anthropic.running(), local.running():
        environ = {"ANTHROPIC_API_KEY": "sk-ant-k", "ANTHROPIC_BASE_URL": anthropic.url}
        settings = LlmSettings(provider="openai", base_url=local.url, model="qwen3:8b")
        result = check_llm(environ, lambda found: ask(found, timeout=5), settings=settings)
    assert result.ok, result
    assert result.detail.endswith("qwen3:8b answered 'ready' (10 tokens)")
    assert anthropic.requests == []
    assert [b["model"] for b in local.bodies] == ["qwen3:8b"]


def test_doctor_llm_with_an_unreachable_local_server_names_it_and_what_to_check() -> None:
    local = FakeOpenAI([])
    url = local.url
    local.server.server_close()
    settings = LlmSettings(provider="openai", base_url=url, model="qwen3:8b")
    result = check_llm({}, lambda found: ask(found, timeout=2), settings=settings)
    assert not result.ok
    assert result.detail.startswith(f"the model at {url} did not answer:")
    assert "MEDIC_LLM_BASE_URL" in result.fix and "MEDIC_LLM_MODEL" in result.fix
