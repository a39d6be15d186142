"""recreate, rebuild, cache_clear and restart_dependents against a real Docker engine.

Each test drives ``Actor.run_action`` on containers it made, then reads the result
back with the docker SDK, so what is asserted is what the engine did. Images are
built from temporary contexts on top of the busybox test image; networks, volumes
and images a test makes are removed in its teardown.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from helpers import BUSYBOX_IMAGE, ComposeProject, healthcheck, wait_for

from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.translate import parse_time
from agent.healing.act import Actor
from agent.model import Action, ActionResult

pytestmark = pytest.mark.docker

#: Stops promptly on SIGTERM, so stop timeouts are not waited out.
SERVE = "trap 'exit 0' TERM; while :; do sleep 0.2; done"


@dataclass
class Made:
    """What a test made besides containers; removed after the project's containers."""

    client: Any
    project: ComposeProject
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def network(self) -> str:
        name = f"medictest-net-{uuid.uuid4().hex[:8]}"
        self.client.networks.create(name)
        self.networks.append(name)
        return name

    def volume(self) -> str:
        name = f"medictest-vol-{uuid.uuid4().hex[:8]}"
        self.client.volumes.create(name)
        self.volumes.append(name)
        return name

    def image(self, context: Path, tag: str) -> str:
        """Build ``context`` as ``tag``; every image id it is ever built as is removed later."""
        image, _ = self.client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
        self.track_image(image.id)
        return str(image.id)

    def track_image(self, image_id: str) -> None:
        if image_id not in self.images:
            self.images.append(image_id)

    def cleanup(self) -> None:
        # Anonymous volumes outlive their containers; note them before those go,
        # so that a test failing halfway leaves none behind.
        for container in self.project.project_containers():
            for mount in container.attrs.get("Mounts") or ():
                name = mount.get("Name")
                if mount.get("Type") == "volume" and name and name not in self.volumes:
                    self.volumes.append(name)
        self.project.cleanup()
        for name in self.networks:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.networks.get(name).remove()
        for name in self.volumes:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.volumes.get(name).remove(force=True)
        # Newest first: an older build may be the parent of a newer one's cache.
        for image_id in reversed(self.images):
            with contextlib.suppress(docker.errors.NotFound):
                self.client.images.remove(image_id, force=True)


@pytest.fixture
def made(docker_client: Any, compose_project: ComposeProject) -> Iterator[Made]:
    things = Made(docker_client, compose_project)
    try:
        yield things
    finally:
        things.cleanup()


@pytest.fixture
def actor(gateway: DockerSDKGateway) -> Iterator[Actor]:
    act = Actor(gateway, stop_timeout=2)
    try:
        yield act
    finally:
        act.shutdown(timeout=5)


def run(actor: Actor, gateway: DockerSDKGateway, container: Any, action: Action) -> ActionResult:
    ref = gateway.inspect(container.id).ref
    return actor.run_action(ref, action)


def started_at(container: Any) -> datetime:
    container.reload()
    started = parse_time(container.attrs["State"]["StartedAt"])
    assert started is not None
    return started


def exec_text(container: Any, command: str, user: str = "0") -> str:
    code, output = container.exec_run(["sh", "-c", command], user=user)
    assert code == 0, output
    return str(output.decode()).strip()


