"""How ``agent/wiring.py`` wires the escalation: with ANTHROPIC_API_KEY and
ANTHROPIC_BASE_URL set, Claude is asked through the real SDK at that address; with
MEDIC_LLM_PROVIDER=openai, the OpenAI-compatible server is, and Anthropic never; the
edits are reviewed by the fix guardrails, so a failed match goes back to the model
once; and the corrected edit becomes a fix branch in MEDIC_REPO."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from escalate_support import FixtureSource, load_fixture
from fake_anthropic import FakeAnthropic, tool_use
from fake_openai import FakeOpenAI, tool_call
from fakes import FakeClock
from fixrepo import FIX_NOW, make_repo

from agent import wiring
from agent.config import FixesSettings, LlmSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.escalate.claude import ClaudeModel
from agent.escalate.llm import SUBMIT
from agent.escalate.openai_compat import ChatCompletionsModel
from agent.fixes.git import Git
from agent.fixes.propose import FixOptions
from agent.model import ContainerId, ContainerRef, Edit, Finding, FixStatus, Signal
from agent.store.memory import MemoryStore


def submit(edit: Edit) -> Any:
    return tool_use(SUBMIT, submission(edit))


def submission(edit: Edit) -> dict[str, Any]:
    return {
        "summary": "The service listens on the wrong port.",
        "root_cause": "app.py hard-codes the port.",
        "confidence": "medium",
        "evidence": [],
        "edits": [{"path": edit.path, "old": edit.old, "new": edit.new}],
        "no_edits_reason": None,
    }


def test_claudes_failed_edit_goes_back_once_and_the_fixed_one_becomes_a_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path)
    wrong = Edit("web/app.py", 'port = int("8008")', 'port = int("8081")')
    right = Edit("web/app.py", 'port = int("8080")', 'port = int("8081")')
    fake = FakeAnthropic([submit(wrong), submit(right)])
    data = load_fixture("missing_module")
    store = MemoryStore()
    ref = ContainerRef(ContainerId(data["inspect"]["Id"]), "project-web-1", "project", "web")
    incident = store.record_finding(Finding(ref, Signal.CRASH_LOOP, "web keeps exiting", FIX_NOW))
    with fake.running():
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-wiring")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        service, followup = wiring.escalation(
            LlmSettings(max_retries=0),
            FixesSettings(repo=repo.path),
            gateway=cast(DockerSDKGateway, FixtureSource(data)),
            store=store,
            notifier=None,
            git=Git(repo.path),
            clock=FakeClock(FIX_NOW),
        )
        result = service.diagnose(incident.id)
        assert result.incident is not None
        outcome = followup.finished(result, result.incident)
    assert len(fake.requests) == 2
    headers = {k.lower(): v for k, v in fake.requests[0].headers.items()}
    assert "sk-ant-api03-wiring" in (headers.get("authorization"), headers.get("x-api-key")) or (
        headers.get("authorization") == "Bearer sk-ant-api03-wiring"
    )
    sent_back = fake.bodies[1]["messages"][-1]["content"][-1]
    assert sent_back["is_error"] is True
    assert "occurs 0 times in web/app.py; the nearest match is at line 5" in sent_back["content"]
    fix = outcome.fix
    assert fix is not None and fix.status is FixStatus.PROPOSED, fix
    assert 'int("8081")' in repo.git("show", f"{fix.branch}:web/app.py")
    assert store.fixes_of_incident(incident.id) == [fix]


def test_with_the_openai_provider_a_local_server_is_asked_and_anthropic_never_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path)
    wrong = Edit("web/app.py", 'port = int("8008")', 'port = int("8081")')
    right = Edit("web/app.py", 'port = int("8080")', 'port = int("8081")')
    anthropic = FakeAnthropic([submit(right)] * 4)
    local = FakeOpenAI([tool_call(SUBMIT, submission(wrong)), tool_call(SUBMIT, submission(right))])
    data = load_fixture("missing_module")
    store = MemoryStore()
    ref = ContainerRef(ContainerId(data["inspect"]["Id"]), "project-web-1", "project", "web")
    incident = store.record_finding(Finding(ref, Signal.CRASH_LOOP, "web keeps exiting", FIX_NOW))
    with anthropic.running(), local.running():
        # Claude's key and address are set too: only the provider named may be asked.
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-wiring")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic.url)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        service, followup = wiring.escalation(
            LlmSettings(provider="openai", base_url=local.url, model="qwen3:8b", max_retries=0),
            FixesSettings(repo=repo.path),
            gateway=cast(DockerSDKGateway, FixtureSource(data)),
            store=store,
            notifier=None,
            git=Git(repo.path),
            clock=FakeClock(FIX_NOW),
        )
        result = service.diagnose(incident.id)
        assert result.incident is not None
        outcome = followup.finished(result, result.incident)
    assert anthropic.requests == []
    assert local.rejected == []
    assert [b["model"] for b in local.bodies] == ["qwen3:8b", "qwen3:8b"]
    headers = {k.lower(): v for k, v in local.requests[0].headers.items()}
    assert headers["authorization"] == "Bearer no-key"
    sent_back = local.bodies[1]["messages"][-1]
    assert sent_back["role"] == "tool"
    assert "occurs 0 times in web/app.py; the nearest match is at line 5" in sent_back["content"]
    assert result.llm is not None and result.llm.model == "qwen3:8b"
    fix = outcome.fix
    assert fix is not None and fix.status is FixStatus.PROPOSED, fix
    assert 'int("8081")' in repo.git("show", f"{fix.branch}:web/app.py")


@pytest.mark.parametrize(
    ("settings", "environ", "model"),
    [
        (LlmSettings(), {}, None),
        (LlmSettings(), {"ANTHROPIC_API_KEY": "sk-ant-k"}, "claude-sonnet-5-5"),
        (LlmSettings(api_key="sk-ant-k", model="claude-opus-5"), {}, "claude-opus-5"),
        (LlmSettings(provider="openai"), {"ANTHROPIC_API_KEY": "sk-ant-k"}, None),
        (LlmSettings(provider="openai"), {"OPENAI_API_KEY": "sk-x"}, "gpt-4.1-mini"),
        (
            LlmSettings(provider="openai"),
            {"OPENAI_BASE_URL": "http://vllm:8000/v1"},
            "gpt-4.1-mini",
        ),
        (
            LlmSettings(provider="openai", base_url="http://ollama:11434/v1", model="qwen3"),
            {},
            "qwen3",
        ),
    ],
)
def test_a_model_is_asked_only_when_its_provider_is_configured(
    settings: LlmSettings, environ: dict[str, str], model: str | None
) -> None:
    made = wiring.llm_diagnoser(settings, None, FixOptions.from_settings(FixesSettings()), environ)
    assert (made.model.name if made is not None else None) == model
    if made is not None:
        kind = ChatCompletionsModel if settings.provider == "openai" else ClaudeModel
        assert isinstance(made.model, kind)
