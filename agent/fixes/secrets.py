"""Whether a text holds something that looks like a secret. Pure: no I/O.

One function, ``secret_findings``, so that the fix guardrails (which scan the lines
an edit adds) and the case file's redaction can share one detector. It names the
kinds of secret found, never the values, so its answer can be logged and stored.
"""

from __future__ import annotations

import importlib
import re
import threading
from typing import Any

_SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b")),
    (
        "an AWS secret access key",
        re.compile(
            r"(?i)aws.{0,20}?(?:secret|key)[^\n]{0,20}?[=:][\s'\"]*[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
        ),
    ),
    (
        "a GitHub token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    (
        "a Slack webhook",
        re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9]+/B[A-Za-z0-9]+/[A-Za-z0-9]+"),
    ),
    ("a Stripe key", re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}")),
    ("an Anthropic API key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{16,}")),
    ("an API key (sk-)", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9]{32,}")),
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    (
        "a JSON Web Token",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
)

#: A password inside a URL (``scheme://user:password@host``).
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]+:([^\s@/'\"]+)@")

#: Values that name a secret instead of holding it (``${DB_PASSWORD}``, ``<password>``).
_PLACEHOLDER = re.compile(r"^(?:\$|\{\{|%\(|<|\*+$|x+$|\.\.\.|changeme$|password$)", re.I)

#: detect-secrets plugins whose patterns are specific enough to trust one by one. The
#: keyword, entropy and IP plugins flag ordinary values and are left out.
_PLUGIN_NAMES = (
    "aws.AWSKeyDetector",
    "artifactory.ArtifactoryDetector",
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
# they are called from one thread at a time. Only ``analyze_string`` is used: it is the
# plugin's own pattern, while ``analyze_line`` reads the global settings and may try to
# verify a secret over the network.
_PLUGIN_LOCK = threading.Lock()
_plugins: list[tuple[str, Any]] | None = None


def _detect_secrets_plugins() -> list[tuple[str, Any]]:
    global _plugins  # noqa: PLW0603 - built once, on first use, under the lock
    if _plugins is None:
        loaded: list[tuple[str, Any]] = []
        for name in _PLUGIN_NAMES:
            module_name, class_name = name.rsplit(".", 1)
            module = importlib.import_module(f"detect_secrets.plugins.{module_name}")
            plugin = getattr(module, class_name)()
            loaded.append((str(plugin.secret_type), plugin))
        _plugins = loaded
    return _plugins


def secret_findings(text: str) -> list[str]:
    """What kinds of secret-looking values ``text`` holds (never the values themselves).

    Our own patterns (cloud and API keys including ``sk-ant-``, private key blocks,
    JWTs, passwords in URLs) first, then detect-secrets' precise plugins one by one.
    """
    found: list[str] = []
    for kind, pattern in _SECRET_PATTERNS:
        if pattern.search(text):
            found.append(kind)
    for match in _URL_PASSWORD.finditer(text):
        if not _PLACEHOLDER.match(match.group(1)):
            found.append("a password in a URL")
            break
    with _PLUGIN_LOCK:
        for kind, plugin in _detect_secrets_plugins():
            for line in text.splitlines():
                values = [str(v) for v in plugin.analyze_string(line)]
                if any(v and not _PLACEHOLDER.match(v) for v in values):
                    found.append(f"{kind} (detect-secrets)")
                    break
    return list(dict.fromkeys(found))
