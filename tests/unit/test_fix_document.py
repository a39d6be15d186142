"""What `medic fixes --json` and `medic fixes show` print for a fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent.fixes.document import TABLE_HEADERS, fix_document, fix_row, show_text
from agent.model import (
    Confidence,
    Diagnosis,
    DiagnosisId,
    DiagnosisSource,
    Fix,
    FixId,
    FixStatus,
    IncidentId,
    Verification,
)

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
FIX = Fix(
    id=FixId("a1b2c3d4" + "0" * 24),
    incident_id=IncidentId("0123456789abcdef" * 2),
    diagnosis_id=DiagnosisId("d" * 32),
    status=FixStatus.PROPOSED,
    created_at=AT,
    summary="Fix the port typo",
    files=("web/app.py",),
    branch="medic/fix-01234567-web",
    base="b" * 40,
    base_branch="main",
    commit="c" * 40,
    verification=Verification(
        built=True,
        build_log="Successfully built 123",
        image="medic-candidate/web:a1b2c3d4",
        command="pytest -q",
        exit_status=1,
        output="1 failed",
    ),
)
REFUSED = Fix(
    id=FixId("e" * 32),
    incident_id=IncidentId("0" * 32),
    diagnosis_id=DiagnosisId("d" * 32),
    status=FixStatus.REFUSED,
    created_at=AT,
    summary="Mount the docker socket",
    files=("compose.yaml",),
    base="b" * 40,
    base_branch="main",
    refusal_reasons=(
        "compose_docker_socket: compose.yaml: service web would mount the docker socket "
        "(/var/run/docker.sock).",
    ),
)


def test_the_json_object_has_the_contract_fields() -> None:
    document = fix_document(FIX)
    for key in (
        "id",
        "incident_id",
        "branch",
        "base",
        "status",
        "files",
        "summary",
        "refusal_reasons",
        "verification",
    ):
        assert key in document
    assert document["status"] == "proposed"
    assert document["files"] == ["web/app.py"]
    assert document["verification"]["ok"] is False
    assert document["verification"]["exit_status"] == 1
    assert document["verification"]["image"] == "medic-candidate/web:a1b2c3d4"
    assert "diff" not in document
    json.dumps(document)


def test_show_json_carries_the_diff() -> None:
    assert fix_document(FIX, diff="--- a\n+++ b\n")["diff"] == "--- a\n+++ b\n"


def test_a_refused_fix_has_its_reasons_and_no_branch() -> None:
    document = fix_document(REFUSED)
    assert document["branch"] is None and document["verification"] is None
    assert document["refusal_reasons"][0].startswith("compose_docker_socket:")


def test_a_table_row_matches_the_headers() -> None:
    row = fix_row(FIX)
    assert len(row) == len(TABLE_HEADERS)
    assert row[:5] == (
        "a1b2c3d4",
        "01234567",
        "proposed",
        "built, check exit 1",
        "medic/fix-01234567-web",
    )
    assert fix_row(REFUSED)[3:5] == ("-", "-")


def test_the_show_page_has_diagnosis_verification_reasons_and_diff() -> None:
    diagnosis = Diagnosis(
        id=DiagnosisId("d" * 32),
        incident_id=FIX.incident_id,
        source=DiagnosisSource.LLM,
        created_at=AT,
        summary="The port is a typo",
        root_cause="int('80 80') raises ValueError",
        confidence=Confidence.HIGH,
        evidence=("ValueError: invalid literal",),
        model="claude-sonnet-5-5",
    )
    page = show_text(FIX, diagnosis=diagnosis, diff="+port = 8080\n")
    assert "Fix a1b2c3d4" in page
    assert "branch     medic/fix-01234567-web (cccccccccccc)" in page
    assert "root cause: int('80 80') raises ValueError" in page
    assert "evidence: ValueError: invalid literal" in page
    assert "pytest -q exited 1" in page
    assert "candidate image medic-candidate/web:a1b2c3d4" in page
    assert page.rstrip().endswith("+port = 8080")
    refused = show_text(REFUSED)
    assert "Refused because:\n  - compose_docker_socket:" in refused
