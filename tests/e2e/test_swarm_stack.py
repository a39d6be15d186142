"""medic on Docker Swarm, deployed as docs/swarm.md says, heals through the orchestrator.

The test engine becomes a swarm of one node for this test only (``docker swarm init``)
and leaves it at the end, whatever happened, after both stacks, their containers,
networks and volumes are gone, so other tests see a plain engine again.

medic's real image is deployed from compose/medic-swarm.yml as a global service
(one task on the one node) with its Postgres, watching another stack (MEDIC_STACK)
with a service whose health check always fails and whose restart policy is
``condition: none``: Swarm fails each task and does not replace it. medic heals it
through the service, a forced update, and Swarm puts a new task (a new container)
in the slot; that one fails too. The test reads what medic recorded from the stack's
own Postgres: one incident for the service whatever the number of tasks, with
forced-update attempts, and the engine's events show service updates and never a
restart (or a second start) of a task container.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from helpers import BUSYBOX_IMAGE, MEDIC_BASE_IMAGE, build_medic_image, require_images, wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "compose" / "medic-swarm.yml"
POSTGRES_IMAGE = "medic-test/postgres:15"
STACK_LABEL = "com.docker.stack.namespace"
GATEWAY_BRIDGE = "docker_gwbridge"

# Health check fails from the start; Swarm stops the unhealthy container (the shell
# exits 1 on SIGTERM) and, by its restart policy, puts no other task in its place.
BROKEN_STACK = """\
version: "3.8"
services:
  broken:
    image: {image}
    command: ["sh", "-c", "trap 'exit 1' TERM; while :; do sleep 1; done"]
    healthcheck:
      test: ["CMD-SHELL", "false"]
      interval: 1s
      timeout: 2s
      retries: 2
    stop_grace_period: 3s
    deploy:
      restart_policy:
        condition: none
"""


class Swarm:
    """A one-node swarm on the test engine, two stacks on it, and what the engine said."""

    def __init__(self, client: Any, folder: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.client = client
        self.folder = folder
        self.medic_stack = f"medicsw{suffix}"
        self.app_stack = f"appsw{suffix}"
        #: medic's image: built for this test and removed after it, unless
        #: MEDIC_TEST_MEDIC_IMAGE names one already built (scripts/build-image).
        self.given_image = os.environ.get("MEDIC_TEST_MEDIC_IMAGE") or None
        self.medic_image = self.given_image or f"medic:swarm-{suffix}"
        self.events: list[dict[str, Any]] = []
        self._stream: Any = None
        self._reader: threading.Thread | None = None
        self.env = {
            **os.environ,
            "MEDIC_IMAGE": self.medic_image,
            "MEDIC_POSTGRES_IMAGE": POSTGRES_IMAGE,
            "MEDIC_STACK": self.app_stack,
            "MEDIC_INTERVAL": "2",
            "MEDIC_SETTLE": "5",
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        }

    # --- the engine ---------------------------------------------------------------------

    def docker(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def listen(self) -> None:
        """Keep every container and service event from now on (the engine keeps only its
        last 256, and health checks every second push old ones out)."""
        self._stream = self.client.events(decode=True, filters={"type": ["container", "service"]})

        def read() -> None:
            with contextlib.suppress(Exception):  # ends when the stream is closed
                for event in self._stream:
                    self.events.append(event)

        self._reader = threading.Thread(target=read, name="swarm-events", daemon=True)
        self._reader.start()

    def stop_listening(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self._reader is not None:
            self._reader.join(timeout=10)

    def build_medic_image(self) -> None:
        build_medic_image(self.medic_image)

    # --- what runs ----------------------------------------------------------------------

    def containers(self, stack: str, service: str | None = None) -> list[dict[str, Any]]:
        """The stack's containers (of one service) as the list call gives them: one
        request, so a container Swarm removes meanwhile is no error."""
        labels = [f"{STACK_LABEL}={stack}"]
        if service is not None:
            labels.append(f"com.docker.swarm.service.name={stack}_{service}")
        found: list[dict[str, Any]] = self.client.api.containers(
            all=True, filters={"label": labels}
        )
        return found

    def running(self, stack: str, service: str) -> str | None:
        found = [c["Id"] for c in self.containers(stack, service) if c["State"] == "running"]
        return str(found[0]) if found else None

    def sql(self, query: str) -> str | None:
        """What psql answers in the stack's Postgres, or None while it cannot."""
        db = self.running(self.medic_stack, "medic-db")
        if db is None:
            return None
        try:
            code, output = self.client.containers.get(db).exec_run(
                ["psql", "-U", "medic", "-d", "medic", "-tAc", query]
            )
        except docker.errors.APIError:
            return None  # it is being replaced
        return output.decode().strip() if code == 0 else None

    def service(self, stack: str, name: str) -> dict[str, Any]:
        attrs: dict[str, Any] = self.client.api.inspect_service(f"{stack}_{name}")
        return attrs

    def medic_log(self) -> str:
        medic = sorted(self.containers(self.medic_stack, "medic"), key=lambda c: c["Created"])
        if not medic:
            return "(no medic container yet)"
        try:
            tail: bytes = self.client.api.logs(medic[-1]["Id"], tail=40)
        except docker.errors.APIError as e:
            return f"(its log cannot be read: {e})"
        return tail.decode(errors="replace")

    # --- leaving it as it was -----------------------------------------------------------

    def remove_stacks(self) -> None:
        for stack in (self.app_stack, self.medic_stack):
            subprocess.run(
                ["docker", "stack", "rm", stack], capture_output=True, timeout=120, check=False
            )

        def gone() -> bool:
            left = self.containers(self.app_stack) + self.containers(self.medic_stack)
            networks = self.client.networks.list(
                filters={"label": [f"{STACK_LABEL}={self.app_stack}"]}
            ) + self.client.networks.list(filters={"label": [f"{STACK_LABEL}={self.medic_stack}"]})
            return not left and not networks

        wait_for(gone, timeout=180, interval=1, message="the stacks' containers and networks")
        for volume in ("medic-db", "medic-state"):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(f"{self.medic_stack}_{volume}").remove(force=True)


