"""Redaction: secret names, secret values, and every copy of an env secret, wherever it is."""

from __future__ import annotations

import re
import threading

import pytest

from agent.errors import ConfigError
from agent.escalate.redact import Redactor, is_secret_name, parse_patterns

# Real-looking, not real: each has the shape its issuer uses.
ANTHROPIC_KEY = "sk-ant-api03-Zx9Qm2Lr8Tn4Vb6Yc1Wd3Fg5Hj7Kp0Ms-AbCdEfGhIjKlMn_OpQrStUv"
GITHUB_TOKEN = "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng9Xy"
SLACK_TOKEN = "xoxb-2048123456-4096123456789-Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6"
STRIPE_KEY = "sk_live_51HxQmLr8Tn4Vb6Yc1Wd3Fg5Hj"
AWS_ACCESS_KEY = "AKIAQ3EGTW5LKRSM7XPA"
AWS_SECRET = "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"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0."
    "c2lnbmF0dXJlLWJ5dGVzLWZvci10aGUtdGVzdA"
)
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBk7m2vLq5Yw3sX0dD2uJ0mN1pT6yV9bR4cF8gH3jK5lAAAAJgAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
DB_PASSWORD = "Tr0ub4dor&3-horse"
URL_PASSWORD = "pg-Secr3t-77"


def redactor() -> Redactor:
    return Redactor.build(
        env={
            "DB_PASSWORD": DB_PASSWORD,
            "DATABASE_URL": f"postgresql://app:{URL_PASSWORD}@db:5432/shop",
            "REDIS_HOST": "redis",
            "MONKEY_COUNT": "12",
            "STRIPE_SECRET_KEY": STRIPE_KEY,
        },
        patterns=parse_patterns("# internal ids\nACME-[0-9]{6}\n"),
    )


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "POSTGRES_PASSWORD",
        "API_KEY",
        "apiKey",
        "STRIPE_SECRET_KEY",
        "GITHUB_TOKEN",
        "SENTRY_DSN",
        "AWS_SECRET_ACCESS_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "SSH_PRIVATE_KEY",
        "BASIC_AUTH",
        "session-secret",
    ],
)
def test_secret_looking_names_are_secret(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "MONKEY_COUNT",
        "KEYBOARD_LAYOUT",
        "REDIS_HOST",
        "PATH",
        "TOKENIZER_THREADS",
        "DB_PASSWORD_FILE",
    ],
)
def test_names_that_only_contain_a_secret_word_are_not(name: str) -> None:
    # KEY counts only as a whole word; *_FILE points at a secret, it does not hold one.
    assert not is_secret_name(name)


def test_env_shows_placeholders_for_secret_names_and_keeps_the_rest() -> None:
    shown = redactor().env_list(
        [
            f"DB_PASSWORD={DB_PASSWORD}",
            "REDIS_HOST=redis",
            "MONKEY_COUNT=12",
            f"DATABASE_URL=postgresql://app:{URL_PASSWORD}@db:5432/shop",
        ]
    )
    assert shown == [
        "DB_PASSWORD=[REDACTED:DB_PASSWORD]",
        "REDIS_HOST=redis",
        "MONKEY_COUNT=12",
        "DATABASE_URL=postgresql://app:[REDACTED:DATABASE_URL]@db:5432/shop",
    ]


def test_every_copy_of_an_env_secret_is_replaced_by_a_stable_placeholder() -> None:
    r = redactor()
    log = (
        f"connecting as app with password {DB_PASSWORD}\n"
        f"retry: psql -h db -U app -W{DB_PASSWORD}\n"
        f"FATAL: password {URL_PASSWORD} rejected\n"
        f"url-encoded: Tr0ub4dor%263-horse"
    )
    out = r.redact(log)
    assert DB_PASSWORD not in out
    assert URL_PASSWORD not in out
    assert "Tr0ub4dor%263-horse" not in out
    assert out.count("[REDACTED:DB_PASSWORD]") == 3
    assert "[REDACTED:DATABASE_URL]" in out
    assert "connecting as app with password [REDACTED:DB_PASSWORD]" in out


def test_a_url_password_with_a_slash_and_no_user_is_learned_and_hunted() -> None:
    r = Redactor.build(env={"CACHE_URL": "redis://:s3cr/et-99@cache:6379/0"})
    assert r.redact("AUTH s3cr/et-99 rejected") == "AUTH [REDACTED:CACHE_URL] rejected"
    assert r.env_list(["CACHE_URL=redis://:s3cr/et-99@cache:6379/0"]) == [
        "CACHE_URL=redis://:[REDACTED:CACHE_URL]@cache:6379/0"
    ]


