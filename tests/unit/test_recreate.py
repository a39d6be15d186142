"""Recreating a container from its inspect output: what is kept, what is left to the image.

The inspect JSON below was captured from Docker Engine 20.10 for a container made with
``docker create --name medic-cap -e FOO=bar -l team=x --network medic-cap-a
--network-alias web-a -v medic-cap-vol:/data -v /cache -v /tmp/medic-cap-bind:/bind:ro
-p 127.0.0.1::8080 --restart on-failure:3 --health-cmd true --health-interval 5s -m 64m
-u 1000 -w /tmp medic-test/busybox:latest sh -c 'sleep 1000'`` and then
``docker network connect --alias web-b medic-cap-b medic-cap`` (host paths trimmed).
The Actor tests at the end run recreate and rebuild through the fake engine.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
from factories import compose_build_folder
from fakes import FakeDocker

from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.translate import create_args_from_inspect
from agent.errors import DockerRequestError
from agent.healing.act import Actor
from agent.model import Action, ContainerRef

CAPTURED_CONTAINER: dict[str, Any] = json.loads(
    r"""
{
  "Id": "7fbf2b993881f46b01eca5b135033a4bbb5637241e3135aff72cd8b83ef9d02c",
  "State": {
    "Status": "running",
    "Running": true,
    "Paused": false,
    "Restarting": false,
    "OOMKilled": false,
    "Dead": false,
    "Pid": 17945,
    "ExitCode": 0,
    "Error": "",
    "StartedAt": "2026-11-21T16:42:44.22121148Z",
    "FinishedAt": "0001-01-01T00:00:00Z",
    "Health": {
      "Status": "starting",
      "FailingStreak": 0,
      "Log": []
    }
  },
  "Image": "sha256:533695f759636a2b734de7f74d7b8ba77f3ee6cb6994716def5255d10dca7cb5",
  "Name": "/medic-cap",
  "HostConfig": {
    "Binds": [
      "medic-cap-vol:/data",
      "/tmp/medic-cap-bind:/bind:ro"
    ],
    "ContainerIDFile": "",
    "LogConfig": {
      "Type": "json-file",
      "Config": {}
    },
    "NetworkMode": "medic-cap-a",
    "PortBindings": {
      "8080/tcp": [
        {
          "HostIp": "127.0.0.1",
          "HostPort": ""
        }
      ]
    },
    "RestartPolicy": {
      "Name": "on-failure",
      "MaximumRetryCount": 3
    },
    "AutoRemove": false,
    "VolumeDriver": "",
    "VolumesFrom": null,
    "CapAdd": null,
    "CapDrop": null,
    "CgroupnsMode": "host",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": null,
    "GroupAdd": null,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": null,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": false,
    "PublishAllPorts": false,
    "ReadonlyRootfs": false,
    "SecurityOpt": null,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "ConsoleSize": [
      0,
      0
    ],
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 67108864,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": null,
    "DeviceRequests": null,
    "KernelMemory": 0,
    "KernelMemoryTCP": 0,
    "MemoryReservation": 0,
    "MemorySwap": 134217728,
    "MemorySwappiness": null,
    "OomKillDisable": false,
    "PidsLimit": null,
    "Ulimits": [],
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": [
      "/proc/asound",
      "/proc/acpi",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/proc/scsi",
      "/sys/firmware"
    ],
    "ReadonlyPaths": [
      "/proc/bus",
      "/proc/fs",
      "/proc/irq",
      "/proc/sys",
      "/proc/sysrq-trigger"
    ]
  },
  "Mounts": [
    {
      "Type": "volume",
      "Name": "medic-cap-vol",
      "Source": "/var/lib/docker/volumes/medic-cap-vol/_data",
      "Destination": "/data",
      "Driver": "local",
      "Mode": "z",
      "RW": true,
      "Propagation": ""
    },
    {
      "Type": "bind",
      "Source": "/tmp/medic-cap-bind",
      "Destination": "/bind",
      "Mode": "ro",
      "RW": false,
      "Propagation": "rprivate"
    },
    {
      "Type": "volume",
      "Name": "3fc9789b7898e569a4870520511200c240d7f208e33709890b6a8f19b179ae4c",
      "Source": "/var/lib/docker/volumes/3fc9789b7898.../_data",
      "Destination": "/cache",
      "Driver": "local",
      "Mode": "",
      "RW": true,
      "Propagation": ""
    }
  ],
  "Config": {
    "Hostname": "7fbf2b993881",
    "Domainname": "",
    "User": "1000",
    "AttachStdin": false,
    "AttachStdout": true,
    "AttachStderr": true,
    "ExposedPorts": {
      "8080/tcp": {}
    },
    "Tty": false,
    "OpenStdin": false,
    "StdinOnce": false,
    "Env": [
      "FOO=bar",
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ],
    "Cmd": [
      "sh",
      "-c",
      "sleep 1000"
    ],
    "Healthcheck": {
      "Test": [
        "CMD-SHELL",
        "true"
      ],
      "Interval": 5000000000
    },
    "Image": "medic-test/busybox:latest",
    "Volumes": {
      "/cache": {}
    },
    "WorkingDir": "/tmp",
    "Entrypoint": null,
    "OnBuild": null,
    "Labels": {
      "medic.test.recipe": "b2bef72d48e859a8",
      "team": "x"
    }
  },
  "NetworkSettings": {
    "Ports": {
      "8080/tcp": [
        {
          "HostIp": "127.0.0.1",
          "HostPort": "32768"
        }
      ]
    },
    "Networks": {
      "medic-cap-a": {
        "IPAMConfig": null,
        "Links": null,
        "Aliases": [
          "web-a",
          "7fbf2b993881"
        ],
        "NetworkID": "7e9aed928d28345375c1e281d57c6e2894b7a95b425dd0e015e7c572cc194989",
        "EndpointID": "49b5b039ea84bc09f2df85128b84916a6316c0278719b011598510a9b06cc831",
        "Gateway": "172.18.0.1",
        "IPAddress": "172.18.0.2",
        "IPPrefixLen": 16,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "02:42:ac:12:00:02",
        "DriverOpts": null
      },
      "medic-cap-b": {
        "IPAMConfig": {},
        "Links": null,
        "Aliases": [
          "web-b",
          "7fbf2b993881"
        ],
        "NetworkID": "ccdbbc5cb542251a175e34380b9b76711db6b7bed135170aa58fe15bebfbdcd8",
        "EndpointID": "30a28c722e321177e4c78dde2353085b63b6bda43aba5c4aeb93a3ad35156df2",
        "Gateway": "172.19.0.1",
        "IPAddress": "172.19.0.2",
        "IPPrefixLen": 16,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "MacAddress": "02:42:ac:13:00:02",
        "DriverOpts": {}
      }
    }
  }
}
"""
)

CAPTURED_IMAGE: dict[str, Any] = json.loads(
    r"""
{
  "Id": "sha256:533695f759636a2b734de7f74d7b8ba77f3ee6cb6994716def5255d10dca7cb5",
  "RepoTags": [
    "medic-test/busybox:latest"
  ],
  "Config": {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": false,
    "AttachStdout": false,
    "AttachStderr": false,
    "Tty": false,
    "OpenStdin": false,
    "StdinOnce": false,
    "Env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ],
    "Cmd": [
      "sh"
    ],
    "Image": "sha256:fa43a43ba6a854de1e62947d6b4685edff28355ac7809d8a634772903ca2dfd1",
    "Volumes": null,
    "WorkingDir": "",
    "Entrypoint": null,
    "OnBuild": null,
    "Labels": {
      "medic.test.recipe": "b2bef72d48e859a8"
    }
  }
}
"""
)

ANONYMOUS = "3fc9789b7898e569a4870520511200c240d7f208e33709890b6a8f19b179ae4c"


def container(**changes: Any) -> dict[str, Any]:
    """The captured container, with ``Section__Key=value`` changes applied."""
    attrs = copy.deepcopy(CAPTURED_CONTAINER)
    for key, value in changes.items():
        section, _, field = key.partition("__")
        attrs[section][field] = value
    return attrs


def image(**config: Any) -> dict[str, Any]:
    attrs = copy.deepcopy(CAPTURED_IMAGE)
    attrs["Config"].update(config)
    return attrs


# --- create_args_from_inspect ------------------------------------------------------------


def test_the_captured_container_is_created_again_with_the_operators_settings_only() -> None:
    args = create_args_from_inspect(CAPTURED_CONTAINER, CAPTURED_IMAGE)
    config = args["config"]

    assert args["name"] == "medic-cap"
    assert config["Image"] == "medic-test/busybox:latest"
    assert config["Cmd"] == ["sh", "-c", "sleep 1000"]
    assert "Entrypoint" not in config
    # PATH came from the image, and so did the recipe label.
    assert config["Env"] == ["FOO=bar"]
    assert config["Labels"] == {"team": "x"}
    assert config["User"] == "1000"
    assert config["WorkingDir"] == "/tmp"
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5000000000}
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["AttachStdout"] is True
    # The hostname was the engine's default (the short id); the new container gets its own.
    assert "Hostname" not in config
    assert "Volumes" not in config


def test_host_settings_are_kept_and_the_anonymous_volume_is_bound_by_its_name() -> None:
    host = create_args_from_inspect(CAPTURED_CONTAINER, CAPTURED_IMAGE)["config"]["HostConfig"]

    assert host["Binds"] == [
        "medic-cap-vol:/data",
        "/tmp/medic-cap-bind:/bind:ro",
        f"{ANONYMOUS}:/cache",
    ]
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert (host["Memory"], host["MemorySwap"]) == (67108864, 134217728)
    assert host["NetworkMode"] == "medic-cap-a"


def test_the_first_network_is_given_at_create_and_the_others_are_connected_with_aliases() -> None:
    args = create_args_from_inspect(CAPTURED_CONTAINER, CAPTURED_IMAGE)

    assert args["config"]["NetworkingConfig"] == {
        "EndpointsConfig": {"medic-cap-a": {"Aliases": ["web-a"]}}
    }
    assert args["connect"] == [
        {
            "network": "medic-cap-b",
            "aliases": ["web-b"],
            "links": None,
            "ipv4_address": None,
            "ipv6_address": None,
            "link_local_ips": None,
            "driver_opt": None,
        }
    ]


def test_static_addresses_and_a_chosen_hostname_are_kept() -> None:
    attrs = container(Config__Hostname="cache-box")
    networks = attrs["NetworkSettings"]["Networks"]
    networks["medic-cap-b"]["IPAMConfig"] = {"IPv4Address": "172.19.0.9"}

    args = create_args_from_inspect(attrs, CAPTURED_IMAGE)

    assert args["config"]["Hostname"] == "cache-box"
    assert args["connect"][0]["ipv4_address"] == "172.19.0.9"


def test_settings_equal_to_the_images_are_left_for_the_image_to_supply() -> None:
    base = image(
        User="1000",
        WorkingDir="/tmp",
        Healthcheck={"Test": ["CMD-SHELL", "true"], "Interval": 5000000000},
        Cmd=["sh", "-c", "sleep 1000"],
        Env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar"],
        Labels={"team": "x", "medic.test.recipe": "b2bef72d48e859a8"},
        ExposedPorts={"8080/tcp": {}},
    )

    config = create_args_from_inspect(CAPTURED_CONTAINER, base)["config"]

    for key in ("User", "WorkingDir", "Healthcheck", "Cmd", "Env", "Labels", "ExposedPorts"):
        assert key not in config, key


def test_a_value_the_container_overrode_is_kept_even_when_the_image_sets_the_same_key() -> None:
    base = image(Env=["PATH=/bin", "FOO=from-image"], User="nobody")

    config = create_args_from_inspect(CAPTURED_CONTAINER, base)["config"]

    assert "FOO=bar" in config["Env"]
    assert "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in config["Env"]
    assert config["User"] == "1000"


def test_cmd_equal_to_the_images_is_kept_when_the_entrypoint_is_the_containers_own() -> None:
    # The engine drops the image's Cmd when an Entrypoint is given at create.
    own_entrypoint = container(Config__Entrypoint=["/bin/tini", "--"], Config__Cmd=["sh"])
    inherited = container(Config__Entrypoint=["/entry"], Config__Cmd=["sh"])

    own = create_args_from_inspect(own_entrypoint, image(Cmd=["sh"]))["config"]
    same = create_args_from_inspect(inherited, image(Cmd=["sh"], Entrypoint=["/entry"]))["config"]

    assert (own["Entrypoint"], own["Cmd"]) == (["/bin/tini", "--"], ["sh"])
    assert "Entrypoint" not in same
    assert "Cmd" not in same


def test_an_anonymous_mount_volume_gets_its_name_and_a_read_only_one_stays_read_only() -> None:
    attrs = container(
        HostConfig__Binds=None,
        HostConfig__Mounts=[{"Type": "volume", "Target": "/data"}],
    )
    attrs["Mounts"] = [
        {"Type": "volume", "Name": "anon1", "Destination": "/data", "RW": True},
        {"Type": "volume", "Name": "anon2", "Destination": "/seed", "RW": False},
        {"Type": "bind", "Source": "/srv", "Destination": "/srv", "RW": True},
    ]

    host = create_args_from_inspect(attrs, CAPTURED_IMAGE)["config"]["HostConfig"]

    assert host["Mounts"] == [{"Type": "volume", "Target": "/data", "Source": "anon1"}]
    assert host["Binds"] == ["anon2:/seed:ro"]


def test_legacy_links_are_written_the_way_create_takes_them() -> None:
    attrs = container(HostConfig__Links=["/db-1:/web-1/db"])

    host = create_args_from_inspect(attrs, CAPTURED_IMAGE)["config"]["HostConfig"]

    assert host["Links"] == ["db-1:db"]


def test_a_container_on_another_containers_network_stack_gets_no_hostname_or_network() -> None:
    attrs = container(Config__Hostname="0123456789ab", HostConfig__NetworkMode="container:abc")
    attrs["NetworkSettings"]["Networks"] = {}

    args = create_args_from_inspect(attrs, CAPTURED_IMAGE)

    assert "Hostname" not in args["config"]
    assert "NetworkingConfig" not in args["config"]
    assert args["config"]["HostConfig"]["NetworkMode"] == "container:abc"
    assert args["connect"] == []


def test_on_the_default_bridge_the_container_is_created_on_bridge_and_connected_to_the_rest() -> (
    None
):
    attrs = container(HostConfig__NetworkMode="default")
    networks = attrs["NetworkSettings"]["Networks"]
    attrs["NetworkSettings"]["Networks"] = {"medic-cap-b": networks["medic-cap-b"], "bridge": {}}

    args = create_args_from_inspect(attrs, CAPTURED_IMAGE)

    assert args["config"]["NetworkingConfig"] == {"EndpointsConfig": {"bridge": {}}}
    assert [c["network"] for c in args["connect"]] == ["medic-cap-b"]


# --- the gateway's order of requests, and putting things back ------------------------------

NEW_ID = "b" * 64


class RecordingAPI:
    """Stands in for the SDK's APIClient in a recreate; ``fail`` names a call that fails once."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if name == self.fail:
            self.fail = None  # once: putting the old container back must work
            response = requests.Response()
            response.status_code = 409
            raise docker.errors.APIError("conflict", response=response, explanation="conflict")

    def inspect_container(self, container: str) -> dict[str, Any]:
        self._record("inspect_container", container)
        return CAPTURED_CONTAINER

    def inspect_image(self, image_id: str) -> dict[str, Any]:
        self._record("inspect_image", image_id)
        return CAPTURED_IMAGE

    def stop(self, container: str, timeout: int) -> None:
        self._record("stop", container, timeout=timeout)

    def rename(self, container: str, name: str) -> None:
        self._record("rename", container, name)

    def create_container_from_config(self, config: dict[str, Any], name: str) -> dict[str, str]:
        self._record("create", name)
        return {"Id": NEW_ID}

    def connect_container_to_network(self, container: str, network: str, **kw: Any) -> None:
        self._record("connect", container, network, aliases=kw["aliases"])

    def start(self, container: str) -> None:
        self._record("start", container)

    def remove_container(self, container: str, **kwargs: Any) -> None:
        self._record("remove", container, **kwargs)


