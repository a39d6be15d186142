"""One rule for what a secret looks like, kept by every part of medic that keeps
secrets out: the case file's redaction, the fix guardrails and the repository tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.escalate.redact import Redactor
from agent.escalate.repo_tools import Refused, RepoTools
from agent.fixes.guardrails import is_secret_file
from agent.fixes.secrets import secret_findings

SECRET_FILES = [
    ".env.local",
    "deploy/server.csr",
    "certs/site.crt",
    "ops/prod.tfstate",
    "keys/backup.gpg",
    "vault.kdbx",
    "config/app-secrets.yaml",
    "home/ID_RSA",
]


@pytest.mark.parametrize("path", SECRET_FILES)
def test_a_file_the_guardrails_never_write_is_one_the_model_never_reads(
    tmp_path: Path, path: str
) -> None:
    assert is_secret_file(path)
    with pytest.raises(Refused, match="looks like a secret file"):
        RepoTools(root=tmp_path).resolve(path)


@pytest.mark.parametrize("path", ["app/main.py", "config/app.yaml", "docs/keys.md"])
def test_ordinary_files_are_neither_refused_nor_hidden(tmp_path: Path, path: str) -> None:
    assert not is_secret_file(path)
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("x\n")
    assert RepoTools(root=tmp_path).resolve(path)[0] == path


SECRET_VALUES = {
    "GitLab token": "glpat-" + "Ab3" * 8,
    "Google API key": "AIza" + "Sy9" * 11 + "xy",
    "AWS access key id": "ABIA" + "Q7" * 8,
    "AWS secret access key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "Anthropic API key": "sk-ant-api03-" + "x1" * 20,
}


@pytest.mark.parametrize(("kind", "value"), SECRET_VALUES.items())
def test_a_value_the_redactor_hides_is_one_the_guardrails_refuse(kind: str, value: str) -> None:
    line = (
        f"aws_secret_access_key = {value}"
        if "secret access" in kind
        else f"worker logged {value} at start"
    )
    assert value not in Redactor.build().redact(line)
    assert any(kind in found for found in secret_findings(line))


def test_a_bearer_credential_is_hidden_but_prose_about_one_does_not_refuse_an_edit() -> None:
    header = "Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d"
    assert "0a1b2c3d4e5f6a7b8c9d" not in Redactor.build().redact(header)
    assert secret_findings("# The client falls back to basic authentication.") == []


def test_a_file_the_model_reads_is_redacted_by_the_same_detector(tmp_path: Path) -> None:
    # A coloured token and the tail of a key whose BEGIN line is missing; the line
    # numbers the model is told stay true.
    token = "ghp_" + "Zq8Rw3Lm9Xp2Tk7Vb4Nc" * 2
    body = "MIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3"
    text = (
        f"\x1b[33m{token[:9]}\x1b[0m{token[9:]}\n{body}\n{body}\n"
        "-----END RSA PRIVATE KEY-----\nlast line\n"
    )
    (tmp_path / "notes.txt").write_text(text)
    shown = RepoTools(root=tmp_path, redact=Redactor.build().redact).run(
        "read_file", {"path": "notes.txt"}
    )
    assert token[9:] not in shown
    assert body not in shown
    assert shown.splitlines()[0] == "notes.txt lines 1-5 of 5:"
    assert shown.splitlines()[5] == "last line"
    found = secret_findings(text)
    assert any("GitHub token" in kind for kind in found)
    assert any("private key" in kind for kind in found)