def test_an_env_secret_is_found_base64_encoded_and_wrapped_across_lines() -> None:
    encoded = "VHIwdWI0ZG9yJjMtaG9yc2U="  # base64 of DB_PASSWORD
    out = redactor().redact(f"seed {encoded}\npassword {DB_PASSWORD[:9]}\n    {DB_PASSWORD[9:]}")
    assert out == "seed [REDACTED:DB_PASSWORD]\npassword [REDACTED:DB_PASSWORD]\n"


@pytest.mark.parametrize(
    ("text", "secret", "placeholder"),
    [
        (f"using key {ANTHROPIC_KEY}", ANTHROPIC_KEY, "[REDACTED:ANTHROPIC_KEY]"),
        (f"clone with {GITHUB_TOKEN}", GITHUB_TOKEN, "[REDACTED:GITHUB_TOKEN]"),
        (f"slack {SLACK_TOKEN} rejected", SLACK_TOKEN, "[REDACTED:SLACK_TOKEN]"),
        (f"charge with {STRIPE_KEY}", STRIPE_KEY, "[REDACTED:STRIPE_SECRET_KEY]"),
        (f"id {AWS_ACCESS_KEY} denied", AWS_ACCESS_KEY, "[REDACTED:AWS_ACCESS_KEY]"),
        (f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET, "[REDACTED:AWS_SECRET_KEY]"),
        (f"token={JWT}", JWT, "[REDACTED:"),
        (f"Authorization: Bearer {JWT}", JWT, "Authorization: Bearer [REDACTED:"),
        ("Authorization: Basic YXBwOmh1bnRlcjJodW50ZXI=", "YXBwOmh1bnRlcjJodW50ZXI=", "Basic [RED"),
        (f"loaded key:\n{PRIVATE_KEY}\nstarted", "b3BlbnNzaC1rZXkt", "[REDACTED:PRIVATE_KEY]"),
        ("GET https://bob:opensesame99@api.example.com/x", "opensesame99", "bob:[REDACTED:"),
        (
            "gcp AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
            "[RED",
        ),
        ("app --db-password hunter2hunter --port 80", "hunter2hunter", "--port 80"),
        ('{"api_key": "abc123def456"}', "abc123def456", '"api_key": "[REDACTED:API_KEY]"'),
        ("case ACME-123456 opened", "ACME-123456", "[REDACTED:MEDIC_REDACT]"),
    ],
)
def test_secret_looking_values_are_replaced(text: str, secret: str, placeholder: str) -> None:
    out = redactor().redact(text)
    assert secret not in out
    assert placeholder in out


def test_a_private_key_cut_off_by_the_log_tail_is_redacted_to_the_end() -> None:
    out = redactor().redact("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1")
    assert "MIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1" not in out


def test_ordinary_log_lines_are_left_alone() -> None:
    lines = [
        "REDIS_HOST=redis",
        "monkey=3 cache key built in 4 ms",
        'FATAL: password authentication failed for user "app"',
        "ModuleNotFoundError: No module named 'requests'",
        "httpd: bind: Address already in use",
        "Error: invalid key size",
    ]
    r = redactor()
    assert [r.redact(line) for line in lines] == lines


def test_detect_secrets_plugins_back_up_the_patterns() -> None:
    # A SendGrid key: not among medic's own patterns, found by the detect-secrets plugin.
    key = "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"
    out = Redactor.build().redact(f"mail via {key}")
    assert key not in out
    assert "[REDACTED:SENDGRID_API_KEY]" in out


def test_redaction_is_safe_from_many_threads() -> None:
    r = redactor()
    text = f"key {GITHUB_TOKEN} and {DB_PASSWORD}"
    results: list[str] = []

    def work() -> None:
        for _ in range(50):
            results.append(r.redact(text))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert GITHUB_TOKEN not in results[0]


def test_a_bad_medic_redact_pattern_names_its_line() -> None:
    with pytest.raises(ConfigError, match=re.escape("MEDIC_REDACT line 2 ('([a-z')")):
        parse_patterns("ok-[0-9]+\n([a-z\n")


def test_an_exception_naming_a_key_keeps_the_name_and_a_key_keeps_its_secret() -> None:
    redactor = Redactor()
    assert redactor.redact("KeyError: 'DATABASE_URL'") == "KeyError: 'DATABASE_URL'"
    assert "hunter2-horse" not in redactor.redact("api_key: 'hunter2-horse'")