class Client:
    def __init__(self, api: Any) -> None:
        self.api = api


def recreate_with(api: RecordingAPI) -> str:
    gateway = DockerSDKGateway(Client(api), sleep=lambda _: None)
    return gateway.recreate(CAPTURED_CONTAINER["Id"], timeout=5)


def steps(api: RecordingAPI) -> list[tuple[str, str]]:
    return [(name, str(args[0])[:12] if args else "") for name, args, _ in api.calls]


def test_recreate_steps_aside_creates_connects_starts_then_removes_the_old_keeping_volumes() -> (
    None
):
    api = RecordingAPI()
    old = CAPTURED_CONTAINER["Id"][:12]

    assert recreate_with(api) == NEW_ID
    assert steps(api) == [
        ("inspect_container", old),
        ("inspect_image", CAPTURED_CONTAINER["Image"][:12]),
        ("stop", old),
        ("rename", old),
        ("create", "medic-cap"),
        ("connect", NEW_ID[:12]),
        ("start", NEW_ID[:12]),
        ("remove", old),
    ]
    assert api.calls[3][1][1].startswith("medic-cap-replaced-")
    assert api.calls[5][2] == {"aliases": ["web-b"]}
    assert api.calls[-1][2] == {"v": False}


@pytest.mark.parametrize(
    ("failing", "undo"),
    [
        ("create", [("rename", "old"), ("start", "old")]),
        ("connect", [("remove", "new"), ("rename", "old"), ("start", "old")]),
        ("start", [("remove", "new"), ("rename", "old"), ("start", "old")]),
    ],
)
def test_a_recreate_that_fails_puts_the_old_container_back_under_its_name(
    failing: str, undo: list[tuple[str, str]]
) -> None:
    api = RecordingAPI(fail=failing)
    ids = {"old": CAPTURED_CONTAINER["Id"][:12], "new": NEW_ID[:12]}

    with pytest.raises(DockerRequestError, match="conflict"):
        recreate_with(api)

    done = steps(api)
    failed_at = next(i for i, (name, _) in enumerate(done) if name == failing)
    assert done[failed_at + 1 :] == [(name, ids[who]) for name, who in undo]
    assert api.calls[-2][1] == (CAPTURED_CONTAINER["Id"], "medic-cap")
    if failing != "create":
        assert api.calls[-3][2] == {"v": False, "force": True}
    # The old container was never removed.
    assert ("remove", ids["old"]) not in done


