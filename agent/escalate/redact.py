"""Redaction: nothing that looks like a secret goes into a case file.

Every string that enters a case file (and every repository file the model reads) is
first stripped of terminal escapes and invisible characters
(``agent.secrets.strip_terminal_escapes``): a colour code inside a token hides it
from a pattern, not from a reader. The redacted text is the stripped text; losing
escape codes costs the model nothing. Then four layers, in this order:

1. **Exact values.** Every value of an environment variable whose *name* looks
   secret (``DB_PASSWORD``, ``STRIPE_API_KEY``, ``SENTRY_DSN``, …), and the password
   inside any URL-valued variable, is replaced wherever it appears (logs, command
   lines, compose text) by a stable placeholder naming the variable:
   ``[REDACTED:DB_PASSWORD]``. This catches most leaks: a program that prints its
   connection string prints the same value the environment holds. Each value is also
   looked for URL-encoded and JSON-escaped and, when it has ``SPLIT_MIN_LENGTH``
   characters or more, wrapped across lines (a line break and indentation between
   any two of its characters, as a log wraps a long value).
2. **Value patterns** (``agent.secrets.find_secrets``, shared with the fix
   guardrails): private keys (also headless, JSON-escaped or base64-encoded), JWTs
   whole, bearer/basic credentials, cloud and API tokens, the password in a URL.
3. **Encoded values.** The base64 of each exact value of ``SPLIT_MIN_LENGTH``
   characters or more, standard or URL-safe, padded or not, and wherever it starts
   inside a longer base64 text (``Basic base64(user:password)``): the characters
   that depend on the value alone are looked for at each of the three byte
   alignments, and the whole base64 run around them is replaced.
4. ``name=value`` pairs whose name looks secret, command-line options likewise,
   whatever the operator's MEDIC_REDACT patterns match, and then **detect-secrets
   plugins** (``agent.secrets.plugin_secrets``), called one by one on each line as a
   backup for the value patterns.

A replacement keeps the line breaks it covers, so line numbers in a file the model
reads stay true. Each layer is one pass (or one regular expression) over the text,
linear in its length.

The module is pure: it reads no environment and does no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import string
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.errors import ConfigError
from agent.secrets import (
    URL_PASSWORD,
    SecretSpan,
    find_secrets,
    plugin_secrets,
    strip_terminal_escapes,
)

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
#: Last words of names that say what went wrong, not what is held: Python's
#: ``KeyError: 'DATABASE_URL'`` names the missing variable, which the diagnosis needs.
FAILURE_WORDS = frozenset({"ERROR", "EXCEPTION"})

#: Values never scrubbed elsewhere: replacing every ``true`` in a log helps nobody.
_HARMLESS_VALUES = frozenset({"true", "false", "yes", "no", "on", "off", "none", "null", "0", "1"})

#: A secret value shorter than this is redacted where it is assigned, but not hunted
#: for in free text, where it would replace ordinary words.
MIN_SCRUB_LENGTH = 4

#: A secret value this long or longer is also hunted for wrapped across lines and
#: base64-encoded; a shorter one would match ordinary text by chance (the base64 of
#: 8 characters is at least 10 characters that depend on the value alone).
SPLIT_MIN_LENGTH = 8

#: What may stand between two characters of a value a log wrapped: a line break and
#: the next line's indentation.
_WRAP = r"(?:\r?\n[ \t]*)?"
_URL_SAFE = str.maketrans("+/", "-_")
_BASE64_RUN = frozenset(string.ascii_letters + string.digits + "+/-_")

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def name_words(name: str) -> list[str]:
    """``dbPassword`` → ``["DB", "PASSWORD"]``; ``DB_PASSWORD_FILE`` → 3 words."""
    return [w.upper() for w in _WORD_SPLIT.split(name) if w]


def is_secret_name(name: str) -> bool:
    """Whether a variable (or option, or key) with this name holds a secret."""
    words = name_words(name)
    if not words or words[-1] in POINTER_WORDS or words[-1] in FAILURE_WORDS:
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


def escaped_forms(value: str) -> set[str]:
    """The ways a program may print ``value`` as text: as it is, URL-encoded (as a
    path, a query or a form field) and JSON-escaped (also Go's HTML-safe ``\\u0026``)."""
    json_text = json.dumps(value)[1:-1]
    return {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value, safe=""),
        json_text,
        json.dumps(value, ensure_ascii=False)[1:-1],
        json_text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"),
    }


