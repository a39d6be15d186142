"""How ``agent/wiring.py`` wires the escalation: with ANTHROPIC_API_KEY and
ANTHROPIC_BASE_URL set, Claude is asked through the real SDK at that address; its
edits are reviewed by the fix guardrails, so a failed match goes back to the model
once; and the corrected edit becomes a fix branch in MEDIC_REPO."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from escalate_support import FixtureSource, load_fixture
from fake_anthropic import FakeAnthropic, tool_use
from fakes import FakeClock
from fixrepo import FIX_NOW, make_repo

from agent import wiring
from agent.config import FixesSettings, LlmSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.escalate.llm import SUBMIT
from agent.fixes.git import Git
from agent.model import ContainerId, ContainerRef, Edit, Finding, FixStatus, Signal
from agent.store.memory import MemoryStore


def submit(edit: Edit) -> Any:
    return tool_use(
        SUBMIT,
        {
            "summary": "The service listens on the wrong port.",
            "root_cause": "app.py hard-codes the port.",
            "confidence": "medium",
            "evidence": [],
            "edits": [{"path": edit.path, "old": edit.old, "new": edit.new}],
            "no_edits_reason": None,
        },
    )


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
