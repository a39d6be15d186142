"""Shared fixtures for tests that use a real Docker engine.

A missing engine or image is an error, not a skip: a test that claims Docker
behaviour has to run against Docker. scripts/setup provides both.
"""

from __future__ import annotations

import gc
import os
import subprocess
import warnings
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
import requests
from helpers import BUSYBOX_IMAGE, ComposeProject
from medic_process import webhook_receiver

from agent.engine.docker_sdk import DockerSDKGateway

# The testcontainers reaper image cannot be pulled without a registry, and every test
# here removes what it started; so plain `pytest` works as scripts/test does.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

# pytester lets a test check what the fixtures do when another test fails; browser
# gives the tests of medic's pages a real Chromium, and console_scene what they show.
pytest_plugins = ["pytester", "pgfixtures", "browser", "console_scene"]

DOCKER_FIXTURES = {"docker_client", "busybox_image", "compose_project"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the engine get the "docker" marker, so `-m "not docker"`
    # selects the tests that run anywhere without anyone marking them by hand.
    for item in items:
        if DOCKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


def _connect() -> tuple[Any, str]:
    """A client that answered ping, or None and why not."""
    client = None
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
        problem = str(exc)
    else:
        return client, ""
    if client is not None:
        client.close()
    # A failed connection leaves the SDK's socket for the garbage collector,
    # which would warn, and warnings are errors here: collect it now, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return None, problem


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client, problem = _connect()
    if client is None:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        pytest.fail(
            f"No Docker engine answers at {where}; run scripts/setup (or start dockerd) first."
            f" ({problem})",
            pytrace=False,
        )
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client: Any) -> str:
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
    except docker.errors.ImageNotFound:
        missing = True
    else:
        missing = False
    if missing:
        pytest.fail(
            f"Image {BUSYBOX_IMAGE} is missing; build it with tests/images/build"
            " (scripts/setup does).",
            pytrace=False,
        )
    return BUSYBOX_IMAGE


@pytest.fixture
def compose_project(docker_client: Any, busybox_image: str) -> Iterator[ComposeProject]:
    project = ComposeProject(docker_client, busybox_image)
    try:
        yield project
    finally:
        project.cleanup()


@pytest.fixture
def gateway(docker_client: Any) -> Iterator[DockerSDKGateway]:
    """medic's own gateway to the test engine (docker_client proves it answers, and
    marks the test ``docker``), closed afterwards."""
    gw = DockerSDKGateway.from_env()
    try:
        yield gw
    finally:
        gw.close()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts (medic_process.start); killed if still running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A notification URL for MEDIC_NOTIFY_URLS and what was posted to it."""
    with webhook_receiver() as (url, received):
        yield url, received
