"""``scripts/demo up`` on a machine that cannot reach a container registry.

Without ``--local`` the demo needs python:3.11-slim, busybox and postgres from a
registry. ``up`` first looks for each image here and tries to pull it; the first
that is neither makes it say so in one line and build every image here instead, as
``--local`` does. These tests run that check against the real engine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

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
