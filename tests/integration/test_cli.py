"""The ``medic`` command as an operator runs it: a real process, a real engine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ComposeProject, healthcheck, wait_for

pytestmark = pytest.mark.docker

FAST_PLAYBOOK = """\
version: 1
playbooks:
  - name: start-exited
    match: {signals: [exited]}
    actions: [start]
  - name: restart-unhealthy
    match: {signals: [unhealthy]}
    actions:
      - restart: {timeout: 30s}
"""


def medic(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # The test runner's own MEDIC_ variables (MEDIC_TEST_POSTGRES_IMAGE) are not medic's.
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MEDIC_")}, **(env or {})},
        check=False,
    )


def exits_once(project: ComposeProject) -> Any:
    script = "if [ -f /tmp/ran ]; then while :; do sleep 1; done; fi; touch /tmp/ran; exit 4"
    container = project.run("job", command=["sh", "-c", script])
    wait_for(
        lambda: container.reload() or container.status == "exited", timeout=10, message="job exited"
    )
    return container


def test_once_json_reports_the_finding_the_plan_and_the_result(
    compose_project: ComposeProject,
) -> None:
    job = exits_once(compose_project)
    done = medic("once", "--json", "--project", compose_project.name)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [finding] = report["findings"]
    assert finding["container"] == job.name
    assert finding["signal"] == "exited"
    assert finding["evidence"]["exit_code"] == 4
    [decision] = report["decisions"]
    assert decision["decision"] == "act"
    assert decision["playbook"] == "start-exited"
    [result] = report["results"]
    assert result["action"] == "start"
    assert result["ok"] is True
    job.reload()
    assert job.status == "running"


def test_once_dry_run_changes_nothing(compose_project: ComposeProject) -> None:
    job = exits_once(compose_project)
    done = medic("once", "--dry-run", "--project", compose_project.name)
    assert done.returncode == 0, done.stderr
    assert "exited with code 4" in done.stdout
    assert "Dry run: nothing was done." in done.stdout
    job.reload()
    assert job.status == "exited"


def test_run_refuses_a_broken_playbook_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "playbooks:\n  - name: x\n    match: {signals: [unhealty]}\n    actions: [start]\n"
    )
    done = medic("run", "--playbooks", str(bad), timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"medic will not start: {bad}:3: playbooks[0].match.signals[0]: ")
    assert "unhealty" in line
    assert line.endswith(".")
    assert not line.endswith("..")


def test_run_with_several_playbook_errors_names_the_first_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "playbooks:\n"
        "  - name: x\n"
        "    match:\n"
        "      signals: [log_match]\n"
        "      log: {pattern: 'too many (connections', count: 1, window: 1m}\n"
        "    actions: [restrat]\n"
    )
    done = medic("run", "--playbooks", str(bad), timeout=30)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        f"medic will not start: {bad}:5: playbooks[0].match.log.pattern: 'too many (connections' "
        "is not a regular expression: missing ), unterminated subpattern at position 9"
    )
    assert line.endswith(f"(and 1 more; medic playbooks validate {bad} lists them all).")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"MEDIC_WORKERS": "x"},
            "medic: MEDIC_WORKERS='x' is not valid: write a whole number, like 4.",
        ),
        (
            {"MEDIC_INTERVAL": "soon"},
            "medic: MEDIC_INTERVAL='soon' is not valid: 'soon' is not a duration; "
            "write seconds like 30, or 30s, 5m, 1h.",
        ),
    ],
)
def test_a_bad_setting_is_one_line_saying_what_to_write(env: dict[str, str], expected: str) -> None:
    done = medic("once", env=env, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [expected]


def test_an_unreachable_docker_host_is_one_medic_line_saying_what_to_check() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        # Bound but not listening: connections are refused while the test runs.
        done = medic("once", env={"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"medic: cannot reach the Docker engine at tcp://127.0.0.1:{port}: connection refused; "
        "check that the Docker engine runs there and that DOCKER_HOST is right."
    ]


def test_playbooks_validate_reports_errors_as_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "playbooks:\n  - name: x\n    match: {signals: [exited]}\n    actions: [restrat]\n"
    )
    done = medic("playbooks", "validate", "--json", str(bad), timeout=30)
    assert done.returncode == 1
    document = json.loads(done.stdout)
    assert document["valid"] is False
    [error] = document["errors"]
    assert error["line"] == 4
    assert error["field"] == "playbooks[0].actions[0]"
    ok = medic("playbooks", "validate", timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "restart-unhealthy" in ok.stdout


def test_run_stops_on_sigterm_and_says_what_happened_to_work_in_flight(
    compose_project: ComposeProject, tmp_path: Path
) -> None:
    books = tmp_path / "books.yml"
    books.write_text(FAST_PLAYBOOK)
    # Ignores SIGTERM, so medic's restart waits its 30 s stop timeout: in flight for long.
    stubborn = compose_project.run(
        "stubborn",
        command=["sh", "-c", "rm -f /tmp/broken; while :; do sleep 0.2; done"],
        healthcheck=healthcheck("test ! -f /tmp/broken"),
    )
    wait_for(
        lambda: stubborn.reload() or "healthy" in str(stubborn.attrs["State"]["Health"]),
        timeout=20,
        message="healthy at first",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--project",
            compose_project.name,
            "--playbooks",
            str(books),
            "--interval",
            "1",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MEDIC_LOG_FORMAT": "json", "MEDIC_STOP_TIMEOUT": "2"},
    )
    try:
        stubborn.exec_run(["touch", "/tmp/broken"])
        lines: list[dict[str, Any]] = []
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(json.loads(line))
            if "Healing it by playbook restart-unhealthy" in lines[-1]["message"]:
                break
        assert any("Healing it" in entry["message"] for entry in lines), lines
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    messages = [json.loads(line)["message"] for line in rest.splitlines() if line.strip()]
    assert "Signal SIGTERM received; medic is stopping." in messages
    assert any(m.startswith("Abandoned healing") for m in messages), messages
    assert messages[-1] == "medic stopped."
    # MEDIC_STOP_TIMEOUT=2: it waited for the restart, but not its whole 30 s.
    assert took < 20
    for entry in lines:
        assert {"time", "level", "message"} <= entry.keys()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doctor_checks_everything_and_says_what_to_fix(compose_project: ComposeProject) -> None:
    compose_project.run("web", command=["sh", "-c", "while :; do sleep 1; done"])
    env = {"MEDIC_PROJECT": compose_project.name, "MEDIC_DATABASE_URL": ""}
    done = medic("doctor", "--json", env=env)
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["docker"]["ok"] and checks["docker"]["detail"].startswith("Docker Engine")
    assert checks["scope"]["ok"]
    assert "1 container(s) in scope" in checks["scope"]["detail"]
    assert checks["playbooks"]["ok"]
    assert not checks["database"]["ok"]
    assert "MEDIC_DATABASE_URL" in checks["database"]["fix"]
    table = medic("doctor", env=env)
    assert "1 check(s) failed" in table.stdout


def test_status_shows_what_the_running_daemon_knows(compose_project: ComposeProject) -> None:
    port = free_port()
    job = compose_project.run("job", command=["sh", "-c", "sleep 1; exit 5"])
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--project",
            compose_project.name,
            "--interval",
            "1",
        ],
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MEDIC_HTTP_PORT": str(port), "MEDIC_DATABASE_URL": ""},
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def job_incidents() -> list[Any]:
            done = medic("status", "--json", "--url", url, timeout=30)
            if done.returncode != 0:
                return []
            rows = json.loads(done.stdout)["containers"]
            return [i for r in rows if r["container"] == job.name for i in r["incidents"]]

        wait_for(job_incidents, timeout=30, message="the job's incident in medic status")
        table = medic("status", "--url", url, timeout=30)
        assert table.returncode == 0
        assert job.name in table.stdout
        assert "exited" in table.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def test_status_without_a_daemon_says_where_it_looked() -> None:
    done = medic("status", "--url", f"http://127.0.0.1:{free_port()}", timeout=30)
    assert done.returncode == 2
    assert "medic run does not answer at http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
