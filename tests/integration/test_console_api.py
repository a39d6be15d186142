"""The console's JSON API over real HTTP: the documents the CLI's ``--json`` prints,
the decisions ``medic fixes approve|reject`` and ``medic incidents resolve`` make, and
the token every request needs. The incidents and fixes are in a real Postgres, the
fix branches in a real git repository (docs/review.md, "The JSON API")."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixrepo import APP_PY, COMPOSE, EDIT, Repo, make_repo, propose_in_postgres
from prometheus_client import CollectorRegistry

from agent import present
from agent.config import FixesSettings
from agent.fixes.git import Git
from agent.http import StatusServer
from agent.model import Fix, FixStatus, Incident, IncidentStatus
from agent.review import Reviewer, fix_diff
from agent.store.postgres import PostgresStore
from agent.web.console import Console

TOKEN = "console-token-for-tests-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class Served:
    url: str
    repo: Repo
    store: PostgresStore
    web: tuple[Incident, Fix]
    api: tuple[Incident, Fix]


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[Served]:
    """Two escalated incidents (web and api), each with a proposed fix branch in one
    repository, and the console serving them from Postgres on 127.0.0.1."""
    repo = make_repo(tmp_path)
    # A second service built from the same repository, with the same port typo.
    repo.write(
        "compose.yaml", COMPOSE.replace("services:\n", "services:\n  api:\n    build: ./api\n")
    )
    repo.write("api/Dockerfile", (repo.path / "web" / "Dockerfile").read_text())
    repo.write("api/app.py", APP_PY)
    repo.commit_all("An api service")
    _, web_incident, web_fix = propose_in_postgres(postgres_url, tmp_path, at=NOW, repo=repo)
    _, api_incident, api_fix = propose_in_postgres(
        postgres_url,
        tmp_path,
        at=NOW,
        repo=repo,
        service="api",
        edit=replace(EDIT, path="api/app.py"),
    )
    store = PostgresStore(postgres_url, migrate=False)
    reviewer = Reviewer(
        store, repo=repo.path, fixes=FixesSettings(), engine=lambda: nullcontext(None)
    )
    console = Console(
        store=store,
        reviewer=reviewer,
        token=TOKEN,
        diff_of=lambda fix, diagnosis: fix_diff(Git(repo.path), fix, diagnosis),
    )
    server = StatusServer(
        health=lambda: (True, {"status": "ok"}),
        ready=lambda: (True, {"status": "ok"}),
        registry=CollectorRegistry(),
        console=console,
        host="127.0.0.1",
        port=0,
    )
    server.start()
    try:
        yield Served(
            f"http://127.0.0.1:{server.port}",
            repo,
            store,
            (web_incident, web_fix),
            (api_incident, api_fix),
        )
    finally:
        server.stop()
        store.close()


def call(
    served: Served,
    method: str,
    path: str,
    body: object | None = None,
    *,
    token: str | None = TOKEN,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(served.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def state(served: Served) -> tuple[str, str, list[str], list[str]]:
    """What a refused or unauthorised request must leave as it was: the repository's
    refs and work tree, and each incident's and fix's status."""
    incidents = [str(i.status) for i in served.store.list_incidents()]
    fixes = [str(f.status) for f in served.store.list_fixes(include_decided=True)]
    return served.repo.refs(), served.repo.git("status", "--porcelain"), incidents, fixes


def endpoints(served: Served) -> list[tuple[str, str, object | None]]:
    web, web_fix = served.web
    _, api_fix = served.api
    return [
        ("GET", "/api/incidents", None),
        ("GET", "/api/incidents?status=all&service=web&since=1h", None),
        ("GET", f"/api/incidents/{web.id}", None),
        ("GET", "/api/fixes", None),
        ("GET", "/api/fixes?all=1", None),
        ("GET", f"/api/fixes/{web_fix.id}", None),
        ("POST", f"/api/fixes/{web_fix.id}/approve", {"by": "ops", "rebuild": False}),
        ("POST", f"/api/fixes/{api_fix.id}/reject", {"by": "ops", "reason": "wrong port"}),
        ("POST", f"/api/incidents/{web.id}/resolve", {"by": "ops", "note": "merged the fix"}),
    ]


def test_every_endpoint_wants_the_token_and_changes_nothing_without_it(served: Served) -> None:
    before = state(served)
    for method, path, body in endpoints(served):
        for token in (None, "not-the-token", TOKEN[:-1], ""):
            status, answer = call(served, method, path, body, token=token)
            assert status == 401, (method, path, token, answer)
            assert "Authorization: Bearer" in answer["error"]
    assert state(served) == before


def test_every_endpoint_answers_with_the_right_token(served: Served) -> None:
    for method, path, body in endpoints(served):
        status, answer = call(served, method, path, body)
        assert status == 200, (method, path, answer)
    web, web_fix = served.web
    # The decisions were made, by whom they say, and the repository shows them.
    assert served.store.get_fix(web_fix.id).status is FixStatus.APPROVED
    assert served.store.get_fix(web_fix.id).decided_by == "ops"
    assert served.repo.git("rev-parse", "HEAD").strip() == web_fix.commit
    _, api_fix = served.api
    assert served.store.get_fix(api_fix.id).status is FixStatus.REJECTED
    assert f"refs/heads/{api_fix.branch}" not in served.repo.refs()
    assert served.store.get(web.id).status is IncidentStatus.RESOLVED


def test_the_documents_are_the_cli_documents(served: Served) -> None:
    web, web_fix = served.web
    status, listed = call(served, "GET", "/api/incidents")
    assert status == 200
    incidents = served.store.list_incidents()
    marks = served.store.review_marks([i.id for i in incidents])
    now = datetime.now(UTC)
    expected = present.incident_list(incidents, now=now, marks=marks)
    for doc in (*listed, *expected):
        doc.pop("duration_seconds")
    assert listed == json.loads(json.dumps(expected, default=str))
    assert {d["service"]: d["fix_status"] for d in listed} == {"web": "proposed", "api": "proposed"}

    status, shown = call(served, "GET", f"/api/incidents/{web.id[:8]}")
    assert status == 200
    assert shown["id"] == web.id
    [fix] = shown["fixes"]
    assert fix["id"] == web_fix.id
    assert '+    port = int("8081")' in fix["diff"].splitlines()
    assert [d["source"] for d in shown["diagnoses"]] == ["llm"]
    assert [m["kind"] for m in shown["timeline"]] == ["finding", "diagnosis", "fix"]

    status, one = call(served, "GET", f"/api/fixes/{web_fix.id[:8]}")
    assert status == 200
    assert one["id"] == web_fix.id and one["diagnosis"]["summary"] == "The port should be 8081."
    assert one["status"] == "proposed" and one["branch"] == web_fix.branch

    status, only_web = call(served, "GET", "/api/incidents?service=web")
    assert [i["service"] for i in only_web] == ["web"]
    status, resolved = call(served, "GET", "/api/incidents?status=resolved")
    assert (status, resolved) == (200, [])


def test_a_refused_approval_answers_409_in_one_line_and_changes_nothing(served: Served) -> None:
    _, web_fix = served.web
    # A person is editing the very file the fix changes, and has not committed it.
    app = served.repo.path / "web" / "app.py"
    app.write_text(app.read_text() + "# work in progress\n")
    before = state(served)
    status, answer = call(
        served, "POST", f"/api/fixes/{web_fix.id}/approve", {"by": "ops", "rebuild": False}
    )
    assert status == 409, answer
    assert "uncommitted" in answer["error"] and "\n" not in answer["error"]
    assert state(served) == before
    assert served.store.get_fix(web_fix.id).status is FixStatus.PROPOSED


def test_a_second_decision_is_refused_with_409(served: Served) -> None:
    web, web_fix = served.web
    assert call(served, "POST", f"/api/fixes/{web_fix.id}/approve", {"by": "a"})[0] == 200
    status, answer = call(
        served, "POST", f"/api/fixes/{web_fix.id}/reject", {"by": "b", "reason": "late"}
    )
    assert status == 409 and "approved" in answer["error"], answer
    assert (
        call(served, "POST", f"/api/incidents/{web.id}/resolve", {"by": "a", "note": "x"})[0] == 200
    )
    status, answer = call(
        served, "POST", f"/api/incidents/{web.id}/resolve", {"by": "b", "note": "y"}
    )
    assert status == 409 and "already resolved" in answer["error"], answer


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/approve", {"rebuild": False}, "by is needed"),
        ("/approve", {"by": "ops", "rebuild": "yes"}, "rebuild must be true or false"),
        ("/reject", {"by": "ops"}, "reason is needed"),
        ("/approve", ["by", "ops"], "must be a JSON object"),
    ],
)
def test_a_body_that_cannot_be_read_is_400_and_changes_nothing(
    served: Served, path: str, body: object, says: str
) -> None:
    _, web_fix = served.web
    before = state(served)
    status, answer = call(served, "POST", f"/api/fixes/{web_fix.id}{path}", body)
    assert status == 400 and says.lower() in answer["error"].lower(), answer
    assert state(served) == before


def test_unknown_ids_are_404(served: Served) -> None:
    assert call(served, "GET", "/api/incidents/ffffffff")[0] == 404
    assert call(served, "GET", "/api/fixes/ffffffff")[0] == 404
    assert call(served, "POST", "/api/fixes/ffffffff/approve", {"by": "ops"})[0] == 404
    assert call(served, "GET", "/api/incidents?status=sleeping")[0] == 400


def test_a_body_over_64_kib_is_refused_and_changes_nothing(served: Served) -> None:
    _, web_fix = served.web
    before = state(served)
    status, answer = call(
        served, "POST", f"/api/fixes/{web_fix.id}/approve", {"by": "ops", "pad": "x" * 70_000}
    )
    assert status == 400 and "longer than 65536 bytes" in answer["error"], answer
    assert state(served) == before
