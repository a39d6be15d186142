"""A medic's identity names the Docker engine it watches, as the engine itself says."""

from __future__ import annotations

from typing import Any

from agent.engine.docker_sdk import DockerSDKGateway
from agent.store.base import Identity


def test_the_engine_id_is_docker_infos_id(docker_client: Any) -> None:
    gateway = DockerSDKGateway.from_env()
    try:
        engine = gateway.engine_id()
    finally:
        gateway.close()
    assert engine == docker_client.info()["ID"]
    assert Identity(engine, "shop").scope == f"project=shop@{engine}"
