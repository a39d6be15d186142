"""The scene the review console's browser tests run against: real incidents, real fixes,
and the real ``medic run`` that made them, still running and serving on a port.

Two services of a compose project (tests/fixproject.py) exit at start, each because of
a one-line typo of its own. ``medic run`` escalates both, asks the local fake of the
Messages API, which answers each with that service's fix, makes a fix branch for each
in the project's git repository, builds it and records it in Postgres as proposed.
Then the scene is handed to the test with medic still running, so a page shows what
medic really recorded and a click acts on a real repository and engine.

Each test that asks for ``console_scene`` gets a scene of its own, which takes 15-25 s
to come up on a 2-core machine, most of it medic verifying the two fixes one
after the other (MEDIC_VERIFY_SETTLE=5 each). Tests that only look may share one: a
module-scoped fixture can enter ``running_scene`` with a database from
``pgfixtures.fresh_database``. Everything is removed afterwards: medic is stopped, the
compose project is taken down with its images, and the candidate images medic built
for the fixes are deleted.

    def test_the_console_lists_both_fixes(console_scene: Scene, page: Page) -> None:
        page.goto(console_scene.url)
        ...  # sign in with console_scene.token, then look for console_scene.fixes
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_anthropic import FakeAnthropic
from fixproject import (
    PORT_TYPO,
    SERV_FOREVER,
    Defect,
    Project,
    fixing_env,
    prepare_state,
    remove_candidates,
    tail,
    wait_for_fixes,
)
from fixrepo import Repo
from helpers import wait_for
from medic_process import start, stop
from pgfixtures import free_port

from agent.model import Fix, FixStatus, Incident

#: The services of the scene and what is wrong with each: ``app`` calls serv_forever,
#: ``api`` listens on an undefined name.
DEFECTS: tuple[Defect, ...] = (SERV_FOREVER, PORT_TYPO)


@dataclass(frozen=True)
class Scene:
    """What a console test may look at and act on; everything here is real."""

    url: str
    """medic's HTTP server, ``http://127.0.0.1:PORT`` (MEDIC_HTTP_PORT)."""
    token: str
    """MEDIC_UI_TOKEN: what a person types to use the console."""
    repo: Repo
    """The project's git repository (MEDIC_REPO), with a fix branch per service."""
    project: str
    """The compose project's name (MEDIC_PROJECT)."""
    postgres_url: str
    """medic's database (MEDIC_DATABASE_URL)."""
    incidents: Mapping[str, Incident]
    """The escalated incident of each service, by service name."""
    fixes: Mapping[str, Fix]
    """The proposed fix of each service's incident, by service name."""
    medic: subprocess.Popen[bytes]
    """``medic run``, still running."""
    log: Path
    """medic's output (stdout and stderr)."""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_scene(
    *,
    folder: Path,
    postgres_url: str,
    docker_client: Any,
    processes: list[subprocess.Popen[bytes]],
    defects: tuple[Defect, ...] = DEFECTS,
) -> Iterator[Scene]:
    """Bring the scene up in ``folder`` (an empty directory) against an empty database,
    yield it, and remove all of it afterwards."""
    project = Project(folder, defects, prefix="medicscene", tag="scene")
    project.create()
    # Each service's case file quotes its own log, so the fake knows whose fix to send.
    fake = FakeAnthropic([], routes={d.log: [d.submission()] for d in defects})
    migrated = False
    try:
        project.deploy()
        state = prepare_state(folder / "state", postgres_url)
        migrated = True
        port = free_port()
        token = secrets.token_urlsafe(24)
        log = folder / "medic.log"
        with fake.running():
            env = fixing_env(
                project,
                postgres_url=postgres_url,
                state=state,
                fake_url=fake.url,
                MEDIC_HTTP_PORT=str(port),
                MEDIC_UI_TOKEN=token,
            )
            medic = start(processes, [sys.executable, "-m", "agent", "run"], env, log)
            try:
                services = [d.service for d in defects]
                found = wait_for_fixes(postgres_url, services, medic=medic, log=log)
                for service, (_, fix) in found.items():
                    if fix.status is not FixStatus.PROPOSED:
                        raise AssertionError(
                            f"The fix for {service} is {fix.status}, not proposed "
                            f"({'; '.join(fix.refusal_reasons)}); medic's log ends:\n{tail(log)}"
                        )
                url = f"http://127.0.0.1:{port}"
                wait_for(
                    lambda: _answers(f"{url}/healthz"),
                    timeout=60,
                    message=f"medic's /healthz on port {port}",
                )
                yield Scene(
                    url=url,
                    token=token,
                    repo=project.repo,
                    project=project.name,
                    postgres_url=postgres_url,
                    incidents={service: incident for service, (incident, _) in found.items()},
                    fixes={service: fix for service, (_, fix) in found.items()},
                    medic=medic,
                    log=log,
                )
            finally:
                stop(medic)
    finally:
        try:
            if migrated:
                remove_candidates(docker_client, postgres_url)
        finally:
            project.remove(docker_client)


@pytest.fixture
def console_scene(
    docker_client: Any,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    processes: list[subprocess.Popen[bytes]],
) -> Iterator[Scene]:
    """Two escalated incidents with a proposed fix each, and ``medic run`` serving."""
    with running_scene(
        folder=tmp_path_factory.mktemp("scene"),
        postgres_url=postgres_url,
        docker_client=docker_client,
        processes=processes,
    ) as scene:
        yield scene
