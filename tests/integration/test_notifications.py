"""Notifications delivered by apprise to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeDocker
from helpers import wait_for

from agent.config import Settings
from agent.errors import ConfigError
from agent.model import Action, ActionKind, Match, Playbook, Signal, State
from agent.notify import AppriseNotifier, NotificationQueue
from agent.observe import Scope
from agent.store import MemoryStore
from agent.supervisor import Supervisor


def test_incident_opened_and_resolved_reach_the_webhook_once_each(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    notifier = NotificationQueue(AppriseNotifier([url]))
    fake = FakeDocker()
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    web = fake.add("shop-web-1", labels, state=State.EXITED, exit_code=1)
    supervisor = Supervisor(
        settings=Settings(project="shop", settle=0.0),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[
            Playbook("start", Match(frozenset({Signal.EXITED})), (Action(ActionKind.START),))
        ],
        scope=Scope(project="shop"),
        notifier=notifier,
    )
    supervisor.run_once()  # opened, then healed by a start
    fake.crash(web)
    supervisor.run_once()  # the same incident: no second "opened"
    fake.start(web.id)
    supervisor.run_once()  # healthy for the settle period: resolved
    notifier.close()

    wait_for(lambda: len(received) == 2, timeout=5, message="two notifications")
    opened, resolved = received
    assert opened["type"] == "failure"
    assert opened["title"] == "medic: web shows exited"
    assert "shop-web-1 (service web) exited with code 1." in opened["message"]
    assert "exit_code: 1" in opened["message"]
    assert resolved["type"] == "success"
    assert resolved["title"] == "medic: web recovered from exited"


def test_an_unusable_notify_url_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="MEDIC_NOTIFY_URLS"):
        AppriseNotifier(["nonsense://x"])
