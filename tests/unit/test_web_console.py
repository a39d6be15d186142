"""The console's small pure parts: where a sign-in may send the browser next, and how
every value a template prints is made inert first."""

from __future__ import annotations

import markupsafe
import pytest

from agent.web.console import _finalize, _safe_next, templates


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
