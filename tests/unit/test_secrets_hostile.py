"""Hostile text: secrets dressed up to slip past the detector, and ordinary text that
must not be taken for one.

Every row is a line a container could log or an edit could add. The redactor must
leave neither the secret nor an obvious piece of it; where an edit could add the text,
the guardrails must name a kind. The values are made up, in their issuers' shapes.
"""

from __future__ import annotations

import base64
import re
import urllib.parse

import pytest

from agent.escalate.redact import Redactor
from agent.fixes.secrets import secret_findings
from agent.secrets import escape_payloads, find_secrets, plugin_secrets, strip_terminal_escapes

GITHUB = "ghp_R4nd0mL00k1ngT0k3nV4lu3F0rT3st1ng9Xy"
SLACK = "xoxb-2048123456-4096123456789-Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6"
STRIPE = "sk_live_51HxQmLr8Tn4Vb6Yc1Wd3Fg5Hj"
GITLAB_BODY = "Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6"
AWS_SECRET = "Wj9rXUtnFEMI/K7MDENG/bPxRfiCYzq8Lm3Tp2Vk"
JWT_PARTS = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJzdWIiOiJ1c2VyLTQyIiwicm9sZSI6ImFkbWluIn0",
    "c2lnbmF0dXJlLWJ5dGVzLWZvci10aGUtdGVzdA",
)
KEY_LINES = (
    "MIIEowIBAAKCAQEAx3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3",
    "Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd",
    "q5Yw3sX0dD2uJ0mN1pT6yV9bR4c==",
)
KEY_ID = "3f1c9a0b7d2e4f6a8b0c1d2e3f4a5b6c7d8e9f0a"

# The environment the redactor is built with, as a case file's container would have it.
DB_PASSWORD = "Tr0ub4dor&3-horse"
PASSPHRASE = "correct horse battery staple"
API_TOKEN = "tkn-7Hq2Lx9Vm4Rz8Wp3Nc6Bd1Fg5Jk0Ys"
ENV = {
    "DB_PASSWORD": DB_PASSWORD,
    "BACKUP_PASSPHRASE": PASSPHRASE,
    "UPSTREAM_API_TOKEN": API_TOKEN,
    "REDIS_HOST": "redis",
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def headless(lines: tuple[str, ...], *, prefix: str = "", newline: str = "\n") -> str:
    """A key whose BEGIN line the log tail cut off."""
    return prefix + newline.join(lines) + newline + "-----END RSA PRIVATE KEY-----"


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_LINES) + "\n-----END RSA PRIVATE KEY-----\n"
)

