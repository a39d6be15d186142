"""Measure what medic costs on a host of N containers, on a real Docker engine.

For each stack size N it starts N containers without a health check (the bulk) plus
a few with a 1 s health check that are broken on demand, then reports:

* Docker API requests per healthy cycle, counted at the HTTP layer (a requests
  response hook on the SDK's session), so nothing the gateway does is missed;
* CPU time per healthy cycle of a supervisor in this process;
* the latency from Docker's ``health_status: unhealthy`` event (the engine's own
  timestamp) to the start of medic's restart (medic's attempt record): both on
  the same host clock;
* the resident memory and idle CPU of a real ``medic run`` process supervising the
  same N containers at the default 30 s interval, without a database, and the CPU
  the engine itself (dockerd, containerd and the shims) spent meanwhile.

The bulk has no health check because Docker runs every check as an exec: 1,000
containers checked every 30 s are some 33 execs a second, which on two cores
measures the engine, not medic. What that costs the engine is measured apart, at
the end: ``--probe-containers`` containers checked often enough to make the same
number of execs a second.

The containers have no network (``network_mode: none``). Creating and removing 1,000
containers on the default bridge, several at a time, deadlocked Docker Engine 20.10's
network code here (its goroutine dump had container removals waiting in
``releaseNetwork`` on lookups in ``FindNetwork``); medic's list entries carry the same
fields either way.

Usage: ``.venv/bin/python bench/healing_bench.py [--sizes 50 200 1000] [--cycles 40]``.
Figures are printed and written to docs/benchmarks.md between markers. Needs the
image built by tests/images/build. Every container it starts carries the label
``medic.bench`` and is removed at the end, on Ctrl-C and on SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import docker.errors
import requests
from docs_block import write_block

from agent import logs
from agent.config import HealingSettings
from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.translate import event_from_json
from agent.healing.observe import Scope
from agent.model import Action, Backoff, Escalation, Match, Playbook, Signal
from agent.store import MemoryStore
from agent.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "medic-test/busybox:latest"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- healing-bench:begin -->", "<!-- healing-bench:end -->"
BENCH_LABEL = "medic.bench"
SERVE = "trap 'exit 0' TERM; rm -f /tmp/broken; while :; do sleep 1; done"
SECOND = 1_000_000_000
#: Seconds the youngest container runs before the healthy cycles are measured.
SETTLE = 125
TICKS = os.sysconf("SC_CLK_TCK")
#: The engine's processes by /proc comm (15 characters: every shim is "containerd-shim").
ENGINE_PROCESSES = frozenset({"dockerd", "containerd", "containerd-shim"})

#: The goals at 1,000 containers (docs/benchmarks.md).
GOAL_REQUESTS, GOAL_CPU_MS, GOAL_RSS_MIB, GOAL_IDLE_CPU, GOAL_LATENCY_RATIO = 1, 25, 64, 0.3, 2

PLAYBOOKS = (
    Playbook(
        name="restart-unhealthy",
        match=Match(signals=frozenset({Signal.UNHEALTHY})),
        actions=(Action("restart", timeout=2),),
        backoff=Backoff(initial=1),
        escalation=Escalation(after_attempts=5),
    ),
)


@dataclass
class Row:
    size: int
    requests_per_cycle: float
    cpu_ms_per_cycle: float
    latency_median_s: float
    latency_max_s: float
    rss_mib: float
    peak_rss_mib: float
    idle_cpu_percent: float
    engine_cpu_percent: float
    burst_cpu_ms: float


# --- containers, always removed ----------------------------------------------------------


class Containers:
    """Every container the bench starts, labelled with this run's id, so that all of
    them are removed at the end whatever happened: a failure, Ctrl-C or SIGTERM."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.run_id = uuid.uuid4().hex[:8]
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-docker")

    def start(self, project: str, service: str, count: int, *, checked: float | None) -> list[str]:
        """``count`` containers of one compose service, created and started 4 at a time;
        ``checked``: a health check every that many seconds, else none."""

        def one(number: int) -> str:
            health = None
            if checked is not None:
                health = {
                    "test": ["CMD-SHELL", "test ! -f /tmp/broken"],
                    "interval": int(checked * SECOND),
                    "retries": 1,
                    "timeout": 5 * SECOND,
                }
            command = ["sh", "-c", SERVE] if checked is not None else ["sleep", "86400"]
            created = self.client.api.create_container(
                IMAGE,
                command,
                name=f"{project}-{service}-{number}",
                labels={
                    "com.docker.compose.project": project,
                    "com.docker.compose.service": service,
                    BENCH_LABEL: self.run_id,
                },
                healthcheck=health,
                host_config=self.client.api.create_host_config(network_mode="none"),
            )
            self.client.api.start(created["Id"])
            return str(created["Id"])

        return list(self._pool.map(one, range(count)))

    def signal(self, ids: list[str], name: str) -> None:
        list(self._pool.map(lambda cid: self.client.api.kill(cid, signal=name), ids))

    def remove(self, ids: list[str] | None = None) -> int:
        """Remove ``ids``, or every container of this run still there; returns how many
        could not be removed (said in a line, never raised: a loaded engine may time out
        on some, and they are tried again at the end)."""
        if ids is None:
            found = self.client.api.containers(
                all=True, filters={"label": [f"{BENCH_LABEL}={self.run_id}"]}
            )
            ids = [c["Id"] for c in found]

        def gone(cid: str) -> str | None:
            try:
                self.client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
            except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                return str(e)
            return None

        failed = [why for why in self._pool.map(gone, ids) if why is not None]
        if failed:
            print(f"{len(failed)} of {len(ids)} containers were not removed yet: {failed[0]}")
        return len(failed)

    def close(self) -> None:
        """Stop creating (what is queued is dropped), then remove everything of this run,
        in up to three rounds; what is still left is named with the command removing it."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-docker")
            for _ in range(3):
                try:
                    if self.remove() == 0:
                        return
                except (docker.errors.DockerException, requests.exceptions.RequestException) as e:
                    print(f"Could not list this run's containers: {e}")
                time.sleep(5)
            print(
                "Some containers of this run are left; remove them with: docker rm -f "
                f"$(docker ps -aq --filter label={BENCH_LABEL}={self.run_id})"
            )
        finally:
            self._pool.shutdown(wait=True)
            signal.signal(signal.SIGINT, previous)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def wait_healthy(client: Any, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for cid in ids:
        while True:
            state = client.api.inspect_container(cid)["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{cid[:12]} did not become healthy within {timeout:g} s")
            time.sleep(0.5)


# --- processes ---------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """User and system CPU of a process, all its threads, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def memory_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for process {pid}")


