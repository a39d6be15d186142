"""The browser harness works as the console's tests need it to: Chromium runs a page's
own script files, refuses inline script under ``script-src 'self'`` (the policy the
console serves), fills and submits forms, and leaves screenshots where CI keeps them,
also by itself when a test fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import screenshot
from playwright.sync_api import Page, expect

POLICY = "script-src 'self'"

INDEX = b"""<!doctype html>
<html>
<head><meta charset="utf-8"><title>harness</title></head>
<body>
  <p id="external">waiting for app.js</p>
  <p id="inline">untouched</p>
  <p id="violation">none</p>
  <form id="greet">
    <input name="who" aria-label="who">
    <button type="submit">Greet</button>
  </form>
  <p id="greeting"></p>
  <script src="/app.js"></script>
  <script>document.getElementById("inline").textContent = "inline script ran";</script>
</body>
</html>
"""

APP_JS = b"""
document.getElementById("external").textContent = "app.js ran";
document.addEventListener("securitypolicyviolation", (event) => {
  document.getElementById("violation").textContent =
    event.effectiveDirective + " blocked " + event.blockedURI;
});
document.getElementById("greet").addEventListener("submit", (event) => {
  event.preventDefault();
  const who = new FormData(event.target).get("who");
  document.getElementById("greeting").textContent = "Hello, " + who;
});
"""

FILES = {"/": (INDEX, "text/html; charset=utf-8"), "/app.js": (APP_JS, "text/javascript")}


@pytest.fixture
def site() -> Iterator[str]:
    """The page above, served from 127.0.0.1 with the console's script policy."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = FILES.get(self.path)
            if found is None:
                self.send_error(404)
                return
            body, kind = found
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", POLICY)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_script_files_run_inline_script_is_blocked_and_forms_submit(
    page: Page,
    site: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # Using the page is what marks a test "browser"; nobody has to remember to.
    assert request.node.get_closest_marker("browser") is not None
    page.goto(site)

    expect(page.locator("#external")).to_have_text("app.js ran")
    # The browser refused the inline script, and said it was the policy that did.
    expect(page.locator("#violation")).to_have_text("script-src-elem blocked inline")
    expect(page.locator("#inline")).to_have_text("untouched")

    page.get_by_label("who").fill("ops")
    page.get_by_role("button", name="Greet").click()
    expect(page.locator("#greeting")).to_have_text("Hello, ops")

    monkeypatch.setenv("MEDIC_ARTEFACTS", str(tmp_path))
    saved = screenshot(page, "greeted")
    assert saved == (
        tmp_path
        / "screenshots"
        / "test_browser_harness.test_script_files_run_inline_script_is_blocked_and_forms_submit"
        "-greeted.png"
    )
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert saved.stat().st_size > 1000


# The browser runs in the inner pytest, so no fixture here says so.
@pytest.mark.browser
def test_a_failing_page_test_leaves_a_screenshot_and_says_where(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artefacts = tmp_path / "artefacts"
    monkeypatch.setenv("MEDIC_ARTEFACTS", str(artefacts))
    # The inner pytest has no pyproject of its own: it finds tests/browser.py by path.
    tests = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    )
    pytester.makeconftest('pytest_plugins = ["browser"]')
    pytester.makepyfile(
        test_fails="""
        def test_sees_the_wrong_title(page):
            page.set_content("<title>medic</title><h1>Incidents</h1>")
            assert page.title() == "something else"
        """
    )

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(failed=1)
    saved = artefacts / "screenshots" / "test_fails.test_sees_the_wrong_title-failure.png"
    assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    result.stdout.fnmatch_lines([f"*{saved}*"])
