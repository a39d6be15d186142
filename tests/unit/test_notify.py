"""Notifications: once per incident and kind, rate-limited per service, never blocking."""

from __future__ import annotations

import threading
from pathlib import Path

from factories import T0
from fakes import FakeClock, FakeDocker
from helpers import wait_for

from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.healing.playbooks import load_playbooks
from agent.model import Action, State
from agent.notify import (
    MAX_DEDUPE_KEYS,
    Notification,
    NotificationKind,
    NotificationQueue,
    Notifier,
    NotifyError,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor


class Recorder(Notifier):
    def __init__(self, *, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.sent: list[Notification] = []
        self.gate = gate
        self.fail = fail

    def send(self, notification: Notification) -> None:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail:
            raise NotifyError("webhook answered 500")
        self.sent.append(notification)


def note(
    incident: str = "i1", kind: NotificationKind = NotificationKind.OPENED, fp: str = "shop/web/x"
) -> Notification:
    return Notification(kind, incident, fp, "title", "body", T0)


def test_each_incident_says_each_thing_once() -> None:
    sent = Recorder()
    q = NotificationQueue(sent)
    q.send(note())
    q.send(note())
    q.send(note(kind=NotificationKind.RESOLVED))
    q.close()
    assert [n.kind for n in sent.sent] == [NotificationKind.OPENED, NotificationKind.RESOLVED]


def test_the_dedupe_keys_are_bounded_and_the_oldest_are_forgotten_first() -> None:
    clock = FakeClock(T0)
    q = NotificationQueue(Recorder(), rate=10**9, max_pending=10, now=clock.now)
    for n in range(MAX_DEDUPE_KEYS + 500):
        q.send(note(incident=f"i{n}", fp="shop/web/exited"))
    assert q.remembered()[0] == MAX_DEDUPE_KEYS
    q.close()
    assert MAX_DEDUPE_KEYS == 10_000


def test_a_recent_key_is_still_a_repeat_when_old_ones_are_forgotten() -> None:
    sent = Recorder()
    q = NotificationQueue(sent, rate=10**9, max_keys=3)
    for incident in ("i1", "i2", "i3", "i4"):
        q.send(note(incident=incident))
    q.send(note(incident="i4"))  # still remembered: not sent again
    q.send(note(incident="i1"))  # the oldest, forgotten: said a second time
    q.close()
    assert [n.incident_id for n in sent.sent] == ["i1", "i2", "i3", "i4", "i1"]


def test_send_times_are_kept_only_for_services_within_the_rate_window() -> None:
    clock = FakeClock(T0)
    q = NotificationQueue(Recorder(), rate=6, per=3600, now=clock.now)
    for n in range(200):
        q.send(note(incident=f"i{n}", fp=f"shop/service-{n}/exited"))
    assert q.remembered()[1] == 200
    clock.advance(2 * 3600)
    q.send(note(incident="later", fp="shop/web/exited"))
    assert q.remembered()[1] == 1
    q.close()


def test_a_flapping_service_is_rate_limited_and_the_next_message_says_how_many_were_held() -> None:
    sent = Recorder()
    clock = FakeClock(T0)
    q = NotificationQueue(sent, rate=2, per=60, now=clock.now)
    for n in range(5):
        q.send(note(incident=f"i{n}"))
    q.send(note(incident="other", fp="shop/db/x"))  # another service is not held back
    clock.advance(61)
    q.send(note(incident="later"))
    q.close()
    assert [n.incident_id for n in sent.sent] == ["i0", "i1", "other", "later"]
    assert "3 more notifications for shop/web/x were held back" in sent.sent[-1].body


def test_a_slow_webhook_never_blocks_the_caller() -> None:
    gate = threading.Event()
    sent = Recorder(gate=gate)
    q = NotificationQueue(sent)
    for n in range(3):
        q.send(note(incident=f"i{n}"))  # returns while the first send is still blocked
    assert sent.sent == []
    gate.set()
    wait_for(lambda: len(sent.sent) == 3, timeout=5, message="all delivered")
    q.close()


def test_a_failing_webhook_is_counted_and_does_not_stop_the_queue() -> None:
    failing = Recorder(fail=True)
    q = NotificationQueue(failing)
    q.send(note(incident="a"))
    q.send(note(incident="b"))
    q.close()
    assert q.failed == 2
    assert q.delivered == 0


def test_a_notify_action_sends_through_the_queue_and_fails_without_destinations(
    tmp_path: Path,
) -> None:
    path = tmp_path / "book.yml"
    path.write_text(
        "playbooks:\n  - name: tell\n    match: {signals: [exited]}\n"
        "    actions:\n      - notify: {message: web is down again}\n      - start\n"
    )
    [book] = load_playbooks(path)
    assert book.actions[0] == Action("notify", message="web is down again")
    fake = FakeDocker()
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    fake.add("shop-web-1", labels, state=State.EXITED, exit_code=1)
    sent = Recorder()
    queue = NotificationQueue(sent)
    medic = Supervisor(
        healing=HealingSettings(),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[book],
        scope=Scope(project="shop"),
        notifier=queue,
    )
    [(_, _, results)] = medic.run_once().results
    assert [r.ok for r in results] == [True, True]
    queue.close()
    playbook_notes = [n for n in sent.sent if n.kind is NotificationKind.PLAYBOOK]
    [note] = playbook_notes
    assert note.title == "medic: web is down again"
    assert "attempt 1" in note.body

    quiet = Supervisor(
        healing=HealingSettings(),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[book],
        scope=Scope(project="shop"),
    )
    fake.crash(next(iter(fake.containers.values())))
    [(_, _, [failed])] = quiet.run_once().results
    assert not failed.ok
    assert failed.error is not None and "MEDIC_NOTIFY_URLS" in failed.error
