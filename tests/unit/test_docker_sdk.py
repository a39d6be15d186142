"""The docker SDK adapter: translating its errors and retrying the temporary ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import docker.errors
import docker.utils
import pytest
import requests
import requests.exceptions

from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.gateway import SandboxLimits, SandboxRequest
from agent.errors import (
    ContainerGone,
    DockerRequestError,
    DockerServerError,
    DockerUnavailable,
    NotSwarmManager,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CID = "a" * 64


def api_error(status: int, text: str = "boom") -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(text, response=response, explanation=text)


class FlakyAPI:
    """Stands in for the SDK's APIClient: fails ``failures`` times with ``error``, then works."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def restart(self, container: str, timeout: int) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error


class Client:
    def __init__(self, api: Any) -> None:
        self.api = api


def gateway(api: Any, sleeps: list[float]) -> DockerSDKGateway:
    return DockerSDKGateway(Client(api), retry_attempts=4, retry_max_delay=8, sleep=sleeps.append)


def test_temporary_errors_are_retried_with_growing_bounded_delays() -> None:
    api = FlakyAPI(3, requests.exceptions.ConnectionError("socket closed"))
    sleeps: list[float] = []
    gateway(api, sleeps).restart(CID, timeout=10)
    assert api.calls == 4
    assert len(sleeps) == 3
    assert all(0 <= s <= 8 for s in sleeps)


def test_retries_stop_after_the_last_try_with_a_medic_error() -> None:
    api = FlakyAPI(10, api_error(500, "driver failed"))
    sleeps: list[float] = []
    with pytest.raises(DockerServerError, match="driver failed"):
        gateway(api, sleeps).restart(CID, timeout=10)
    assert api.calls == 4


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (docker.errors.NotFound("no such container"), ContainerGone),
        (api_error(409, "is paused"), DockerRequestError),
    ],
)
def test_permanent_errors_are_not_retried(error: Exception, expected: type[Exception]) -> None:
    api = FlakyAPI(10, error)
    sleeps: list[float] = []
    with pytest.raises(expected):
        gateway(api, sleeps).restart(CID, timeout=10)
    assert api.calls == 1
    assert sleeps == []


def test_an_unreachable_engine_is_docker_unavailable() -> None:
    api = FlakyAPI(10, requests.exceptions.ConnectionError("no socket"))
    with pytest.raises(DockerUnavailable, match="did not answer"):
        gateway(api, []).restart(CID, timeout=10)


