"""Notifications: once per incident and kind, rate-limited per service, never blocking,
and each one's outcome handed to a journal."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from factories import T0
from fakes import FakeClock, FakeDocker
from helpers import wait_for
from loguru import logger

from agent.config import HealingSettings
from agent.errors import StoreError
from agent.healing.observe import Scope
from agent.healing.playbooks import load_playbooks
from agent.model import (
    Action,
    ContainerId,
    ContainerRef,
    Finding,
    NotificationOutcome,
    NotificationRecord,
    Signal,
    State,
)
from agent.notify import (
    MAX_DEDUPE_KEYS,
    MAX_ERROR_CHARS,
    Notification,
    NotificationKind,
    NotificationQueue,
    Notifier,
    NotifyError,
    error_line,
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


# --- the journal: what became of each notification --------------------------------------------


class Journal:
    """A journal that keeps what it is given, and the thread that gave it."""

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.records: list[NotificationRecord] = []
        self.threads: set[str] = set()
        self.gate = gate
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, record: NotificationRecord) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.error is not None:
            raise self.error
        self.records.append(record)

    def outcomes(self) -> list[tuple[str, str, NotificationOutcome]]:
        return [(r.incident_id, r.kind, r.outcome) for r in self.records]


class Gated(Notifier):
    """A destination that takes each notification only when the test lets it."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.entered.set()
        self.gate.wait(timeout=10)
        self.sent.append(notification)


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The INFO (and worse) lines medic logs during the test, as ``LEVEL message``."""
    lines: list[str] = []
    sink = logger.add(
        lambda m: lines.append(str(m).rstrip()), level="INFO", format="{level} {message}"
    )
    yield lines
    logger.remove(sink)


def test_each_notification_is_journaled_once_with_what_became_of_it() -> None:
    clock = FakeClock(T0)
    journal = Journal()
    q = NotificationQueue(Recorder(), now=clock.now, journal=journal)
    q.send(Notification(NotificationKind.OPENED, "i1", "shop/web/x", "medic: web is down", "", T0))
    q.send(note())  # a repeat: neither sent nor recorded
    q.send(note(kind=NotificationKind.RESOLVED))
    q.close()
    assert journal.outcomes() == [
        ("i1", "opened", NotificationOutcome.DELIVERED),
        ("i1", "resolved", NotificationOutcome.DELIVERED),
    ]
    opened = journal.records[0]
    assert (opened.title, opened.at, opened.error) == ("medic: web is down", T0, None)
    assert len({r.id for r in journal.records}) == 2


def test_a_failed_delivery_is_journaled_with_its_error_line() -> None:
    journal = Journal()
    q = NotificationQueue(Recorder(fail=True), journal=journal)
    q.send(note())
    q.close()
    [failed] = journal.records
    assert (failed.outcome, failed.error) == (NotificationOutcome.FAILED, "webhook answered 500")
    assert q.failed == 1


class Broken(Notifier):
    """A destination whose plugin breaks, with its URL (and token) in the message."""

    def send(self, notification: Notification) -> None:
        raise RuntimeError(
            "POST https://hooks.slack.com/services/T0123/B0456/abcdefghijkl failed:\n"
            "\x1b[31mconnection reset\x1b[0m"
        )


def test_an_unexpected_error_is_journaled_on_one_line_without_the_destinations_secret() -> None:
    journal = Journal()
    q = NotificationQueue(Broken(), journal=journal)
    q.send(note())
    q.close()
    [failed] = journal.records
    assert failed.outcome is NotificationOutcome.FAILED
    assert failed.error == "RuntimeError: POST [REDACTED:SLACK_WEBHOOK] failed: connection reset"


def test_a_very_long_error_is_cut_for_the_record() -> None:
    line = error_line(NotifyError("x" * 5000))
    assert len(line) == MAX_ERROR_CHARS
    assert line.endswith("…")


def test_notifications_held_back_by_the_rate_limit_are_journaled_as_held_back() -> None:
    clock = FakeClock(T0)
    journal = Journal()
    q = NotificationQueue(Recorder(), rate=2, per=60, now=clock.now, journal=journal)
    for n in range(4):
        clock.advance(1)
        q.send(note(incident=f"i{n}"))
    q.close()
    assert sorted(journal.outcomes()) == [
        ("i0", "opened", NotificationOutcome.DELIVERED),
        ("i1", "opened", NotificationOutcome.DELIVERED),
        ("i2", "opened", NotificationOutcome.HELD_BACK),
        ("i3", "opened", NotificationOutcome.HELD_BACK),
    ]
    held = [r for r in journal.records if r.outcome is NotificationOutcome.HELD_BACK]
    assert [r.at for r in held] == [T0 + timedelta(seconds=3), T0 + timedelta(seconds=4)]


def test_a_notification_dropped_from_a_full_queue_is_journaled_on_the_sending_thread() -> None:
    sender = Gated()
    journal = Journal()
    q = NotificationQueue(sender, max_pending=1, journal=journal)
    q.send(note(incident="i0"))
    assert sender.entered.wait(timeout=5)  # i0 is being sent; the queue is empty again
    q.send(note(incident="i1"))  # waits in the queue
    q.send(note(incident="i2"))  # the queue is full: dropped
    # Not journaled on the caller's thread, so a slow store cannot hold up the supervisor:
    # the record waits for the sending thread.
    assert journal.records == []
    sender.gate.set()
    q.close()
    assert sorted(journal.outcomes()) == [
        ("i0", "opened", NotificationOutcome.DELIVERED),
        ("i1", "opened", NotificationOutcome.DELIVERED),
        ("i2", "opened", NotificationOutcome.DROPPED),
    ]
    assert journal.threads == {"medic-notify"}


def test_a_slow_journal_never_blocks_the_caller() -> None:
    gate = threading.Event()
    journal = Journal(gate=gate)
    sent = Recorder()
    q = NotificationQueue(sent, rate=1, per=3600, journal=journal)
    q.send(note(incident="i0"))
    assert journal.entered.wait(timeout=5)  # the sending thread now waits on the journal
    for n in range(1, 4):
        q.send(note(incident=f"i{n}"))  # held back: returns while the journal still waits
    q.send(note(incident="other", fp="shop/db/x"))
    assert journal.records == []
    gate.set()
    q.close()
    assert [n.incident_id for n in sent.sent] == ["i0", "other"]
    assert len(journal.records) == 5


def test_records_waiting_for_a_stuck_journal_are_bounded(logged: list[str]) -> None:
    gate = threading.Event()
    journal = Journal(gate=gate)
    q = NotificationQueue(Recorder(), rate=0, max_pending=2, journal=journal)
    q.send(note(incident="i0"))
    assert journal.entered.wait(timeout=5)
    for n in range(1, 6):
        q.send(note(incident=f"i{n}"))
    assert q.unrecorded == 3
    assert len([line for line in logged if line.startswith("WARNING")]) == 1
    gate.set()
    q.close()
    assert [r.incident_id for r in journal.records] == ["i0", "i1", "i2"]


def test_a_journal_that_raises_stops_no_notification_and_warns_once_per_kind_of_error(
    logged: list[str],
) -> None:
    journal = Journal()
    journal.error = StoreError("cannot write the incident spool /state/spool.jsonl: disk full")
    sent = Recorder()
    q = NotificationQueue(sent, journal=journal)
    for n in range(3):
        q.send(note(incident=f"i{n}"))
    wait_for(lambda: len(sent.sent) == 3, timeout=5, message="all three sent")
    wait_for(lambda: q.unrecorded == 3, timeout=5, message="three records lost")
    journal.error = RuntimeError("a bug in the journal")
    q.send(note(incident="i3"))
    wait_for(lambda: q.unrecorded == 4, timeout=5, message="the fourth record lost")
    journal.error = None
    q.send(note(incident="i4"))
    q.close()

    assert [n.incident_id for n in sent.sent] == ["i0", "i1", "i2", "i3", "i4"]
    assert [r.incident_id for r in journal.records] == ["i4"]
    warnings = [line for line in logged if line.startswith("WARNING")]
    assert warnings == [
        "WARNING Could not record that the opened notification of incident i0 was delivered: "
        "cannot write the incident spool /state/spool.jsonl: disk full. Notifications are "
        "still sent, but the incident's timeline lacks them until the incident store takes "
        "them again (see the store's own messages).",
        "WARNING Could not record that the opened notification of incident i3 was delivered: "
        "a bug in the journal. Notifications are still sent, but the incident's timeline "
        "lacks them until the incident store takes them again (see the store's own messages).",
    ]
    assert (
        "INFO Notification records are kept again (4 were not recorded since medic started)."
        in logged
    )


def test_the_queue_journals_into_an_incident_store() -> None:
    store = MemoryStore()
    incident = store.record_finding(
        Finding(
            ContainerRef(ContainerId("a" * 64), "shop-web-1", "shop", "web"),
            Signal.EXITED,
            "shop-web-1 exited with code 1.",
            T0,
        )
    )
    q = NotificationQueue(Recorder(fail=True), journal=store.record_notification)
    q.send(note(incident=incident.id))
    q.send(note(incident="not-an-incident"))
    q.close()
    [record] = store.notifications(incident.id)
    assert (record.kind, record.outcome) == ("opened", NotificationOutcome.FAILED)
    assert q.unrecorded == 0
