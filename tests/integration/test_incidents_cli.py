"""``medic incidents`` and ``medic db migrate`` as a person runs them, against real Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import ComposeProject, wait_for

from agent.model import (
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    Finding,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store import new_id
from agent.store.base import Identity
from agent.store.migrate import available
from agent.store.postgres import PostgresLeases, PostgresStore, run_migrations

NOW = datetime.now(UTC).replace(microsecond=0)
WEB = ContainerRef(ContainerId("a" * 64), "shop-web-1", "shop", "web")
API = ContainerRef(ContainerId("b" * 64), "shop-api-1", "shop", "api")


def medic(
    *args: str, url: str | None, state_dir: Path | None = None, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDIC_DATABASE_URL"}
    if url is not None:
        env["MEDIC_DATABASE_URL"] = url
    if state_dir is not None:
        env["MEDIC_STATE_DIR"] = str(state_dir)
    env.update(settings)
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def attempt(
    incident_id: IncidentId, at: datetime, action: str, *, ok: bool, error: str | None = None
) -> Attempt:
    return Attempt(
        id=AttemptId(new_id()),
        incident_id=incident_id,
        playbook="default",
        action=action,
        started_at=at,
        finished_at=at + timedelta(seconds=3),
        ok=ok,
        error=error,
    )


@pytest.fixture
def seeded(postgres_url: str) -> dict[str, Any]:
    """A resolved web incident (one attempt) and an escalated api one (two failed attempts)."""
    run_migrations(postgres_url)
    store = PostgresStore(postgres_url)
    try:
        web_at = NOW - timedelta(hours=3)
        web = store.record_finding(
            Finding(WEB, Signal.EXITED, "shop-web-1 exited with code 3.", web_at, {"exit_code": 3})
        )
        store.record_attempt(attempt(web.id, web_at + timedelta(seconds=1), "start", ok=True))
        store.set_status(web.id, IncidentStatus.RESOLVED, at=web_at + timedelta(seconds=75))

        api_at = NOW - timedelta(minutes=20)
        api = store.record_finding(
            Finding(API, Signal.UNHEALTHY, "shop-api-1 is unhealthy.", api_at, {"streak": 3})
        )
        store.record_finding(
            Finding(API, Signal.UNHEALTHY, "shop-api-1 is still unhealthy.", api_at, {"streak": 5})
        )
        first = attempt(api.id, api_at + timedelta(seconds=10), "restart", ok=False, error="boom")
        second = attempt(api.id, api_at + timedelta(seconds=40), "restart", ok=False, error="bang")
        store.record_attempt(first)
        store.record_attempt(second)
        store.set_status(
            api.id, IncidentStatus.ESCALATED, at=api_at + timedelta(minutes=1), note="2 attempts"
        )
    finally:
        store.close()
    return {"url": postgres_url, "web": web, "api": api, "api_attempts": [first, second]}


def parse(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_default_listing_shows_active_incidents_field_by_field(seeded: dict[str, Any]) -> None:
    [api] = parse(medic("incidents", "--json", url=seeded["url"]))
    assert api["id"] == seeded["api"].id
    assert api["service"] == "api"
    assert api["project"] == "shop"
    assert api["container"] == "shop-api-1"
    assert api["container_id"] == "b" * 64
    assert api["signal"] == "unhealthy"
    assert api["status"] == "escalated"
    assert datetime.fromisoformat(api["opened_at"]) == NOW - timedelta(minutes=20)
    assert api["resolved_at"] is None
    assert api["attempts"] == 2
    assert api["last_action"] == "restart"
    assert api["last_action_ok"] is False
    assert api["note"] == "2 attempts"
    assert api["fingerprint"] == "shop/api/unhealthy"


#: The ``--json`` field names scripts rely on; new fields may be added, none renamed.
LISTING_FIELDS = {
    "id",
    "project",
    "service",
    "container",
    "container_id",
    "signal",
    "status",
    "summary",
    "opened_at",
    "resolved_at",
    "duration_seconds",
    "attempts",
    "last_action",
    "last_action_ok",
    "note",
    "fingerprint",
}
ATTEMPT_FIELDS = {"id", "playbook", "action", "started_at", "finished_at", "ok", "error", "output"}
EVIDENCE_FIELDS = {"observed_at", "summary", "evidence"}


def test_the_json_field_names_are_kept(seeded: dict[str, Any]) -> None:
    url = seeded["url"]
    for listed in parse(medic("incidents", "--all", "--json", url=url)):
        assert set(listed) >= LISTING_FIELDS
        assert "evidence" not in listed
    shown = parse(medic("incidents", "show", seeded["api"].id, "--json", url=url))
    assert set(shown) >= LISTING_FIELDS
    assert all(set(a) >= ATTEMPT_FIELDS for a in shown["attempts"])
    assert all(set(e) == EVIDENCE_FIELDS for e in shown["evidence"])


def test_all_includes_resolved_incidents_newest_first(seeded: dict[str, Any]) -> None:
    found = parse(medic("incidents", "--all", "--json", url=seeded["url"]))
    assert [i["id"] for i in found] == [seeded["api"].id, seeded["web"].id]
    web = found[1]
    assert web["status"] == "resolved"
    assert web["attempts"] == 1
    assert datetime.fromisoformat(web["resolved_at"]) == NOW - timedelta(hours=3, seconds=-75)
    assert web["duration_seconds"] == 75.0


def test_service_and_since_narrow_the_listing(seeded: dict[str, Any]) -> None:
    url = seeded["url"]
    assert [
        i["service"]
        for i in parse(medic("incidents", "--all", "--service", "web", "--json", url=url))
    ] == ["web"]
    assert [
        i["service"] for i in parse(medic("incidents", "--all", "--since", "1h", "--json", url=url))
    ] == ["api"]
    assert parse(medic("incidents", "--service", "web", "--json", url=url)) == []


def test_the_table_for_people_has_one_row_per_incident(seeded: dict[str, Any]) -> None:
    result = medic("incidents", "--all", url=seeded["url"])
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "ID",
        "SCOPE",
        "SERVICE",
        "SIGNAL",
        "STATUS",
        "OPENED",
        "DURATION",
        "ATTEMPTS",
        "LAST",
        "ACTION",
        "RULE",
        "FIX",
    ]
    assert len(rows) == 2
    # Written by a store without an identity: no scope.
    assert rows[0].split()[:5] == [seeded["api"].id[:8], "-", "api", "unhealthy", "escalated"]
    assert rows[0].split()[-4:] == ["restart:", "failed", "-", "-"]
    assert rows[1].split()[:5] == [seeded["web"].id[:8], "-", "web", "exited", "resolved"]
    assert " 1 min 15 s " in rows[1]
    assert rows[1].split()[-4:] == ["start:", "ok", "-", "-"]


def test_show_json_has_the_attempts_and_evidence(seeded: dict[str, Any]) -> None:
    shown = parse(medic("incidents", "show", seeded["api"].id[:6], "--json", url=seeded["url"]))
    assert shown["id"] == seeded["api"].id
    assert shown["status"] == "escalated"
    first, second = seeded["api_attempts"]
    assert [a["id"] for a in shown["attempts"]] == [first.id, second.id]
    for got, want in zip(shown["attempts"], seeded["api_attempts"], strict=True):
        assert got["action"] == want.action
        assert datetime.fromisoformat(got["started_at"]) == want.started_at
        assert datetime.fromisoformat(got["finished_at"]) == want.finished_at
        assert got["ok"] is False
        assert got["error"] == want.error
    assert [e["summary"] for e in shown["evidence"]] == [
        "shop-api-1 is unhealthy.",
        "shop-api-1 is still unhealthy.",
    ]
    assert shown["evidence"][1]["evidence"] == {"streak": 5}


def test_show_prints_a_timeline(seeded: dict[str, Any]) -> None:
    result = medic("incidents", "show", seeded["web"].id[:8], url=seeded["url"])
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"Incident {seeded['web'].id}\n")
    timeline, below = out.split("TIME", 1)[1].split("\n\n", 1)
    events = [line.split()[2] for line in timeline.splitlines()[1:]]
    assert events == ["finding", "attempt", "resolved"]
    assert "shop-web-1 exited with code 3. (exit_code=3)" in out
    assert below == "Diagnosis\nNo diagnosis yet (medic diagnose ID makes one).\n"


def test_resolve_closes_an_escalated_incident_once(seeded: dict[str, Any]) -> None:
    url = seeded["url"]
    api = seeded["api"]
    done = medic(
        "incidents", "resolve", api.id[:8], "--note", "rolled back", "--by", "ops", url=url
    )
    assert done.returncode == 0, done.stderr
    assert "is resolved" in done.stdout
    shown = parse(medic("incidents", "show", api.id, "--json", url=url))
    assert shown["status"] == "resolved"
    assert shown["note"] == "by hand (ops): rolled back"
    decision = shown["timeline"][-1]
    assert (decision["event"], decision["detail"], decision["by"]) == (
        "resolved by hand",
        "rolled back",
        "ops",
    )
    assert shown["resolved_at"] is not None
    assert parse(medic("incidents", "--json", url=url)) == []

    again = medic("incidents", "resolve", api.id, "--note", "twice", url=url)
    assert again.returncode == 1
    assert "already resolved" in again.stderr


def test_an_unknown_id_is_one_line(seeded: dict[str, Any]) -> None:
    result = medic("incidents", "show", "zzzz", url=seeded["url"])
    assert result.returncode == 2
    assert result.stderr.strip() == "medic: There is no incident with id 'zzzz'."


def test_without_a_database_url_the_commands_say_what_to_set() -> None:
    for args in (["incidents"], ["incidents", "show", "abc"], ["db", "migrate"]):
        result = medic(*args, url=None)
        assert result.returncode == 2
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert "set MEDIC_DATABASE_URL" in line
        assert "postgresql://" in line


def test_an_unreachable_database_is_one_line_naming_host_and_port() -> None:
    result = medic("incidents", url="postgresql://medic:secret@127.0.0.1:1/medic")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("medic: cannot connect to Postgres at 127.0.0.1:1/medic: ")
    assert "refused" in line
    assert "secret" not in line


def test_db_migrate_creates_the_tables_then_finds_them_up_to_date(postgres_url: str) -> None:
    first = medic("db", "migrate", url=postgres_url)
    assert first.returncode == 0, first.stderr
    assert f"Applied {len(available())} migration(s)" in first.stdout
    assert all(m.name in first.stdout for m in available())
    second = medic("db", "migrate", url=postgres_url)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def exits_once(project: ComposeProject, service: str) -> Any:
    script = "if [ -f /tmp/ran ]; then while :; do sleep 1; done; fi; touch /tmp/ran; exit 4"
    container = project.run(service, command=["sh", "-c", script], stop_timeout=1)
    wait_for(
        lambda: container.reload() or container.status == "exited",
        timeout=10,
        message=f"{service} exited",
    )
    return container


def test_once_spools_while_postgres_is_unreachable_and_the_next_start_writes_it(
    compose_project: ComposeProject, postgres_url: str, tmp_path: Path
) -> None:
    job = exits_once(compose_project, "job")
    away = medic(
        "once",
        "--project",
        compose_project.name,
        url="postgresql://medic:secret@127.0.0.1:1/medic",
        state_dir=tmp_path,
        # Without Postgres no medic can hold the lease of its scope, and would stand by:
        # this is the lone medic that heals through an outage (docs/ha.md).
        MEDIC_LEADER_ELECTION="false",
    )
    assert away.returncode == 0, away.stderr
    warnings = [line for line in away.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2
    assert "Postgres is unreachable" in warnings[0]
    assert f"incidents are spooled to {tmp_path / 'spool.jsonl'}" in warnings[0]
    assert "127.0.0.1:1/medic" in warnings[0]
    assert "3 incident changes are still spooled" in warnings[1]
    spooled = [json.loads(line) for line in (tmp_path / "spool.jsonl").read_text().splitlines()]
    # The attempt is written when it starts and again when it ends.
    assert [s["op"] for s in spooled] == ["open_incident", "record_attempt", "record_attempt"]
    assert [s.get("status") for s in spooled[1:]] == ["running", "finished"]
    assert spooled[0]["container_id"] == job.id

    # The next start reaches Postgres: it creates the tables, then writes the spool.
    back = medic("once", "--project", compose_project.name, url=postgres_url, state_dir=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "Applied database migration 0001_incidents.sql." in back.stderr
    assert "Wrote 3 spooled changes to Postgres." in back.stderr
    assert (tmp_path / "spool.jsonl").read_text() == ""
    [incident] = parse(medic("incidents", "--all", "--json", url=postgres_url))
    assert incident["id"] == spooled[0]["id"]
    assert incident["container"] == job.name
    assert incident["attempts"] == 1


def test_once_without_a_database_says_incidents_stay_in_memory(
    compose_project: ComposeProject, tmp_path: Path
) -> None:
    done = medic("once", "--project", compose_project.name, url=None, state_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    [warning] = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert "MEDIC_DATABASE_URL is not set" in warning
    assert "kept in memory only" in warning
    assert not (tmp_path / "spool.jsonl").exists()


def test_once_stands_by_while_another_medic_leads_the_scope(
    compose_project: ComposeProject, postgres_url: str, tmp_path: Path, docker_client: Any
) -> None:
    job = exits_once(compose_project, "job")
    scope = Identity(docker_client.info()["ID"], compose_project.name).scope
    leases = PostgresLeases(postgres_url)
    try:
        leases.claim(scope, "the-leader:1:abc", seconds=600)
    finally:
        leases.close()
    done = medic("once", "--project", compose_project.name, url=postgres_url, state_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"This medic stands by for compose project '{compose_project.name}'"
    )
    assert "the-leader:1:abc leads it" in done.stdout
    job.reload()
    assert job.status == "exited"  # left to the leader
    assert parse(medic("incidents", "--all", "--json", url=postgres_url)) == []
    as_json = medic(
        "once", "--project", compose_project.name, "--json", url=postgres_url, state_dir=tmp_path
    )
    assert json.loads(as_json.stdout)["leadership"]["leader"] == "the-leader:1:abc"
