"""Helpers for tests that drive a real Docker engine, and for waiting and log lines.

The docker SDK is untyped, so its objects are typed ``Any`` here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker.errors
import pytest
from docker.models.containers import _create_container_args
from loguru import logger

BUSYBOX_IMAGE = "medic-test/busybox:latest"
"""Built by tests/images/build: static busybox on scratch (sh, sleep, httpd, wget)."""

NANOSECONDS = 1_000_000_000

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"

T = TypeVar("T")


def wait_for(
    # "...", not "[]": loops bind their variable as `lambda c=c: ...` (ruff B023),
    # and mypy cannot infer such a lambda against a zero-argument Callable.
    predicate: Callable[..., T],
    timeout: float,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError naming ``message`` after ``timeout`` seconds.
    Exceptions from ``predicate`` propagate: a broken check should not look
    like a slow one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {message} (last value: {value!r})"
            )
        time.sleep(interval)


@contextmanager
def logged(level: str) -> Iterator[list[str]]:
    """The messages medic logs at ``level`` or above while the block runs."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m.record["message"])), level=level)
    try:
        yield lines
    finally:
        logger.remove(sink)


def healthcheck(
    cmd: str,
    *,
    interval: float = 1,
    retries: int = 1,
    timeout: float = 2,
    start_period: float = 0,
) -> dict[str, Any]:
    """A docker SDK healthcheck running ``cmd`` with ``sh -c``; times in seconds."""
    return {
        "test": ["CMD-SHELL", cmd],
        "interval": round(interval * NANOSECONDS),
        "timeout": round(timeout * NANOSECONDS),
        "retries": retries,
        "start_period": round(start_period * NANOSECONDS),
    }


def health_status(container: Any) -> str | None:
    """The container's current health status, or None when it has no healthcheck."""
    container.reload()
    health = container.attrs["State"].get("Health")
    return None if health is None else str(health["Status"])


class ComposeProject:
    """Containers labelled the way Docker Compose labels them, removed on cleanup().

    The containers come from the busybox image and run whatever ``command``
    says. Note that busybox ``sh`` or ``sleep`` as PID 1 ignore SIGTERM, so a
    plain ``docker stop`` waits the full stop timeout: pass ``stop_timeout=1``
    (or ``init=True``) when a test stops or restarts containers.
    """

    def __init__(self, client: Any, image: str = BUSYBOX_IMAGE, name: str | None = None) -> None:
        self.client = client
        self.image = image
        self.name = name or f"medictest-{uuid.uuid4().hex[:8]}"
        self.containers: list[Any] = []

    def run(
        self,
        service: str,
        *,
        command: str | list[str],
        healthcheck: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        project: str | None = None,
        restart_policy: dict[str, Any] | None = None,
        stop_signal: str | None = None,
        stop_timeout: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Create and start a detached container for ``service``; return it reloaded.

        ``kwargs`` go to the docker SDK's ``containers.create`` (environment,
        init, network_mode, mem_limit, ...).
        """
        project = project or self.name
        all_labels = {
            COMPOSE_PROJECT: project,
            COMPOSE_SERVICE: service,
            COMPOSE_NUMBER: "1",
            COMPOSE_ONEOFF: "False",
            **(labels or {}),
        }
        options: dict[str, Any] = {
            "image": self.image,
            "command": command,
            "name": name or f"{project}-{service}-1",
            "labels": all_labels,
            "detach": True,
            "version": self.client.api._version,
            **kwargs,
        }
        if healthcheck is not None:
            options["healthcheck"] = healthcheck
        if restart_policy is not None:
            options["restart_policy"] = restart_policy
        if stop_signal is not None:
            options["stop_signal"] = stop_signal
        # The SDK's containers.create() cannot set StopTimeout although the API
        # can, so build the low-level call the way containers.create() does.
        create_args = _create_container_args(options)
        if stop_timeout is not None:
            create_args["stop_timeout"] = stop_timeout
        created = self.client.api.create_container(**create_args)
        container = self.client.containers.get(created["Id"])
        # Recorded before start() so a container that fails to start is removed too.
        self.containers.append(container)
        container.start()
        container.reload()
        return container

    def project_containers(self) -> list[Any]:
        """Every container, running or not, labelled with this project's name.

        That includes containers the code under test made, such as a recreated
        service, but not those run() made for another ``project=``.
        """
        # A container medic removes between the list and the SDK's inspect of it (the
        # old one of a recreate) is gone, not an error.
        return list(
            self.client.containers.list(
                all=True, filters={"label": f"{COMPOSE_PROJECT}={self.name}"}, ignore_removed=True
            )
        )

    def cleanup(self) -> None:
        """Force-remove the containers run() made and any others labelled with this project.

        Other projects are swept only for what run() made, so a test naming a
        real project on a developer's machine cannot remove its containers.

        Safe to call more than once. Tries every container before raising the
        first error that was not "already gone".
        """
        targets = {c.id: c for c in self.containers}
        for container in self.project_containers():
            targets.setdefault(container.id, container)
        errors: list[Exception] = []
        for container in targets.values():
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                # The engine refuses a second removal while one is in progress.
                if exc.status_code != 409:
                    errors.append(exc)
        self.containers.clear()
        if errors:
            raise errors[0]


#: The local Debian base the end-to-end tests build medic's image on (CI has it).
MEDIC_BASE_IMAGE = "medic-test/bookworm-python:latest"


def build_medic_image(tag: str, *, timeout: float = 900) -> None:
    """medic's image from this checkout, as README builds it, on the local base."""
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["scripts/build-image"],
        cwd=root,
        env={
            **os.environ,
            "BASE_IMAGE": MEDIC_BASE_IMAGE,
            "MEDIC_IMAGE": tag,
            "PYTHON": sys.executable,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"scripts/build-image:\n{done.stdout}\n{done.stderr}"


def require_images(client: Any, *images: str) -> None:
    """Fail the test, saying how to build them, when local images it needs are missing."""
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"Image {image} is missing; build it with tests/images/build.")
