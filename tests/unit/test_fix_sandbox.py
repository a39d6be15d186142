"""The pure parts of verifying a fix in a sandbox: the tar of a commit's files, the
service's environment and health check as compose writes them, and the verdict."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping, Sequence

import pytest

from agent.engine.gateway import HealthcheckSpec, SandboxResult
from agent.errors import ActionError, FixError
from agent.escalate.redact import Redactor
from agent.fixes.archive import tree_archive
from agent.fixes.git import TreeEntry
from agent.fixes.verify import (
    first_error_line,
    healing_verdict,
    healthcheck_spec,
    service_environment,
)
from agent.model import Health

BLOBS = {"a" * 40: b"print('hi')\n", "b" * 40: b"#!/bin/sh\n", "c" * 40: b"web"}
TREE = {
    "web/app.py": TreeEntry("web/app.py", "100644", "blob", "a" * 40, 12),
    "web/start.sh": TreeEntry("web/start.sh", "100755", "blob", "b" * 40, 10),
    "docs": TreeEntry("docs", "120000", "blob", "c" * 40, 3),
    "vendor/lib": TreeEntry("vendor/lib", "160000", "commit", "d" * 40, None),
}


def read(shas: Sequence[str]) -> Mapping[str, bytes]:
    return {sha: BLOBS[sha] for sha in shas}


def members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_archive_keeps_modes_and_links_skips_submodules_and_belongs_to_nobody() -> None:
    found = members(tree_archive(TREE, read, prefix="workspace"))
    assert sorted(found) == [
        "workspace",
        "workspace/docs",
        "workspace/web",
        "workspace/web/app.py",
        "workspace/web/start.sh",
    ]
    assert found["workspace/web/app.py"].mode == 0o644
    assert found["workspace/web/start.sh"].mode == 0o755
    assert found["workspace/docs"].issym() and found["workspace/docs"].linkname == "web"
    assert found["workspace"].isdir()
    assert {(m.uid, m.gid) for m in found.values()} == {(65534, 65534)}


def test_a_build_context_is_the_folder_s_files_at_the_top_of_the_archive() -> None:
    with tarfile.open(fileobj=io.BytesIO(tree_archive(TREE, read, under="web"))) as tar:
        assert sorted(tar.getnames()) == ["app.py", "start.sh"]
        member = tar.extractfile("app.py")
        assert member is not None and member.read() == b"print('hi')\n"


def test_an_archive_over_the_size_cap_is_refused_before_any_blob_is_read() -> None:
    def no_reading(shas: Sequence[str]) -> Mapping[str, bytes]:
        raise AssertionError("read a blob")

    with pytest.raises(FixError, match=r"more than the 0\.0 MiB medic copies into a sandbox"):
        tree_archive(TREE, no_reading, max_bytes=10)


def test_a_crafted_path_is_refused() -> None:
    tree = {"../x": TreeEntry("../x", "100644", "blob", "a" * 40, 1)}
    with pytest.raises(FixError, match="a path medic does not copy"):
        tree_archive(tree, read)


def test_the_environment_reads_both_compose_forms_and_skips_variables_without_value() -> None:
    assert service_environment({"A": "1", "B": None, "C": True, "D": 5}) == {
        "A": "1",
        "C": "true",
        "D": "5",
    }
    assert service_environment(["A=1", "B", "C=x=y"]) == {"A": "1", "C": "x=y"}


def test_a_compose_health_check_becomes_docker_s() -> None:
    spec = healthcheck_spec(
        {"test": "curl -f localhost", "interval": "1m30s", "timeout": "500ms", "retries": 2}
    )
    assert spec == HealthcheckSpec(
        ("CMD-SHELL", "curl -f localhost"), interval=90.0, timeout=0.5, retries=2
    )
    assert healthcheck_spec({"disable": True}) == HealthcheckSpec(("NONE",))
    assert healthcheck_spec(None) is None
    with pytest.raises(ActionError, match="not like 10s"):
        healthcheck_spec({"test": ["CMD", "true"], "interval": "soon"})


@pytest.mark.parametrize(
    ("result", "ok", "verdict"),
    [
        (
            SandboxResult(None, "", still_running=True, health=Health.HEALTHY),
            True,
            "starts and passes its health check in a sandbox",
        ),
        (
            SandboxResult(None, "listening", still_running=True),
            True,
            "starts and stays up for 60 s in a sandbox",
        ),
        (
            SandboxResult(None, "", still_running=True, health=Health.STARTING),
            False,
            "still fails: it did not pass its health check within 60 s",
        ),
        (
            SandboxResult(
                None,
                "",
                still_running=True,
                health=Health.UNHEALTHY,
                health_output="curl: (7) refused",
            ),
            False,
            "still fails: its health check fails: curl: (7) refused",
        ),
        (
            SandboxResult(1, "booting\nError: login with hunter2 rejected\nbye\n"),
            False,
            "still fails: Error: login with [REDACTED:DB_PASSWORD] rejected",
        ),
        (
            SandboxResult(1, "booting\n\x1b[31mfatal\x1b[0m: \u202eno config\n"),
            False,
            "still fails: fatal: no config",
        ),
        (SandboxResult(3, ""), False, "still fails: it exits with code 3 and logs nothing"),
        (
            SandboxResult(137, "", oom_killed=True),
            False,
            "still fails: it runs out of memory in the sandbox",
        ),
    ],
)
def test_the_verdict_says_whether_the_candidate_heals(
    result: SandboxResult, ok: bool, verdict: str
) -> None:
    # The service's environment tells the redactor which values are secret.
    redactor = Redactor.build(env={"DB_PASSWORD": "hunter2"})
    assert healing_verdict(result, settle=60, redactor=redactor) == (ok, verdict)


def test_the_first_error_line_is_the_first_that_says_so_else_the_last() -> None:
    assert first_error_line("a\nb: permission denied\nc: failed\n") == "b: permission denied"
    assert first_error_line("starting\nstopping\n\n") == "stopping"
    assert first_error_line("") == ""
