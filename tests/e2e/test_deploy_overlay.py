"""README's "Deploying next to your own stack", followed to the letter, can rebuild.

A small project lives in a folder of its own, far from medic's checkout, with a
service built from a ``build:`` context. It is deployed the documented way, in its
own folder::

    docker-compose -f docker-compose.yml -f <medic checkout>/compose/medic.yml up -d

with medic's real image. The service's image is built while its source is broken
(its health check fails), then the source is fixed on disk, as a person would fix
it, and only a rebuild can bring that fix into the container. medic, in its
container, rebuilds it; the test asks medic itself what it recorded. Everything is
removed at the end: containers, volumes, networks, images and the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from helpers import BUSYBOX_IMAGE, health_status, wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "compose" / "medic.yml"
POSTGRES_IMAGE = "medic-test/postgres:15"
BASE_IMAGE = "medic-test/bookworm-python:latest"

# The context goes through a variable with a default, as compose files often write it:
# medic substitutes it the way compose did.
PROJECT_COMPOSE = """\
services:
  app:
    image: {image}
    build:
      context: ${{APP_CONTEXT:-./app}}
    healthcheck:
      test: ["CMD-SHELL", "grep -q fixed /app/state"]
      interval: 1s
      timeout: 2s
      retries: 1
"""

DOCKERFILE = f"""\
FROM {BUSYBOX_IMAGE}
COPY state /app/state
CMD ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
"""

PLAYBOOK = """\
version: 1
playbooks:
  - name: rebuild-app
    match: {signals: [unhealthy], services: [app]}
    actions:
      - rebuild: {timeout: 5s}
    backoff: {initial: 2s, factor: 2, max: 10s, reset_after: 10m}
    escalate: {after_attempts: 5, within: 30m}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """A user's project in a temporary folder, with medic added by the overlay."""

    def __init__(self, parent: Path) -> None:
        # docker-compose v1 names the project after the folder, as it does for a user.
        self.name = f"medicdeploy{uuid.uuid4().hex[:8]}"
        self.folder = parent / self.name
        self.app_image = f"{self.name}-app:e2e"
        self.medic_image = f"medic:{self.name}"
        self.port = free_port()
        #: Images the test saw replaced, removed at the end with the rest.
        self.removed_images: list[str] = []
        self.last_refusal = ""
        socket_gid = os.stat("/var/run/docker.sock").st_gid
        self.env = {
            **os.environ,
            # What a shell in the project folder has, and what README says to export.
            "PWD": str(self.folder),
            "DOCKER_GID": str(socket_gid),
            "MEDIC_PLAYBOOKS_DIR": str(self.folder / "playbooks"),
            "MEDIC_IMAGE": self.medic_image,
            "MEDIC_POSTGRES_IMAGE": POSTGRES_IMAGE,
            "MEDIC_HTTP_PORT": str(self.port),
            "MEDIC_INTERVAL": "2",
            "MEDIC_SETTLE": "5",
        }
        self.env.pop("COMPOSE_PROJECT_NAME", None)
        self.env.pop("COMPOSE_FILE", None)

    def write_project(self) -> None:
        (self.folder / "app").mkdir(parents=True)
        (self.folder / "playbooks").mkdir()
        (self.folder / "docker-compose.yml").write_text(
            PROJECT_COMPOSE.format(image=self.app_image)
        )
        (self.folder / "app" / "Dockerfile").write_text(DOCKERFILE)
        (self.folder / "app" / "state").write_text("broken\n")
        (self.folder / "playbooks" / "rebuild.yml").write_text(PLAYBOOK)
        # medic runs as uid 10001 and reads the project like any other user would.
        for path in (self.folder.parent, self.folder):
            path.chmod(0o755)

    def compose(
        self, *args: str, timeout: float = 180, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["docker-compose", "-f", "docker-compose.yml", "-f", str(OVERLAY), *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def build_medic_image(self) -> None:
        done = subprocess.run(
            ["scripts/build-image"],
            cwd=ROOT,
            env={
                **os.environ,
                "BASE_IMAGE": BASE_IMAGE,
                "MEDIC_IMAGE": self.medic_image,
                "PYTHON": sys.executable,
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"scripts/build-image:\n{done.stdout}\n{done.stderr}"

    def container(self, client: Any, service: str) -> Any:
        found = client.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.name}",
                    f"com.docker.compose.service={service}",
                ]
            },
        )
        assert len(found) == 1, f"{len(found)} containers of service {service}"
        return found[0]

    def medic(self, client: Any, *args: str) -> Any:
        """What ``medic ARGS`` prints in medic's container, or None while it cannot say."""
        code, (stdout, stderr) = self.container(client, "medic").exec_run(
            ["medic", *args], demux=True
        )
        if code != 0:
            # Until medic run has migrated the database, the review commands refuse.
            self.last_refusal = (stderr or b"").decode().strip()
            return None
        return json.loads(stdout)


