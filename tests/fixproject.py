"""A user's project that medic fixes for real: a git repository of little Python web
services, each with a one-line defect that makes it exit as it starts, deployed with
docker-compose; and a real ``medic run`` that escalates them, asks a local fake of the
Messages API (tests/fake_anthropic.py) for each defect's fix and records the fixes in
Postgres.

The fix-branch end-to-end test and the review console's scene both stand on this, so
what the console shows is what medic really made.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fake_anthropic import tool_use
from fake_http import Reply
from fixrepo import Repo
from helpers import wait_for
from medic_process import QUICK_PLAYBOOK, medic_env

from agent.escalate.llm import SUBMIT
from agent.model import Fix, Incident, IncidentStatus
from agent.store.postgres import PostgresStore, run_migrations

BASE_IMAGE = "medic-test/bookworm-python:latest"

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
WORKDIR /srv
COPY app.py /srv/app.py
CMD ["python3", "/srv/app.py"]
"""

SERVICE = """\
  {service}:
    image: {image}
    build: ./{service}
    healthcheck:
      test:
        - CMD
        - python3
        - -c
        - import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2)
      interval: 1s
      timeout: 3s
      retries: 2
"""


@dataclass(frozen=True)
class Defect:
    """A one-line mistake in ``<service>/app.py`` and the edit that mends it."""

    service: str
    app_py: str
    old: str
    """The text with the mistake, as the edit quotes it."""
    new: str
    log: str
    """What Python prints about the mistake: in this service's log and no other's."""
    summary: str
    root_cause: str

    @property
    def path(self) -> str:
        return f"{self.service}/app.py"

    @property
    def edit(self) -> dict[str, str]:
        return {"path": self.path, "old": self.old, "new": self.new}

    def submission(self) -> Reply:
        """The model's answer: this defect's fix, quoting the log line as evidence."""
        return tool_use(
            SUBMIT,
            {
                "summary": self.summary,
                "root_cause": self.root_cause,
                "confidence": "high",
                "evidence": [self.log],
                "edits": [self.edit],
                "no_edits_reason": None,
            },
        )


#: The HTTP server has no serv_forever: AttributeError right after it starts, exit 1.
SERV_FOREVER = Defect(
    service="app",
    app_py="""\
import http.server

server = http.server.HTTPServer(("", 8080), http.server.SimpleHTTPRequestHandler)
print("listening on 8080", flush=True)
server.serv_forever()
""",
    old="server.serv_forever()",
    new="server.serve_forever()",
    log="object has no attribute 'serv_forever'",
    summary="app.py calls serv_forever, a typo of serve_forever.",
    root_cause="The HTTP server has no method serv_forever, so the service "
    "exits with AttributeError right after it starts.",
)

#: The port is read from a misspelt name: NameError before the server is made, exit 1.
PORT_TYPO = Defect(
    service="api",
    app_py="""\
import http.server

port = 8080
server = http.server.HTTPServer(("", prot), http.server.SimpleHTTPRequestHandler)
print(f"listening on {port}", flush=True)
server.serve_forever()
""",
    old='HTTPServer(("", prot),',
    new='HTTPServer(("", port),',
    log="name 'prot' is not defined",
    summary="app.py passes prot, a typo of port, to the HTTP server.",
    root_cause="No variable prot exists, so the service exits with NameError before it listens.",
)


