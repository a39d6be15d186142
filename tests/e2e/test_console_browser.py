"""The review console in a real headless Chromium, against a real ``medic run`` that
escalated two services of a real compose project, diagnosed them with its rules and
the model (the real SDK against a local fake), and made a real fix branch for each.

A person signs in, finds the incidents and filters them, opens one and reads both
diagnoses, opens its fix and reads the diff, approves it (and git shows it merged),
rejects the other (and its branch is gone), and sees each decision on the timeline.
A form posted without its CSRF token changes nothing, and hostile text from a
container's log renders as text. What is asserted is what the browser shows and what
the repository and the database hold, not the HTML medic sent. Screenshots of each
page are saved as artefacts (tests/browser.py).

The tests share one scene and run in the order written: the later ones act on what
the earlier left (the approved fix, the rejected one).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from browser import screenshot
from console_scene import Scene, running_scene
from helpers import wait_for
from pgfixtures import PostgresServer, fresh_database
from playwright.sync_api import Page, expect

from agent.model import (
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Finding,
    FixStatus,
    IncidentStatus,
    Signal,
)
from agent.store.postgres import PostgresStore

pytestmark = [pytest.mark.docker, pytest.mark.browser]


@pytest.fixture(scope="module")
def scene(
    docker_client: Any,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scene]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        with (
            fresh_database(postgres_server) as url,
            running_scene(
                folder=tmp_path_factory.mktemp("console"),
                postgres_url=url,
                docker_client=docker_client,
                processes=started,
            ) as made,
        ):
            yield made
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def sign_in(page: Page, scene: Scene, path: str = "/") -> None:
    page.goto(scene.url + path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.fill("#token", scene.token)
    page.click("button[type=submit]")
    expect(page.get_by_role("link", name="Fixes")).to_be_visible()


def store(scene: Scene) -> PostgresStore:
    return PostgresStore(scene.postgres_url, migrate=False)


def rows(page: Page) -> list[str]:
    """The incident ids the incidents table shows now."""
    return [
        str(row.get_attribute("data-incident"))
        for row in page.locator("#incidents tbody tr[data-incident]").all()
    ]


def test_a_person_signs_in_and_finds_the_incidents_and_filters_them(
    scene: Scene, page: Page
) -> None:
    page.goto(scene.url)
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("#token", "not the token")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_have_text("That token is not right.")
    screenshot(page, "sign-in")
    page.fill("#token", scene.token)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Incidents")
    app, api = scene.incidents["app"], scene.incidents["api"]
    assert sorted(rows(page)) == sorted([app.id, api.id])
    row = page.locator(f"tr[data-incident='{app.id}']")
    expect(row).to_contain_text("escalated")
    expect(row).to_contain_text("proposed")  # the fix state, linked to the fix
    expect(page.locator(".figures")).to_contain_text("app")
    screenshot(page, "incidents")

    page.select_option("select[name=service]", "app")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"service=app"))
    assert rows(page) == [app.id]
    # The table refreshes while open, and keeps the filter.
    expect(page.locator("#updated")).to_have_text(re.compile(r"^updated "), timeout=30_000)
    assert rows(page) == [app.id]
    page.select_option("select[name=status]", "resolved")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#incidents tbody")).to_contain_text("No incidents match")


def test_an_incident_shows_both_diagnoses_and_its_fix_and_approving_merges_it(
    scene: Scene, page: Page
) -> None:
    incident, fix = scene.incidents["app"], scene.fixes["app"]
    sign_in(page, scene, f"/incidents/{incident.id}")
    rules = page.get_by_label("medic's rules")
    model = page.locator("section.diagnosis").nth(1)
    expect(rules.locator(".tag").first).to_have_text(re.compile(r"^rule \w+"))
    expect(model).to_contain_text("app.py calls serv_forever, a typo of serve_forever.")
    expect(model.locator("li.verified")).to_contain_text("object has no attribute 'serv_forever'")
    expect(page.locator("#timeline")).to_contain_text("fix proposed")
    screenshot(page, "incident")

    page.click(f"a[href='/fixes/{fix.id}']")
    expect(page.locator("h1")).to_contain_text(f"Fix {fix.id[:8]}")
    removed = page.locator("tr.d-del")
    added = page.locator("tr.d-add")
    expect(removed).to_have_count(1)
    expect(added).to_have_count(1)
    expect(removed.locator("td.code")).to_contain_text("server.serv_forever()")
    expect(added.locator("td.code")).to_contain_text("server.serve_forever()")
    # Line numbers are kept: the typo is on line 5 of app/app.py, old and new.
    expect(removed.locator("td.num").first).to_have_text("5")
    expect(added.locator("td.num").nth(1)).to_have_text("5")
    screenshot(page, "fix")

    page.fill("#approve-by", "ops")
    page.click("#approve button[type=submit]")
    expect(page.locator(".notice.ok")).to_contain_text("is approved by ops")
    expect(page.locator("h1 .badge")).to_have_text("approved")
    repo = scene.repo
    assert repo.git("rev-parse", "HEAD").strip() == fix.commit
    assert repo.git("symbolic-ref", "--short", "HEAD").strip() == "main"
    assert "serve_forever()" in (repo.path / "app" / "app.py").read_text()
    recorded = store(scene)
    try:
        decided = recorded.get_fix(fix.id)
    finally:
        recorded.close()
    assert (decided.status, decided.decided_by) == (FixStatus.APPROVED, "ops")

    page.click(f"a[href='/incidents/{incident.id}']")
    decision = page.locator("#timeline tr.k-decision")
    expect(decision).to_contain_text("fix approved")
    expect(decision).to_contain_text("ops")


def test_rejecting_the_other_fix_deletes_its_branch_and_keeps_why(scene: Scene, page: Page) -> None:
    fix = scene.fixes["api"]
    sign_in(page, scene, "/fixes")
    expect(page.locator("#fixes tbody tr")).to_have_count(1)  # app's was approved
    page.click(f"#fixes a[href='/fixes/{fix.id}']")
    page.fill("#reject-by", "ann")
    page.fill("#reason", "the port should come from the environment")
    page.click("#reject button[type=submit]")
    expect(page.locator(".notice.ok")).to_contain_text("is rejected by ann")
    assert f"refs/heads/{fix.branch}" not in scene.repo.refs()
    recorded = store(scene)
    try:
        decided = recorded.get_fix(fix.id)
    finally:
        recorded.close()
    assert (decided.status, decided.decided_by, decided.reason) == (
        FixStatus.REJECTED,
        "ann",
        "the port should come from the environment",
    )
    page.goto(f"{scene.url}/fixes?all=1")
    expect(page.locator("#fixes tbody tr")).to_have_count(2)


def test_a_form_posted_without_its_csrf_token_is_refused(scene: Scene, page: Page) -> None:
    incident = scene.incidents["api"]
    sign_in(page, scene, f"/incidents/{incident.id}")
    page.locator("form[action$='/resolve'] input[name=csrf]").evaluate("e => e.remove()")
    page.fill("#by", "mallory")
    page.fill("#note", "closed from another site")
    page.click("form[action$='/resolve'] button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("did not come from this page")
    # A forged token is refused the same way, straight through the session's cookie.
    answer = page.request.post(
        f"{scene.url}/incidents/{incident.id}/resolve",
        form={"by": "mallory", "note": "x", "csrf": "forged"},
        max_redirects=0,
    )
    assert answer.status == 403
    recorded = store(scene)
    try:
        assert recorded.get(incident.id).status is IncidentStatus.ESCALATED
    finally:
        recorded.close()

    page.goto(f"{scene.url}/incidents/{incident.id}")
    page.fill("#by", "ops")
    page.fill("#note", "fixed the port by hand")
    page.click("form[action$='/resolve'] button[type=submit]")
    expect(page.locator(".notice.ok")).to_contain_text("is resolved")
    expect(page.locator("#timeline tr.k-decision").last).to_contain_text("ops")


HOSTILE = (
    "boot failed <script>window.pwned = 1</script>"
    '<img src=x onerror="window.pwned = 2"> \x1b[2J\x1b[31mred\x1b[0m '
    "\u202ecod.exe\u202c done"
)


def test_hostile_log_text_renders_inert(scene: Scene, page: Page) -> None:
    recorded = store(scene)
    try:
        ref = ContainerRef(ContainerId("f" * 64), "shop-evil-1", "shop", "evil")
        now = datetime.now(UTC)
        incident = recorded.record_finding(Finding(ref, Signal.EXITED, HOSTILE, now))
        recorded.record_diagnosis(
            Diagnosis(
                id=DiagnosisId("e" * 32),
                incident_id=incident.id,
                source=DiagnosisSource.RULES,
                created_at=now,
                summary=HOSTILE,
                root_cause="<b>bold</b> claims",
                confidence=Confidence.LOW,
                evidence=(HOSTILE,),
                rule_id="unknown",
            )
        )
    finally:
        recorded.close()
    sign_in(page, scene, f"/incidents/{incident.id}")
    lead = page.locator("p.lead")
    expect(lead).to_contain_text("<script>window.pwned = 1</script>")
    text = lead.inner_text()
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("main img, main script, main b").count() == 0
    expect(page.locator("ul.quotes")).to_contain_text("<img src=x")
    screenshot(page, "hostile")
    page.goto(scene.url)
    wait_for(lambda: page.locator(f"tr[data-incident='{incident.id}']").count() == 1, timeout=15)
    assert page.evaluate("typeof window.pwned") == "undefined"
