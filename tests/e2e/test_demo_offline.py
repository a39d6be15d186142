"""``scripts/demo up`` on a machine that cannot reach a container registry.

Without ``--local`` the demo needs python:3.11-slim, busybox and postgres from a
registry. ``up`` first looks for each image here and tries to pull it; the first
that is neither makes it say so in one line and build every image here instead, as
``--local`` does. These tests run that check against the real engine, and build the
demo repository's own service from the base that is here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from helpers import BUSYBOX_IMAGE

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


def unreachable_image(**images: str) -> str:
    """What scripts/demo's check says, with these image variables set."""
    done = subprocess.run(
        ["bash", "-c", "source scripts/demo && unreachable_image"],
        cwd=ROOT,
        env={**os.environ, **images},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_images_that_are_here_need_no_registry(busybox_image: str, docker_client: Any) -> None:
    docker_client.images.get("medic-test/postgres:15")
    docker_client.images.get("medic-test/bookworm-python:latest")

    assert (
        unreachable_image(
            BASE_IMAGE="medic-test/bookworm-python:latest",
            DEMO_IMAGE=busybox_image,
            MEDIC_POSTGRES_IMAGE="medic-test/postgres:15",
        )
        == ""
    )


def test_an_image_neither_here_nor_pullable_is_named(busybox_image: str) -> None:
    missing = "medic-test/never-built:nowhere"

    assert (
        unreachable_image(
            BASE_IMAGE="medic-test/bookworm-python:latest",
            DEMO_IMAGE=BUSYBOX_IMAGE,
            MEDIC_POSTGRES_IMAGE=missing,
        )
        == missing
    )


def test_up_without_a_registry_says_so_in_one_line_and_builds_every_image_here(
    busybox_image: str,
) -> None:
    # use_local_images is replaced by a marker here: what it builds is the --local path,
    # which test_demo_stack.py runs in full.
    done = subprocess.run(
        [
            "bash",
            "-c",
            "source scripts/demo && use_local_images() { echo LOCAL; } && local_if_offline",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "BASE_IMAGE": "medic-test/never-built:nowhere",
            "DEMO_IMAGE": busybox_image,
            "MEDIC_POSTGRES_IMAGE": "medic-test/postgres:15",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "scripts/demo: cannot pull medic-test/never-built:nowhere from a container registry, "
        "so every image is built here instead (as with --local).",
        "LOCAL",
    ]
    assert done.stderr == ""


def test_the_demo_repository_is_made_once_with_a_shop_built_from_the_local_base(
    docker_client: Any, tmp_path: Path
) -> None:
    base = "medic-test/bookworm-python:latest"
    docker_client.images.get(base)
    project = "medicoffline"
    env = {**os.environ, "MEDIC_DEMO_DIR": str(tmp_path), "MEDIC_DEMO_PROJECT": project}
    env["BASE_IMAGE"] = base

    def make_repository() -> str:
        done = subprocess.run(
            ["bash", "-c", "source scripts/demo && make_repository"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    repo = tmp_path / "shop"
    assert make_repository() == f"==> making the demo repository {repo}\n"
    dockerfile = (repo / "app" / "Dockerfile").read_text().splitlines()
    assert f"FROM {base}" in dockerfile
    assert f"LABEL medic.demo.project={project}" in dockerfile
    # What a later `up` finds there is kept, commits and all.
    env.pop("BASE_IMAGE")
    assert make_repository() == f"==> the demo repository {repo} is there already; keeping it\n"
    assert f"FROM {base}" in (repo / "app" / "Dockerfile").read_text().splitlines()
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert log.stdout == "The shop greets its customers\n"

    # Its image builds with no network at all, so from what is on this machine.
    tag = f"{project}-shop:offline"
    try:
        image, _ = docker_client.images.build(
            path=str(repo / "app"), tag=tag, network_mode="none", rm=True
        )
        assert image.labels["medic.demo.project"] == project
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)
