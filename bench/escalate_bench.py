"""Measure what a diagnosis costs: engine requests, time, and bytes sent to the model.

* **case file**: a container that has written 10 MiB of logs is gathered through the
  real gateway; the Docker API requests (counted at the HTTP layer), the bytes read
  from the engine and the time show that only the log tail is read;
* **rules**: the time of the rule diagnosis over every captured fixture;
* **bytes to the model**: a typical conversation (list_files, read_file, submit) on the
  ``missing_module`` fixture against the local fake /v1/messages server, driven by the
  real SDK; the request bodies are measured there. The cached share of a round is the
  part of its body that lies before a cache breakpoint the previous round already
  wrote: system prompt and tools only, or (as medic sends) also the conversation so far.
* **hostile redaction**: the slowest redaction of 36 KiB of log text shaped to make
  careless patterns backtrack, and how the time grows with four times as much.

Usage: ``.venv/bin/python bench/escalate_bench.py``. Figures are printed and
written to docs/benchmarks.md between markers. The container it starts is removed.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from docs_block import write_block  # noqa: E402
from escalate_support import case_from_fixture, fixture_names, incident_for  # noqa: E402
from fake_anthropic import FakeAnthropic, tool_use  # noqa: E402

from agent.engine.docker_sdk import DockerSDKGateway  # noqa: E402
from agent.escalate.claude import ClaudeModel, make_client  # noqa: E402
from agent.escalate.gather import gather  # noqa: E402
from agent.escalate.llm import SUBMIT, Diagnoser  # noqa: E402
from agent.escalate.redact import Redactor  # noqa: E402
from agent.escalate.rules import diagnose  # noqa: E402
from agent.store.memory import MemoryStore  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- escalate-bench:begin -->"
END = "<!-- escalate-bench:end -->"
LOG_BYTES = 10 * 1024 * 1024


def case_file_cost(client: Any) -> dict[str, float]:
    name = f"medicbench-escalate-{uuid.uuid4().hex[:8]}"
    line = "INFO request served path=/api/items status=200 duration_ms=12 " + "x" * 56
    count = LOG_BYTES // (len(line) + 1)
    script = (
        f"i=0; while [ $i -lt {count // 1000} ]; do j=0; "
        f"while [ $j -lt 1000 ]; do echo '{line}'; j=$((j+1)); done; i=$((i+1)); done; "
        "echo 'ModuleNotFoundError: No module named requests'; exit 1"
    )
    container = client.containers.run(
        "medic-test/busybox:latest",
        ["sh", "-c", script],
        name=name,
        labels={"com.docker.compose.project": name, "com.docker.compose.service": "app"},
        detach=True,
    )
    try:
        container.wait(timeout=600)
        container.reload()
        gateway = DockerSDKGateway.from_env()
        seen: list[int] = []
        gateway.api_client.hooks["response"].append(
            lambda r, *a, **k: seen.append(len(r.content or b""))
        )
        incident = incident_for(container.attrs)
        start = time.perf_counter()
        case = gather(incident=incident, source=gateway, store=MemoryStore())
        elapsed = time.perf_counter() - start
        text = case.render()
        gateway.close()
        return {
            "log_bytes": float((count // 1000) * 1000 * (len(line) + 1)),
            "requests": float(len(seen)),
            "bytes_read": float(sum(seen)),
            "seconds": elapsed,
            "case_bytes": float(len(text.encode())),
            "rule_ok": float(diagnose(case).rule_id == "missing_module"),
        }
    finally:
        container.remove(force=True)


def rules_cost(rounds: int = 200) -> dict[str, float]:
    cases = [case_from_fixture(n) for n in fixture_names()]
    times = []
    for _ in range(rounds):
        for case in cases:
            start = time.perf_counter()
            diagnose(case)
            times.append(time.perf_counter() - start)
    build = []
    for name in fixture_names():
        start = time.perf_counter()
        case_from_fixture(name)
        build.append(time.perf_counter() - start)
    return {
        "median_us": statistics.median(times) * 1e6,
        "max_us": max(times) * 1e6,
        "build_median_ms": statistics.median(build) * 1e3,
        "cases": float(len(cases)),
    }


#: Shapes of hostile log text that make a badly written pattern backtrack: repeated
#: scheme and credential separators, key block ends, base64 lines, JWT dots, unfinished
#: terminal escapes, dotted tokens and indentation.
HOSTILE_UNITS = {
    "schemes": "a://b:",
    "ats": "p@",
    "end-lines": "-----END RSA PRIVATE KEY-----\n",
    "base64-lines": "QUJD" * 16 + "\n",
    "dots": "eyJabcd.",
    "open-csi": "\x1b[1;",
    "dotted": "glpat-aaaaaaaaaaaaaaaaaaaa.a",
    "indents": "Tr0ub4\n" + " " * 60,
}


def hostile_redaction(size: int = 36 * 1024) -> dict[str, float]:
    """The slowest redaction of ``size`` bytes of any hostile shape, and how much longer
    four times as much takes (about 4 where redaction is linear)."""
    redactor = Redactor.build(env={"DB_PASSWORD": "Tr0ub4dor&3-horse"})
    redactor.redact("warm up")
    worst = 0.0
    ratio = 0.0
    for unit in HOSTILE_UNITS.values():
        times = []
        for scale in (1, 4):
            text = unit * (size * scale // len(unit))
            start = time.perf_counter()
            redactor.redact(text)
            times.append(time.perf_counter() - start)
        worst = max(worst, times[0])
        ratio = max(ratio, times[1] / max(times[0], 1e-6))
    return {"worst_ms": worst * 1e3, "ratio": ratio, "shapes": float(len(HOSTILE_UNITS))}


def model_bytes() -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        (repo / "app").mkdir()
        (repo / "app" / "worker.py").write_text(
            "\n".join(f"# line {i}\nimport os" for i in range(60)) + "\nimport requests\n"
        )
        (repo / "requirements.txt").write_text("flask==3.0\ngunicorn==22.0\n")
        submit = {
            "summary": "requests is missing from the image.",
            "root_cause": "requirements.txt does not list requests.",
            "confidence": "high",
            "evidence": ["ModuleNotFoundError: No module named 'requests'"],
            "edits": [
                {
                    "path": "requirements.txt",
                    "old": "flask==3.0\n",
                    "new": "flask==3.0\nrequests==2.32\n",
                }
            ],
            "no_edits_reason": None,
        }
        fake = FakeAnthropic(
            [
                tool_use("list_files", {"path": "."}),
                tool_use("read_file", {"path": "app/worker.py"}),
                tool_use("read_file", {"path": "requirements.txt"}),
                tool_use(SUBMIT, submit),
            ]
        )
        with fake.running():
            client = make_client(api_key="sk-ant-bench", base_url=fake.url, strict=True)
            Diagnoser(ClaudeModel(client, "claude-sonnet-5-5"), repo=repo).diagnose(
                case_from_fixture("missing_module"), diagnose(case_from_fixture("missing_module"))
            )
        rows = []
        previous_messages = 0
        for number, request in enumerate(fake.requests, start=1):
            body = request.body
            total = len(request.raw)
            stable = len(json.dumps({"system": body["system"], "tools": body["tools"]}))
            conversation = len(json.dumps(body["messages"][:previous_messages]))
            rows.append(
                {
                    "round": float(number),
                    "bytes": float(total),
                    "stable_share": 0.0 if number == 1 else stable / total,
                    "with_conversation": 0.0 if number == 1 else (stable + conversation) / total,
                }
            )
            previous_messages = len(body["messages"])
        return rows


def write_docs(
    case: dict[str, float],
    rules: dict[str, float],
    rows: list[dict[str, float]],
    hostile: dict[str, float],
) -> str:
    total = sum(r["bytes"] for r in rows)
    lines = [
        BEGIN,
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/escalate_bench.py` (2 cores, Docker "
        "Engine 20.10; the model is the local fake /v1/messages server driven by the real SDK).",
        "",
        "| case file for a container with logs of | Docker API requests | bytes read from "
        "the engine | time | case file size |",
        "|---:|---:|---:|---:|---:|",
        f"| {case['log_bytes'] / 1024 / 1024:.1f} MiB | {case['requests']:.0f} "
        f"| {case['bytes_read'] / 1024:.0f} KiB | {case['seconds'] * 1000:.0f} ms "
        f"| {case['case_bytes'] / 1024:.1f} KiB |",
        "",
        f"Rule diagnosis over {rules['cases']:.0f} captured failures: median "
        f"{rules['median_us']:.0f} µs, max {rules['max_us']:.0f} µs; building a case file "
        f"from a fixture (redaction included): median {rules['build_median_ms']:.1f} ms.",
        "",
        f"Redacting 36 KiB of hostile log text ({hostile['shapes']:.0f} shapes that make "
        f"careless patterns backtrack): at most {hostile['worst_ms']:.0f} ms; four times as "
        f"much takes at most {hostile['ratio']:.1f} times as long.",
        "",
        "| round of a typical diagnosis | request bytes | cached share, system + tools only "
        "| cached share, + conversation breakpoint (sent) |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']:.0f} | {r['bytes']:.0f} | {r['stable_share'] * 100:.0f} % "
            f"| {r['with_conversation'] * 100:.0f} % |"
        )
    lines += [
        "",
        f"In all {total / 1024:.1f} KiB are sent for this diagnosis (3 tool rounds and the "
        "forced submit). Round 1 writes the cache; from round 2 on, the share shown is read "
        "from it instead of billed as new input.",
        END,
    ]
    block = "\n".join(lines)
    write_block(
        DOCS,
        block,
        BEGIN,
        END,
        heading=(
            "## Diagnosis (`bench/escalate_bench.py`)\n\n"
            "Engine requests and time to build a case file for a container with 10 MiB of "
            "logs (only the tail may be read), rule diagnosis time, and the bytes a typical "
            "Claude diagnosis sends, with the share prompt caching serves from the cache.\n"
            "Run it with `.venv/bin/python bench/escalate_bench.py`.\n\n"
        ),
    )
    return block


def main() -> int:
    client = docker.from_env()
    try:
        case = case_file_cost(client)
    finally:
        client.close()
    rules = rules_cost()
    rows = model_bytes()
    print(write_docs(case, rules, rows, hostile_redaction()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
