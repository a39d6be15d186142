"""A real git repository for fix-branch tests: a compose file, a Dockerfile and a
little Python service, plus the kinds of files the guardrails refuse to touch.

Tests read the repository with git directly (``Repo.git``), independently of
``agent.fixes.git``, so what they assert is what git says.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fakes import FakeClock

from agent.escalate.followup import FixMaker
from agent.fixes.git import Git, Person
from agent.fixes.guardrails import Policy
from agent.fixes.propose import FixOptions
from agent.model import (
    Confidence,
    ContainerId,
    ContainerRef,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Edit,
    Finding,
    Fix,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store.memory import MemoryStore
from agent.store.postgres import PostgresStore, run_migrations

APP_PY = """import http.server


def main():
    port = int("8080")
    server = http.server.HTTPServer(("", port), http.server.SimpleHTTPRequestHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
"""

DOCKERFILE = """FROM medic-test/busybox:latest
COPY app.py /app/app.py
CMD ["httpd", "-f", "-p", "8080", "-h", "/app"]
"""

COMPOSE = """services:
  web:
    build: ./web
    volumes:
      - data:/data
volumes:
  data: {}
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


#: When the fix tests' clock (``fakes.FakeClock(FIX_NOW)``) starts: an hour after
#: ``incident()`` began.
FIX_NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Repo:
    path: Path

    def git(self, *args: str, input: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_ENV)
        env["HOME"] = str(self.path.parent)
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def write(self, path: str, text: str) -> None:
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def refs(self) -> str:
        return self.git("for-each-ref", "--format=%(refname) %(objectname)")

    def objects(self) -> set[str]:
        """Every object file and pack in the object store."""
        root = self.path / ".git" / "objects"
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

    def snapshot(self) -> RepoState:
        index = (self.path / ".git" / "index").read_bytes()
        return RepoState(
            head=self.git("rev-parse", "HEAD").strip(),
            branch=self.git("symbolic-ref", "-q", "HEAD").strip(),
            status=self.git("status", "--porcelain=v1", "--untracked-files=all"),
            index_sha=hashlib.sha256(index).hexdigest(),
            files={
                str(p.relative_to(self.path)): p.read_bytes()
                for p in self.path.rglob("*")
                if p.is_file() and ".git" not in p.relative_to(self.path).parts
            },
        )


@dataclass(frozen=True)
class RepoState:
    """The parts of a repository medic must never change."""

    head: str
    branch: str
    status: str
    index_sha: str
    files: dict[str, bytes]


def make_repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "project")
    repo.path.mkdir()
    repo.git("init", "-q", "-b", "main")
    repo.write("compose.yaml", COMPOSE)
    repo.write("web/Dockerfile", DOCKERFILE)
    repo.write("web/app.py", APP_PY)
    repo.write("web/config.yaml", "port: 8080\nworkers: 2\n")
    repo.write("web/start.sh", "#!/bin/sh\nexec python3 /app/app.py\n")
    repo.write(".gitignore", "local.cfg\n*.log\n")
    repo.write(".env.example", "DB_PASSWORD=\n")
    repo.write("README.md", "# project\n")
    (repo.path / "web" / "start.sh").chmod(0o755)
    (repo.path / "docs").symlink_to("web")
    repo.commit_all("Initial service")
    return repo


def incident(
    service: str = "web", incident_id: str = "0123456789abcdef0123456789abcdef"
) -> Incident:
    at = datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    return Incident(
        id=IncidentId(incident_id),
        container=ContainerRef(ContainerId("c" * 64), f"project-{service}-1", "project", service),
        signal=Signal.CRASH_LOOP,
        status=IncidentStatus.ESCALATED,
        opened_at=at,
        updated_at=at,
        summary="web keeps exiting",
    )


def diagnosis(*edits: Edit, incident_id: str = "0123456789abcdef0123456789abcdef") -> Diagnosis:
    return Diagnosis(
        id=DiagnosisId("d" * 32),
        incident_id=IncidentId(incident_id),
        source=DiagnosisSource.LLM,
        created_at=datetime(2026, 5, 1, 11, 30, tzinfo=UTC),
        summary="The port is parsed from a typo",
        root_cause="app.py reads the port from a literal with a typo.",
        confidence=Confidence.HIGH,
        rule_id="unknown",
        model="claude-sonnet-5-5",
        edits=tuple(edits),
    )


def store_with(*fixes: Fix) -> MemoryStore:
    """A MemoryStore holding ``fixes`` and the incidents they belong to, for approving
    and rejecting them."""
    store = MemoryStore()
    for fix in fixes:
        store.put(incident(incident_id=fix.incident_id))
        store.record_fix(fix)
    return store


#: The one-line edit ``propose_in_postgres`` makes into a fix branch.
EDIT = Edit("web/app.py", 'port = int("8080")', 'port = int("8081")')


def propose_in_postgres(
    postgres_url: str,
    tmp_path: Path,
    *,
    at: datetime,
    service: str = "web",
    repo: Repo | None = None,
    edit: Edit = EDIT,
) -> tuple[Repo, Incident, Fix]:
    """A real repository (``make_repo``'s, unless given) and, in Postgres, a crash-loop
    incident of ``service`` with a diagnosis whose edit medic made into a real fix
    branch, as the escalation does."""
    run_migrations(postgres_url)
    repo = repo or make_repo(tmp_path)
    store = PostgresStore(postgres_url)
    ref = ContainerRef(
        ContainerId(uuid.uuid4().hex * 2), f"project-{service}-1", "project", service
    )
    try:
        found = store.record_finding(
            Finding(ref, Signal.CRASH_LOOP, f"{service} keeps exiting", at)
        )
        made = Diagnosis(
            id=DiagnosisId(uuid.uuid4().hex),
            incident_id=found.id,
            source=DiagnosisSource.LLM,
            created_at=at,
            summary="The port should be 8081.",
            root_cause="app.py listens on the wrong port.",
            confidence=Confidence.HIGH,
            model="claude-sonnet-5-5",
            rule_id="unknown",
            edits=(edit,),
        )
        store.record_diagnosis(made)
        options = FixOptions(policy=Policy(), author=Person("medic", "medic@localhost"))
        maker = FixMaker(store=store, git=Git(repo.path), options=options, clock=FakeClock(at))
        fix = maker.make(made, found)
    finally:
        store.close()
    assert fix is not None and fix.status is FixStatus.PROPOSED, fix
    return repo, found, fix