@pytest.fixture
def deployment(docker_client: Any, busybox_image: str) -> Iterator[Deployment]:
    del busybox_image
    for image in (POSTGRES_IMAGE, BASE_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"Image {image} is missing; build it with tests/images/build.")
    parent = Path(tempfile.mkdtemp(prefix="medic-deploy-"))
    stack = Deployment(parent)
    try:
        yield stack
    finally:
        if (stack.folder / "docker-compose.yml").exists():
            # medic first, so that it recreates nothing while compose takes the rest down.
            stack.compose("rm", "--stop", "--force", "medic", check=False)
            stack.compose("down", "-v", "--remove-orphans", "--rmi", "local", check=False)
        for image in (stack.app_image, stack.medic_image, *stack.removed_images):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(image, force=True)
        shutil.rmtree(parent, ignore_errors=True)


def test_medic_deployed_by_the_overlay_rebuilds_a_service_from_its_build_context(
    deployment: Deployment, docker_client: Any
) -> None:
    assert not deployment.folder.is_relative_to(ROOT)
    deployment.build_medic_image()
    deployment.write_project()
    deployment.compose("build", "app")
    first_image = docker_client.images.get(deployment.app_image).id
    deployment.removed_images.append(first_image)
    # The fix lands on disk after the image was built: only a rebuild brings it in.
    (deployment.folder / "app" / "state").write_text("fixed\n")

    deployment.compose("up", "-d")
    app = deployment.container(docker_client, "app")
    assert app.image.id == first_image
    labels = app.labels
    assert labels["com.docker.compose.project.config_files"].endswith(f",{OVERLAY}")

    def rebuilt() -> dict[str, Any] | None:
        for incident in deployment.medic(docker_client, "incidents", "--all", "--json") or []:
            if incident["service"] != "app":
                continue
            shown = deployment.medic(docker_client, "incidents", "show", incident["id"], "--json")
            for attempt in shown["attempts"] if shown else []:
                if attempt["action"].startswith("rebuild") and attempt["ok"]:
                    return dict(attempt)
                failures.append(str(attempt["error"]))
        return None

    failures: list[str] = []

    try:
        attempt = wait_for(
            rebuilt, timeout=120, interval=1, message="a rebuild attempt with ok=true"
        )
    except AssertionError as e:
        log = deployment.compose("logs", "--no-color", "--tail", "10", "medic").stdout
        raise AssertionError(
            f"{e}\nthe last failed attempt: {failures[-1] if failures else '-'}"
            f"\nmedic incidents said: {deployment.last_refusal or '-'}\nmedic's log ends:\n{log}"
        ) from None
    assert attempt is not None

    new_app = deployment.container(docker_client, "app")
    assert new_app.id != app.id
    assert new_app.image.id != first_image
    assert new_app.image.id == docker_client.images.get(deployment.app_image).id
    wait_for(lambda: health_status(new_app) == "healthy", timeout=30, message="app healthy")
    code, state = new_app.exec_run(["cat", "/app/state"])
    assert (code, state) == (0, b"fixed\n")
    assert f"recreated as {new_app.id[:12]}" in attempt["output"]