def test_an_image_missing_at_create_is_named_and_the_old_container_is_put_back() -> None:
    api = RecordingAPI()

    def create(config: dict[str, Any], name: str) -> dict[str, str]:
        api.calls.append(("create", (name,), {}))
        response = requests.Response()
        response.status_code = 404
        raise docker.errors.NotFound("no such image", response=response)

    api.create_container_from_config = create  # type: ignore[method-assign]

    with pytest.raises(DockerRequestError, match="could not find the image medic-test/busybox"):
        recreate_with(api)

    assert [name for name, _, _ in api.calls][-3:] == ["create", "rename", "start"]
    assert api.calls[-2][1] == (CAPTURED_CONTAINER["Id"], "medic-cap")


def test_a_container_started_with_rm_is_not_recreated() -> None:
    api = RecordingAPI()
    attrs = container(HostConfig__AutoRemove=True)
    api.inspect_container = lambda container: attrs  # type: ignore[method-assign]

    with pytest.raises(DockerRequestError, match="--rm"):
        recreate_with(api)

    assert api.calls == []


# --- the Actor, through the fake engine ----------------------------------------------------


def ref_of(fake: FakeDocker, container_id: str) -> ContainerRef:
    return fake.inspect(container_id).ref


def test_recreate_reports_the_new_id_and_the_old_container_is_gone() -> None:
    fake = FakeDocker()
    web = fake.add("shop-web-1", {"com.docker.compose.project": "shop"})
    actor = Actor(fake)
    try:
        result = actor.run_action(ref_of(fake, web.id), Action("recreate", timeout=1))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok, result.error
    [new_id] = fake.containers
    assert new_id != web.id
    assert result.output == f"recreated as {new_id[:12]}"
    assert [e.action for e in fake.history] == ["kill", "die", "stop", "create", "start", "destroy"]