def engine_ticks() -> int:
    """CPU of the engine's own processes (dockerd, containerd and the shims)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            if (entry / "comm").read_text().strip() in ENGINE_PROCESSES:
                total += cpu_ticks(int(entry.name))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def medic_run(project: str) -> Iterator[int]:
    """A real ``medic run`` on the project, no database, default interval; its pid once
    it has finished its first poll. Stopped (SIGTERM) on the way out."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="medic-bench-") as state:
        env = {
            **os.environ,
            "MEDIC_PROJECT": project,
            "MEDIC_HTTP_PORT": str(port),
            "MEDIC_STATE_DIR": state,
            "MEDIC_PLAYBOOKS": str(ROOT / "playbooks"),
            "MEDIC_LOG_LEVEL": "WARNING",
        }
        for name in ("MEDIC_DATABASE_URL", "ANTHROPIC_API_KEY", "MEDIC_UI_TOKEN"):
            env.pop(name, None)
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    said = process.stderr.read() if process.stderr else ""
                    raise SystemExit(f"medic run exited: {said}")
                with contextlib.suppress(OSError, ValueError):
                    url = f"http://127.0.0.1:{port}/healthz"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if json.load(response).get("last_cycle_at"):
                            break
                if time.monotonic() > deadline:
                    raise SystemExit("medic run did not finish a poll within 120 s")
                time.sleep(0.5)
            yield process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def idle_cost(pid: int, seconds: float) -> tuple[float, float]:
    """CPU % of one core of the process and of the engine over ``seconds``."""
    mine, engine, started = cpu_ticks(pid), engine_ticks(), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    mine, engine = cpu_ticks(pid) - mine, engine_ticks() - engine
    return 100 * mine / TICKS / elapsed, 100 * engine / TICKS / elapsed


# --- one size ----------------------------------------------------------------------------


