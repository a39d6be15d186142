"""Issue 11 end to end: a container that keeps failing for a missing Python module is
escalated by a real ``medic run`` with no API key, diagnosed by the rules, and the
diagnosis is in Postgres, in ``medic incidents show`` and in ``medic diagnose``.

Real parts only: the engine runs the failing container, Postgres holds the record,
medic runs as a subprocess the way an operator starts it, and notifications go to a
webhook on 127.0.0.1 through apprise.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ComposeProject, wait_for
from medic_process import QUICK_PLAYBOOK

from agent.model import DiagnosisSource, IncidentId, IncidentStatus
from agent.store.postgres import PostgresStore, run_migrations

pytestmark = pytest.mark.docker

PYTHON_IMAGE = "medic-test/bookworm-python:latest"


@pytest.fixture
def python_project(docker_client: Any) -> Iterator[ComposeProject]:
    project = ComposeProject(docker_client, image=PYTHON_IMAGE)
    try:
        yield project
    finally:
        project.cleanup()


def medic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def medic_env(**settings: str) -> dict[str, str]:
    """The environment without any API key or MEDIC_ setting of the caller's, then these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "MEDIC_"))}
    env.update(
        {"MEDIC_INTERVAL": "1", "MEDIC_HTTP_PORT": "0", "MEDIC_STOP_TIMEOUT": "5", **settings}
    )
    return env


def test_a_missing_module_is_escalated_and_diagnosed_by_the_rules_without_a_key(
    python_project: ComposeProject,
    postgres_url: str,
    webhook: tuple[str, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    url, received = webhook
    books = tmp_path / "books.yml"
    books.write_text(QUICK_PLAYBOOK)
    run_migrations(postgres_url)
    worker = python_project.run(
        "worker", command=["python3", "-c", "import nosuchmodule"], stop_timeout=1
    )
    env = medic_env(
        MEDIC_DATABASE_URL=postgres_url,
        MEDIC_PROJECT=python_project.name,
        MEDIC_PLAYBOOKS=str(books),
        MEDIC_STATE_DIR=str(tmp_path / "state"),
        MEDIC_NOTIFY_URLS=url,
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agent", "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    store = PostgresStore(postgres_url, migrate=False)
    try:

        def diagnosed() -> Any:
            for incident in store.list_incidents():
                if incident.status is IncidentStatus.ESCALATED and store.diagnoses(incident.id):
                    return incident
            return None

        incident = wait_for(diagnosed, timeout=120, message="an escalated, diagnosed incident")
        assert incident.container.id == worker.id
        [rule] = store.diagnoses(incident.id)
        assert rule.source is DiagnosisSource.RULES
        assert rule.rule_id == "missing_module"
        assert "nosuchmodule" in rule.summary
        assert any("No module named 'nosuchmodule'" in e for e in rule.evidence)
        assert "No module named 'nosuchmodule'" in rule.case_file
        # The escalation's notification waits for the rules and carries their summary.
        escalated: dict[str, Any] = wait_for(
            lambda: next((m for m in received if "escalated" in m.get("title", "")), {}),
            timeout=30,
            message="the escalation notification",
        )
        assert (
            f"Diagnosis by medic's rules (missing_module): {rule.summary}" in escalated["message"]
        )
    finally:
        store.close()
        daemon.send_signal(signal.SIGTERM)
        try:
            _, stderr = daemon.communicate(timeout=60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.communicate()
    assert daemon.returncode == 0, stderr
    assert "queued for diagnosis" in stderr
    check_the_commands(incident.id, env=env, postgres_url=postgres_url)


def check_the_commands(incident_id: IncidentId, *, env: dict[str, str], postgres_url: str) -> None:
    show = medic("incidents", "show", incident_id[:12], env=env)
    assert show.returncode == 0, show.stderr
    assert "Rules (missing_module, high)" in show.stdout
    assert "No module named 'nosuchmodule'" in show.stdout

    shown = json.loads(medic("incidents", "show", incident_id, "--json", env=env).stdout)
    [stored] = shown["diagnoses"]
    assert stored["source"] == "rules"
    assert stored["rule_id"] == "missing_module"
    assert stored["edits"] == [] and shown["fixes"] == []

    done = medic("diagnose", incident_id[:12], "--json", "--no-llm", env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert set(document) == {"incident_id", "rule", "llm", "reused_from", "error"}
    assert document["incident_id"] == incident_id
    # The documented fields, and where the cause lies (none here: the module is this
    # service's own).
    assert set(document["rule"]) == {
        "id",
        "summary",
        "root_cause",
        "confidence",
        "evidence",
        "cause_service",
        "cause_state",
    }
    assert document["rule"]["cause_service"] is None
    assert document["rule"]["id"] == "missing_module"
    assert document["llm"] is None
    assert document["reused_from"] is None and document["error"] is None
    with contextlib.closing(PostgresStore(postgres_url, migrate=False)) as again:
        assert len(again.diagnoses(incident_id)) == 2
