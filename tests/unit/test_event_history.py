"""medic's look back into the engine's event history, when that history is cut short.

The engine keeps only its last 256 events (a 1 s health check alone makes three a
second), and none across its restarts. A death medic did not see live is explained
from that history; when the history no longer reaches the death, medic takes it for
a crash and says so (docs/incidents.md, "Looking back into the engine's events").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import FakeDocker
from loguru import logger

from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.model import Action, Match, Playbook, Signal
from agent.store import MemoryStore
from agent.supervisor import Supervisor

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
START = Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),))


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m.record["message"])), level="WARNING")
    yield seen
    logger.remove(sink)


def supervisor(fake: FakeDocker) -> Supervisor:
    return Supervisor(
        healing=HealingSettings(),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[START],
        scope=Scope(project="shop"),
    )


def test_a_persons_stop_still_in_the_engines_history_is_left_alone(warnings: list[str]) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", LABELS)
    fake.stop(web.id, timeout=10, exit_code=137)  # while medic was not running

    report = supervisor(fake).run_once()

    assert report.findings == []
    assert "start" not in fake.requests
    assert warnings == []


def test_a_persons_stop_the_engine_no_longer_remembers_is_taken_for_a_crash(
    warnings: list[str],
) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", LABELS)
    fake.stop(web.id, timeout=10, exit_code=137)
    fake.history.clear()  # 256 newer events pushed it out of the engine's history

    report = supervisor(fake).run_once()

    assert [f.signal for f in report.findings] == [Signal.EXITED]
    assert fake.requests.count("start") == 1
    [warning] = [w for w in warnings if "event history no longer goes back" in w]
    assert "takes it for a crash" in warning
    assert "stop it again while medic runs" in warning
