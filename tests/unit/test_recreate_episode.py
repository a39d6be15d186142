"""A recreate or rebuild continues the failure episode of the container it replaces.

One episode is one incident: the recreated container carries the incident on, its
attempts count toward the same backoff and escalation, and the incident resolves
only once the new container has stayed healthy for the settle period.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import compose_build_folder, supervisor_on
from fakes import FakeClock, FakeContainer, FakeDocker

from agent.config import HealingSettings
from agent.model import (
    Action,
    Escalate,
    IncidentStatus,
    Match,
    Playbook,
    Signal,
    State,
)
from agent.store import MemoryStore
from agent.supervisor import Supervisor


def supervisor(fake: FakeDocker, store: MemoryStore, clock: FakeClock, kind: str) -> Supervisor:
    playbook = Playbook(
        "replace-exited", Match(frozenset({Signal.EXITED})), (Action(kind, timeout=1),)
    )
    return supervisor_on(
        fake, [playbook], store=store, clock=clock, healing=HealingSettings(settle=30.0)
    )


def current(fake: FakeDocker) -> FakeContainer:
    [web] = [c for c in fake.containers.values() if c.name == "shop-web-1"]
    return web


@pytest.mark.parametrize("kind", ["recreate", "rebuild"])
def test_a_replace_loop_is_one_incident_that_escalates_after_the_playbooks_attempts(
    kind: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    fake.add("shop-web-1", compose_build_folder(tmp_path, "web"), state=State.EXITED, exit_code=1)
    store = MemoryStore()
    s = supervisor(fake, store, clock, kind)

    replaced: list[str] = []
    for _ in range(3):  # the default escalation: 3 attempts within 30 min
        report = s.run_once()
        [(_, _, [result])] = report.results
        assert result.ok, result.error
        assert result.replaced_by is not None
        replaced.append(result.replaced_by)
        fake.crash(current(fake))  # the new container fails as the old one did
        clock.advance(60)
    escalated = s.run_once()

    assert [type(d) for d in escalated.decisions] == [Escalate]
    assert escalated.results == []
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.ESCALATED
    assert len(incident.attempts) == 3
    assert incident.container.id == replaced[-1]
    moves = [e.summary for e in incident.evidence if "was recreated as" in e.summary]
    assert [m.split("was recreated as ")[1][:12] for m in moves] == [r[:12] for r in replaced]


def test_a_recreated_container_that_stays_healthy_resolves_the_incident_after_settling(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    fake = FakeDocker(clock)
    web = fake.add(
        "shop-web-1", compose_build_folder(tmp_path, "web"), state=State.EXITED, exit_code=1
    )
    store = MemoryStore()
    s = supervisor(fake, store, clock, "recreate")

    [(_, _, [result])] = s.run_once().results
    assert result.replaced_by is not None
    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.HEALING
    assert incident.container.id == result.replaced_by
    assert incident.evidence[-1].summary == (
        f"shop-web-1 ({web.id[:12]}) was recreated as {result.replaced_by[:12]}; "
        "medic watches the new one"
    )

    clock.advance(1)
    s.run_once()  # healthy from now on
    clock.advance(20)
    s.run_once()
    assert store.list_incidents()[0].status is IncidentStatus.HEALING  # not settled yet
    clock.advance(15)
    s.run_once()

    [incident] = store.list_incidents()
    assert incident.status is IncidentStatus.RESOLVED
    assert incident.note == "healthy for 30 s after 1 attempt"
    assert len(incident.attempts) == 1
    assert incident.attempts[0].output == f"recreated as {result.replaced_by[:12]}"