class RecordingAPI:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def events(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.kwargs = kwargs
        return []


@pytest.mark.parametrize("live", [True, False])
def test_event_filters_reach_the_engine_as_every_watched_event(live: bool) -> None:
    api = RecordingAPI()
    gw = gateway(api, [])
    if live:
        gw.events("com.docker.compose.project=shop", since=NOW)
    else:
        gw.past_events(CID, since=NOW, until=NOW)
    # What the SDK will send: its own encoder, applied to exactly what the gateway passed.
    sent = json.loads(docker.utils.convert_filters(api.kwargs["filters"]))
    assert sent["event"] == ["die", "oom", "start", "stop", "kill", "health_status", "destroy"]
    assert sent["type"] == ["container"]
    assert float(api.kwargs["since"]) == NOW.timestamp()


# --- the sandbox: what the engine is asked for ---------------------------------------------


class SandboxAPI:
    """Records the requests of a sandbox run; ``fail_start`` makes the start fail."""

    def __init__(self, *, fail_start: Exception | None = None) -> None:
        self.real = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
        self.created: dict[str, Any] = {}
        self.calls: list[str] = []
        self.fail_start = fail_start
        self.removed: list[tuple[str, dict[str, Any]]] = []

    def create_host_config(self, **kwargs: Any) -> Any:
        return self.real.create_host_config(**kwargs)

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        self.calls.append("create")
        self.created = {"image": image, **kwargs}
        return {"Id": CID}

    def put_archive(self, container: str, path: str, data: bytes) -> bool:
        self.calls.append(f"put_archive {path}")
        return True

    def start(self, container: str) -> None:
        self.calls.append("start")
        if self.fail_start is not None:
            raise self.fail_start

    def wait(self, container: str, timeout: float) -> dict[str, int]:
        self.calls.append("wait")
        return {"StatusCode": 3}

    def inspect_container(self, container: str) -> dict[str, Any]:
        return {"State": {"Running": False, "ExitCode": 3, "OOMKilled": False}}

    def logs(self, container: str, **kwargs: Any) -> bytes:
        return b"broken\n"

    def remove_container(self, container: str, **kwargs: Any) -> None:
        self.calls.append("remove")
        self.removed.append((container, kwargs))

    def close(self) -> None:
        self.real.close()


def test_a_sandbox_has_no_network_mounts_or_privileges_and_is_removed() -> None:
    api = SandboxAPI()
    result = gateway(api, []).run_sandbox(
        SandboxRequest(
            image="medic-candidate/web:f1f1f1f1",
            entrypoint=("pytest",),
            command=("-q",),
            workspace=b"tar",
            working_dir="/workspace",
            environment=(("GREETING", "hello"),),
            limits=SandboxLimits(memory_mb=256, pids=64, cpus=0.5),
        )
    )
    api.close()
    assert result.exit_code == 3 and result.output == "broken\n"
    assert api.calls == ["create", "put_archive /", "start", "wait", "remove"]
    created = api.created
    host = created["host_config"]
    assert host["NetworkMode"] == "none"
    assert created["network_disabled"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert not host.get("Privileged")
    assert host["Memory"] == host["MemorySwap"] == 256 * 1024 * 1024
    assert host["PidsLimit"] == 64
    assert host["NanoCpus"] == 500_000_000
    assert set(host["Tmpfs"]) == {"/tmp"}
    for key in ("Binds", "Mounts", "VolumesFrom", "Devices", "PortBindings"):
        assert not host.get(key), key
    assert created["user"] == "65534:65534"
    assert created["entrypoint"] == ["pytest"] and created["command"] == ["-q"]
    assert sorted(created["environment"]) == ["GREETING=hello", "HOME=/tmp", "TMPDIR=/tmp"]
    assert created["labels"]["medic.sandbox"] == "true"
    assert created["labels"]["medic.ignore"] == "true"
    assert api.removed == [(CID, {"v": True, "force": True})]


def test_a_sandbox_that_fails_to_start_is_removed_all_the_same() -> None:
    api = SandboxAPI(fail_start=api_error(500, "OCI runtime create failed"))
    with pytest.raises(DockerServerError, match="OCI runtime create failed"):
        gateway(api, []).run_sandbox(SandboxRequest(image="busybox"))
    api.close()
    assert api.calls[-1] == "remove"


def test_removing_a_missing_image_is_not_an_error() -> None:
    class Images:
        def remove_image(self, tag: str) -> None:
            raise docker.errors.ImageNotFound(f"No such image: {tag}")

    assert gateway(Images(), []).remove_image("medic-candidate/web:gone") is False


# --- Swarm services -----------------------------------------------------------------------


class SwarmAPI:
    """A manager's service API, or a worker's (every answer a 503, as the engine's)."""

    def __init__(self, *, worker: bool = False, conflicts: int = 0) -> None:
        self.worker = worker
        self.conflicts = conflicts
        self.version = 7
        self.counter = 1
        self.updates: list[dict[str, Any]] = []

    def _refuse(self) -> None:
        if self.worker:
            raise api_error(
                503,
                "This node is not a swarm manager. Worker nodes can't be used to view or "
                "modify cluster state. Please run this command on a manager node or promote "
                "the current node to a manager.",
            )

    def inspect_service(self, service: str) -> dict[str, Any]:
        self._refuse()
        if service == "gone":
            raise docker.errors.NotFound("service gone not found")
        return {
            "ID": service,
            "Version": {"Index": self.version},
            "Spec": {
                "Name": "shop_web",
                "Mode": {"Replicated": {"Replicas": 1}},
                "TaskTemplate": {"ForceUpdate": self.counter},
            },
        }

    def tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self._refuse()
        return [{"ID": "t1", "Slot": 1, "DesiredState": "running", "Status": {"State": "running"}}]

    def update_service(self, service: str, **kwargs: Any) -> dict[str, Any]:
        self._refuse()
        self.updates.append(kwargs)
        if self.conflicts:
            self.conflicts -= 1
            self.version += 1  # someone else's update slipped in
            raise api_error(400, "update out of sequence")
        self.version += 1
        self.counter = kwargs["task_template"]["ForceUpdate"]
        return {"Warnings": None}


def test_a_forced_update_raises_the_services_counter_at_the_version_it_read() -> None:
    api = SwarmAPI(conflicts=1)
    updated = gateway(api, []).force_update("svc")
    assert [u["version"] for u in api.updates] == [7, 8]  # read again after the conflict
    assert api.updates[-1]["task_template"] == {"ForceUpdate": 2}
    assert api.updates[-1]["fetch_current_spec"] is True
    assert (updated.force_update, updated.version) == (2, 9)


def test_a_worker_says_once_that_services_need_a_manager_and_is_not_asked_again() -> None:
    sleeps: list[float] = []
    with pytest.raises(NotSwarmManager, match=r"not a Swarm manager.*run medic on a manager"):
        gateway(SwarmAPI(worker=True), sleeps).swarm_service("svc")
    with pytest.raises(NotSwarmManager):
        gateway(SwarmAPI(worker=True), sleeps).force_update("svc")
    assert sleeps == []  # permanent: no retries


def test_a_service_that_is_gone_is_said_so_not_taken_for_a_container() -> None:
    with pytest.raises(DockerRequestError, match="the Swarm service no longer exists"):
        gateway(SwarmAPI(), []).swarm_service("gone")
