"""The compose guard: a fix's compose edits judged as compose would run them.

Each hostile case is an edit a model could propose that widens what a container may
do (or drops data); each must be refused with its code. Each harmless case must
pass. The property tests compare the host path check and interpolation with small
oracles written from the rules, not from the code.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.engine.compose_graph import interpolate
from agent.fixes import compose_guard
from agent.fixes.compose_guard import (
    compose_effect,
    compose_refusals,
    is_compose_file,
    ports_of,
    repository_of,
)
from agent.fixes.refusal import Refusal

BASE: dict[str, Any] = {
    "services": {
        "web": {
            "image": "nginx:1.25",
            "user": "1000",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "ports": ["127.0.0.1:8080:80"],
            "volumes": ["data:/data", "./static:/static:ro"],
            "healthcheck": {"test": ["CMD", "true"], "interval": "10s"},
            "environment": {"DEBUG": "0"},
            "command": ["nginx", "-g", "daemon off;"],
        },
        "worker": {"build": "./worker", "image": "shop/worker"},
        "admin": {"image": "shop/admin", "privileged": True},
    },
    "volumes": {"data": {}},
}
BASE_TEXT = yaml.safe_dump(BASE, sort_keys=False)


def compose(
    web: Mapping[str, Any] | None = None,
    *,
    drop: tuple[str, ...] = (),
    services: Mapping[str, Any] | None = None,
    top: Mapping[str, Any] | None = None,
) -> str:
    """BASE with service web changed (keys in ``drop`` removed), services added or
    replaced, and top-level keys set."""
    config = copy.deepcopy(BASE)
    definition = config["services"]["web"]
    for key in drop:
        del definition[key]
    definition.update(web or {})
    config["services"].update(services or {})
    config.update(top or {})
    return yaml.safe_dump(config, sort_keys=False)


def judge(
    after: Mapping[str, str],
    *,
    before: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> list[Refusal]:
    """The refusals for turning ``before`` (default: compose.yml as BASE) into ``after``
    (files not named keep their content)."""
    old = dict(before if before is not None else {"compose.yml": BASE_TEXT})
    new = {**old, **after}
    edited = [p for p in new if old.get(p) != new[p]]
    return compose_refusals(
        edited,
        before=lambda p: old[p].encode() if p in old else None,
        after=lambda p: new[p].encode() if p in new else None,
        tracked=list(new),
        variables=variables if variables is not None else {},
    )


def codes(refusals: list[Refusal]) -> set[str]:
    return {r.code for r in refusals}


PRIVILEGED_SERVICE = "services:\n  evil:\n    image: shop/evil\n    privileged: true\n"

HOSTILE: list[tuple[str, dict[str, str], str]] = [
    ("privileged", {"compose.yml": compose({"privileged": True})}, "compose_privileged"),
    (
        "privileged through a default",
        {"compose.yml": compose({"privileged": "${PRIV:-true}"})},
        "compose_privileged",
    ),
    (
        "privileged through an alternative",
        {"compose.yml": compose({"privileged": "${DEBUG:+yes}"})},
        "compose_privileged",
    ),
    (
        "privileged through a merge key",
        {
            "compose.yml": "x-power: &power\n  privileged: true\n"
            + compose().replace("  web:\n", "  web:\n    <<: *power\n", 1)
        },
        "compose_privileged",
    ),
    ("unset variable", {"compose.yml": compose({"privileged": "${PRIV}"})}, "compose_unresolved"),
    ("required variable", {"compose.yml": compose({"image": "${IMG:?}"})}, "compose_unresolved"),
    ("a lone dollar", {"compose.yml": compose({"command": "echo $ 5"})}, "compose_unresolved"),
    (
        "a second document",
        {"compose.yml": compose() + "---\n" + PRIVILEGED_SERVICE},
        "compose_multi_document",
    ),
    ("not YAML", {"compose.yml": "services: [\n"}, "compose_unreadable"),
    (
        "an include that does not exist",
        {"compose.yml": compose(top={"include": ["missing.yml"]})},
        "compose_unreadable",
    ),
    (
        "privileged in an included file",
        {"compose.yml": compose(top={"include": ["extra.yml"]}), "extra.yml": PRIVILEGED_SERVICE},
        "compose_privileged",
    ),
    (
        "privileged in an include's long form",
        {
            "compose.yml": compose(top={"include": [{"path": ["extra/more.yml"]}]}),
            "extra/more.yml": PRIVILEGED_SERVICE,
        },
        "compose_privileged",
    ),
    (
        "an include outside the repository",
        {"compose.yml": compose(top={"include": ["../../other/compose.yml"]})},
        "compose_outside_project",
    ),
    (
        "an include through an absolute path",
        {"compose.yml": compose(top={"include": ["//etc/compose.yml"]})},
        "compose_outside_project",
    ),
    (
        "files that include each other",
        {
            "compose.yml": compose(top={"include": ["a.yml"]}),
            "a.yml": "include: [b.yml]\n",
            "b.yml": "include: [a.yml]\n",
        },
        "compose_unreadable",
    ),
    (
        "privileged from a file extended",
        {
            "compose.yml": compose({"extends": {"file": "base.yml", "service": "base"}}),
            "base.yml": "services:\n  base:\n    privileged: true\n",
        },
        "compose_privileged",
    ),
    (
        "an extended file outside the repository",
        {"compose.yml": compose({"extends": {"file": "/srv/other/compose.yml", "service": "x"}})},
        "compose_outside_project",
    ),
    (
        "a new service extending a privileged one",
        {"compose.yml": compose(services={"evil": {"extends": "admin"}})},
        "compose_privileged",
    ),
    (
        "a project folder's .env turning a default on",
        {
            "compose.yml": compose({"privileged": "${PRIV:-false}"}),
            ".env": "PRIV=true\n",
        },
        "compose_privileged",
    ),
    ("host network", {"compose.yml": compose({"network_mode": "host"})}, "compose_host_network"),
    (
        "another container's network",
        {"compose.yml": compose({"network_mode": "container:abc"})},
        "compose_host_network",
    ),
    (
        "a service that is not in the project",
        {"compose.yml": compose({"network_mode": "service:ghost"})},
        "compose_host_network",
    ),
    ("host pid", {"compose.yml": compose({"pid": "host"})}, "compose_host_pid"),
    ("host ipc", {"compose.yml": compose({"ipc": "host"})}, "compose_host_ipc"),
    ("host uts", {"compose.yml": compose({"uts": "host"})}, "compose_host_uts"),
    ("host cgroup", {"compose.yml": compose({"cgroup": "host"})}, "compose_host_cgroup"),
    ("host userns", {"compose.yml": compose({"userns_mode": "host"})}, "compose_host_userns"),
    ("a capability", {"compose.yml": compose({"cap_add": ["NET_ADMIN"]})}, "compose_cap_add"),
    ("cap_drop removed", {"compose.yml": compose(drop=("cap_drop",))}, "compose_cap_drop"),
    ("cap_drop narrowed", {"compose.yml": compose({"cap_drop": ["NET_RAW"]})}, "compose_cap_drop"),
    ("a device", {"compose.yml": compose({"devices": ["/dev/sda:/dev/sda"]})}, "compose_devices"),
    ("gpus", {"compose.yml": compose({"gpus": "all"})}, "compose_devices"),
    (
        "device cgroup rules",
        {"compose.yml": compose({"device_cgroup_rules": ["c 1:3 mr"]})},
        "compose_device_cgroup_rules",
    ),
    (
        "seccomp off",
        {
            "compose.yml": compose(
                {"security_opt": ["no-new-privileges:true", "seccomp=unconfined"]}
            )
        },
        "compose_security_opt",
    ),
    (
        "no-new-privileges removed",
        {"compose.yml": compose(drop=("security_opt",))},
        "compose_security_opt",
    ),
    ("read_only removed", {"compose.yml": compose(drop=("read_only",))}, "compose_read_only"),
    ("root", {"compose.yml": compose({"user": "root"})}, "compose_user_root"),
    ("uid 0", {"compose.yml": compose({"user": "0:0"})}, "compose_user_root"),
    ("user removed", {"compose.yml": compose(drop=("user",))}, "compose_user_root"),
    ("groups", {"compose.yml": compose({"group_add": ["docker"]})}, "compose_group_add"),
    ("sysctls", {"compose.yml": compose({"sysctls": ["kernel.shmmax=1"]})}, "compose_sysctls"),
    ("cgroup parent", {"compose.yml": compose({"cgroup_parent": "/"})}, "compose_cgroup_parent"),
    ("runtime", {"compose.yml": compose({"runtime": "runsc-debug"})}, "compose_runtime"),
    ("isolation", {"compose.yml": compose({"isolation": "process"})}, "compose_isolation"),
    (
        "no OOM kill",
        {"compose.yml": compose({"oom_kill_disable": "true"})},
        "compose_oom_kill_disable",
    ),
    (
        "another service's volumes",
        {"compose.yml": compose({"volumes_from": ["admin"]})},
        "compose_volumes_from",
    ),
    (
        "a relative climb out of the repository",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "../../..:/h"]})},
        "compose_host_path",
    ),
    (
        "a doubled slash",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "//etc:/h"]})},
        "compose_host_path",
    ),
    (
        "/etc",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "/etc:/e"]})},
        "compose_host_path",
    ),
    (
        "a home folder through a variable",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "${HOME}:/h"]})},
        "compose_host_path",
    ),
    (
        "/var, which holds /var/run",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "/var:/v"]})},
        "compose_socket",
    ),
    (
        "containerd's socket",
        {
            "compose.yml": compose(
                {"volumes": ["data:/data", "./static:/static:ro", "/run/containerd:/c"]}
            )
        },
        "compose_socket",
    ),
    (
        "podman's socket in the long syntax",
        {
            "compose.yml": compose(
                {
                    "volumes": [
                        "data:/data",
                        "./static:/static:ro",
                        {"type": "bind", "source": "/run/podman/podman.sock", "target": "/s"},
                    ]
                }
            )
        },
        "compose_socket",
    ),
    (
        "a socket file in the repository",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "./a.sock:/s"]})},
        "compose_socket",
    ),
    (
        "the docker socket",
        {
            "compose.yml": compose(
                {"volumes": ["data:/data", "./static:/static:ro", "/var/run/docker.sock:/d.sock"]}
            )
        },
        "compose_docker_socket",
    ),
    ("the API socket", {"compose.yml": compose({"use_api_socket": True})}, "compose_docker_socket"),
    (
        "the host's root",
        {"compose.yml": compose({"volumes": ["data:/data", "./static:/static:ro", "/:/host"]})},
        "compose_host_root",
    ),
    (
        "a named volume binding the host's root",
        {
            "compose.yml": compose(
                top={
                    "volumes": {
                        "data": {"driver_opts": {"type": "none", "o": "bind", "device": "/"}}
                    }
                }
            )
        },
        "compose_host_root",
    ),
    (
        "a new named volume binding /etc, mounted",
        {
            "compose.yml": compose(
                {"volumes": ["data:/data", "./static:/static:ro", "etc:/etc2"]},
                top={
                    "volumes": {
                        "data": {},
                        "etc": {"driver_opts": {"type": "none", "o": "bind", "device": "/etc"}},
                    }
                },
            )
        },
        "compose_host_path",
    ),
    (
        "a volume driver",
        {"compose.yml": compose(top={"volumes": {"data": {"driver": "rexray/ebs"}}})},
        "compose_volume_driver",
    ),
    (
        "another project's volume by name",
        {"compose.yml": compose(top={"volumes": {"data": {"external": True, "name": "prod_db"}}})},
        "compose_volume_driver",
    ),
    (
        "an env_file outside",
        {"compose.yml": compose({"env_file": ["/etc/environment"]})},
        "compose_outside_project",
    ),
    (
        "a secret read from outside",
        {
            "compose.yml": compose(
                {"secrets": ["key"]}, top={"secrets": {"key": {"file": "../../.ssh/id_rsa"}}}
            )
        },
        "compose_outside_project",
    ),
    (
        "a config read from .git",
        {"compose.yml": compose(top={"configs": {"c": {"file": "./.git/config"}}})},
        "compose_outside_project",
    ),
    (
        "port on every address",
        {"compose.yml": compose({"ports": ["80"]})},
        "compose_port_published",
    ),
    (
        "port 8080:80",
        {"compose.yml": compose({"ports": ["127.0.0.1:8080:80", "8081:81"]})},
        "compose_port_published",
    ),
    (
        "port in the long syntax",
        {
            "compose.yml": compose(
                {"ports": [{"target": 80, "published": 80, "host_ip": "0.0.0.0"}]}
            )
        },
        "compose_port_published",
    ),
    ("another image", {"compose.yml": compose({"image": "evil/nginx:1.25"})}, "compose_image"),
    (
        "another registry",
        {"compose.yml": compose({"image": "ghcr.io/library/nginx:1.25"})},
        "compose_image",
    ),
    (
        "pulled instead of built",
        {"compose.yml": compose(services={"worker": {"image": "shop/worker"}})},
        "compose_image",
    ),
    ("syslog", {"compose.yml": compose({"logging": {"driver": "syslog"}})}, "compose_logging"),
    (
        "a host build network",
        {
            "compose.yml": compose(
                services={"worker": {"build": {"context": "./worker", "network": "host"}}}
            )
        },
        "compose_build_network",
    ),
    (
        "a build context outside",
        {"compose.yml": compose(services={"worker": {"build": "../.."}})},
        "compose_build_context",
    ),
    (
        "the ssh agent in a build",
        {
            "compose.yml": compose(
                services={"worker": {"build": {"context": ".", "ssh": ["default"]}}}
            )
        },
        "compose_build_option",
    ),
    (
        "a volume dropped",
        {"compose.yml": compose({"volumes": ["./static:/static:ro"]})},
        "compose_volume_removed",
    ),
    (
        "a named volume dropped",
        {"compose.yml": compose(top={"volumes": {}})},
        "compose_volume_removed",
    ),
    (
        "a key compose does not know",
        {"compose.yml": compose({"net": "host"})},
        "compose_key_not_allowed",
    ),
    ("the project's name", {"compose.yml": compose(top={"name": "prod"})}, "compose_project_name"),
    (
        "a network that is the host's",
        {
            "compose.yml": compose(
                {"networks": ["outside"]},
                top={"networks": {"outside": {"external": True, "name": "host"}}},
            )
        },
        "compose_network",
    ),
    (
        "an override resetting cap_drop",
        {"compose.override.yml": "services:\n  web:\n    cap_drop: !reset []\n"},
        "compose_cap_drop",
    ),
]


@pytest.mark.parametrize(
    ("after", "code"), [(a, c) for _, a, c in HOSTILE], ids=[name for name, _, _ in HOSTILE]
)
def test_a_widening_compose_edit_is_refused_with_its_code(after: dict[str, str], code: str) -> None:
    found = judge(after, variables={"DEBUG": "1", "HOME": "/root"})

    assert code in codes(found), found


def test_there_are_enough_hostile_cases_for_every_class() -> None:
    assert len(HOSTILE) >= 35
    documented = {
        line.split()[0]
        for line in (compose_guard.__doc__ or "").splitlines()
        if line.strip().startswith("compose_")
    }
    assert len(documented) > 30
    assert documented - {c for _, _, c in HOSTILE} == set()


def test_an_edit_to_a_file_a_project_includes_checks_that_project() -> None:
    before = {"compose.yml": compose(top={"include": ["extra.yml"]}), "extra.yml": "services: {}\n"}

    found = judge({"extra.yml": PRIVILEGED_SERVICE}, before=before)

    assert codes(found) == {"compose_privileged"}
    assert found[0].message == "compose.yml: service evil would become privileged."


def test_a_path_in_an_included_file_is_relative_to_that_file() -> None:
    # app/../inc.yml is inc.yml: its ../x is outside the repository, not app/../x.
    before = {"app/compose.yml": "services: {}\n"}
    after = {
        "app/compose.yml": "include: [../inc.yml]\nservices: {}\n",
        "inc.yml": "services:\n  x:\n    image: a\n    volumes: ['../x:/x']\n",
    }

    assert "compose_host_path" in codes(judge(after, before=before))


def test_the_message_says_what_a_variable_resolved_to() -> None:
    found = judge({"compose.yml": compose({"privileged": "${PRIV:-true}"})})

    assert [r.message for r in found] == [
        "compose.yml: service web would become privileged "
        "(privileged: ${PRIV:-true} resolves to true)."
    ]


def test_names_in_messages_are_escaped() -> None:
    found = judge({"compose.yml": compose(services={"a\x1b[2Jb": {"privileged": True}})})

    assert found
    assert all("\x1b" not in r.message for r in found)


HARMLESS: list[tuple[str, dict[str, str]]] = [
    ("a tag bump", {"compose.yml": compose({"image": "nginx:1.27"})}),
    ("a digest", {"compose.yml": compose({"image": "nginx@sha256:" + "a" * 64})}),
    (
        "the same repository written out",
        {"compose.yml": compose({"image": "docker.io/library/nginx:1.26"})},
    ),
    ("a tag from a default", {"compose.yml": compose({"image": "nginx:${TAG:-1.27}"})}),
    (
        "a healthcheck",
        {"compose.yml": compose({"healthcheck": {"test": ["CMD", "true"], "interval": "5s"}})},
    ),
    ("an environment value", {"compose.yml": compose({"environment": {"DEBUG": "1"}})}),
    (
        "a command",
        {"compose.yml": compose({"command": ["nginx", "-g", "daemon off; worker_processes 2;"]})},
    ),
    ("a literal dollar", {"compose.yml": compose({"command": "echo $$HOME"})}),
    ("a plain new service", {"compose.yml": compose(services={"cache": {"image": "redis:7"}})}),
    (
        "a port on loopback",
        {"compose.yml": compose({"ports": ["127.0.0.1:8080:80", "127.0.0.1:9090:90"]})},
    ),
    ("a port on ::1", {"compose.yml": compose({"ports": ["127.0.0.1:8080:80", "[::1]:8081:81"]})}),
    (
        "cap_drop added",
        {
            "compose.yml": compose(
                services={
                    "worker": {"build": "./worker", "image": "shop/worker", "cap_drop": ["ALL"]}
                }
            )
        },
    ),
    (
        "read_only added",
        {
            "compose.yml": compose(
                services={
                    "worker": {"build": "./worker", "image": "shop/worker", "read_only": True}
                }
            )
        },
    ),
    (
        "no-new-privileges added",
        {
            "compose.yml": compose(
                services={
                    "worker": {
                        "build": "./worker",
                        "image": "shop/worker",
                        "security_opt": ["no-new-privileges=true"],
                    }
                }
            )
        },
    ),
    ("extra hosts", {"compose.yml": compose({"extra_hosts": ["db:10.0.0.2"]})}),
    (
        "a bind mount inside the repository",
        {
            "compose.yml": compose(
                {"volumes": ["data:/data", "./static:/static:ro", "./logs:/logs"]}
            )
        },
    ),
    (
        "a sidecar on the web's network",
        {
            "compose.yml": compose(
                services={"side": {"image": "busybox", "network_mode": "service:web"}}
            )
        },
    ),
    (
        "a harmless include",
        {
            "compose.yml": compose(top={"include": ["cache.yml"]}),
            "cache.yml": "services:\n  cache:\n    image: redis:7\n",
        },
    ),
]


@pytest.mark.parametrize(("after"), [a for _, a in HARMLESS], ids=[name for name, _ in HARMLESS])
def test_a_harmless_compose_edit_passes(after: dict[str, str]) -> None:
    assert judge(after) == []


def test_an_edit_elsewhere_does_not_judge_compose_files() -> None:
    # The project needs a variable medic does not have; it is not what the fix touches.
    before = {"compose.yml": compose({"image": "nginx:${TAG}"}), "README.md": "# x\n"}

    assert judge({"README.md": "# y\n"}, before=before) == []


def test_an_unset_variable_the_base_commit_already_had_is_still_refused() -> None:
    before = {"compose.yml": compose({"image": "nginx:${TAG}"})}

    found = judge(
        {"compose.yml": compose({"image": "nginx:${TAG}", "command": "x"})}, before=before
    )

    assert codes(found) == {"compose_unresolved"}
    assert "TAG is not set" in found[0].message


def test_the_one_file_form_still_judges_one_file() -> None:
    before = b"services:\n  a:\n    privileged: true\n    image: x\n"
    after = b"services:\n  a:\n    privileged: true\n    image: x\n  b:\n    pid: host\n"

    assert codes(compose_refusals("compose.yaml", before, after)) == {"compose_host_pid"}


def test_compose_files_are_recognised_by_name() -> None:
    assert is_compose_file("deploy/docker-compose.prod.yml")
    assert is_compose_file("compose.override.yaml")
    assert not is_compose_file("config/app.yaml")


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.25", "docker.io/library/nginx"),
        ("library/nginx@sha256:abc", "docker.io/library/nginx"),
        ("index.docker.io/library/nginx:1", "docker.io/library/nginx"),
        ("ghcr.io/owner/app:2", "ghcr.io/owner/app"),
        ("localhost:5000/app:2", "localhost:5000/app"),
    ],
)
def test_an_image_is_compared_by_registry_and_repository(image: str, repository: str) -> None:
    assert repository_of(image) == repository


@pytest.mark.parametrize(
    ("entry", "shown"),
    [
        ("80", "80/tcp"),
        ("8080:80", "8080:80/tcp"),
        ("127.0.0.1:8080:80/udp", "127.0.0.1:8080:80/udp"),
        ("[::1]:8080:80", "[::1]:8080:80/tcp"),
        ({"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, "127.0.0.1:8080:80/tcp"),
    ],
)
def test_ports_are_read_in_every_syntax(entry: object, shown: str) -> None:
    assert [str(p) for p in ports_of([entry])] == [shown]


# --- what a person sees --------------------------------------------------------------------


def effect(after: Mapping[str, str]) -> tuple[str, ...]:
    old = {"compose.yml": BASE_TEXT, "README.md": "# x\n"}
    new = {**old, **after}
    return compose_effect(
        [p for p in new if old.get(p) != new[p]],
        before=lambda p: old[p].encode() if p in old else None,
        after=lambda p: new[p].encode() if p in new else None,
        tracked=list(new),
        variables={"SECRET": "hunter2"},
    )


def test_the_effect_lists_resolved_differences() -> None:
    lines = effect(
        {
            "compose.yml": compose(
                {
                    "image": "nginx:${TAG:-1.27}",
                    "ports": ["127.0.0.1:8080:80", "127.0.0.1:9090:90"],
                    "environment": {"DEBUG": "0", "TOKEN": "${SECRET}"},
                }
            )
        }
    )

    assert lines == (
        "service web: environment.TOKEN set",
        "service web: image nginx:1.25 -> nginx:1.27",
        "service web: ports + 127.0.0.1:9090:90/tcp",
    )


def test_the_effect_is_empty_when_no_compose_project_is_touched() -> None:
    assert effect({"README.md": "# y\n"}) == ()


def test_the_effect_names_a_new_service() -> None:
    assert effect({"compose.yml": compose(services={"cache": {"image": "redis:7"}})}) == (
        "service cache: added",
        "service cache: image (unset) -> redis:7",
    )


# --- properties ----------------------------------------------------------------------------

PIECES = st.lists(st.sampled_from(["..", ".", "", "a", "b", "/", "//"]), min_size=1, max_size=8)
FOLDERS = st.sampled_from(["", "app", "app/sub"])


def outside_by_oracle(folder: str, source: str) -> bool:
    """The rule, written plainly: absolute is outside; otherwise resolve against the
    project folder and see whether it climbs above the repository."""
    if source.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(folder or ".", source))
    return resolved == ".." or resolved.startswith("../")


@settings(max_examples=300, deadline=None)
@given(pieces=PIECES, folder=FOLDERS, short=st.booleans())
def test_a_bind_mount_is_refused_exactly_when_it_leaves_the_repository(
    pieces: list[str], folder: str, short: bool
) -> None:
    source = "/".join(pieces)
    assume(source.strip("/") != "" or source.startswith("/"))
    if short:
        # The short syntax reads a source as a path when it starts with . or /.
        assume(source.startswith((".", "/")))
        mount: object = f"{source}:/mnt"
    else:
        mount = {"type": "bind", "source": source, "target": "/mnt"}
    root = posixpath.join(folder, "compose.yml")
    text = yaml.safe_dump({"services": {"app": {"image": "a", "volumes": [mount]}}})

    found = judge({root: text}, before={})

    refused = codes(found) & {"compose_host_path", "compose_host_root", "compose_socket"}
    assert bool(refused) == outside_by_oracle(folder, source), (source, found)


NAMES = st.sampled_from(["A", "B", "C_1"])
SAFE_TEXT = st.text(alphabet="abc-_./:= 0", max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    name=NAMES,
    value=st.one_of(st.none(), st.just(""), SAFE_TEXT),
    op=st.sampled_from([":-", "-"]),
    default=SAFE_TEXT,
    strict=st.booleans(),
)
def test_a_default_is_used_exactly_as_compose_says(
    name: str, value: str | None, op: str, default: str, strict: bool
) -> None:
    variables = {} if value is None else {name: value}
    if op == ":-":
        expected = value if value else default
    else:
        expected = value if value is not None else default

    assert interpolate(f"${{{name}{op}{default}}}", variables, strict=strict) == expected
