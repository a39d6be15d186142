"""Notifications delivered by apprise to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import supervisor_on
from fakes import FakeDocker
from helpers import wait_for

from agent.config import HealingSettings
from agent.errors import ConfigError
from agent.healing.observe import Scope
from agent.model import Action, Match, NotificationOutcome, Playbook, Signal, State
from agent.notify import AppriseNotifier, Notification, NotificationKind, NotificationQueue
from agent.store import MemoryStore
from agent.supervisor import Supervisor

#: Start an exited container again: what every test here heals.
START = [Playbook("start", Match(frozenset({Signal.EXITED})), (Action("start"),))]


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_incident_opened_and_resolved_reach_the_webhook_once_each(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    notifier = NotificationQueue(AppriseNotifier([url]))
    fake = FakeDocker()
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    web = fake.add("shop-web-1", labels, state=State.EXITED, exit_code=1)
    supervisor = Supervisor(
        healing=HealingSettings(settle=0.0),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[Playbook("start", Match(frozenset({Signal.EXITED})), (Action("start"),))],
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


def test_what_became_of_each_notification_is_kept_with_its_incident(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    store = MemoryStore()
    notifier = NotificationQueue(AppriseNotifier([url]), journal=store.record_notification)
    fake = FakeDocker()
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    web = fake.add("shop-web-1", labels, state=State.EXITED, exit_code=1)
    supervisor = supervisor_on(
        fake, START, store=store, healing=HealingSettings(settle=0.0), notifier=notifier
    )
    supervisor.run_once()
    fake.start(web.id)
    supervisor.run_once()
    notifier.close()

    [incident] = store.list_incidents()
    assert [(n.kind, n.title, n.outcome, n.error) for n in store.notifications(incident.id)] == [
        ("opened", "medic: web shows exited", NotificationOutcome.DELIVERED, None),
        ("resolved", "medic: web recovered from exited", NotificationOutcome.DELIVERED, None),
    ]
    assert len(received) == 2


def test_a_notification_no_destination_took_is_kept_as_failed_with_the_reason() -> None:
    store = MemoryStore()
    fake = FakeDocker()
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    fake.add("shop-web-1", labels, state=State.EXITED, exit_code=1)
    # Nothing listens there: apprise cannot deliver.
    nowhere = f"json://127.0.0.1:{closed_port()}/hook"
    notifier = NotificationQueue(AppriseNotifier([nowhere]), journal=store.record_notification)
    supervisor = supervisor_on(fake, START, store=store, notifier=notifier)
    supervisor.run_once()
    notifier.close(timeout=30)

    [incident] = store.list_incidents()
    [record] = store.notifications(incident.id)
    assert (record.kind, record.outcome) == ("opened", NotificationOutcome.FAILED)
    assert record.error == (
        f"no destination accepted the opened notification of incident {incident.id[:8]}"
    )


def test_an_unusable_notify_url_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="MEDIC_NOTIFY_URLS"):
        AppriseNotifier(["nonsense://x"])


def test_terminal_and_bidi_controls_reach_the_webhook_escaped(
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    hostile = "fix ready\x1b[2K\x1b[1A\u202eyltneserp"
    AppriseNotifier([url]).send(
        Notification(
            kind=NotificationKind.FIX_PROPOSED,
            incident_id="0" * 32,
            fingerprint="web",
            title=hostile,
            body=f"Diagnosis: {hostile}",
            at=datetime(2026, 5, 1, tzinfo=UTC),
        )
    )
    wait_for(lambda: len(received) == 1, timeout=5, message="one notification")
    [sent] = received
    for text in (sent["title"], sent["message"]):
        assert "\x1b" not in text and "\u202e" not in text
        assert "\\x1b[2K" in text and "\\u202e" in text