def base64_cores(value: str) -> set[str]:
    """The base64 characters that encode ``value`` alone, wherever it starts in the
    bytes encoded: one string for each of the three alignments (the value's offset
    modulo 3), standard and URL-safe. The characters that mix the value's first or
    last bits with a neighbour's are left out; the caller takes the base64 run the
    core sits in."""
    data = value.encode()
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode()
        total = offset + len(data)
        core = encoded[(0, 2, 3)[offset] : total // 3 * 4 + (0, 1, 2)[total % 3]]
        cores.update((core, core.translate(_URL_SAFE)))
    return cores


def _wrappable(form: str) -> str:
    """A regular expression for ``form``, also wrapped across lines if it is long."""
    if len(form) < SPLIT_MIN_LENGTH:
        return re.escape(form)
    return _WRAP.join(re.escape(c) for c in form)


def _alternation(forms: Mapping[str, str]) -> tuple[re.Pattern[str] | None, dict[str, str]]:
    """One expression for every form, longest first (so that a value wins over a value
    it contains), and the variable name of each form by ``_unwrapped`` text.

    The alternatives are bare, without a group each, so that the regular expression
    engine skips every position whose character starts none of them."""
    ordered = sorted(forms, key=lambda form: (-len(form), form))
    if not ordered:
        return None, {}
    names: dict[str, str] = {}
    for form in ordered:
        names.setdefault(_unwrapped(form), forms[form])
    return re.compile("|".join(_wrappable(form) for form in ordered)), names


def _unwrapped(text: str) -> str:
    """``text`` without whitespace: the same for a form and for any wrapped copy of it."""
    return "".join(text.split())


def _keep_breaks(placeholder: str, replaced: str) -> str:
    """``placeholder``, followed by the line breaks of the text it replaces."""
    return placeholder + "\n" * replaced.count("\n")


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in text; build one per case file with ``Redactor.build``."""

    values: tuple[tuple[str, str], ...] = ()
    """(secret value, the variable it came from), longest value first."""
    patterns: tuple[re.Pattern[str], ...] = ()
    """The operator's MEDIC_REDACT patterns."""
    _exact: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _exact_names: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    _encoded: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _encoded_names: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

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
            shown = strip_terminal_escapes(text)
            if is_secret_name(name):
                candidates = [text, text.strip(), shown.strip()]
            else:
                password = _url_password(shown)
                candidates = [password] if password else []
            for candidate in candidates:
                if _scrubbable(candidate):
                    known.setdefault(candidate, name)
        values = tuple(sorted(known.items(), key=lambda kv: (-len(kv[0]), kv[0])))
        exact: dict[str, str] = {}
        encoded: dict[str, str] = {}
        for value, name in values:
            for form in escaped_forms(value):
                exact.setdefault(form, name)
            if len(value) >= SPLIT_MIN_LENGTH:
                for core in base64_cores(value):
                    encoded.setdefault(core, name)
        exact_pattern, exact_names = _alternation(exact)
        encoded_pattern, encoded_names = _alternation(encoded)
        return Redactor(
            values=values,
            patterns=self.patterns,
            _exact=exact_pattern,
            _exact_names=exact_names,
            _encoded=encoded_pattern,
            _encoded_names=encoded_names,
        )

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
        """``text``, stripped of terminal escapes, with every secret this redactor
        recognises replaced."""
        if not text:
            return text
        text = strip_terminal_escapes(text)
        if self._exact is not None:
            text = self._exact.sub(self._exact_replacement, text)
        text = _replace_spans(text, find_secrets(text))
        if self._encoded is not None:
            text = _replace_base64_runs(self._encoded, self._encoded_names, text)
        text = _ASSIGNMENT.sub(_assignment_replacement, text)
        text = _OPTION.sub(_assignment_replacement, text)
        for custom in self.patterns:
            text = custom.sub(_placeholder("MEDIC_REDACT"), text)
        return _detect_secrets_pass(text)

    def redact_all(self, texts: Iterable[str]) -> list[str]:
        return [self.redact(t) for t in texts]

    def _exact_replacement(self, match: re.Match[str]) -> str:
        text = match.group(0)
        return _keep_breaks(_placeholder(self._exact_names[_unwrapped(text)]), text)


def _replace_spans(text: str, spans: Iterable[SecretSpan]) -> str:
    """``text`` with each span replaced by its placeholder; overlapping spans become one,
    named by the one that starts first (of those, the first pattern's)."""
    ordered = sorted(
        (s for s in spans if not _PLACEHOLDER_TEXT.fullmatch(text, s.start, s.end)),
        key=lambda s: s.start,
    )
    out: list[str] = []
    last = 0
    index = 0
    while index < len(ordered):
        first = ordered[index]
        end = first.end
        index += 1
        while index < len(ordered) and ordered[index].start < end:
            end = max(end, ordered[index].end)
            index += 1
        out.append(text[last : first.start])
        out.append(_keep_breaks(_placeholder(first.label), text[first.start : end]))
        last = end
    out.append(text[last:])
    return "".join(out)


def _replace_base64_runs(pattern: re.Pattern[str], names: Mapping[str, str], text: str) -> str:
    """``text`` with every base64 run that holds one of ``pattern``'s cores replaced."""
    out: list[str] = []
    last = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start < last:
            continue
        while start > last and text[start - 1] in _BASE64_RUN:
            start -= 1
        while end < len(text) and text[end] in _BASE64_RUN:
            end += 1
        while end < len(text) and text[end] == "=":
            end += 1
        out.append(text[last:start])
        name = names[_unwrapped(match.group(0))]
        out.append(_keep_breaks(_placeholder(name), text[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out)


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
