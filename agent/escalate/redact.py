"""Redaction: nothing that looks like a secret goes into a case file.

Three layers, applied in this order to every string that enters a case file:

1. **Exact values.** Every value of an environment variable whose *name* looks
   secret (``DB_PASSWORD``, ``STRIPE_API_KEY``, ``SENTRY_DSN``, …), and the password
   inside any URL-valued variable, is replaced wherever it appears (logs, command
   lines, compose text) by a stable placeholder naming the variable:
   ``[REDACTED:DB_PASSWORD]``. This catches most leaks: a program that prints its
   connection string prints the same value the environment holds.
2. **Value patterns** (``agent.secrets``, shared with the fix guardrails). Private
   key blocks, JWTs, bearer/basic credentials, AWS, GCP, GitHub, GitLab, Slack,
   Stripe, OpenAI and Anthropic (``sk-ant-…``) keys, the password in a URL; then
   ``name=value`` pairs whose name looks secret, and whatever the operator's
   MEDIC_REDACT patterns match.
3. **detect-secrets plugins** (``agent.secrets.plugin_secrets``), called one by one
   on each line as a backup for the value patterns.

The module is pure: it reads no environment and does no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.errors import ConfigError
from agent.secrets import URL_PASSWORD, VALUE_PATTERNS, plugin_secrets

PLACEHOLDER = "[REDACTED:{}]"

#: Words that make a variable name secret when they are one of its words.
#: ``KEY`` counts only as a whole word (``API_KEY``, ``apiKey``), so ``MONKEY_COUNT``
#: and ``KEYBOARD_LAYOUT`` keep their values.
SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWORDS",
        "PASSWD",
        "PASS",
        "PWD",
        "PASSPHRASE",
        "SECRET",
        "SECRETS",
        "TOKEN",
        "TOKENS",
        "KEY",
        "KEYS",
        "APIKEY",
        "ACCESSKEY",
        "PRIVATEKEY",
        "SECRETKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "DSN",
        "PRIVATE",
        "AUTH",
        "AUTHORIZATION",
        "COOKIE",
        "SALT",
        "SIGNATURE",
        "CERT",
        "PASSCODE",
        "PIN",
    }
)

#: Last words that make a secret-looking name point *at* a secret rather than hold one
#: (``DB_PASSWORD_FILE=/run/secrets/db``, the Docker secrets convention).
POINTER_WORDS = frozenset({"FILE", "PATH", "DIR"})

#: Values never scrubbed elsewhere: replacing every ``true`` in a log helps nobody.
_HARMLESS_VALUES = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null", "0", "1"})

#: A secret value shorter than this is redacted where it is assigned, but not hunted
#: for in free text, where it would replace ordinary words.
MIN_SCRUB_LENGTH = 4

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def name_words(name: str) -> list[str]:
    """``dbPassword`` → ``["DB", "PASSWORD"]``; ``DB_PASSWORD_FILE`` → 3 words."""
    return [w.upper() for w in _WORD_SPLIT.split(name) if w]


def is_secret_name(name: str) -> bool:
    """Whether a variable (or option, or key) with this name holds a secret."""
    words = name_words(name)
    if not words or words[-1] in POINTER_WORDS:
        return False
    return any(w in SECRET_WORDS for w in words)


# --- name-based patterns -----------------------------------------------------------------

#: ``password=hunter2``, ``"apiKey": "abc"``: a secret-looking name, ``=`` or ``:``, a value.
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[A-Za-z_][\w.-]*)(?P<quote1>[\"']?)(?P<sep>\s*[:=]\s*)(?P<quote2>[\"']?)"
    r"(?P<value>[^\s\"',;&]{3,})"
)
#: ``--db-password hunter2``: a command-line option and its value after a space.
_OPTION = re.compile(
    r"(?P<name>(?<![\w-])--?[A-Za-z][\w.-]*)(?P<quote1>)(?P<sep>\s+)(?P<quote2>[\"']?)"
    r"(?P<value>[^\s\"',;&-][^\s\"',;&]{2,})"
)
#: Words that start an Authorization header's value; the credential after them is
#: handled by the BEARER_TOKEN pattern.
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest"})

_PLACEHOLDER_TEXT = re.compile(r"\[REDACTED:[^\]]*\]")


def parse_patterns(text: str) -> tuple[re.Pattern[str], ...]:
    """MEDIC_REDACT: one regular expression a line; blank lines and ``#`` lines skipped.

    Raises ConfigError naming the line that does not compile.
    """
    patterns: list[re.Pattern[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        source = line.strip()
        if not source or source.startswith("#"):
            continue
        try:
            patterns.append(re.compile(source))
        except re.error as e:
            raise ConfigError(
                f"MEDIC_REDACT line {number} ({source!r}) is not a valid regular expression: "
                f"{e}; write one Python regular expression a line."
            ) from e
    return tuple(patterns)


def _placeholder(label: str) -> str:
    return PLACEHOLDER.format(label)


def _url_password(value: str) -> str | None:
    match = URL_PASSWORD.pattern.search(value)
    return match.group(URL_PASSWORD.group) if match else None


def _scrubbable(value: str) -> bool:
    text = value.strip()
    if len(text) < MIN_SCRUB_LENGTH or text.lower() in _HARMLESS_VALUES:
        return False
    return not (text.isdigit() and len(text) < 6)


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in text; build one per case file with ``Redactor.build``."""

    values: tuple[tuple[str, str], ...] = ()
    """(secret value, the variable it came from), longest value first."""
    patterns: tuple[re.Pattern[str], ...] = ()
    """The operator's MEDIC_REDACT patterns."""
    _exact: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        env: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        patterns: Sequence[re.Pattern[str]] = (),
    ) -> Redactor:
        """A redactor that knows the secret values among ``env`` (name → value)."""
        return cls(patterns=tuple(patterns)).with_env(env)

    def with_env(self, env: Mapping[str, str] | Iterable[tuple[str, str]]) -> Redactor:
        """This redactor, also knowing the secret values among ``env``."""
        pairs = env.items() if isinstance(env, Mapping) else env
        known = dict(self.values)
        for name, value in pairs:
            if value is None:
                continue
            text = str(value)
            if is_secret_name(name):
                candidates = [text, text.strip()]
            else:
                password = _url_password(text)
                candidates = [password] if password else []
            for candidate in candidates:
                if not _scrubbable(candidate):
                    continue
                for form in {candidate, urllib.parse.quote(candidate, safe="")}:
                    known.setdefault(form, name)
        values = tuple(sorted(known.items(), key=lambda kv: (-len(kv[0]), kv[0])))
        exact = re.compile("|".join(re.escape(v) for v, _ in values)) if values else None
        return Redactor(values=values, patterns=self.patterns, _exact=exact)

    def env_value(self, name: str, value: str) -> str:
        """What a case file shows for ``name=value``: the placeholder for secret names."""
        if is_secret_name(name):
            return _placeholder(name)
        return self.redact(value)

    def env_list(self, entries: Iterable[str]) -> list[str]:
        """Docker's ``Config.Env`` (``NAME=value`` strings), redacted."""
        shown = []
        for entry in entries:
            name, sep, value = entry.partition("=")
            shown.append(f"{name}={self.env_value(name, value)}" if sep else self.redact(entry))
        return shown

    def redact(self, text: str) -> str:
        """``text`` with every secret this redactor recognises replaced."""
        if not text:
            return text
        if self._exact is not None:
            names = dict(self.values)
            text = self._exact.sub(lambda m: _placeholder(names[m.group(0)]), text)
        for value in VALUE_PATTERNS:
            text = _replace_group(value.pattern, value.group, text, _placeholder(value.label))
        text = _ASSIGNMENT.sub(_assignment_replacement, text)
        text = _OPTION.sub(_assignment_replacement, text)
        for custom in self.patterns:
            text = custom.sub(_placeholder("MEDIC_REDACT"), text)
        return _detect_secrets_pass(text)

    def redact_all(self, texts: Iterable[str]) -> list[str]:
        return [self.redact(t) for t in texts]


