"""What a secret looks like, in a file's name and in text. Pure: no I/O.

Three parts of medic keep secrets out of what they handle, and they share these
rules so that a kind of secret one of them knows is known to all:

- the case file's redaction (``agent.escalate.redact``) replaces secret values
  before anything reaches a model;
- the fix guardrails (``agent.fixes.guardrails``, through ``agent.fixes.secrets``)
  refuse an edit that adds one, naming the kind found and never the value;
- the model's read-only repository tools (``agent.escalate.claude``) refuse to open
  a secret file, as the guardrails refuse to write one.

detect-secrets' plugins back up the value patterns. Only the plugins precise enough
to trust one by one are used, and only their ``analyze_string``: the keyword, entropy
and IP plugins flag ordinary values (``REDIS_HOST=redis``), the eager ``scan_line``
does too, and ``analyze_line`` reads process-wide settings and may try to verify a
secret over the network.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# --- secret files --------------------------------------------------------------------------

#: File names that hold secrets, keys or identities, matched case-insensitively against
#: one name (not a path): never read for a model, never written by a fix.
SECRET_FILE_NAMES = (
    ".env",
    ".env.*",
    "*.env",
    "*.pem",
    "*.key",
    "*.crt",
    "*.cer",
    "*.der",
    "*.csr",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.gpg",
    "*.asc",
    "*.kdbx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".htpasswd",
    "credentials",
    "credentials.*",
    "*secret*",
    "*.tfstate",
    "*.tfstate.*",
)


def is_secret_file_name(name: str) -> bool:
    """Whether a file (or folder) with this name holds secrets (.env*, keys, certificates)."""
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in SECRET_FILE_NAMES)


# --- secret values -------------------------------------------------------------------------


@dataclass(frozen=True)
class ValuePattern:
    """A shape of secret value."""

    label: str
    """The name in a redaction placeholder: ``[REDACTED:ANTHROPIC_KEY]``."""
    kind: str
    """What it is, for a sentence: ``an Anthropic API key``."""
    pattern: re.Pattern[str]
    group: int = 0
    """The group that is the secret; 0 is the whole match."""
    detect: bool = True
    """False when the match rests on the word before the value rather than the value's
    shape (``basic authentication`` is prose as well): redacted from case files, where
    hiding too much costs little, but not a reason to refuse an edit."""


#: Value patterns in the order the redactor applies them: the more specific first
#: (``sk-ant-`` before ``sk-``).
VALUE_PATTERNS: tuple[ValuePattern, ...] = (
    ValuePattern(
        "PRIVATE_KEY",
        "a private key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
            r"[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
    ),
    ValuePattern(
        "PRIVATE_KEY",
        "a private key",
        re.compile(r"PuTTY-User-Key-File-\d+:[\s\S]*?(?:Private-MAC: \S+|\Z)"),
    ),
    ValuePattern("ANTHROPIC_KEY", "an Anthropic API key", re.compile(r"sk-ant-[A-Za-z0-9_-]{8,}")),
    ValuePattern(
        "OPENAI_KEY",
        "an API key (sk-)",
        re.compile(r"\bsk-(?!ant-)(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}"),
    ),
    ValuePattern(
        "STRIPE_KEY", "a Stripe key", re.compile(r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}")
    ),
    ValuePattern("STRIPE_KEY", "a Stripe key", re.compile(r"\bwhsec_[A-Za-z0-9]{16,}")),
    ValuePattern("GITHUB_TOKEN", "a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ValuePattern("GITHUB_TOKEN", "a GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    ValuePattern("GITLAB_TOKEN", "a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ValuePattern("SLACK_TOKEN", "a Slack token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    ValuePattern(
        "SLACK_WEBHOOK",
        "a Slack webhook",
        re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9_/]+"),
    ),
    ValuePattern(
        "AWS_ACCESS_KEY",
        "an AWS access key id",
        re.compile(
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|A3T[A-Z0-9])[A-Z0-9]{16}\b"
        ),
    ),
    ValuePattern(
        "AWS_SECRET_KEY",
        "an AWS secret access key",
        re.compile(
            r"(?i)aws[\w.-]{0,20}?(?:secret|key)[\w.-]{0,20}?[\"']?\s*[:=]\s*[\"']?"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        group=1,
    ),
    ValuePattern(
        "AWS_SECRET_KEY",
        "an AWS secret access key",
        re.compile(
            r"(?i)aws.{0,20}?(?:secret|key)[^\n]{0,20}?[=:][\s'\"]*"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        group=1,
    ),
    ValuePattern("GCP_KEY", "a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ValuePattern("GCP_TOKEN", "a Google OAuth token", re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}")),
    ValuePattern(
        "JWT",
        "a JSON Web Token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
    ValuePattern(
        "BEARER_TOKEN",
        "a bearer or basic credential",
        re.compile(r"(?i)\b(?:bearer|token|basic|digest)\s+([A-Za-z0-9._~+/-]{12,}=*)"),
        group=1,
        detect=False,
    ),
    ValuePattern(
        "URL_PASSWORD",
        "a password in a URL",
        re.compile(
            r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@\"']+:([^\s@/\"']+)@"
        ),
        group=1,
    ),
)

#: The password inside a URL (``scheme://user:password@host``), group 1.
URL_PASSWORD = next(p for p in VALUE_PATTERNS if p.label == "URL_PASSWORD")

#: Values that name a secret instead of holding it (``${DB_PASSWORD}``, ``<password>``).
_PLACEHOLDER = re.compile(r"^(?:\$|\{\{|%\(|<|\*+$|x+$|\.\.\.|changeme$|password$)", re.I)


def is_placeholder(value: str) -> bool:
    """Whether ``value`` stands for a secret (``${DB_PASSWORD}``, ``<token>``, ``xxxx``)
    instead of being one."""
    return bool(_PLACEHOLDER.match(value))


# --- detect-secrets ------------------------------------------------------------------------

#: detect-secrets plugins whose patterns are specific enough to trust one by one.
PLUGIN_NAMES = (
    "artifactory.ArtifactoryDetector",
    "aws.AWSKeyDetector",
    "azure_storage_key.AzureStorageKeyDetector",
    "basic_auth.BasicAuthDetector",
    "discord.DiscordBotTokenDetector",
    "github_token.GitHubTokenDetector",
    "gitlab_token.GitLabTokenDetector",
    "jwt.JwtTokenDetector",
    "mailchimp.MailchimpDetector",
    "npm.NpmDetector",
    "openai.OpenAIDetector",
    "private_key.PrivateKeyDetector",
    "pypi_token.PypiTokenDetector",
    "sendgrid.SendGridDetector",
    "slack.SlackDetector",
    "square_oauth.SquareOAuthDetector",
    "stripe.StripeDetector",
    "telegram_token.TelegramBotTokenDetector",
    "twilio.TwilioKeyDetector",
)

# detect-secrets keeps its settings process-wide and its plugins are shared objects, so
# they are called from one thread at a time.
_PLUGIN_LOCK = threading.Lock()
_plugins: list[tuple[str, Any]] | None = None


def _loaded_plugins() -> list[tuple[str, Any]]:
    """(secret type, plugin) for each of PLUGIN_NAMES, built on first use. Hold the lock."""
    global _plugins  # noqa: PLW0603 - built once, on first use, under the lock
    if _plugins is None:
        loaded: list[tuple[str, Any]] = []
        for name in PLUGIN_NAMES:
            module_name, class_name = name.rsplit(".", 1)
            module = importlib.import_module(f"detect_secrets.plugins.{module_name}")
            plugin = getattr(module, class_name)()
            loaded.append((str(plugin.secret_type), plugin))
        _plugins = loaded
    return _plugins


def plugin_secrets(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(secret type, value) for every value a detect-secrets plugin finds in ``lines``,
    line by line and, within a line, in PLUGIN_NAMES order. Values may be empty or
    placeholders: what counts is the caller's to decide."""
    found: list[tuple[str, str]] = []
    with _PLUGIN_LOCK:
        plugins = _loaded_plugins()
        for line in lines:
            for kind, plugin in plugins:
                found.extend((kind, str(value)) for value in plugin.analyze_string(line))
    return found
