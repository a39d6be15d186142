"""The case file: bounded, redacted, deterministic, and gathered without ever failing."""

from __future__ import annotations

from pathlib import Path

from escalate_support import FixtureSource, case_from_fixture, incident_for, load_fixture

from agent.engine.compose import CONFIG_FILES_LABEL, WORKING_DIR_LABEL
from agent.escalate.casefile import (
    LOG_BYTES,
    LOG_LINES,
    TOTAL_BYTES,
    bound_log,
    build_case_file,
)
from agent.escalate.gather import gather
from agent.escalate.redact import parse_patterns
from agent.store.memory import MemoryStore

DB_PASSWORD = "Tr0ub4dor&3-horse"
API_TOKEN = "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng9Xy"


def test_a_long_log_is_cut_in_the_middle_keeping_errors_first() -> None:
    lines = [f"INFO request {i} served in 3 ms " + "x" * 150 for i in range(LOG_LINES)]
    lines[30] = "ERROR database connection lost"
    kept, cut = bound_log(lines)
    assert cut > 0
    assert sum(len(line.encode()) + 1 for line in kept) <= LOG_BYTES
    assert "ERROR database connection lost" in kept
    assert kept[-1] == lines[-1]
    assert kept[0] == lines[0]
    assert any(line.startswith("[… ") and line.endswith(" lines cut …]") for line in kept)


def test_more_than_200_lines_keeps_the_newest_200() -> None:
    kept, cut = bound_log([f"line {i}" for i in range(500)])
    assert kept == [f"line {i}" for i in range(300, 500)]
    assert cut == 300


def test_the_rendered_case_file_is_deterministic_and_capped() -> None:
    huge = ["E" * 5000 for _ in range(300)]
    case = case_from_fixture("unknown", log_lines=huge)
    text = case.render()
    assert text == case_from_fixture("unknown", log_lines=huge).render()
    assert len(text.encode()) <= TOTAL_BYTES + 100


def test_secrets_in_env_logs_compose_and_command_never_reach_the_case_file() -> None:
    data = load_fixture("missing_module")
    inspect = dict(data["inspect"])
    config = dict(inspect["Config"])
    config["Env"] = [*config["Env"], f"DB_PASSWORD={DB_PASSWORD}", f"GITHUB_TOKEN={API_TOKEN}"]
    config["Cmd"] = ["worker", "--db-password", DB_PASSWORD]
    inspect["Config"] = config
    compose = {
        "services": {
            "worker": {
                "image": "shop/worker",
                "environment": {"DB_PASSWORD": DB_PASSWORD, "SMTP_PASSWORD": "mail-Pa55word!"},
                "command": f"worker --token {API_TOKEN}",
            }
        }
    }
    logs = [
        *data["logs"],
        f"connecting with postgresql://app:{DB_PASSWORD}@db/shop",
        "smtp login with mail-Pa55word! failed",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6",
        "-----END RSA PRIVATE KEY-----",
    ]
    case = case_from_fixture("missing_module", inspect=inspect, log_lines=logs, compose=compose)
    text = case.render()
    for secret in (DB_PASSWORD, API_TOKEN, "mail-Pa55word!", "MIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1"):
        assert secret not in text
    assert "Env: DB_PASSWORD=[REDACTED:DB_PASSWORD]" in text
    assert "smtp login with [REDACTED:SMTP_PASSWORD] failed" in text
    assert "DB_PASSWORD: '[REDACTED:DB_PASSWORD]'" in text
    # The rest of the evidence is still there.
    assert "ModuleNotFoundError: No module named 'requests'" in text


def test_medic_redact_patterns_apply_to_the_case_file() -> None:
    case = case_from_fixture(
        "unknown",
        log_lines=["customer ACME-123456 failed"],
        redact_patterns=parse_patterns("ACME-[0-9]{6}"),
    )
    assert "ACME-123456" not in case.render()


def test_gather_notes_missing_compose_files_and_reads_only_the_tail(tmp_path: Path) -> None:
    data = load_fixture("missing_module")
    (tmp_path / "compose.yml").write_text(
        "services:\n  worker:\n    image: shop/worker\n    environment:\n"
        f"      DB_PASSWORD: {DB_PASSWORD}\n",
        encoding="utf-8",
    )
    labels = dict(data["inspect"]["Config"]["Labels"])
    labels[WORKING_DIR_LABEL] = str(tmp_path)
    labels[CONFIG_FILES_LABEL] = "compose.yml,compose.override.yml"
    data["inspect"]["Config"]["Labels"] = labels
    incident = incident_for(data["inspect"])
    store = MemoryStore()
    source = FixtureSource(data)
    case = gather(incident=incident, source=source, store=store)
    assert source.tail_requests == [LOG_LINES]
    text = case.render()
    assert "image: shop/worker" in text
    assert DB_PASSWORD not in text
    assert f"The compose file {tmp_path / 'compose.override.yml'} is missing" in text
    # The incident is not in this store: noted, not fatal.
    assert "The incident store could not be read" in text


def test_gather_survives_a_container_that_is_gone() -> None:
    data = load_fixture("unknown")
    case = gather(
        incident=incident_for(data["inspect"]),
        source=FixtureSource(data, gone=True),
        store=MemoryStore(),
    )
    assert "The container could not be inspected" in case.render()
    assert case.logs  # the log tail was still read


def test_earlier_diagnoses_are_listed_with_earlier_incidents() -> None:
    data = load_fixture("unknown")
    earlier = incident_for(data["inspect"], incident_id="inc-0000")
    case = build_case_file(
        incident=incident_for(data["inspect"]),
        inspect=data["inspect"],
        log_lines=data["logs"],
        earlier=[earlier],
    )
    assert any("incident inc-0000" in line for line in case.earlier)
