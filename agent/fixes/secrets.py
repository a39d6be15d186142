"""Whether the lines an edit adds hold something that looks like a secret. Pure: no I/O.

The detector (``agent.secrets.find_secrets``) and detect-secrets' plugins are
``agent.secrets``'s, shared with the case file's redaction, so an edit is refused for
every kind of secret a case file hides. This module only names the kinds found, never
the values, so its answer can be logged, stored and shown to the model.

The text is read twice: as a terminal shows it (``strip_terminal_escapes``: a colour
code inside a token does not hide it), and, when it holds escape sequences or
controls at all, with each control character as a line break
(``escape_payloads``): a secret written into a window title or a hyperlink is
written all the same, though no terminal shows it.
"""

from __future__ import annotations

from agent.secrets import (
    escape_payloads,
    find_secrets,
    is_placeholder,
    plugin_secrets,
    strip_terminal_escapes,
)


def secret_findings(text: str) -> list[str]:
    """What kinds of secret-looking values ``text`` holds (never the values themselves).

    The detector first (private keys, also headless or JSON-escaped, cloud and API
    tokens including ``sk-ant-``, JWTs, passwords in URLs), then detect-secrets'
    precise plugins. A value that names a secret instead of holding one
    (``${DB_PASSWORD}``) is not a finding.
    """
    shown = strip_terminal_escapes(text)
    views = [shown] if shown == text else [shown, escape_payloads(text)]
    found: list[str] = []
    for view in views:
        found.extend(
            span.kind
            for span in find_secrets(view)
            if span.detect and not is_placeholder(view[span.start : span.end])
        )
    for view in views:
        for kind, secret in plugin_secrets(view.splitlines()):
            if secret and not is_placeholder(secret):
                found.append(f"{kind} (detect-secrets)")
    return list(dict.fromkeys(found))
