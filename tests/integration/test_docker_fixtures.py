"""The Docker fixtures do what the integration tests rely on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from helpers import (
    COMPOSE_NUMBER,
    COMPOSE_ONEOFF,
    COMPOSE_PROJECT,
    COMPOSE_SERVICE,
    ComposeProject,
    health_status,
    healthcheck,
    wait_for,
)

SLEEP = ["sleep", "300"]
CONFTEST = Path(__file__).parent.parent / "conftest.py"


def test_run_starts_a_container_labelled_like_compose(compose_project: ComposeProject) -> None:
    container = compose_project.run("web", command=SLEEP, labels={"medic.playbook": "web"})

    assert compose_project.name.startswith("medictest-")
    assert container.name == f"{compose_project.name}-web-1"
    assert container.status == "running"
    assert container.labels[COMPOSE_PROJECT] == compose_project.name
    assert container.labels[COMPOSE_SERVICE] == "web"
    assert container.labels[COMPOSE_NUMBER] == "1"
    assert container.labels[COMPOSE_ONEOFF] == "False"
    assert container.labels["medic.playbook"] == "web"


def test_run_passes_project_name_and_docker_options(compose_project: ComposeProject) -> None:
    other = f"{compose_project.name}-other"
    container = compose_project.run(
        "worker",
        command=SLEEP,
        project=other,
        name=f"{other}-custom",
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        stop_signal="SIGINT",
        stop_timeout=1,
        environment={"GREETING": "hello"},
    )

    config = container.attrs["Config"]
    assert container.name == f"{other}-custom"
    assert container.labels[COMPOSE_PROJECT] == other
    assert container.attrs["HostConfig"]["RestartPolicy"] == {
        "Name": "on-failure",
        "MaximumRetryCount": 3,
    }
    assert config["StopSignal"] == "SIGINT"
    assert config["StopTimeout"] == 1
    assert "GREETING=hello" in config["Env"]


def test_failing_healthcheck_makes_the_container_unhealthy(
    compose_project: ComposeProject,
) -> None:
    failing = healthcheck("exit 1", interval=0.5)
    passing = healthcheck("true", interval=0.5)
    sick = compose_project.run("db", command=SLEEP, healthcheck=failing)
    well = compose_project.run("cache", command=SLEEP, healthcheck=passing)

    wait_for(lambda: health_status(sick) == "unhealthy", timeout=10, message="db unhealthy")
    wait_for(lambda: health_status(well) == "healthy", timeout=10, message="cache healthy")


def test_healthcheck_converts_seconds_to_nanoseconds() -> None:
    assert healthcheck("true", interval=0.5, retries=3, timeout=2, start_period=1.5) == {
        "test": ["CMD-SHELL", "true"],
        "interval": 500_000_000,
        "timeout": 2_000_000_000,
        "retries": 3,
        "start_period": 1_500_000_000,
    }


def test_wait_for_returns_the_value_or_times_out() -> None:
    assert wait_for(lambda: 42, timeout=1) == 42
    with pytest.raises(AssertionError, match=r"timed out after 0\.3 s waiting for nothing"):
        wait_for(lambda: None, timeout=0.3, interval=0.05, message="nothing")


def test_cleanup_removes_every_container_of_the_project(
    docker_client: Any, busybox_image: str
) -> None:
    project = ComposeProject(docker_client, busybox_image)
    try:
        made = [
            project.run("web", command=SLEEP),
            project.run("db", command=["sh", "-c", "exit 3"]),
            project.run("gone", command=SLEEP),
        ]
        made[2].remove(force=True)
        # Made outside run(), as a recreate by the code under test would be.
        stray = docker_client.containers.create(
            busybox_image,
            SLEEP,
            name=f"{project.name}-web-2",
            labels={COMPOSE_PROJECT: project.name, COMPOSE_SERVICE: "web"},
        )
        assert len(project.project_containers()) == 3

        project.cleanup()

        assert project.project_containers() == []
        for container in [*made, stray]:
            with pytest.raises(docker.errors.NotFound):
                docker_client.containers.get(container.id)
        project.cleanup()  # a second call finds nothing and does not fail
    finally:
        project.cleanup()


def test_fixture_removes_containers_even_when_the_test_fails(
    pytester: pytest.Pytester, docker_client: Any
) -> None:
    run_id = uuid.uuid4().hex
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(
        f"""
        def test_fails(compose_project):
            container = compose_project.run(
                "web", command=["sleep", "300"], labels={{"medic.test.run": "{run_id}"}}
            )
            assert container.status == "running"
            assert False, "fails on purpose"
        """
    )

    result = pytester.runpytest_inprocess()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fails on purpose*"])
    left = docker_client.containers.list(all=True, filters={"label": f"medic.test.run={run_id}"})
    assert left == []
