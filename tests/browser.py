"""A real headless Chromium for tests of medic's pages, driven by Playwright.

The review console is only known to work if a real browser shows it: its
Content-Security-Policy, its forms and its cookies behave as a browser makes them
behave, not as a test client imagines. Playwright cannot download its own browser on
these machines, so the tests drive Debian's ``chromium`` (scripts/setup installs it);
a missing browser fails the test, since a test that claims browser behaviour must not
pass without one.

``browser`` is one Chromium for the session; ``page`` is a fresh context and page
for each test, so cookies never leak from one test to the next. When a test that
used ``page`` fails, a screenshot of the page is saved; ``screenshot`` saves one on
purpose. Both go to ``$MEDIC_ARTEFACTS/screenshots`` (default
``.state/artefacts/screenshots`` in the checkout), named after the test.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]

#: How long a page action or expectation waits, in milliseconds: long enough for a
#: page that medic renders from Postgres on a busy 2-core machine.
TIMEOUT_MS = 15_000
# expect() keeps a default of its own (5 s), apart from the context's.
expect.set_options(timeout=TIMEOUT_MS)

BROWSER_FIXTURES = {"browser", "page"}

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # As conftest.py does for "docker": `-m "not browser"` selects the tests that
    # need no browser, without anyone marking them by hand.
    for item in items:
        if BROWSER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Kept on the item so that the page fixture's teardown knows whether the test failed.
    del call
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def artefacts() -> Path:
    """Where tests leave files for a person to look at after the run."""
    configured = os.environ.get("MEDIC_ARTEFACTS")
    return Path(configured) if configured else ROOT / ".state" / "artefacts"


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of ``page`` named after the running test and ``name``."""
    folder = artefacts() / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(_current_test())}-{_safe(name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _current_test() -> str:
    # "tests/integration/test_x.py::test_y[a] (call)" -> "test_x.test_y[a]"
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    node_id = current.rsplit(" ", 1)[0]
    path, _, name = node_id.partition("::")
    if not name:
        return "outside-a-test"
    return f"{Path(path).stem}.{name.replace('::', '.')}"


def _safe(text: str) -> str:
    return re.sub(r"[^\w.\[\]-]+", "_", text)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"No Chromium at {CHROMIUM}; run scripts/setup (it installs Debian's chromium).",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        try:
            # Tests run as root, where Chromium refuses its sandbox.
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
            )
        except PlaywrightError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            pytest.fail(
                f"Chromium at {CHROMIUM} did not start ({first}); run scripts/setup.",
                pytrace=False,
            )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a browser context of its own (cookies, storage and cache start empty)."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    made = context.new_page()
    try:
        yield made
    finally:
        try:
            report = request.node.stash.get(_REPORTS, {}).get("call")
            if report is not None and report.failed:
                # A page that crashed cannot be photographed; the failure says enough.
                with contextlib.suppress(PlaywrightError):
                    saved = screenshot(made, "failure")
                    report.sections.append(("screenshot", str(saved)))
        finally:
            context.close()