@pytest.mark.parametrize("dockerfile", [True, False])
def test_rebuild_recreates_only_after_a_successful_build(tmp_path: Path, dockerfile: bool) -> None:
    fake = FakeDocker()
    app = fake.add("shop-app-1", compose_build_folder(tmp_path, "app", dockerfile=dockerfile))
    actor = Actor(fake)
    try:
        result = actor.run_action(ref_of(fake, app.id), Action("rebuild"))
    finally:
        actor.shutdown(timeout=1)

    assert result.ok is dockerfile
    assert ("recreate" in fake.requests) is dockerfile
    if dockerfile:
        assert "Successfully tagged fake" in result.output
        assert app.id not in fake.containers
    else:
        assert result.error is not None
        assert "Cannot locate specified Dockerfile" in result.error
        assert "the container was left as it was" in result.error
        assert app.id in fake.containers


def test_rebuild_of_a_container_not_made_by_compose_says_why_it_cannot() -> None:
    fake = FakeDocker()
    app = fake.add("lonely", {"com.docker.compose.service": "app"})
    actor = Actor(fake)
    try:
        result = actor.run_action(ref_of(fake, app.id), Action("rebuild"))
    finally:
        actor.shutdown(timeout=1)

    assert not result.ok
    assert result.error is not None
    assert "only containers made by docker compose can be rebuilt" in result.error
    assert "build" not in fake.requests
    assert app.id in fake.containers
