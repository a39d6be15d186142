"""The console's small pure parts: where a sign-in may send the browser next, and how
every value a template prints is made inert first; and the incident page's lead,
rendered from a memory store: the other service where the cause lies."""

from __future__ import annotations

import html
import re
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import markupsafe
import pytest
from fakes import FakeClock
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from agent.config import FixesSettings
from agent.model import (
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Finding,
    Incident,
    Signal,
)
from agent.review import Reviewer
from agent.store.memory import MemoryStore
from agent.web.app import build_app
from agent.web.console import Console, _finalize, _safe_next, templates


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/incidents/0123abcd",
        "/?status=escalated&service=web",
        "/fixes/ab12?all=1",
    ],
)
def test_a_path_on_this_site_is_kept(target: str) -> None:
    assert _safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/ /evil.example",
        "javascript:alert(1)",
        "incidents",
    ],
)
def test_anything_else_goes_home(target: str | None) -> None:
    assert _safe_next(target) == "/"


def test_every_printed_value_shows_controls_and_bidi_as_visible_escapes() -> None:
    assert _finalize("a\x1b[31mb\u202ec") == "a\\x1b[31mb\\u202ec"
    assert _finalize(None) == ""
    assert _finalize(3) == 3
    # A macro's output is markup the template made; it is kept as it is.
    badge = markupsafe.Markup('<span class="badge">ok</span>')
    assert _finalize(badge) is badge


def test_templates_escape_what_they_print() -> None:
    page = templates().from_string("<p>{{ text }}</p>").render(text="<script>x()</script>\u202e")
    assert page == "<p>&lt;script&gt;x()&lt;/script&gt;\\u202e</p>"


# --- the incident page: where the cause lies ---------------------------------------------

TOKEN = "a-console-token-for-unit-tests"
T0 = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)


def console_over(store: MemoryStore) -> TestClient:
    reviewer = Reviewer(store, repo=None, fixes=FixesSettings(), engine=lambda: nullcontext(None))
    console = Console(
        store=store,
        reviewer=reviewer,
        token=TOKEN,
        diff_of=lambda _fix, _diagnosis: None,
        clock=FakeClock(T0 + timedelta(hours=1)),
    )
    app = build_app(
        health=lambda: (True, {}),
        ready=lambda: (True, {}),
        registry=CollectorRegistry(),
        console=console,
    )
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def app_incident(store: MemoryStore) -> Incident:
    ref = ContainerRef(ContainerId("c" * 64), "shop-app-1", "shop", "app")
    return store.record_finding(Finding(ref, Signal.CRASH_LOOP, "app keeps exiting", T0))


def a_diagnosis(incident: Incident, source: DiagnosisSource, **fields: Any) -> Diagnosis:
    base = Diagnosis(
        id=DiagnosisId(f"{source}-{len(fields)}".ljust(32, "0")),
        incident_id=incident.id,
        source=source,
        created_at=T0 + timedelta(minutes=5 if source is DiagnosisSource.RULES else 6),
        summary=f"{source} summary",
        root_cause="because",
        confidence=Confidence.HIGH,
        rule_id="dependency_unreachable",
        model=None if source is DiagnosisSource.RULES else "qwen3:8b",
    )
    return replace(base, **fields)


def incident_page(store: MemoryStore, incident: Incident) -> str:
    with console_over(store) as client:
        response = client.get(f"/incidents/{incident.id}")
    assert response.status_code == 200
    return response.text


def test_the_incident_page_leads_with_the_service_where_the_cause_lies() -> None:
    store = MemoryStore()
    incident = app_incident(store)
    store.record_diagnosis(
        a_diagnosis(
            incident,
            DiagnosisSource.RULES,
            cause_service="db",
            cause_state="exited (exit code 137)",
        )
    )
    page = incident_page(store, incident)
    callout = page.index('class="callout cause"')
    assert callout < page.index("<h2>Diagnosis</h2>") < page.index('id="timeline"')
    assert callout < page.index("app keeps exiting")
    section = page[callout : page.index("</section>", callout)]
    shown = html.unescape(re.sub(r"<[^>]+>", "", section))
    assert "Cause lies in db: exited (exit code 137)" in " ".join(shown.split())
    assert "Named by medic's rules" in shown
    assert page.count('href="/?service=db"') == 2


def test_the_models_named_cause_leads_over_the_rules() -> None:
    store = MemoryStore()
    incident = app_incident(store)
    store.record_diagnosis(
        a_diagnosis(incident, DiagnosisSource.RULES, cause_service="db", cause_state="running")
    )
    store.record_diagnosis(
        a_diagnosis(
            incident,
            DiagnosisSource.LLM,
            cause_service="migrate",
            cause_state="exited (exit code 1)",
        )
    )
    page = incident_page(store, incident)
    assert 'href="/?service=migrate"' in page and 'href="/?service=db"' not in page
    assert "the model (qwen3:8b)" in page


def test_an_incident_whose_cause_is_its_own_service_has_no_callout() -> None:
    store = MemoryStore()
    incident = app_incident(store)
    store.record_diagnosis(a_diagnosis(incident, DiagnosisSource.RULES))
    page = incident_page(store, incident)
    assert "callout" not in page and "Cause lies in" not in page


def test_the_cause_callout_escapes_what_it_prints() -> None:
    store = MemoryStore()
    incident = app_incident(store)
    store.record_diagnosis(
        a_diagnosis(
            incident,
            DiagnosisSource.RULES,
            cause_service='db"><script>x()</script>',
            cause_state="exited <b>\u202e</b>",
        )
    )
    page = incident_page(store, incident)
    assert "<script>x()" not in page and "<b>" not in page and "\u202e" not in page
    assert 'href="/?service=db%22%3E%3Cscript%3Ex%28%29%3C%2Fscript%3E"' in page
    assert "db&#34;&gt;&lt;script&gt;x()&lt;/script&gt;" in page
    assert "exited &lt;b&gt;\\u202e&lt;/b&gt;" in page
