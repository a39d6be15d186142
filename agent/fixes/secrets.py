"""Whether the lines an edit adds hold something that looks like a secret. Pure: no I/O.

The patterns and detect-secrets' plugins are ``agent.secrets``'s, shared with the case
file's redaction; this module only names the kinds of secret found, never the values,
so its answer can be logged, stored and shown to the model.
"""

from __future__ import annotations

from agent.secrets import VALUE_PATTERNS, is_placeholder, plugin_secrets


def secret_findings(text: str) -> list[str]:
    """What kinds of secret-looking values ``text`` holds (never the values themselves).

    The value patterns (cloud and API keys including ``sk-ant-``, private key blocks,
    JWTs, passwords in URLs) first, then detect-secrets' precise plugins. A value that
    names a secret instead of holding one (``${DB_PASSWORD}``) is not a finding.
    """
    found: list[str] = []
    for value in VALUE_PATTERNS:
        if value.detect and any(
            not is_placeholder(match.group(value.group)) for match in value.pattern.finditer(text)
        ):
            found.append(value.kind)
    for kind, secret in plugin_secrets(text.splitlines()):
        if secret and not is_placeholder(secret):
            found.append(f"{kind} (detect-secrets)")
    return list(dict.fromkeys(found))
