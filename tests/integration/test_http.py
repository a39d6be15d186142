"""/healthz, /readyz and /metrics over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from factories import T0
from fakes import FakeClock, FakeDocker

from agent.config import HealingSettings
from agent.healing.observe import Scope
from agent.http import StatusServer
from agent.model import Action, Health, Match, Playbook, Signal, State
from agent.store import MemoryStore
from agent.supervisor import Supervisor

LABELS = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def medic() -> Iterator[tuple[Supervisor, FakeDocker, FakeClock, str, list[bool]]]:
    fake = FakeDocker()
    clock = FakeClock(T0)
    supervisor = Supervisor(
        healing=HealingSettings(interval=30),
        gateway=fake,
        store=MemoryStore(),
        playbooks=[Playbook("start", Match(frozenset({Signal.EXITED})), (Action("start"),))],
        scope=Scope(project="shop"),
        clock=clock,
    )
    ready = [True]
    server = StatusServer(
        health=supervisor.health,
        ready=lambda: (ready[0], {"status": "ok" if ready[0] else "spool failing"}),
        registry=supervisor.metrics.registry,
        status=supervisor.status_document,
        host="127.0.0.1",
        port=0,
    )
    server.start()
    yield supervisor, fake, clock, f"http://127.0.0.1:{server.port}", ready
    server.stop()


def test_healthz_is_ok_while_polls_happen_and_503_when_the_loop_stalls(
    medic: tuple[Supervisor, FakeDocker, FakeClock, str, list[bool]],
) -> None:
    supervisor, _, clock, base, _ = medic
    supervisor.run_once()
    status, body = get(f"{base}/healthz")
    assert status == 200
    detail = json.loads(body)
    assert detail["status"] == "ok"
    assert detail["events_stream"] == "disconnected"
    clock.advance(91)  # three 30 s intervals without a poll
    status, body = get(f"{base}/healthz")
    assert status == 503
    assert json.loads(body)["status"] == "stalled"


def test_readyz_follows_the_store(
    medic: tuple[Supervisor, FakeDocker, FakeClock, str, list[bool]],
) -> None:
    _, _, _, base, ready = medic
    assert get(f"{base}/readyz")[0] == 200
    ready[0] = False
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert json.loads(body)["status"] == "spool failing"


def test_metrics_count_cycles_findings_and_actions(
    medic: tuple[Supervisor, FakeDocker, FakeClock, str, list[bool]],
) -> None:
    supervisor, fake, _, base, _ = medic
    fake.add("shop-web-1", LABELS, state=State.EXITED, exit_code=1)
    fake.add("shop-api-1", LABELS, health=Health.HEALTHY)
    supervisor.run_once()
    status, text = get(f"{base}/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert "medic_cycles_total 1.0" in lines
    assert "medic_containers 2.0" in lines
    assert 'medic_findings_total{signal="exited"} 1.0' in lines
    assert 'medic_actions_total{kind="start",outcome="ok"} 1.0' in lines
    assert "medic_open_incidents 1.0" in lines
    assert get(f"{base}/nope")[0] == 404


def test_status_shows_each_container_with_its_incidents_and_circuit(
    medic: tuple[Supervisor, FakeDocker, FakeClock, str, list[bool]],
) -> None:
    supervisor, fake, _, base, _ = medic
    fake.add("shop-web-1", LABELS, state=State.EXITED, exit_code=1)
    fake.add("shop-api-1", LABELS, health=Health.HEALTHY)
    supervisor.run_once()
    status, body = get(f"{base}/status")
    assert status == 200
    api, web = json.loads(body)["containers"]
    assert api["container"] == "shop-api-1"
    assert api["incidents"] == []
    assert web["container"] == "shop-web-1"
    assert [i["signal"] for i in web["incidents"]] == ["exited"]
    assert web["attempts_in_streak"] == 1
    assert web["circuit"] == "closed"
    # The only medic of its scope (no database) leads, since it started.
    leadership = json.loads(body)["leadership"]
    assert leadership["role"] == "leader" and leadership["election"] == "none"
    assert leadership["since"] == T0.isoformat()
