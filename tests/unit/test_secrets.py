"""One rule for what a secret looks like, kept by every part of medic that keeps
secrets out: the case file's redaction, the fix guardrails and the repository tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.escalate.claude import Refused, RepoTools
from agent.escalate.redact import Redactor
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