def _node_state(client: Any) -> str:
    return str(client.info()["Swarm"]["LocalNodeState"])


@pytest.fixture
def swarm(docker_client: Any, busybox_image: str, tmp_path: Path) -> Iterator[Swarm]:
    del busybox_image
    require_images(docker_client, POSTGRES_IMAGE, MEDIC_BASE_IMAGE)
    if _node_state(docker_client) != "inactive":
        pytest.fail(
            "The test engine is in a swarm already; this test makes and leaves a swarm of its "
            "own and will not touch another's. Run docker swarm leave --force first."
        )
    setup = Swarm(docker_client, tmp_path)
    if setup.given_image is None:
        setup.build_medic_image()
    # swarm init makes this bridge and leaving keeps it: removed again if it is new.
    had_bridge = bool(docker_client.networks.list(names=[GATEWAY_BRIDGE]))
    try:
        setup.docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        setup.listen()
        yield setup
    finally:
        setup.stop_listening()
        try:
            if _node_state(docker_client) == "active":
                setup.remove_stacks()
        finally:
            subprocess.run(
                ["docker", "swarm", "leave", "--force"],
                capture_output=True,
                timeout=120,
                check=False,
            )
            if not had_bridge:
                for network in docker_client.networks.list(names=[GATEWAY_BRIDGE]):
                    with contextlib.suppress(docker.errors.APIError):
                        network.remove()
            if setup.given_image is None:
                with contextlib.suppress(docker.errors.ImageNotFound):
                    docker_client.images.remove(setup.medic_image, force=True)
    assert _node_state(docker_client) == "inactive"


def test_medic_as_a_global_service_heals_a_swarm_service_through_forced_updates_as_one_incident(
    swarm: Swarm,
) -> None:
    swarm.docker("stack", "deploy", "-c", str(STACK_FILE), swarm.medic_stack)
    assert swarm.service(swarm.medic_stack, "medic")["Spec"]["Mode"] == {"Global": {}}
    try:
        wait_for(
            lambda: "supervising Swarm stack" in swarm.medic_log(),
            timeout=180,
            interval=1,
            message="medic running in its stack",
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\nmedic's log ends:\n{swarm.medic_log()}") from None

    (swarm.folder / "app.yml").write_text(BROKEN_STACK.format(image=BUSYBOX_IMAGE))
    swarm.docker("stack", "deploy", "-c", str(swarm.folder / "app.yml"), swarm.app_stack)
    before = swarm.service(swarm.app_stack, "broken")
    first_version = before["Version"]["Index"]
    assert before["Spec"]["TaskTemplate"].get("ForceUpdate", 0) == 0

    where = f"project = '{swarm.app_stack}' AND service = 'broken'"
    healed_twice = (
        f"SELECT count(*) FROM attempts a JOIN incidents i ON i.id = a.incident_id "
        f"WHERE i.{where.replace(' AND ', ' AND i.')} AND a.action = 'force_update' AND a.ok"
    )

    def two_forced_updates() -> bool:
        return int(swarm.sql(healed_twice) or 0) >= 2

    try:
        wait_for(two_forced_updates, timeout=240, interval=2, message="two forced updates")
    except AssertionError as e:
        raise AssertionError(f"{e}\nmedic's log ends:\n{swarm.medic_log()}") from None

    # Healed through the orchestrator: the service's update counter and spec moved on.
    after = swarm.service(swarm.app_stack, "broken")
    assert after["Spec"]["TaskTemplate"]["ForceUpdate"] >= 2
    assert after["Version"]["Index"] > first_version
    tasks = swarm.containers(swarm.app_stack, "broken")
    assert len(tasks) >= 3  # the first task and one per forced update

    # One episode: one incident for the service, following Swarm's newer tasks.
    assert swarm.sql(f"SELECT count(*) FROM incidents WHERE {where}") == "1"
    container_id = swarm.sql(f"SELECT container_id FROM incidents WHERE {where}")
    first_task = min(tasks, key=lambda c: c["Created"])
    assert container_id is not None and container_id != first_task["Id"]
    assert container_id in {c["Id"] for c in tasks}
    scope = swarm.sql(f"SELECT scope FROM incidents WHERE {where}")
    assert scope is not None and scope.startswith(f"stack={swarm.app_stack}@")

    # Never a restart or a start of a task container by medic: each task container was
    # started once, by Swarm; the service was updated.
    ids = {c["Id"] for c in tasks}
    container_events = [
        e for e in swarm.events if e.get("Type") == "container" and e["Actor"]["ID"] in ids
    ]
    assert not [e for e in container_events if e["Action"] == "restart"]
    for task in ids:
        starts = [
            e for e in container_events if e["Actor"]["ID"] == task and e["Action"] == "start"
        ]
        assert len(starts) <= 1, f"task container {task[:12]} was started {len(starts)} times"
    service_id = after["ID"]
    updates = [
        e
        for e in swarm.events
        if e.get("Type") == "service" and e["Action"] == "update" and e["Actor"]["ID"] == service_id
    ]
    assert updates, "no update event of the broken service"
