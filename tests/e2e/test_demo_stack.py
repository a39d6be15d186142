"""The main job end to end: the demo stack with medic in it, as README says to run it.

``scripts/demo up --local`` builds medic's image from a local base, starts the demo
service, medic and Postgres with docker-compose; the test breaks the demo service
and asks medic itself, inside its container, what it recorded. Everything is torn
down at the end, volumes included.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
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
        self.env = {
            **os.environ,
            "MEDIC_DEMO_PROJECT": self.project,
            "MEDIC_HTTP_PORT": str(self.port),
            "MEDIC_INTERVAL": "5",
            "MEDIC_SETTLE": "5",
            "MEDIC_IMAGE": f"medic:{self.project}",
        }

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["scripts/demo", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"scripts/demo {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

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


@pytest.fixture
def demo() -> Iterator[Demo]:
    stack = Demo()
    try:
        yield stack
    finally:
        stack.run("down", timeout=120)
        client = docker.from_env()
        try:
            client.images.remove(f"medic:{stack.project}", force=True)
        except docker.errors.ImageNotFound:
            pass
        finally:
            client.close()


def health(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"].get("Health", {}).get("Status", "none"))


def test_the_demo_stack_heals_a_broken_service_and_says_so(demo: Demo) -> None:
    demo.run("up", "--local", timeout=900)
    web = demo.container("web")
    wait_for(lambda: health(web) == "healthy", timeout=60, message="web healthy at first")
    wait_for(lambda: demo.http("/healthz")[0] == 200, timeout=90, message="medic /healthz up")
    medic = demo.container("medic")
    # Not root: the overlay's default user, the image's own uid and gid.
    assert medic.attrs["Config"]["User"] == "10001:10001"
    assert medic.exec_run(["id", "-u"]).output.decode().strip() == "10001"

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
