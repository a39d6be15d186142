"""A failure captured live on the real engine, gathered through the real gateway, diagnosed."""

from __future__ import annotations

from typing import Any

import pytest
from escalate_support import incident_for
from fixtures.escalate.capture import BUSYBOX, Run, wait_exit
from helpers import wait_for

from agent.engine.docker_sdk import DockerSDKGateway
from agent.escalate.gather import gather
from agent.escalate.rules import diagnose
from agent.store.memory import MemoryStore

pytestmark = pytest.mark.docker


def test_a_read_only_root_filesystem_is_gathered_and_diagnosed_live(
    docker_client: Any, busybox_image: str
) -> None:
    run = Run(docker_client)
    try:
        # Plenty of log lines before the failure: only the tail may be read.
        script = (
            "i=0; while [ $i -lt 500 ]; do echo request $i served; i=$((i+1)); done; "
            # One stream, so the order of the lines is the order they were written.
            "echo starting; mkdir -p /var/run/app 2>&1"
        )
        container = run.container(
            "app",
            BUSYBOX,
            ["sh", "-c", script],
            read_only=True,
            environment={"DB_PASSWORD": "Tr0ub4dor&3-horse"},
        )
        wait_exit(container)
        # The engine copies the log a moment after the process wrote it.
        wait_for(
            lambda: b"Read-only file system" in container.logs(tail=3),
            timeout=10,
            message="the error in the container's log",
        )
        gateway = DockerSDKGateway(docker_client)
        case = gather(incident=incident_for(container.attrs), source=gateway, store=MemoryStore())
    finally:
        run.cleanup()
    result = diagnose(case)
    assert result.rule_id == "read_only_filesystem"
    assert "Read-only root filesystem: true" in result.evidence
    assert len(case.logs) == 200
    assert case.logs[-1].endswith("Read-only file system")
    assert "Tr0ub4dor&3-horse" not in case.render()
    assert case.services == ()  # the only container of its project
    # The platforms come from the image's inspect and `docker version`, in one naming.
    assert case.engine_platform.startswith("linux/")
    assert case.image_platform == case.engine_platform
    assert f"Engine platform: {case.engine_platform}" in case.render()
