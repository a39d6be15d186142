"""medic's look back into the engine's event history, when that history is cut short.

The engine keeps only its last 256 events (a 1 s health check alone makes three a
second), and none across its restarts. A death medic did not see live is explained
from that history; when the history no longer reaches the death, medic takes it for
a crash and says so (docs/incidents.md, "Looking back into the engine's events").
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from factories import supervisor_on
from fakes import FakeDocker
from helpers import logged

from agent.model import Action, Match, Playbook, Signal

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
START = Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),))


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    with logged("WARNING") as lines:
        yield lines


def test_a_persons_stop_still_in_the_engines_history_is_left_alone(warnings: list[str]) -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", LABELS)
    fake.stop(web.id, timeout=10, exit_code=137)  # while medic was not running

    report = supervisor_on(fake, [START]).run_once()

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

    report = supervisor_on(fake, [START]).run_once()

    assert [f.signal for f in report.findings] == [Signal.EXITED]
    assert fake.requests.count("start") == 1
    [warning] = [w for w in warnings if "event history no longer goes back" in w]
    assert "takes it for a crash" in warning
    assert "stop it again while medic runs" in warning
