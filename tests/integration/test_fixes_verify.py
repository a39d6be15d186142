"""Verification of a fix branch on the real engine: nothing of the fix runs on the host.

The candidate image is built from a tar of the fix commit's git objects, with no
network and a time limit; MEDIC_VERIFY_CMD runs in a throwaway sandbox container with
a copy of the tree; the candidate runs for a while to say whether it heals the
failure; approving or rejecting removes the candidate image. Every test removes what
it made, and checks that no sandbox container is left.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from fakes import FakeClock
from fixrepo import FIX_NOW, Repo, diagnosis, incident, make_repo, store_with

from agent.engine.compose import CONFIG_FILES_LABEL, WORKING_DIR_LABEL
from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.gateway import SANDBOX_LABEL
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions, make_fix
from agent.fixes.review import approve, reject
from agent.fixes.verify import FIX_LABEL, candidate_tag
from agent.model import Edit, Fix, FixId, FixStatus, Signal

pytestmark = pytest.mark.docker

OPTIONS = FixOptions(policy=Policy(), author=Person("medic", "medic@localhost"), verify_settle=0)
TYPO = Edit("web/app.py", 'int("8080")', "int('8080')")
PYTHON_IMAGE = "medic-test/bookworm-python"


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path)


@dataclass
class Candidates:
    """Candidate tags a test may make; removed afterwards, with a check that no
    sandbox container is left on the engine."""

    client: Any
    tags: list[str]

    def new(self, service: str = "web") -> tuple[FixId, str]:
        fix_id = FixId(uuid.uuid4().hex)
        tag = candidate_tag(service, fix_id)
        self.tags.append(tag)
        return fix_id, tag

    def exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
        except docker.errors.ImageNotFound:
            return False
        return True


@pytest.fixture
def candidates(docker_client: Any, busybox_image: str) -> Iterator[Candidates]:
    made = Candidates(docker_client, [])
    try:
        yield made
    finally:
        left = []
        for tag in made.tags:
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(tag, force=True)
            # Only this test's sandboxes: other runs may share the engine.
            mine = {"label": [f"{SANDBOX_LABEL}=true", f"{FIX_LABEL}={tag}"]}
            left.extend(docker_client.containers.list(all=True, filters=mine))
        for container in left:
            container.remove(force=True)
        assert left == [], "a sandbox container was left behind"


def labels_of(repo: Repo) -> dict[str, str]:
    return {WORKING_DIR_LABEL: str(repo.path), CONFIG_FILES_LABEL: "compose.yaml"}


def propose(repo: Repo, options: FixOptions, *edits: Edit, **kwargs: Any) -> Fix:
    """``make_fix``; pass ``fix_id`` from ``Candidates.new`` so that what it leaves is found."""
    return make_fix(
        diagnosis(*(edits or (TYPO,))),
        kwargs.pop("incident", incident()),
        git=Git(repo.path),
        options=options,
        clock=FakeClock(FIX_NOW),
        **kwargs,
    )


def bridge_gateway(client: Any) -> str:
    """The host's address on the engine's default bridge: what a container with a
    network reaches the host at (its default route)."""
    route = client.containers.run(
        "medic-test/busybox", ["ip", "route"], remove=True, labels={"medic.test": "fixes"}
    )
    for line in route.decode().splitlines():
        if line.startswith("default via "):
            return str(line.split()[2])
    raise AssertionError(f"no default route in a bridged container: {route!r}")


@contextlib.contextmanager
def listener() -> Iterator[tuple[int, list[str]]]:
    """A TCP port on every host address; records who connected."""
    server = socket.create_server(("0.0.0.0", 0))
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, address = server.accept()
            except OSError:
                continue
            seen.append(address[0])
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nreached\n")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


# --- MEDIC_VERIFY_CMD in a sandbox ------------------------------------------------------------

ATTACK = """import os, socket
marker = open("web/marker.txt").read().strip()
try:
    open(marker, "w").write("escaped")
    print("wrote the marker")
except OSError as e:
    print("host write failed:", e.strerror)
for host in ("{gateway}", "127.0.0.1"):
    try:
        socket.create_connection((host, {port}), timeout=3).close()
        print("reached", host)
    except OSError as e:
        print("network to", host, "failed:", e.strerror or e)
if os.path.exists("/var/run/docker.sock"):
    print("docker socket present")
else:
    print("docker socket absent")
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect("/var/run/docker.sock")
    print("docker socket reached")
except OSError as e:
    print("docker socket failed:", e.strerror)
