"""Measure what a poll cycle costs and how fast medic reacts, on a real Docker engine.

For each stack size N it starts N healthy containers plus a few that go
unhealthy on demand, then reports:

* Docker API requests per healthy cycle, counted at the HTTP layer (a requests
  response hook on the SDK's session), so nothing the gateway does is missed;
* CPU time of this process per healthy cycle;
* the latency from Docker's ``health_status: unhealthy`` event (the engine's own
  timestamp) to the start of medic's restart (medic's attempt record): both on
  the same host clock.

Usage: ``.venv/bin/python bench/healing_bench.py [--sizes 50 200] [--cycles 20]``.
Figures are printed and written to docs/benchmarks.md between markers. Needs the
image built by tests/images/build. Every container it starts is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docs_block import write_block

from agent import logs
from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.translate import event_from_json
from agent.healing.observe import Scope
from agent.model import Action, Backoff, Escalation, Match, Playbook, Signal
from agent.store import MemoryStore
from agent.supervisor import Supervisor

IMAGE = "medic-test/busybox:latest"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- healing-bench:begin -->", "<!-- healing-bench:end -->"
SERVE = "trap 'exit 0' TERM; rm -f /tmp/broken; while :; do sleep 1; done"
SECOND = 1_000_000_000

PLAYBOOKS = (
    Playbook(
        name="restart-unhealthy",
        match=Match(signals=frozenset({Signal.UNHEALTHY})),
        actions=(Action("restart", timeout=2),),
        backoff=Backoff(initial=1),
        escalation=Escalation(after_attempts=5),
    ),
)


def start_stack(client: Any, project: str, healthy: int, sick: int) -> tuple[list[Any], list[Any]]:
    def run(service: str, number: int, interval_s: int, retries: int, timeout_s: int) -> Any:
        return client.containers.run(
            IMAGE,
            ["sh", "-c", SERVE],
            detach=True,
            name=f"{project}-{service}-{number}",
            labels={
                "com.docker.compose.project": project,
                "com.docker.compose.service": service,
            },
            healthcheck={
                "test": ["CMD-SHELL", "test ! -f /tmp/broken"],
                "interval": interval_s * SECOND,
                "retries": retries,
                "timeout": timeout_s * SECOND,
            },
        )

    # The healthy bulk checks itself rarely and leniently: on a loaded two-core machine a
    # strict check times out, medic (rightly) restarts it, and the figures measure that.
    bulk = [run("bulk", n, 30, retries=5, timeout_s=20) for n in range(healthy)]
    sickly = [run("sick", n, 1, retries=1, timeout_s=5) for n in range(sick)]
    return bulk, sickly


def wait_healthy(containers: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for c in containers:
        while True:
            c.reload()
            if c.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{c.name} did not become healthy within {timeout:g} s")
            time.sleep(0.5)


def measure(client: Any, size: int, cycles: int, sick: int) -> dict[str, float]:
    project = f"medicbench-{uuid.uuid4().hex[:6]}"
    bulk, sickly = start_stack(client, project, size, sick)
    try:
        wait_healthy(sickly, timeout=60)
        gateway = DockerSDKGateway.from_env(pool_size=8)
        requests_seen: list[str] = []
        gateway.api_client.hooks["response"].append(
            lambda r, *a, **k: requests_seen.append(r.request.path_url)
        )
        store = MemoryStore()
        supervisor = Supervisor(
            healing=HealingSettings(interval=300, settle=1),
            gateway=gateway,
            store=store,
            playbooks=PLAYBOOKS,
            scope=Scope(project=project),
        )
        # Healthy cycles: requests and CPU per cycle.
        supervisor.run_once()
        requests_seen.clear()
        cpu0 = time.process_time()
        for _ in range(cycles):
            report = supervisor.run_once()
            assert report.containers == size + sick, report
        cpu = (time.process_time() - cpu0) / cycles
        per_cycle = len(requests_seen) / cycles

        # Event-to-action latency, one broken container at a time.
        thread = threading.Thread(target=supervisor.run, daemon=True)
        thread.start()
        while not supervisor.events_connected:
            time.sleep(0.05)
        watcher = client.api.events(
            decode=True,
            filters={"label": [f"com.docker.compose.project={project}"], "event": "health_status"},
        )
        unhealthy_at: dict[str, datetime] = {}

        def watch() -> None:
            for raw in watcher:
                event = event_from_json(raw)
                if event and event.detail == "unhealthy":
                    unhealthy_at.setdefault(event.container_id, event.at)

        threading.Thread(target=watch, daemon=True).start()
        latencies: list[float] = []
        for c in sickly:
            c.exec_run(["touch", "/tmp/broken"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                attempts = [
                    a for i in store.list_incidents() if i.container.id == c.id for a in i.attempts
                ]
                if attempts and c.id in unhealthy_at:
                    latencies.append((attempts[0].started_at - unhealthy_at[c.id]).total_seconds())
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"{c.name} was not restarted within 30 s")
        supervisor.stop()
        watcher.close()
        thread.join(timeout=30)
        gateway.close()
        return {
            "size": size,
            "requests_per_cycle": per_cycle,
            "cpu_ms_per_cycle": cpu * 1000,
            "latency_median_s": statistics.median(latencies),
            "latency_max_s": max(latencies),
        }
    finally:
        for c in bulk + sickly:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


def write_docs(rows: list[dict[str, float]], cycles: int) -> str:
    lines = [
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/healing_bench.py --cycles {cycles}` "
        "(2 cores, Docker Engine 20.10).",
        "",
        "| containers | API requests / healthy cycle | CPU ms / healthy cycle "
        "| unhealthy event → restart, median | max |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:.0f} | {r['requests_per_cycle']:.2f} | {r['cpu_ms_per_cycle']:.1f} "
            f"| {r['latency_median_s'] * 1000:.0f} ms | {r['latency_max_s'] * 1000:.0f} ms |"
        )
    lines.append(END)
    block = "\n".join(lines)
    write_block(DOCS, block, BEGIN, END)
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--sick", type=int, default=5)
    args = parser.parse_args()
    logs.configure(level="WARNING")
    client = docker.from_env()
    rows = []
    for size in args.sizes:
        row = measure(client, size, args.cycles, args.sick)
        print(
            f"{size:4d} containers: {row['requests_per_cycle']:.2f} requests/cycle, "
            f"{row['cpu_ms_per_cycle']:.1f} ms CPU/cycle, event→restart median "
            f"{row['latency_median_s'] * 1000:.0f} ms, max {row['latency_max_s'] * 1000:.0f} ms",
            flush=True,
        )
        rows.append(row)
    print(write_docs(rows, args.cycles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