def measure(containers: Containers, size: int, cycles: int, sick: int, idle: float) -> Row:
    client = containers.client
    project = f"medicbench-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    bulk = containers.start(project, "bulk", size, checked=None)
    sickly = containers.start(project, "sick", sick, checked=1)
    print(f"{size + sick} containers started in {time.monotonic() - started:.0f} s", flush=True)
    try:
        # Docker's status text is "Up N seconds" in a container's first minute, and
        # "Up About a minute" in its second: it changes at every poll. A host's
        # containers are older than that, and their entries change once a minute.
        time.sleep(SETTLE)
        wait_healthy(client, sickly, timeout=60)
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

        latencies = event_to_restart(client, supervisor, store, project, sickly)
        gateway.close()

        with medic_run(project) as pid:
            idle_cpu, engine_cpu = idle_cost(pid, idle)
            rss, peak = memory_mib(pid, "VmRSS"), memory_mib(pid, "VmHWM")
            burst_ms = burst_cost(containers, pid, bulk)
        return Row(
            size=size,
            requests_per_cycle=per_cycle,
            cpu_ms_per_cycle=cpu * 1000,
            latency_median_s=statistics.median(latencies),
            latency_max_s=max(latencies),
            rss_mib=rss,
            peak_rss_mib=peak,
            idle_cpu_percent=idle_cpu,
            engine_cpu_percent=engine_cpu,
            burst_cpu_ms=burst_ms,
        )
    finally:
        containers.remove(bulk + sickly)


def burst_cost(containers: Containers, pid: int, bulk: list[str]) -> float:
    """CPU ms ``medic run`` spends taking in one event from every bulk container at once
    (``docker kill --signal WINCH``: the engine reports each kill, and ``sleep`` as PID 1
    ignores the signal), counted until medic has been quiet for two seconds."""
    before = cpu_ticks(pid)
    containers.signal(bulk, "SIGWINCH")
    last, quiet = cpu_ticks(pid), 0
    while quiet < 2:
        time.sleep(1)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if now - last <= 1 else 0
        last = now
    return 1000 * (last - before) / TICKS


def event_to_restart(
    client: Any, supervisor: Supervisor, store: MemoryStore, project: str, sickly: list[str]
) -> list[float]:
    """Break the health-checked containers one at a time; from the engine's unhealthy
    event to the start of medic's restart, each."""
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
    try:
        for cid in sickly:
            client.api.exec_start(client.api.exec_create(cid, ["touch", "/tmp/broken"]))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                attempts = [
                    a for i in store.list_incidents() if i.container.id == cid for a in i.attempts
                ]
                if attempts and cid in unhealthy_at:
                    latencies.append((attempts[0].started_at - unhealthy_at[cid]).total_seconds())
                    break
                time.sleep(0.05)
            else:
                raise SystemExit(f"{cid[:12]} was not restarted within 30 s")
    finally:
        supervisor.stop()
        watcher.close()
        thread.join(timeout=30)
    wait_healthy(client, sickly, timeout=60)
    return latencies


def probe_cost(containers: Containers, count: int, interval: float, seconds: float) -> float:
    """The engine's CPU (% of one core) while ``count`` containers run a health check
    every ``interval`` seconds, less the same containers' without one."""
    plain = containers.start(f"medicbench-{uuid.uuid4().hex[:6]}", "plain", count, checked=None)
    try:
        time.sleep(5)
        without = _engine_percent(seconds)
    finally:
        containers.remove(plain)
    project = f"medicbench-{uuid.uuid4().hex[:6]}"
    checked = containers.start(project, "checked", count, checked=interval)
    try:
        wait_healthy(containers.client, checked, timeout=120)
        return _engine_percent(seconds) - without
    finally:
        containers.remove(checked)


def _engine_percent(seconds: float) -> float:
    before, started = engine_ticks(), time.monotonic()
    time.sleep(seconds)
    return 100 * (engine_ticks() - before) / TICKS / (time.monotonic() - started)


# --- output ------------------------------------------------------------------------------


def verdicts(rows: list[Row]) -> list[tuple[str, str, bool]]:
    """Each goal at the largest size: (goal, measured, met)."""
    big, small = max(rows, key=lambda r: r.size), min(rows, key=lambda r: r.size)
    ratio = big.latency_median_s / small.latency_median_s if small.latency_median_s > 0 else 0.0
    n = f"{big.size:,}"
    return [
        (
            f"at most {GOAL_REQUESTS} engine request per healthy cycle at {n}",
            f"{big.requests_per_cycle:.2f}",
            big.requests_per_cycle <= GOAL_REQUESTS,
        ),
        (
            f"under {GOAL_CPU_MS} ms CPU per healthy cycle at {n}",
            f"{big.cpu_ms_per_cycle:.1f} ms",
            big.cpu_ms_per_cycle < GOAL_CPU_MS,
        ),
        (
            f"under {GOAL_RSS_MIB} MiB resident at {n}",
            f"{big.rss_mib:.1f} MiB (peak {big.peak_rss_mib:.1f})",
            big.rss_mib < GOAL_RSS_MIB,
        ),
        (
            f"event to restart at {n} within {GOAL_LATENCY_RATIO}x of {small.size}",
            f"{ratio:.2f}x ({big.latency_median_s * 1000:.0f} ms vs "
            f"{small.latency_median_s * 1000:.0f} ms)",
            ratio <= GOAL_LATENCY_RATIO,
        ),
        (
            f"idle CPU under {GOAL_IDLE_CPU} % at {n}",
            f"{big.idle_cpu_percent:.2f} %",
            big.idle_cpu_percent < GOAL_IDLE_CPU,
        ),
    ]