# text, the secret and its obvious pieces, the kind an edit adding it is refused for
# (None: only the environment says it is a secret), what must stay readable.
HOSTILE = [
    # --- terminal escapes ---
    pytest.param(
        f"\x1b[31m{GITHUB}\x1b[0m", (GITHUB,), "GitHub token", (), id="ansi-colour-around"
    ),
    pytest.param(
        f"{GITHUB[:7]}\x1b[0m{GITHUB[7:]}",
        (GITHUB[7:],),
        "GitHub token",
        (),
        id="ansi-reset-inside",
    ),
    pytest.param(
        f"token \x1b[1;4;38;5;196m{SLACK[:12]}\x1b[39;49m{SLACK[12:]}\x1b[m",
        (SLACK[12:],),
        "Slack token",
        (),
        id="ansi-256-colour-split",
    ),
    pytest.param(f"\x9b1m{STRIPE}\x9b0m", (STRIPE,), "Stripe key", (), id="csi-8-bit"),
    pytest.param(
        f"charge {STRIPE[:12]}\u200b{STRIPE[12:]}",
        (STRIPE[12:],),
        "Stripe key",
        (),
        id="zero-width",
    ),
    pytest.param(
        f"{GITHUB[:10]}\u202e{GITHUB[10:]}", (GITHUB[10:],), "GitHub token", (), id="bidi-override"
    ),
    pytest.param(
        f"\x1b]0;{GITHUB}\x07build ok", (GITHUB,), "GitHub token", ("build ok",), id="osc-title"
    ),
    pytest.param(
        "\x1b]8;;https://ci:Hyp3rL1nkPw9@git.example.com/x\x1b\\open\x1b]8;;\x1b\\",
        ("Hyp3rL1nkPw9",),
        "password in a URL",
        ("open",),
        id="osc-8-hyperlink",
    ),
    pytest.param(
        f"progress 40%\r{GITHUB[:9]}\r{GITHUB[9:]}", (GITHUB[9:],), "GitHub token", (), id="bare-cr"
    ),
    # --- passwords in URLs ---
    pytest.param(
        "postgres://:s3cr3tPw@db/x",
        ("s3cr3tPw",),
        "password in a URL",
        ("postgres://:", "@db/x"),
        id="url-empty-user",
    ),
    pytest.param(
        "redis://default:pa/ss@redis:6379",
        ("pa/ss",),
        "password in a URL",
        ("redis://default:", "@redis:6379"),
        id="url-slash-in-password",
    ),
    pytest.param(
        "https://:tok/en#x@host",
        ("tok/en#x", "tok/en"),
        "password in a URL",
        ("@host",),
        id="url-hash-and-slash",
    ),
    pytest.param(
        "amqp://svc:wh?at#n0w@rabbit:5672/",
        ("wh?at#n0w",),
        "password in a URL",
        ("@rabbit:5672/",),
        id="url-query-mark",
    ),
    pytest.param(
        "mongodb+srv://app:p@ssW0rd!@cluster0.example.net/db",
        ("p@ssW0rd!", "ssW0rd"),
        "password in a URL",
        ("@cluster0.example.net/db",),
        id="url-at-in-password",
    ),
    pytest.param(
        '{"upstream": "postgres:\\/\\/app:Js0nEsc4ped@db\\/shop"}',
        ("Js0nEsc4ped",),
        "password in a URL",
        ("@db",),
        id="url-json-escaped-slashes",
    ),
    # --- private keys ---
    pytest.param(headless(KEY_LINES), KEY_LINES, "private key", (), id="key-headless"),
    pytest.param(
        headless(KEY_LINES, prefix="2024-05-01 app: loaded signing key "),
        KEY_LINES,
        "private key",
        ("loaded signing key",),
        id="key-headless-after-a-log-prefix",
    ),
    pytest.param(
        'key": "' + headless(KEY_LINES, newline="\\n") + '\\n"}',
        KEY_LINES,
        "private key",
        (),
        id="key-headless-json-escaped",
    ),
    pytest.param(
        '{"type": "service_account", "project_id": "shop", '
        f'"private_key_id": "{KEY_ID}", "private_key": "{PEM.replace(chr(10), chr(92) + "n")}", '
        '"client_email": "app@shop.iam.gserviceaccount.com"}',
        (*KEY_LINES, KEY_ID),
        "Google service-account key",
        ("client_email",),
        id="key-gcp-service-account-json",
    ),
    pytest.param(
        f"tls.key: {b64(PEM)}", (b64(PEM)[20:60],), "private key", ("tls.key",), id="key-base64-pem"
    ),
    # --- token shapes ---
    pytest.param(f"gldt-{GITLAB_BODY}", (GITLAB_BODY,), "GitLab", (), id="gitlab-deploy"),
    pytest.param(f"glrt-{GITLAB_BODY}", (GITLAB_BODY,), "GitLab", (), id="gitlab-runner"),
    pytest.param(f"glptt-{GITLAB_BODY}", (GITLAB_BODY,), "GitLab", (), id="gitlab-trigger"),
    pytest.param(f"glsoat-{GITLAB_BODY}", (GITLAB_BODY,), "GitLab", (), id="gitlab-service-acct"),
    pytest.param(
        f"GR1348941{GITLAB_BODY}", (GITLAB_BODY,), "GitLab", (), id="gitlab-legacy-runner"
    ),
    pytest.param(
        "xapp-1-A0123456789-1234567890123-abcdef0123456789",
        ("A0123456789-1234567890123",),
        "Slack token",
        (),
        id="slack-app-token",
    ),
    pytest.param("gho_" + GITHUB[4:], (GITHUB[4:],), "GitHub token", (), id="github-oauth-token"),
    pytest.param(
        "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",
        ("Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6",),
        "Google",
        (),
        id="gcp-oauth-client-secret",
    ),
    pytest.param(
        "ya29.a0AfB_byC1d2E3f4G5h6I7j8K9l0",
        ("a0AfB_byC1d2E3f4G5h6I7j8K9l0",),
        "Google",
        (),
        id="gcp-oauth-token",
    ),
    pytest.param(
        "rk_live_51HxQmLr8Tn4Vb6Yc1Wd3Fg5Hj",
        ("51HxQmLr8Tn4Vb6Yc1Wd3Fg5Hj",),
        "Stripe",
        (),
        id="stripe-restricted",
    ),
    pytest.param(
        "whsec_Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6+Yw3s/X0=",
        ("Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6",),
        "Stripe",
        (),
        id="stripe-webhook-secret",
    ),
    pytest.param(
        '{"Credentials": {"AccessKeyId": "ASIAQ3EGTW5LKRSM7XPA", '
        f'"SecretAccessKey": "{AWS_SECRET}"}}}}',
        (AWS_SECRET, "ASIAQ3EGTW5LKRSM7XPA"),
        "AWS secret access key",
        ("AccessKeyId",),
        id="aws-sts-json",
    ),
    pytest.param(
        "session FwoGZXIvYXdzEBYaDH9Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Yw3sX0dD2uJ0mN1pT6yV9bR4c",
        ("Zq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Yw3sX0dD2uJ0mN1pT6",),
        "AWS session token",
        ("session",),
        id="aws-session-token",
    ),
    pytest.param(
        f"hf_{GITLAB_BODY}abcdefghij", (GITLAB_BODY,), "Hugging Face", (), id="huggingface-token"
    ),
    pytest.param(
        f"{JWT_PARTS[0]}.{JWT_PARTS[1]}.", JWT_PARTS[:2], "JSON Web Token", (), id="jwt-unsigned"
    ),
    pytest.param(
        f"{JWT_PARTS[0]}.{JWT_PARTS[1]}.Zq8Rw3L",
        (*JWT_PARTS[:2], "Zq8Rw3L"),
        "JSON Web Token",
        (),
        id="jwt-short-sig",
    ),
    pytest.param(
        f"{JWT_PARTS[0]}..{JWT_PARTS[1]}.{JWT_PARTS[2]}.Zq8Rw3Lm9Xp2",
        (*JWT_PARTS, "Zq8Rw3Lm9Xp2"),
        "JSON Web Token",
        (),
        id="jwe-five-parts",
    ),
    pytest.param(
        f"{JWT_PARTS[0]}.{JWT_PARTS[1]}.{JWT_PARTS[2]}", JWT_PARTS, "JSON Web Token", (), id="jwt"
    ),
    # --- values the environment says are secret, encoded or wrapped ---
    pytest.param(
        f"seed {b64(DB_PASSWORD)} loaded", (b64(DB_PASSWORD),), None, ("loaded",), id="env-base64"
    ),
    pytest.param(
        "seed " + base64.urlsafe_b64encode(API_TOKEN.encode()).decode().rstrip("="),
        (base64.urlsafe_b64encode(API_TOKEN.encode()).decode()[:30],),
        None,
        ("seed",),
        id="env-base64-url-safe-unpadded",
    ),
    pytest.param(
        f"upstream sent x-auth {b64('svc:' + DB_PASSWORD)} back",
        (b64("svc:" + DB_PASSWORD), b64("svc:" + DB_PASSWORD)[4:20]),
        None,
        ("back",),
        id="env-base64-user-colon-password",
    ),
    pytest.param(
        f'{{"data": "{b64("prefix-" + API_TOKEN + "-suffix")}"}}',
        (b64("prefix-" + API_TOKEN + "-suffix")[12:40],),
        None,
        ('{"data": "',),
        id="env-base64-inside-a-blob",
    ),
    pytest.param(
        f"password is {DB_PASSWORD[:6]}\n    {DB_PASSWORD[6:]} (wrapped)",
        (DB_PASSWORD[:6], DB_PASSWORD[6:]),
        None,
        ("(wrapped)",),
        id="env-wrapped-once",
    ),
    pytest.param(
        f"auth header: {API_TOKEN[:10]}\r\n\t{API_TOKEN[10:20]}\r\n\t{API_TOKEN[20:]} end",
        (API_TOKEN[:10], API_TOKEN[10:20], API_TOKEN[20:]),
        None,
        ("end",),
        id="env-wrapped-twice-crlf",
    ),
    pytest.param(
        f"GET /search?q={urllib.parse.quote_plus(PASSPHRASE)}&x=1",
        ("correct+horse+battery+staple", "battery"),
        None,
        ("&x=1",),
        id="env-form-encoded",
    ),
    pytest.param(
        '{"pw":"' + DB_PASSWORD.replace("&", "\\u0026") + '"}',
        ("Tr0ub4dor", "3-horse"),
        None,
        ('{"pw":"',),
        id="env-json-go-escaped",
    ),
    pytest.param(
        f"\x1b[2m{DB_PASSWORD[:4]}\x1b[22m{DB_PASSWORD[4:]}",
        (DB_PASSWORD[4:],),
        None,
        (),
        id="env-value-split-by-escape",
    ),
]


