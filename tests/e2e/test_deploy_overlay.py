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
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from helpers import (
    BUSYBOX_IMAGE,
    MEDIC_BASE_IMAGE,
    build_medic_image,
    health_status,
    require_images,
    wait_for,
)

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "compose" / "medic.yml"
POSTGRES_IMAGE = "medic-test/postgres:15"

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
        build_medic_image(self.medic_image)

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
    require_images(docker_client, POSTGRES_IMAGE, MEDIC_BASE_IMAGE)
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
    # The rebuild continued the episode: one incident, and it follows the new container.
    incidents = deployment.medic(docker_client, "incidents", "--all", "--json") or []
    [incident] = [i for i in incidents if i["service"] == "app"]
    assert incident["container_id"] == new_app.id


# Run in medic's container by the overlay: a fix branch made the way make_fix makes it
# (a temporary index, commit-tree, update-ref), then a spool file in the state folder.
MAKE_BRANCH = """\
import json, os
from datetime import datetime, timezone
from pathlib import Path
from agent.fixes.git import Git, NewFile, Person
result = {"uid": os.getuid(), "gid": os.getgid(), "home": os.environ.get("HOME")}
try:
    git = Git(Path(os.environ["MEDIC_REPO"]))
    base = git.head()
    entry = git.tree(base)["app.py"]
    commit = git.create_commit(
        base=base,
        files=[NewFile("app.py", b"print('hello')\\n", entry.mode)],
        message="Fix the greeting\\n",
        author=Person("medic", "medic@localhost"),
        when=datetime.now(timezone.utc),
    )
    git.create_branch("medic/fix-deploy-app", commit)
    result["commit"] = commit
except Exception as e:
    result["git_error"] = str(e)
state = Path(os.environ["MEDIC_STATE_DIR"])
try:
    fd = os.open(state / "spool.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, b"{}\\n")
    os.close(fd)
    result["spool_owner"] = os.stat(state / "spool.jsonl").st_uid
except OSError as e:
    result["state_error"] = str(e)
print(json.dumps(result))
"""

OWNER = 1000


def host_git(folder: Path, *args: str) -> str:
    """git on the host, as root, reading the repository without writing to it."""
    done = subprocess.run(
        ["git", "-c", f"safe.directory={folder}", "-C", str(folder), *args],
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def make_owned_repository(deployment: Deployment) -> None:
    """A project folder that is a git repository of OWNER's, with an uncommitted change."""
    folder = deployment.folder
    (folder / "playbooks").mkdir(parents=True)
    (folder / "docker-compose.yml").write_text(
        f'services:\n  app:\n    image: {BUSYBOX_IMAGE}\n    command: ["sleep", "3600"]\n'
    )
    (folder / "app.py").write_text("print('helo')\n")
    host_git(folder, "init", "--quiet", "--initial-branch=main")
    host_git(folder, "add", "-A")
    host_git(
        folder, "-c", "user.name=owner", "-c", "user.email=owner@localhost", "commit", "-qm", "x"
    )
    (folder / "app.py").write_text("print('helo')\n# a local change\n")
    deployment.folder.parent.chmod(0o755)
    for path in (folder, *folder.rglob("*")):
        os.chown(path, OWNER, OWNER, follow_symlinks=False)


def run_in_medic(deployment: Deployment, env: dict[str, str]) -> dict[str, Any]:
    deployment.env.update(env)
    done = deployment.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "python3", "medic", "-c", MAKE_BRANCH
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_medic_run_as_the_repository_owner_makes_a_fix_branch_without_touching_the_checkout(
    deployment: Deployment,
) -> None:
    deployment.build_medic_image()
    make_owned_repository(deployment)
    folder = deployment.folder
    base = host_git(folder, "rev-parse", "HEAD").strip()
    index_before = (folder / ".git" / "index").read_bytes()
    status_before = host_git(folder, "status", "--porcelain")

    # The image's own user (uid 10001) reads the project but cannot write its .git.
    refused = run_in_medic(deployment, {})
    assert (refused["uid"], refused["gid"]) == (10001, 10001)
    assert "commit" not in refused
    assert "insufficient permission" in refused["git_error"]
    assert "state_error" not in refused and refused["spool_owner"] == 10001
    # A fresh deployment: its state volume starts again as a copy of the image's folder.
    deployment.compose("down", "-v")

    # As README says: run medic as the repository's owner.
    made = run_in_medic(deployment, {"MEDIC_USER": str(OWNER), "MEDIC_GROUP": str(OWNER)})
    assert (made["uid"], made["gid"]) == (OWNER, OWNER)
    assert made["home"] == "/var/lib/medic"
    # The named volume started as a copy of the image's folder, writable by this uid.
    assert "state_error" not in made, made["state_error"]
    assert made["spool_owner"] == OWNER
    assert "git_error" not in made, made["git_error"]

    commit = made["commit"]
    assert host_git(folder, "rev-parse", "refs/heads/medic/fix-deploy-app").strip() == commit
    assert host_git(folder, "rev-parse", f"{commit}^").strip() == base
    assert host_git(folder, "diff", "--name-only", base, commit).split() == ["app.py"]
    assert host_git(folder, "show", f"{commit}:app.py") == "print('hello')\n"
    # The checkout is as it was: branch, HEAD, index, working tree and the local change.
    assert host_git(folder, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert host_git(folder, "rev-parse", "HEAD").strip() == base
    assert (folder / ".git" / "index").read_bytes() == index_before
    assert host_git(folder, "status", "--porcelain") == status_before
    assert (folder / "app.py").read_text() == "print('helo')\n# a local change\n"
    # Everything medic wrote into .git belongs to the owner, so their git still works.
    foreign = [p for p in (folder / ".git").rglob("*") if p.lstat().st_uid != OWNER]
    assert foreign == []