def image_context(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text("\n".join([f"FROM {BUSYBOX_IMAGE}", *lines]) + "\n")
    return folder


def networks_and_aliases(attrs: dict[str, Any]) -> dict[str, set[str]]:
    """Each network with its aliases, leaving out the short id the engine adds itself."""
    short = attrs["Id"][:12]
    found = attrs["NetworkSettings"]["Networks"]
    return {name: set(s.get("Aliases") or ()) - {short} for name, s in found.items()}


def mounts(attrs: dict[str, Any]) -> set[tuple[str, str, str, bool]]:
    return {
        (m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"])
        for m in attrs["Mounts"]
    }


# --- recreate ------------------------------------------------------------------------


def run_web(
    compose_project: ComposeProject,
    docker_client: Any,
    *,
    image: str,
    network: str,
    volume: str,
    bind: Path,
) -> Any:
    """A container with one of every setting recreate has to carry over."""
    return compose_project.run(
        "web",
        image=image,
        command=["sh", "-c", SERVE],
        environment={"FOO": "bar", "EMPTY": ""},
        labels={"team": "payments"},
        network=network,
        networking_config={
            network: docker_client.api.create_endpoint_config(aliases=["web-front"])
        },
        volumes={
            volume: {"bind": "/data", "mode": "rw"},
            str(bind): {"bind": "/bind", "mode": "ro"},
        },
        ports={"8080/tcp": ("127.0.0.1", None)},
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        healthcheck=healthcheck("test -d /data", interval=1, retries=3),
        mem_limit="64m",
        user="1000",
        working_dir="/tmp",
        stop_timeout=2,
    )


#: Settings that must come through a recreate unchanged, as inspect paths.
KEPT = (
    ("Name",),
    ("Config", "Cmd"),
    ("Config", "Entrypoint"),
    ("Config", "Env"),
    ("Config", "Labels"),
    ("Config", "User"),
    ("Config", "WorkingDir"),
    ("Config", "Healthcheck"),
    ("Config", "Image"),
    ("Config", "ExposedPorts"),
    ("Config", "StopTimeout"),
    ("HostConfig", "PortBindings"),
    ("HostConfig", "RestartPolicy"),
    ("HostConfig", "Memory"),
    ("HostConfig", "MemorySwap"),
    ("HostConfig", "NetworkMode"),
)


def dig(attrs: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = attrs
    for key in path:
        value = value.get(key)
    return value


def test_recreate_keeps_every_setting_and_the_data_and_lets_image_defaults_follow_the_image(
    made: Made, gateway: DockerSDKGateway, actor: Actor, tmp_path: Path
) -> None:
    compose_project, docker_client = made.project, made.client
    tag = f"medic-test/recreate-{uuid.uuid4().hex[:8]}:latest"
    # VOLUME gives the container an anonymous volume, named by the engine.
    lines = ("VOLUME /cache", "LABEL medic.test.image=one")
    made.image(image_context(tmp_path / "one", "ENV IMAGE_VALUE=one", *lines), tag)
    front, back = made.network(), made.network()
    named = made.volume()
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "host.txt").write_text("from the host\n")
    original = run_web(
        compose_project, docker_client, image=tag, network=front, volume=named, bind=bind
    )
    docker_client.api.connect_container_to_network(original.id, back, aliases=["web-back"])
    exec_text(original, "echo named > /data/kept.txt && echo anonymous > /cache/kept.txt")
    original.reload()
    before = original.attrs
    anonymous = [m["Name"] for m in before["Mounts"] if m["Destination"] == "/cache"]
    assert len(anonymous) == 1

    result = run(actor, gateway, original, Action("recreate", timeout=2))

    assert result.ok, result.error
    recreated = docker_client.containers.get(before["Name"].lstrip("/"))
    assert recreated.id != original.id
    assert result.output == f"recreated as {recreated.id[:12]}"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(original.id)
    after = recreated.attrs
    assert after["State"]["Running"]
    for path in KEPT:
        assert dig(after, path) == dig(before, path), ".".join(path)
    assert networks_and_aliases(after) == networks_and_aliases(before)
    assert networks_and_aliases(after) == {front: {"web-front"}, back: {"web-back"}}
    assert mounts(after) == mounts(before)
    assert after["Config"]["Hostname"] == recreated.id[:12]
    assert exec_text(recreated, "cat /data/kept.txt /cache/kept.txt /bind/host.txt") == (
        "named\nanonymous\nfrom the host"
    )
    ports = after["NetworkSettings"]["Ports"]["8080/tcp"]
    assert ports[0]["HostIp"] == "127.0.0.1"
    assert int(ports[0]["HostPort"]) > 0

    # The image changes under the same tag: what came from the image follows it,
    # what the container set itself stays.
    made.image(image_context(tmp_path / "two", "ENV IMAGE_VALUE=two", *lines), tag)
    second = run(actor, gateway, recreated, Action("recreate", timeout=2))

    assert second.ok, second.error
    newest = docker_client.containers.get(before["Name"].lstrip("/"))
    assert exec_text(newest, "echo $IMAGE_VALUE $FOO") == "two bar"
    assert "IMAGE_VALUE=two" in newest.attrs["Config"]["Env"]
    assert "IMAGE_VALUE=one" not in newest.attrs["Config"]["Env"]
    assert newest.attrs["Config"]["Labels"]["team"] == "payments"
    assert exec_text(newest, "cat /cache/kept.txt") == "anonymous"
    assert newest.attrs["Image"] != before["Image"]
    made.track_image(before["Image"])


def test_recreate_brings_back_a_container_that_has_exited(
    compose_project: ComposeProject, docker_client: Any, gateway: DockerSDKGateway, actor: Actor
) -> None:
    gone = compose_project.run("job", command=["sh", "-c", "exit 3"])
    wait_for(lambda: gone.reload() or gone.status == "exited", timeout=10, message="exit")

    result = run(actor, gateway, gone, Action("recreate"))

    assert result.ok, result.error
    again = docker_client.containers.get(gone.name)
    assert again.id != gone.id
    assert again.attrs["Config"]["Cmd"] == ["sh", "-c", "exit 3"]


# --- cache_clear ---------------------------------------------------------------------

#: Fills the caches once, on the first start only, then serves.
FILL_CACHE = (
    "if [ ! -f /tmp/filled ]; then mkdir -p /cache/nested /cache/.hidden-dir /other && "
    "touch /cache/a /cache/.dot /cache/..twodots /cache/nested/b /other/keep /tmp/filled; fi; "
    + SERVE
)


def test_cache_clear_empties_the_folders_keeps_them_runs_commands_and_restarts(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor
) -> None:
    app = compose_project.run("app", command=["sh", "-c", FILL_CACHE], stop_timeout=2)
    wait_for(
        lambda: app.exec_run(["test", "-f", "/cache/nested/b"]).exit_code == 0,
        timeout=10,
        message="the cache to be filled",
    )
    before = started_at(app)
    action = Action(
        "cache_clear",
        paths=("/cache",),
        commands=(("sh", "-c", "echo flushed > /tmp/flushed"), ("echo", "second")),
        restart=True,
        timeout=2,
    )

    result = run(actor, gateway, app, action)

    assert result.ok, result.error
    assert "cleared /cache" in result.output
    assert "second" in result.output
    assert exec_text(app, "ls -A /cache | wc -l") == "0"
    assert exec_text(app, "test -d /cache && echo kept") == "kept"
    assert exec_text(app, "cat /tmp/flushed /other/keep && echo ok") == "flushed\nok"
    assert started_at(app) > before


def test_cache_clear_without_restart_leaves_the_process_alone_and_a_missing_folder_fails(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor
) -> None:
    app = compose_project.run("app", command=["sh", "-c", FILL_CACHE], stop_timeout=2)
    wait_for(
        lambda: app.exec_run(["test", "-f", "/cache/a"]).exit_code == 0,
        timeout=10,
        message="the cache to be filled",
    )
    before = started_at(app)

    cleared = run(actor, gateway, app, Action("cache_clear", paths=("/cache",)))
    missing = run(actor, gateway, app, Action("cache_clear", paths=("/no/such/cache", "/other")))

    assert cleared.ok, cleared.error
    assert started_at(app) == before
    assert not missing.ok
    assert missing.error is not None
    assert "/no/such/cache is not a folder in this container" in missing.error
    # The other folder named in the same action is still cleared.
    assert exec_text(app, "ls -A /other | wc -l") == "0"


# --- restart_dependents ----------------------------------------------------------------


def test_dependents_are_restarted_parents_first_and_only_those_that_depend(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor, tmp_path: Path
) -> None:
    # api depends on db in the compose file; worker on api through Compose v2's label;
    # sidecar shares api's network stack; other depends on nothing.
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n"
        "  db: {image: busybox}\n"
        "  api: {image: busybox, depends_on: [db]}\n"
        "  worker: {image: busybox}\n"
        "  sidecar: {image: busybox}\n"
        "  other: {image: busybox}\n"
    )
    compose_labels = {
        "com.docker.compose.project.working_dir": str(tmp_path),
        "com.docker.compose.project.config_files": "docker-compose.yml",
    }

    def service(name: str, **options: Any) -> Any:
        labels = {**compose_labels, **options.pop("labels", {})}
        return compose_project.run(
            name, command=["sh", "-c", SERVE], labels=labels, stop_timeout=2, **options
        )

    db = service("db")
    api = service("api")
    worker = service(
        "worker", labels={"com.docker.compose.depends_on": "api:service_started:false"}
    )
    sidecar = service("sidecar", network_mode=f"container:{api.id}")
    other = service("other")
    before = {c.name: started_at(c) for c in (db, api, worker, sidecar, other)}

    result = run(actor, gateway, db, Action("restart_dependents", timeout=2))

    assert result.ok, result.error
    after = {c.name: started_at(c) for c in (db, api, worker, sidecar, other)}
    assert after[db.name] == before[db.name]
    assert after[other.name] == before[other.name]
    for dependent in (api, worker, sidecar):
        assert after[dependent.name] > before[dependent.name], dependent.name
    assert after[api.name] < after[worker.name]
    assert after[api.name] < after[sidecar.name]
    assert result.output == (f"restarted in order: {api.name}, {sidecar.name}, {worker.name}")


def test_a_dependency_cycle_is_reported_and_nothing_is_restarted(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor
) -> None:
    def service(name: str, needs: str) -> Any:
        labels = {"com.docker.compose.depends_on": f"{needs}:service_started:false"}
        return compose_project.run(name, command=["sh", "-c", SERVE], labels=labels, stop_timeout=2)

    db = service("db", "b")
    a, b = service("a", "db"), service("b", "a")
    before = {c.name: started_at(c) for c in (a, b)}

    result = run(actor, gateway, db, Action("restart_dependents"))

    assert not result.ok
    assert result.error is not None
    assert "cycle: db -> b -> a -> db" in result.error
    assert {c.name: started_at(c) for c in (a, b)} == before


def test_after_a_recreate_a_container_on_its_network_stack_is_moved_to_the_new_one(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor
) -> None:
    api = compose_project.run("api", command=["sh", "-c", SERVE], stop_timeout=2)
    sidecar = compose_project.run(
        "sidecar",
        command=["sh", "-c", SERVE],
        network_mode=f"container:{api.id}",
        stop_timeout=2,
    )
    # One plan, [recreate, restart_dependents]: both actions get the ref the plan began with.
    ref = gateway.inspect(api.id).ref

    recreated = actor.run_action(ref, Action("recreate", timeout=2))
    moved = actor.run_action(ref, Action("restart_dependents", timeout=2))

    assert recreated.ok, recreated.error
    assert moved.ok, moved.error
    new_api = compose_project.client.containers.get(api.name)
    new_sidecar = compose_project.client.containers.get(sidecar.name)
    assert new_sidecar.id != sidecar.id
    assert new_sidecar.attrs["HostConfig"]["NetworkMode"] == f"container:{new_api.id}"
    assert new_sidecar.attrs["State"]["Running"]
    assert moved.output == (
        f"restarted in order: {sidecar.name} (recreated on the new network stack)"
    )


# --- rebuild ---------------------------------------------------------------------------


def compose_app(folder: Path, image: str, dockerfile_lines: tuple[str, ...]) -> None:
    (folder / "app").mkdir(parents=True, exist_ok=True)
    (folder / "app" / "Dockerfile").write_text(
        "\n".join([f"FROM {BUSYBOX_IMAGE}", *dockerfile_lines]) + "\n"
    )
    (folder / "docker-compose.yml").write_text(
        "services:\n"
        "  app:\n"
        f"    image: {image}\n"
        "    build:\n"
        "      context: ./app\n"
        "      args: {FLAVOUR: vanilla}\n"
    )


GOOD_APP = ("ARG FLAVOUR", "COPY version.txt /version.txt", "RUN echo $FLAVOUR > /flavour")


def test_rebuild_builds_the_compose_context_and_recreates_on_the_new_image(
    made: Made, gateway: DockerSDKGateway, actor: Actor, tmp_path: Path
) -> None:
    tag = f"medic-test/rebuild-{uuid.uuid4().hex[:8]}:latest"
    compose_app(tmp_path, tag, GOOD_APP)
    (tmp_path / "app" / "version.txt").write_text("one\n")
    old_image = made.client.images.build(
        path=str(tmp_path / "app"), tag=tag, buildargs={"FLAVOUR": "vanilla"}, rm=True
    )[0].id
    made.track_image(old_image)
    app = made.project.run(
        "app",
        image=tag,
        command=["sh", "-c", SERVE],
        labels={
            "com.docker.compose.project.working_dir": str(tmp_path),
            "com.docker.compose.project.config_files": "docker-compose.yml",
        },
        stop_timeout=2,
    )
    (tmp_path / "app" / "version.txt").write_text("two\n")

    result = run(actor, gateway, app, Action("rebuild", timeout=2))

    assert result.ok, result.error
    rebuilt = made.client.containers.get(app.name)
    made.track_image(rebuilt.attrs["Image"])
    assert rebuilt.id != app.id
    assert rebuilt.attrs["Image"] != old_image
    assert rebuilt.attrs["Image"] == made.client.images.get(tag).id
    assert exec_text(rebuilt, "cat /version.txt /flavour") == "two\nvanilla"
    assert result.output.endswith(f"recreated as {rebuilt.id[:12]}")
    assert "Step 3/4 : COPY version.txt /version.txt" in result.output


def test_a_failed_rebuild_keeps_the_build_output_and_leaves_the_old_container_running(
    made: Made, gateway: DockerSDKGateway, actor: Actor, tmp_path: Path
) -> None:
    tag = f"medic-test/rebuild-{uuid.uuid4().hex[:8]}:latest"
    compose_app(tmp_path, tag, ('CMD ["sh"]',))
    made.image(tmp_path / "app", tag)
    app = made.project.run(
        "app",
        image=tag,
        command=["sh", "-c", SERVE],
        labels={
            "com.docker.compose.project.working_dir": str(tmp_path),
            "com.docker.compose.project.config_files": "docker-compose.yml",
        },
        stop_timeout=2,
    )
    before = started_at(app)
    compose_app(tmp_path, tag, ("RUN echo the build broke here && exit 3",))

    result = run(actor, gateway, app, Action("rebuild", timeout=2))

    assert not result.ok
    assert result.error is not None
    assert "the container was left as it was" in result.error
    assert "the build broke here" in result.error
    assert "returned a non-zero code: 3" in result.error
    app.reload()
    assert app.status == "running"
    assert started_at(app) == before
    assert made.client.containers.get(app.name).id == app.id
    assert app.attrs["Image"] == made.client.images.get(tag).id


#: Counts SIGHUPs and SIGUSR1s into files, the way a server rereads its configuration.
RELOADABLE = (
    "trap 'echo hup >> /tmp/reloads' HUP; trap 'echo usr1 >> /tmp/reloads' USR1; "
    "trap 'exit 0' TERM; while :; do sleep 0.2 & wait $!; done"
)


def test_reload_signals_the_main_process_and_leaves_the_container_running(
    compose_project: ComposeProject, gateway: DockerSDKGateway, actor: Actor
) -> None:
    proxy = compose_project.run("proxy", command=["sh", "-c", RELOADABLE], stop_timeout=2)
    before = started_at(proxy)

    hup = run(actor, gateway, proxy, Action("reload"))
    usr1 = run(actor, gateway, proxy, Action("reload", signal="USR1"))

    assert hup.ok, hup.error
    assert usr1.ok, usr1.error
    wait_for(
        lambda: exec_text(proxy, "cat /tmp/reloads 2>/dev/null || true") == "hup\nusr1",
        timeout=10,
        message="the main process to trap both signals",
    )
    proxy.reload()
    assert proxy.status == "running"
    assert started_at(proxy) == before