def redactor() -> Redactor:
    return Redactor.build(env=ENV)


@pytest.mark.parametrize(("text", "secrets", "kind", "keeps"), HOSTILE)
def test_a_hostile_secret_is_redacted_and_refused(
    text: str, secrets: tuple[str, ...], kind: str | None, keeps: tuple[str, ...]
) -> None:
    out = redactor().redact(text)
    for secret in secrets:
        assert secret not in out, f"{secret!r} survived: {out!r}"
    # A secret inside an escape sequence's text goes with the sequence.
    shown = strip_terminal_escapes(text)
    assert "[REDACTED:" in out or not any(secret in shown for secret in secrets)
    for kept in keeps:
        assert kept in out, f"{kept!r} was lost: {out!r}"
    assert "\x1b" not in out
    if kind is not None:
        findings = secret_findings(text)
        assert any(kind in found for found in findings), findings
        assert not any(secret in found for secret in secrets for found in findings)


ORDINARY = [
    pytest.param("REDIS_HOST=redis", id="host-setting"),
    pytest.param("2024-05-01T10:00:00Z INFO listening on http://0.0.0.0:8000", id="listen-url"),
    pytest.param("GET http://api:8080/users/@me 200 12ms", id="port-then-path-with-at"),
    pytest.param("vite: http://localhost:5173/@vite/client", id="vite-client"),
    pytest.param("ssh://git@github.com:22/org/repo.git", id="ssh-user-no-password"),
    pytest.param("postgres://db:5432/app?sslmode=disable", id="url-without-credentials"),
    pytest.param(
        "pulled sha256:" + "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        id="digest",
    ),
    pytest.param(
        "MIIBszCCAVmgAwIBAgIUZq8Rw3Lm9Xp2Tk7Vb4Nc1Hd6Yw3s\n-----END CERTIFICATE-----",
        id="certificate-tail",
    ),
    pytest.param("-----END RSA PRIVATE KEY-----", id="lone-end-line"),
    pytest.param("ERROR: invalid key size (expected 32 bytes)", id="key-prose"),
    pytest.param("aws_region = eu-west-1", id="aws-region"),
    pytest.param("retrying in 5s (attempt 3 of 10)", id="retry-line"),
    pytest.param("eyes on http://example.com/a:b", id="colon-in-path"),
]


