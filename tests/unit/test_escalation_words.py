"""What an escalation says: attempts that healed nothing, or heals that did not last.

Driven through the supervisor over the fake engine, so that the bookkeeping of the
real path (agent/healing/slots.py ``judged``) is what fills ``HealingState.relapses``.
"""

from __future__ import annotations

from typing import NamedTuple

from factories import supervisor_on
from fakes import FakeClock, FakeContainer, FakeDocker

from agent.model import (
    Action,
    Escalate,
    Health,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
)
from agent.notify import Notification, NotificationKind, Notifier
from agent.store import MemoryStore
from agent.supervisor import Supervisor

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
RESTART = Playbook("restart-unhealthy", Match(frozenset({Signal.UNHEALTHY})), (Action("restart"),))


class Sent(Notifier):
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    def escalations(self) -> list[str]:
        return [n.title for n in self.sent if n.kind is NotificationKind.ESCALATED]


class Stack(NamedTuple):
    clock: FakeClock
    web: FakeContainer
    store: MemoryStore
    sent: Sent
    medic: Supervisor


def unhealthy_web() -> Stack:
    """An unhealthy web container under a supervisor that restarts it, on a fake clock."""
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add("shop-web-1", LABELS, health=Health.UNHEALTHY)
    store = MemoryStore()
    sent = Sent()
    medic = supervisor_on(fake, [RESTART], store=store, clock=clock, notifier=sent)
    return Stack(clock, web, store, sent, medic)


def test_heals_that_did_not_last_are_said_as_such_when_medic_escalates() -> None:
    clock, web, store, sent, s = unhealthy_web()

    report = s.run_once()
    for up in (25, 31, 12):  # each restart brings it back; it fails again after a while
        assert [r.action.kind for _, _, rs in report.results for r in rs] == ["restart"]
        assert web.health is Health.HEALTHY
        clock.advance(5)
        s.run_once()  # medic sees it healthy
        clock.advance(up)
        web.health = Health.UNHEALTHY
        report = s.run_once()

    [decision] = report.decisions
    assert isinstance(decision, Escalate)
    expected = (
        "shop-web-1 (service web) was healed 3 times by playbook restart-unhealthy and "
        "failed again within 31 s each time (within 30 min)"
    )
    assert decision.reason == expected
    [incident] = store.list_incidents()
    assert (incident.status, incident.note) == (IncidentStatus.ESCALATED, expected)
    relapses = s.tracked[web.id].healing.relapses  # type: ignore[index]
    assert [r.lasted for r in relapses] == [25, 31, 12]
    assert sent.escalations() == ["medic escalated: web fails again after each heal, now unhealthy"]


def test_attempts_after_which_it_never_looked_well_keep_the_old_words() -> None:
    clock, web, _, sent, s = unhealthy_web()

    report = s.run_once()
    for _ in range(3):
        assert report.results
        web.health = Health.UNHEALTHY  # failing again before medic looked
        clock.advance(60)
        report = s.run_once()

    [decision] = report.decisions
    assert isinstance(decision, Escalate)
    assert decision.reason == (
        "shop-web-1 (service web) still shows unhealthy after 3 attempts by playbook "
        "restart-unhealthy within 30 min"
    )
    assert s.tracked[web.id].healing.relapses == ()  # type: ignore[index]
    assert sent.escalations() == ["medic escalated: web still shows unhealthy"]