print("uid", os.getuid(), "gid", os.getgid())
open("written-in-the-copy.txt", "w").write("ok")
print("workspace writable")
"""


def test_a_hostile_test_file_cannot_write_to_the_host_reach_the_network_or_the_socket(
    repo: Repo,
    tmp_path: Path,
    gateway: DockerSDKGateway,
    docker_client: Any,
    candidates: Candidates,
) -> None:
    marker = tmp_path / "host-marker"
    repo.write("web/check.py", 'print("ok")\n')
    repo.write("web/marker.txt", f"{marker}\n")
    repo.commit_all("A check the verify command runs")
    with listener() as (port, seen):
        attack = ATTACK.format(gateway=bridge_gateway(docker_client), port=port)
        options = replace(OPTIONS, verify_cmd="python3 web/check.py", verify_image=PYTHON_IMAGE)
        fix = propose(
            repo,
            options,
            Edit("web/check.py", 'print("ok")\n', attack),
            gateway=gateway,
            fix_id=candidates.new()[0],
        )
    verification = fix.verification
    assert verification is not None
    output = verification.output
    assert verification.exit_status == 0, output
    assert verification.command_image == PYTHON_IMAGE
    assert not marker.exists()
    assert "host write failed: No such file or directory" in output
    assert "network to 127.0.0.1 failed" in output
    assert f"network to {bridge_gateway(docker_client)} failed" in output
    assert "reached" not in output.replace("docker socket reached", "")
    assert seen == []
    assert "docker socket absent" in output
    assert "docker socket failed: No such file or directory" in output
    assert "uid 65534 gid 65534" in output
    assert "workspace writable" in output
    # The copy was written to, the repository was not.
    assert not (repo.path / "written-in-the-copy.txt").exists()


def test_the_verify_command_runs_on_a_copy_of_the_branch_and_its_status_is_recorded(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates, busybox_image: str
) -> None:
    check = """sh -c "grep -q \\"int('8080')\\" web/app.py && echo fixed && pwd" """
    fix = propose(
        repo,
        replace(OPTIONS, verify_cmd=check, verify_image=busybox_image),
        gateway=gateway,
        fix_id=candidates.new()[0],
    )
    assert fix.verification is not None
    assert fix.verification.exit_status == 0, fix.verification
    assert fix.verification.output.splitlines() == ["fixed", "/workspace"]
    assert fix.verification.ok
    assert repo.git("worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_failing_verify_command_is_recorded_and_the_branch_stays(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates, busybox_image: str
) -> None:
    options = replace(
        OPTIONS, verify_cmd="sh -c 'echo broken >&2; exit 3'", verify_image=busybox_image
    )
    fix = propose(repo, options, gateway=gateway, fix_id=candidates.new()[0])
    assert fix.status is FixStatus.PROPOSED
    assert fix.verification is not None
    assert fix.verification.exit_status == 3
    assert fix.verification.output == "broken"
    assert not fix.verification.ok
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit


def test_a_verify_command_that_runs_too_long_is_killed_and_its_container_removed(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates, busybox_image: str
) -> None:
    options = replace(
        OPTIONS,
        verify_cmd="sh -c 'echo started; sleep 30'",
        verify_image=busybox_image,
        verify_timeout=1,
    )
    started = time.monotonic()
    fix = propose(repo, options, gateway=gateway, fix_id=candidates.new()[0])
    assert time.monotonic() - started < 15
    assert fix.verification is not None
    assert fix.verification.exit_status is None
    assert fix.verification.error == "MEDIC_VERIFY_CMD did not finish within 1 s and was stopped"
    assert fix.verification.output == "started"
    # The candidates fixture checks that no sandbox container is left.


def test_a_verify_command_that_cannot_start_is_recorded(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates, busybox_image: str
) -> None:
    options = replace(OPTIONS, verify_cmd="no-such-program-here --x", verify_image=busybox_image)
    fix = propose(repo, options, gateway=gateway, fix_id=candidates.new()[0])
    assert fix.verification is not None
    assert fix.verification.error is not None
    assert "MEDIC_VERIFY_CMD could not run" in fix.verification.error
    assert "no-such-program-here" in fix.verification.error
    assert not fix.verification.ok


def test_without_an_engine_the_verify_command_is_not_run_anywhere(
    repo: Repo, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    fix = propose(repo, replace(OPTIONS, verify_cmd=f"touch {marker}"))
    assert fix.verification is not None
    assert fix.verification.error is not None
    assert "runs only in a sandbox container" in fix.verification.error
    assert not marker.exists()


# --- the candidate build ------------------------------------------------------------------------


def test_the_candidate_is_built_from_the_branch_without_a_worktree(
    repo: Repo, gateway: DockerSDKGateway, docker_client: Any, candidates: Candidates
) -> None:
    fix_id, tag = candidates.new()
    fix = propose(repo, OPTIONS, gateway=gateway, labels=labels_of(repo), fix_id=fix_id)
    verification = fix.verification
    assert verification is not None
    assert verification.built is True, verification.build_log
    assert verification.image == tag
    image = docker_client.images.get(tag)
    assert image.labels.get("medic.candidate") == "true"
    # The candidate holds the branch's file, not the working tree's.
    output = docker_client.containers.run(
        image.id, ["cat", "/app/app.py"], remove=True, labels={"medic.test": "fixes"}
    )
    assert b"int('8080')" in output
    assert repo.git("worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_broken_build_is_recorded_with_its_log_and_the_branch_stays(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    repo.write("web/Dockerfile", "FROM medic-test/busybox:latest\nCOPY missing.py /app/app.py\n")
    repo.commit_all("A Dockerfile that does not build")
    fix_id, _ = candidates.new()
    fix = propose(repo, OPTIONS, gateway=gateway, labels=labels_of(repo), fix_id=fix_id)
    assert fix.verification is not None
    assert fix.verification.built is False
    assert fix.verification.image is None
    assert "missing.py" in fix.verification.build_log
    assert repo.git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit


def test_a_build_step_cannot_reach_the_network_unless_the_operator_names_one(
    repo: Repo, gateway: DockerSDKGateway, docker_client: Any, candidates: Candidates
) -> None:
    with listener() as (port, seen):
        host = bridge_gateway(docker_client)
        repo.write(
            "web/Dockerfile",
            "FROM medic-test/busybox:latest\n"
            f"RUN nc -w 3 {host} {port} </dev/null && echo REACHED-THE-HOST\n",
        )
        repo.commit_all("A build step that downloads")
        fix_id, _ = candidates.new()
        fix = propose(repo, OPTIONS, gateway=gateway, labels=labels_of(repo), fix_id=fix_id)
        assert fix.verification is not None
        assert fix.verification.built is False
        assert "REACHED-THE-HOST" not in fix.verification.build_log.splitlines()
        assert seen == []
        # The same build with the network the operator names does reach the host, so
        # the failure above is the sandbox's doing.
        fix_id, _ = candidates.new()
        opened = replace(OPTIONS, verify_build_network="bridge")
        fix = make_fix(
            diagnosis(TYPO),
            incident(incident_id="1123456789abcdef0123456789abcdef"),
            git=Git(repo.path),
            options=opened,
            clock=FakeClock(FIX_NOW),
            gateway=gateway,
            labels=labels_of(repo),
            fix_id=fix_id,
        )
        assert fix.verification is not None
        assert fix.verification.built is True, fix.verification.build_log
        assert seen != []


def test_a_build_past_its_time_limit_is_stopped_and_recorded(
    repo: Repo, gateway: DockerSDKGateway, docker_client: Any, candidates: Candidates
) -> None:
    step = f"sleep 41 # {uuid.uuid4().hex}"
    repo.write("web/Dockerfile", f"FROM medic-test/busybox:latest\nRUN {step}\n")
    repo.commit_all("A build that takes long")
    fix_id, _ = candidates.new()
    started = time.monotonic()
    fix = propose(
        repo,
        replace(OPTIONS, verify_build_timeout=2),
        gateway=gateway,
        labels=labels_of(repo),
        fix_id=fix_id,
    )
    assert time.monotonic() - started < 15
    assert fix.verification is not None
    assert fix.verification.built is False
    assert "the build did not finish within 2 s and was stopped" in fix.verification.build_log

    def build_containers() -> list[Any]:
        found = docker_client.containers.list(all=True)
        return [c for c in found if step in " ".join(c.attrs.get("Config", {}).get("Cmd") or [])]

    deadline = time.monotonic() + 10
    while build_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert build_containers() == [], "the engine kept running the stopped build"


# --- does the candidate heal the failure? --------------------------------------------------------

HEALING_COMPOSE = """services:
  web:
    build: ./web
    environment:
      GREETING: hello
      API_TOKEN: s3cret-value-123
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"]
      interval: 500ms
      timeout: 2s
      retries: 3