def write_docs(rows: list[Row], args: argparse.Namespace, probes: float | None) -> str:
    lines = [
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/healing_bench.py --cycles "
        f"{args.cycles} --idle {args.idle:g}` (2 cores, Docker Engine 20.10). The bulk has no "
        f"health check; {args.sick} containers with a 1 s check are broken one at a time. "
        f"Cycles are measured once the youngest container has run {SETTLE} s.",
        "",
        "| containers | API requests / healthy cycle | CPU ms / healthy cycle "
        "| unhealthy event → restart, median | max | `medic run` RSS | peak "
        "| `medic run` idle CPU | engine CPU meanwhile | one event from each, CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} | {r.requests_per_cycle:.2f} | {r.cpu_ms_per_cycle:.1f} "
            f"| {r.latency_median_s * 1000:.0f} ms | {r.latency_max_s * 1000:.0f} ms "
            f"| {r.rss_mib:.1f} MiB | {r.peak_rss_mib:.1f} MiB | {r.idle_cpu_percent:.2f} % "
            f"| {r.engine_cpu_percent:.1f} % | {r.burst_cpu_ms:,.0f} ms |"
        )
    lines += ["", "| goal | measured | met |", "|---|---:|:---:|"]
    for goal, measured, met in verdicts(rows):
        lines.append(f"| {goal} | {measured} | {'yes' if met else '**no**'} |")
    if probes is not None:
        rate = args.probe_containers / args.probe_interval
        lines += [
            "",
            f"Health checks, apart: {args.probe_containers} containers checked every "
            f"{args.probe_interval:g} s ({rate:.0f} execs a second, what {rate * 30:,.0f} "
            f"containers checked at Docker's default 30 s make) cost the engine "
            f"**{probes:.1f} %** of a core more than the same containers without a check.",
        ]
    lines.append(END)
    block = "\n".join(lines)
    write_block(DOCS, block, BEGIN, END)
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--sick", type=int, default=5)
    parser.add_argument("--idle", type=float, default=90, help="seconds medic run is watched idle")
    parser.add_argument("--probe-containers", type=int, default=100)
    parser.add_argument("--probe-interval", type=float, default=3)
    parser.add_argument("--probe-seconds", type=float, default=30)
    parser.add_argument("--no-probe-cost", action="store_true")
    args = parser.parse_args()
    logs.configure(level="WARNING")
    for signum in (signal.SIGINT, signal.SIGTERM):  # also where a shell left SIGINT ignored
        signal.signal(signum, _interrupted)
    containers = Containers(docker.from_env(max_pool_size=16, timeout=300))
    print(
        f"Containers of this run carry the label {BENCH_LABEL}={containers.run_id}; "
        "they are removed at the end, on Ctrl-C too.",
        flush=True,
    )
    rows: list[Row] = []
    probes: float | None = None
    try:
        for size in args.sizes:
            row = measure(containers, size, args.cycles, args.sick, args.idle)
            print(
                f"{size:5d} containers: {row.requests_per_cycle:.2f} requests/cycle, "
                f"{row.cpu_ms_per_cycle:.1f} ms CPU/cycle, event→restart median "
                f"{row.latency_median_s * 1000:.0f} ms, max {row.latency_max_s * 1000:.0f} ms; "
                f"medic run {row.rss_mib:.1f} MiB (peak {row.peak_rss_mib:.1f}), idle "
                f"{row.idle_cpu_percent:.2f} % CPU, engine {row.engine_cpu_percent:.1f} %; "
                f"a burst of {size} events took {row.burst_cpu_ms:,.0f} ms CPU",
                flush=True,
            )
            rows.append(row)
        if not args.no_probe_cost:
            probes = probe_cost(
                containers, args.probe_containers, args.probe_interval, args.probe_seconds
            )
            print(f"health checks: the engine spends {probes:.1f} % of a core more", flush=True)
    except KeyboardInterrupt:
        print("Interrupted; removing what this run started.", flush=True)
        return 130
    finally:
        containers.close()
    for goal, measured, met in verdicts(rows):
        print(f"{'met' if met else 'NOT MET':8s} {goal}: {measured}")
    print(write_docs(rows, args, probes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