class Project:
    """The user's project: a git repository deployed with docker-compose."""

    def __init__(
        self, parent: Path, defects: Sequence[Defect], *, prefix: str, tag: str = "e2e"
    ) -> None:
        self.name = f"{prefix}{uuid.uuid4().hex[:8]}"
        self.repo = Repo(parent / self.name)
        self.defects = tuple(defects)
        self.tag = tag

    def image(self, service: str) -> str:
        """The image compose builds for ``service`` (named, so that it can be removed)."""
        return f"{self.name}-{service}:{self.tag}"

    def create(self) -> None:
        self.repo.path.mkdir()
        self.repo.git("init", "-q", "-b", "main")
        services = "".join(
            SERVICE.format(service=d.service, image=self.image(d.service)) for d in self.defects
        )
        self.repo.write("docker-compose.yml", "services:\n" + services)
        for defect in self.defects:
            self.repo.write(f"{defect.service}/Dockerfile", DOCKERFILE)
            self.repo.write(defect.path, defect.app_py)
        self.repo.commit_all("Little web services")

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        return subprocess.run(
            ["docker-compose", "-p", self.name, *args],
            cwd=self.repo.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def deploy(self) -> None:
        built = self.compose("up", "-d", "--build")
        assert built.returncode == 0, built.stderr

    def remove(self, docker_client: Any) -> None:
        """Containers, network, volumes and the images compose built (``--rmi local``
        leaves those named by ``image:``)."""
        # A healed service is a Python server as PID 1, which ignores SIGTERM: without
        # -t 1 every such test would wait out compose's 10 s stop timeout.
        self.compose("down", "-t", "1", "-v", "--remove-orphans", "--rmi", "local")
        for defect in self.defects:
            for image in docker_client.images.list(name=self.image(defect.service)):
                with contextlib.suppress(Exception):
                    docker_client.images.remove(image.id, force=True)


def prepare_state(state: Path, postgres_url: str) -> Path:
    """medic's state folder with the quick playbooks, and its tables in ``postgres_url``."""
    state.mkdir()
    (state / "books.yml").write_text(QUICK_PLAYBOOK)
    run_migrations(postgres_url)
    return state


def fixing_env(
    project: Project, *, postgres_url: str, state: Path, fake_url: str, **extra: str
) -> dict[str, str]:
    """A quick medic's environment (medic_process.medic_env) that may ask the fake at
    ``fake_url`` and make fix branches in the project's repository, plus ``extra``."""
    env = medic_env(
        state=state, url=postgres_url, project=project.name, playbooks=state / "books.yml"
    )
    # The fake is the only API this medic may reach, whatever this shell has set.
    env = {k: v for k, v in env.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        ANTHROPIC_API_KEY="sk-ant-api03-e2e-test-key",
        ANTHROPIC_BASE_URL=fake_url,
        MEDIC_REPO=str(project.repo.path),
        MEDIC_STOP_TIMEOUT="5",
        MEDIC_LLM_MAX_RETRIES="0",
        # The healing check runs the candidate this long in the sandbox.
        MEDIC_VERIFY_SETTLE="5",
    )
    env.update(extra)
    return env


def tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_for_fixes(
    postgres_url: str,
    services: Iterable[str],
    *,
    medic: subprocess.Popen[bytes],
    log: Path,
    timeout: float = 240,
) -> dict[str, tuple[Incident, Fix]]:
    """Each service's escalated incident and the fix recorded for it (medic records a
    fix once, when its branch is made and verified or refused). Fails at once, with
    the end of medic's log, if medic exits first."""
    wanted = set(services)
    store = PostgresStore(postgres_url, migrate=False)
    try:

        def made() -> dict[str, tuple[Incident, Fix]]:
            if medic.poll() is not None:
                raise AssertionError(
                    f"medic exited with {medic.returncode} before the fixes were made; "
                    f"its log ends:\n{tail(log)}"
                )
            found: dict[str, tuple[Incident, Fix]] = {}
            for incident in store.list_incidents():
                service = incident.container.service or ""
                if incident.status is not IncidentStatus.ESCALATED or service not in wanted:
                    continue
                for fix in store.fixes_of_incident(incident.id):
                    found[service] = (incident, fix)
            return found if set(found) == wanted else {}

        return wait_for(
            made, timeout=timeout, interval=0.5, message=f"fixes of {sorted(wanted)} in Postgres"
        )
    finally:
        store.close()


def remove_candidates(docker_client: Any, postgres_url: str) -> None:
    """The candidate images medic built for every fix in ``postgres_url``."""
    store = PostgresStore(postgres_url, migrate=False)
    try:
        fixes = store.list_fixes(include_decided=True)
    finally:
        store.close()
    for fix in fixes:
        if fix.verification is not None and fix.verification.image is not None:
            with contextlib.suppress(Exception):
                docker_client.images.remove(fix.verification.image, force=True)