def _replace_group(pattern: re.Pattern[str], group: int, text: str, placeholder: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if group == 0:
            return placeholder
        start, end = match.span(group)
        whole_start = match.start()
        secret = match.group(group)
        if _PLACEHOLDER_TEXT.fullmatch(secret):
            return match.group(0)
        return (
            match.group(0)[: start - whole_start]
            + placeholder
            + match.group(0)[end - whole_start :]
        )

    return pattern.sub(replace, text)


def _assignment_replacement(match: re.Match[str]) -> str:
    name = match.group("name")
    value = match.group("value")
    if not is_secret_name(name.lstrip("-")) or value.startswith("[REDACTED"):
        return match.group(0)
    if value.lower() in _AUTH_SCHEMES:
        return match.group(0)
    label = name.lstrip("-").replace("-", "_").replace(".", "_").upper()
    sep = match.group("sep")
    return f"{name}{match.group('quote1')}{sep}{match.group('quote2')}{_placeholder(label)}"


def _detect_secrets_pass(text: str) -> str:
    found: dict[str, str] = {}
    lines = [line for line in text.splitlines() if len(line) >= 8]
    for kind, value in plugin_secrets(lines):
        if len(value) >= 8 and not _PLACEHOLDER_TEXT.search(value):
            found.setdefault(value, re.sub(r"[^A-Z0-9]+", "_", kind.upper()).strip("_"))
    for value in sorted(found, key=len, reverse=True):
        text = text.replace(value, _placeholder(found[value]))
    return text
