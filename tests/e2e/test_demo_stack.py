"""The main job end to end: the demo stack with medic in it, as README says to run it.

``scripts/demo up --local`` builds medic's image from a local base, makes the demo
repository (the shop) once, and starts web, shop, medic and Postgres with
docker-compose from that repository, the console's token given to medic. The tests
then walk README's quick start on that one stack, in file order: the token survives a
second ``up``; ``break`` is healed; ``defect`` commits a bad setting that no restart
heals, so medic escalates it and its rules diagnose it, with no fix branch when there
is no API key; ``down`` removes everything. medic itself, inside its container, says
what it recorded. The stack is removed at the end whatever happened, volumes included.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from helpers import wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self) -> None:
        self.project = f"medice2e{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        # The demo's folder, where scripts/demo keeps the shop's repository and the token.
        self.folder = ROOT / ".state" / self.project
        self.repo = self.folder / "shop"
        self.token_file = self.folder / "ui-token"
        #: The label on every image built from the shop's Dockerfile.
        self.label = f"medic.demo.project={self.project}"
        #: What the first ``up`` printed.
        self.first_up = ""
        #: Images to remove at the end besides the stack's own.
        self.images: list[str] = []
        # No API key reaches medic: the demo then diagnoses by its rules alone.
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")},
            "MEDIC_DEMO_PROJECT": self.project,
            "MEDIC_HTTP_PORT": str(self.port),
            "MEDIC_INTERVAL": "5",
            "MEDIC_SETTLE": "5",
            "MEDIC_IMAGE": f"medic:{self.project}",
        }
        for name in ("MEDIC_DEMO_DIR", "MEDIC_UI_TOKEN", "MEDIC_USER", "MEDIC_GROUP"):
            self.env.pop(name, None)

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(
            ["scripts/demo", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check:
            assert done.returncode == 0, (
                f"scripts/demo {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def container(self, service: str) -> Any:
        client = docker.from_env()
        try:
            [found] = client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
            return found
        finally:
            client.close()

    def http(self, path: str) -> tuple[int, str]:
        try:
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return 0, ""

    def incidents(self) -> list[dict[str, Any]]:
        medic = self.container("medic")
        code, output = medic.exec_run(["medic", "incidents", "--all", "--json"], demux=True)
        stdout, stderr = output
        assert code == 0, (stderr or b"").decode()
        document: list[dict[str, Any]] = json.loads(stdout)
        return document

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.repo), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout


@pytest.fixture(scope="module")
def demo(docker_client: Any) -> Iterator[Demo]:
    """One demo stack for the whole module: building medic's image is the slow part."""
    stack = Demo()
    try:
        stack.first_up = stack.run("up", "--local", timeout=900)
        # A second up builds medic's image again and leaves this one without its tag.
        stack.images.append(docker_client.images.get(f"medic:{stack.project}").id)
        yield stack
    finally:
        # Again after the test of down, or instead of it: every part is gone either way.
        stack.run("down", timeout=120, check=False)
        for image in (
            f"medic:{stack.project}",
            *stack.images,
            *(i.id for i in docker_client.images.list(filters={"label": stack.label})),
        ):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(image, force=True)
        shutil.rmtree(stack.folder, ignore_errors=True)