@pytest.mark.parametrize("text", ORDINARY)
def test_an_ordinary_line_is_left_alone_and_not_a_finding(text: str) -> None:
    assert redactor().redact(text) == text
    assert secret_findings(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "url = f'postgresql://{user}:${DB_PASSWORD}@db/app'",
        'dsn = "postgres://app:{password}@db/app".format(password=pw)',
        "DATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app",
        '"private_key": "${GCP_PRIVATE_KEY}"',
        '"private_key_id": "<your key id>"',
        "\x1b[32mINFO\x1b[0m server started",
    ],
)
def test_a_placeholder_or_a_coloured_line_is_not_a_finding(text: str) -> None:
    assert secret_findings(text) == []


def test_a_coloured_line_is_shown_without_its_escape_codes() -> None:
    assert redactor().redact("\x1b[32mINFO\x1b[0m server \x1b]0;title\x07started") == (
        "INFO server started"
    )


def test_stripping_keeps_line_endings_and_tabs() -> None:
    assert strip_terminal_escapes("a\tb\r\nc\rd\x00e\x7f\u200bf") == "a\tb\r\ncdef"


def test_an_unended_window_title_keeps_its_text_visible() -> None:
    # A terminal would swallow the rest; the model sees it, redacted.
    out = redactor().redact(f"\x1b]0;deploy {GITHUB}")
    assert out == "0;deploy [REDACTED:GITHUB_TOKEN]"


