"""A failure captured live on the real engine, gathered through the real gateway, diagnosed."""

from __future__ import annotations

from typing import Any

import pytest
from escalate_support import incident_for
from fixtures.escalate.capture import BUSYBOX, Run, wait_exit

from agent.docker_gateway import DockerSDKGateway
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
            "echo starting; mkdir -p /var/run/app"
        )
        container = run.container(
            "app",
            BUSYBOX,
            ["sh", "-c", script],
            read_only=True,
            environment={"DB_PASSWORD": "Tr0ub4dor&3-horse"},
        )
        wait_exit(container)
        gateway = DockerSDKGateway(docker_client)
        case = gather(incident=incident_for(container.attrs), source=gateway, store=MemoryStore())
    finally:
        run.cleanup()
    result = diagnose(case)
    assert result.rule_id == "read_only_filesystem"
    assert "Read-only root filesystem: true" in result.evidence
    assert len(case.logs) == 200
    # stdout and stderr reach the log through two pipes, so the error may land just
    # before the last line written to stdout.
    assert any(line.endswith("Read-only file system") for line in case.logs[-2:])
    assert "Tr0ub4dor&3-horse" not in case.render()
    assert case.services == ()  # the only container of its project