"""

HEALING_DOCKERFILE = """FROM medic-test/busybox:latest
COPY run.sh /app/run.sh
COPY index.html /app/index.html
CMD ["sh", "/app/run.sh"]
"""

BROKEN_RUN = """echo "starting with greeting=$GREETING and the token ${API_TOKEN:-unset}"
echo "error: config missing: PORT" >&2
exit 3
"""


@pytest.fixture
def failing_service(repo: Repo) -> Repo:
    """A service whose start script exits 3: the incident is a crash loop."""
    repo.write("compose.yaml", HEALING_COMPOSE)
    repo.write("web/Dockerfile", HEALING_DOCKERFILE)
    repo.write("web/index.html", "up\n")
    repo.write("web/run.sh", BROKEN_RUN)
    repo.commit_all("A service that exits at start")
    return repo


def test_a_fix_that_makes_the_service_start_passes_the_healing_check(
    failing_service: Repo, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    fix_id, _ = candidates.new()
    edit = Edit(
        "web/run.sh",
        'echo "error: config missing: PORT" >&2\nexit 3\n',
        "exec httpd -f -p 8080 -h /app\n",
    )
    options = replace(OPTIONS, verify_settle=3)
    fix = propose(
        failing_service,
        options,
        edit,
        gateway=gateway,
        labels=labels_of(failing_service),
        fix_id=fix_id,
    )
    verification = fix.verification
    assert verification is not None
    assert verification.built is True, verification.build_log
    assert verification.healing == "starts and passes its health check in a sandbox"
    assert verification.healing_ok is True
    assert verification.ok
    assert "greeting=hello" in verification.healing_log
    # A variable whose name looks secret never reaches the sandbox.
    assert "the token unset" in verification.healing_log
    assert "s3cret" not in verification.healing_log


def test_a_fix_that_does_not_make_the_service_start_says_how_it_still_fails(
    failing_service: Repo, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    fix_id, _ = candidates.new()
    edit = Edit("web/run.sh", "greeting=$GREETING and", "greeting=${GREETING} and")
    fix = propose(
        failing_service,
        replace(OPTIONS, verify_settle=3),
        edit,
        gateway=gateway,
        labels=labels_of(failing_service),
        fix_id=fix_id,
    )
    verification = fix.verification
    assert verification is not None
    assert verification.built is True, verification.build_log
    assert verification.healing == "still fails: error: config missing: PORT"
    assert verification.healing_ok is False
    assert not verification.ok


def test_no_healing_check_for_a_failure_that_does_not_show_at_start(
    failing_service: Repo, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    fix_id, _ = candidates.new()
    edit = Edit("web/run.sh", "greeting=$GREETING and", "greeting=${GREETING} and")
    fix = propose(
        failing_service,
        replace(OPTIONS, verify_settle=3),
        edit,
        gateway=gateway,
        labels=labels_of(failing_service),
        fix_id=fix_id,
        incident=replace(incident(), signal=Signal.LOG_MATCH),
    )
    assert fix.verification is not None
    assert fix.verification.built is True
    assert fix.verification.healing is None and fix.verification.healing_ok is None


# --- after the decision --------------------------------------------------------------------------


def test_approving_pushes_the_branch_then_and_removes_the_candidate_image(
    repo: Repo, tmp_path: Path, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    bare = tmp_path / "remote.git"
    Repo(tmp_path).git("init", "-q", "--bare", str(bare))
    repo.git("remote", "add", "review", str(bare))
    fix_id, tag = candidates.new()
    options = replace(OPTIONS, remote="review")
    fix = propose(repo, options, gateway=gateway, labels=labels_of(repo), fix_id=fix_id)
    assert fix.pushed_to is None and fix.push_error is None
    assert Repo(bare).git("branch", "--list").strip() == ""
    assert candidates.exists(tag)
    store = store_with(fix)
    approval = approve(
        fix.id,
        store=store,
        git=Git(repo.path),
        author=options.author,
        clock=FakeClock(FIX_NOW),
        by="ada",
        remote="review",
        gateway=gateway,
    )
    assert approval.fix.pushed_to == "review"
    assert store.get_fix(fix.id).pushed_to == "review"
    assert Repo(bare).git("rev-parse", f"refs/heads/{fix.branch}").strip() == fix.commit
    assert not candidates.exists(tag)


def test_rejecting_removes_the_candidate_image(
    repo: Repo, gateway: DockerSDKGateway, candidates: Candidates
) -> None:
    fix_id, tag = candidates.new()
    fix = propose(repo, OPTIONS, gateway=gateway, labels=labels_of(repo), fix_id=fix_id)
    assert candidates.exists(tag)
    store = store_with(fix)
    reject(
        fix.id,
        store=store,
        git=Git(repo.path),
        reason="wrong port",
        clock=FakeClock(FIX_NOW),
        by="ada",
        gateway=gateway,
    )
    assert not candidates.exists(tag)
    assert gateway.remove_image(tag) is False