def health(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", "none"))


def console_token(output: str, port: int) -> str:
    """The token ``up`` printed, after checking it printed the console's address."""
    assert f"The review console: http://127.0.0.1:{port}/\n" in output, output
    found = re.search(r"^  token: (\S+)$", output, re.MULTILINE)
    assert found is not None, output
    return found.group(1)


def test_up_turns_the_console_on_with_a_token_kept_owner_only_across_ups(demo: Demo) -> None:
    token = console_token(demo.first_up, demo.port)
    assert len(token) >= 32
    assert "sign in with the token" in demo.first_up
    assert demo.token_file.read_text().strip() == token
    assert stat.S_IMODE(demo.token_file.stat().st_mode) == 0o600
    assert f"MEDIC_UI_TOKEN={token}" in demo.container("medic").attrs["Config"]["Env"]
    first_commit = demo.git("rev-parse", "HEAD")

    again = demo.run("up", "--local", timeout=600)

    assert console_token(again, demo.port) == token
    assert demo.token_file.read_text().strip() == token
    assert stat.S_IMODE(demo.token_file.stat().st_mode) == 0o600
    assert f"MEDIC_UI_TOKEN={token}" in demo.container("medic").attrs["Config"]["Env"]
    # The demo repository is made once, too.
    assert f"the demo repository {demo.repo} is there already; keeping it" in again
    assert demo.git("rev-parse", "HEAD") == first_commit


def test_the_demo_stack_heals_a_broken_service_and_says_so(demo: Demo) -> None:
    web = demo.container("web")
    wait_for(lambda: health(web) == "healthy", timeout=60, message="web healthy at first")
    wait_for(lambda: demo.http("/healthz")[0] == 200, timeout=90, message="medic /healthz up")

    demo.run("break")
    wait_for(
        lambda: any(i["service"] == "web" and i["attempts"] >= 1 for i in demo.incidents()),
        timeout=120,
        message="medic recorded an incident with an attempt for web",
    )
    wait_for(lambda: health(web) == "healthy", timeout=60, message="web healthy again")

    [incident] = [i for i in demo.incidents() if i["service"] == "web"]
    assert incident["signal"] == "unhealthy"
    assert incident["container"] == web.name
    assert incident["status"] in ("healing", "resolved")

    status, body = demo.http("/healthz")
    assert status == 200
    assert json.loads(body)["events_stream"] == "connected"
    status, metrics = demo.http("/metrics")
    assert status == 200
    assert 'medic_actions_total{kind="restart",outcome="ok"} 1.0' in metrics.splitlines()


def test_the_medic_image_checks_its_health_without_starting_python(demo: Demo) -> None:
    medic = demo.container("medic")
    probe = medic.attrs["Config"]["Healthcheck"]["Test"]
    assert probe[:2] == ["CMD", "bash"]
    assert not any("python" in part for part in probe)
    # The engine runs it every 30 s; the first run makes the container healthy.
    wait_for(lambda: health(medic) == "healthy", timeout=120, message="medic's own check passed")
    # The same probe fails where /healthz does not answer 200.
    code, _ = medic.exec_run(probe[1:], environment={"MEDIC_HTTP_PORT": "1"})
    assert code != 0


def test_medic_is_given_the_demo_repository_and_writes_its_git_as_its_owner(demo: Demo) -> None:
    medic = demo.container("medic")
    env = medic.attrs["Config"]["Env"]
    assert f"MEDIC_REPO={demo.repo}" in env
    mounts = {m["Destination"]: m["Source"] for m in medic.attrs["Mounts"]}
    assert mounts[str(demo.repo)] == str(demo.repo)
    assert not demo.repo.is_relative_to(ROOT / "compose")
    # As README says for fix branches: medic runs as the repository's owner.
    owner = demo.repo.stat()
    assert medic.attrs["Config"]["User"] == f"{owner.st_uid}:{owner.st_gid}"

    code, output = medic.exec_run(
        ["sh", "-c", 'echo probe | git -C "$MEDIC_REPO" hash-object -w --stdin'], demux=True
    )
    stdout, stderr = output
    assert code == 0, (stderr or b"").decode()
    written = stdout.decode().strip()
    loose = demo.repo / ".git" / "objects" / written[:2] / written[2:]
    assert loose.lstat().st_uid == owner.st_uid


def test_a_defect_no_restart_heals_is_escalated_and_diagnosed_by_the_rules(demo: Demo) -> None:
    shop = demo.container("shop")
    wait_for(lambda: health(shop) == "healthy", timeout=60, message="shop healthy at first")
    before = demo.git("rev-parse", "HEAD").strip()

    said = demo.run("defect", timeout=300)

    # The defect is a commit of the demo repository's, on top of what was there.
    assert demo.git("rev-parse", "HEAD~1").strip() == before
    assert demo.git("log", "-1", "--format=%s").strip() == "Show prices in euros"
    assert demo.git("status", "--porcelain") == ""
    assert "shop now exits at start" in said
    assert f"http://127.0.0.1:{demo.port}/" in said
    assert "medic has no ANTHROPIC_API_KEY, so it proposes no fix" in said

    def escalated() -> dict[str, Any] | None:
        listed = json.loads(demo.run("incidents", "--json"))
        return next(
            (i for i in listed if i["service"] == "shop" and i["status"] == "escalated"), None
        )

    incident = wait_for(escalated, timeout=120, interval=1, message="shop's incident escalated")
    assert incident is not None
    assert incident["attempts"] == 3

    def diagnosed() -> dict[str, Any] | None:
        shown: dict[str, Any] = json.loads(demo.run("incidents", "show", incident["id"], "--json"))
        return shown if shown["diagnoses"] else None

    shown = wait_for(diagnosed, timeout=60, interval=1, message="a diagnosis recorded")
    assert shown is not None
    [rule] = shown["diagnoses"]
    assert rule["source"] == "rules"
    assert rule["rule_id"] == "bad_config"
    assert "/app/settings.json" in rule["summary"]
    assert any("JSONDecodeError" in line for line in rule["evidence"])
    # Without an API key there is no fix, and no branch in the demo repository.
    assert shown["fixes"] == []
    assert demo.git("for-each-ref", "--format=%(refname)", "refs/heads") == "refs/heads/main\n"


def test_down_removes_the_stack_the_shops_images_and_the_demo_repository(
    demo: Demo, docker_client: Any
) -> None:
    project = {"label": f"com.docker.compose.project={demo.project}"}
    assert docker_client.images.list(filters={"label": demo.label}), "shop's image is built"

    said = demo.run("down")

    assert "the demo repository and the console's token" in said
    assert docker_client.containers.list(all=True, filters=project) == []
    assert docker_client.networks.list(filters=project) == []
    assert [v.name for v in docker_client.volumes.list(filters=project)] == []
    # Every build of shop: the first, and the one with the defect.
    assert docker_client.images.list(filters={"label": demo.label}) == []
    assert not demo.folder.exists()