def test_the_text_of_an_escape_sequence_is_searched_as_well() -> None:
    assert GITHUB in escape_payloads(f"\x1b]2;{GITHUB}\x07")
    assert GITHUB not in strip_terminal_escapes(f"\x1b]2;{GITHUB}\x07")


def test_a_replacement_keeps_the_line_count() -> None:
    text = f"start\n{PEM}then {DB_PASSWORD[:5]}\n  {DB_PASSWORD[5:]}\nend"
    out = redactor().redact(text)
    assert out.count("\n") == text.count("\n")
    assert out.splitlines()[-1] == "end"


def test_a_jwt_is_one_placeholder_not_three() -> None:
    out = redactor().redact("Authorization: Bearer " + ".".join(JWT_PARTS) + " ok")
    assert out == "Authorization: Bearer [REDACTED:JWT] ok"


def test_an_env_secret_names_its_variable_in_every_form() -> None:
    wrapped = f"{DB_PASSWORD[:8]}\n {DB_PASSWORD[8:]}"
    out = redactor().redact(f"{b64(DB_PASSWORD)} {wrapped} {urllib.parse.quote(DB_PASSWORD)}")
    assert re.sub(r"\s+", " ", out) == " ".join(["[REDACTED:DB_PASSWORD]"] * 3)


def test_a_short_env_value_is_not_hunted_in_base64_or_across_lines() -> None:
    r = Redactor.build(env={"PIN_CODE": "7391xy"})
    text = f"{b64('7391xy')} 739\n1xy"
    assert r.redact(text) == text


def test_a_private_key_block_found_whole_is_not_searched_again_backwards() -> None:
    spans = [s for s in find_secrets(f"noise\n{PEM}") if s.label == "PRIVATE_KEY"]
    assert len(spans) == 1
    assert spans[0].start == len("noise\n")


@pytest.mark.parametrize(
    "text",
    [
        "a://b:" * 6000,
        "x://u:" + "p@" * 18000,
        "-----END RSA PRIVATE KEY-----\n" * 1200,
        ("QUJD" * 16 + "\n") * 560 + "-----END RSA PRIVATE KEY-----",
        "eyJabcd" + "." * 36000,
        "\x1b[" + "1;" * 18000,
        "glpat-" + "a" * 20 + ".a" * 18000,
        ("Tr0ub4\n" + " " * 60) * 500,
    ],
    ids=["schemes", "ats", "end-lines", "base64-lines", "dots", "open-csi", "dotted", "indents"],
)
@pytest.mark.timeout(60)
def test_redaction_of_36_kib_of_hostile_text_finishes(text: str) -> None:
    # A pattern that backtracks badly takes minutes on 36 KiB and trips the time-out;
    # how fast redaction is, is measured by bench/escalate_bench.py.
    out = redactor().redact(text)
    assert isinstance(out, str) and len(out) <= len(text) * 2


@pytest.mark.parametrize("offset", [0, 1500, 2030, 2040, 3560, 5000])
def test_a_long_line_is_read_in_windows_that_never_cut_a_secret_in_two(offset: int) -> None:
    key = "AKIA" + "Q3EXAMPLEKEY7ABC"
    line = "x" * offset + " " + key + " " + "y" * 6000
    assert ("AWS Access Key", key) in plugin_secrets([line])
