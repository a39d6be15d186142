"""Idle cost of the medic container supervising the demo stack, and its image size.

Brings the demo up the way README says (``scripts/demo up --local``, in a compose
project of its own), lets it settle, then samples the medic container's CPU and
memory from the engine's stats every few seconds for a few minutes while nothing
is broken, and tears everything down again, volumes included.

Usage: ``.venv/bin/python bench/container_bench.py [--minutes 3] [--every 10]``.
Figures are printed and written between markers into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docs_block import write_block

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- container-bench:begin -->", "<!-- container-bench:end -->"


def demo(env: dict[str, str], *args: str) -> None:
    subprocess.run(["scripts/demo", *args], cwd=ROOT, env=env, check=True, capture_output=True)


def cpu_percent(stats: dict[str, Any], previous: dict[str, Any]) -> float:
    """CPU % of one core between two stats samples, as ``docker stats`` computes it."""
    cpu = (
        stats["cpu_stats"]["cpu_usage"]["total_usage"]
        - previous["cpu_stats"]["cpu_usage"]["total_usage"]
    )
    system = stats["cpu_stats"]["system_cpu_usage"] - previous["cpu_stats"]["system_cpu_usage"]
    cores = stats["cpu_stats"].get("online_cpus") or 1
    return 100.0 * cpu / system * cores if system > 0 else 0.0


def rss_mib(stats: dict[str, Any]) -> float:
    memory = stats["memory_stats"]
    # The engine counts page cache as usage; RSS is what the process holds.
    rss = memory.get("stats", {}).get("rss") or memory.get("stats", {}).get("anon")
    return float(rss or memory.get("usage", 0)) / 1024 / 1024


def measure(minutes: float, every: float) -> dict[str, float]:
    project = f"medicbench{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "MEDIC_DEMO_PROJECT": project,
        "MEDIC_HTTP_PORT": "0",
        "MEDIC_IMAGE": f"medic:{project}",
    }
    client = docker.from_env()
    demo(env, "up", "--local")
    try:
        [medic] = client.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={project}",
                    "com.docker.compose.service=medic",
                ]
            }
        )
        image_mib = client.images.get(f"medic:{project}").attrs["Size"] / 1024 / 1024
        base = os.environ.get("BASE_IMAGE", "medic-test/bookworm-python:latest")
        base_mib = client.images.get(base).attrs["Size"] / 1024 / 1024
        time.sleep(30)  # start-up and the first polls are not idle
        cpu: list[float] = []
        rss: list[float] = []
        previous = medic.stats(stream=False)
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(every)
            current = medic.stats(stream=False)
            cpu.append(cpu_percent(current, previous))
            rss.append(rss_mib(current))
            previous = current
        return {
            "cpu_mean": statistics.mean(cpu),
            "cpu_max": max(cpu),
            "rss_mean": statistics.mean(rss),
            "rss_max": max(rss),
            "image_mib": image_mib,
            "base_mib": base_mib,
            "samples": len(cpu),
            "minutes": minutes,
        }
    finally:
        demo(env, "down")
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(f"medic:{project}", force=True)
        client.close()


def write_docs(r: dict[str, float]) -> str:
    block = "\n".join(
        [
            BEGIN,
            f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/container_bench.py`: the demo "
            f"stack idle for {r['minutes']:g} min, {r['samples']:.0f} samples of the engine's "
            "stats, poll interval 30 s.",
            "",
            "| idle CPU, mean | max | RSS, mean | max | image | of which the base |",
            "|---:|---:|---:|---:|---:|---:|",
            f"| {r['cpu_mean']:.2f} % | {r['cpu_max']:.2f} % | {r['rss_mean']:.1f} MiB "
            f"| {r['rss_max']:.1f} MiB | {r['image_mib']:.0f} MiB | {r['base_mib']:.0f} MiB |",
            "",
            "CPU is a percentage of one core. The image was built on the local Debian base "
            "used by CI (`medic-test/bookworm-python`); medic's own layers are the difference.",
            END,
        ]
    )
    write_block(
        DOCS, block, BEGIN, END, heading="## The medic container (`bench/container_bench.py`)\n\n"
    )
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--every", type=float, default=10.0)
    args = parser.parse_args()
    result = measure(args.minutes, args.every)
    print(
        f"idle CPU {result['cpu_mean']:.2f} % (max {result['cpu_max']:.2f} %), "
        f"RSS {result['rss_mean']:.1f} MiB (max {result['rss_max']:.1f} MiB), "
        f"image {result['image_mib']:.0f} MiB (base {result['base_mib']:.0f} MiB)"
    )
    print(write_docs(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
