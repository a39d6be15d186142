"""What a secret looks like, in a file's name and in text. Pure: no I/O.

Three parts of medic keep secrets out of what they handle, and they share these
rules so that a kind of secret one of them knows is known to all:

- the case file's redaction (``agent.escalate.redact``) replaces secret values
  before anything reaches a model, in logs and in the repository files it reads;
- the fix guardrails (``agent.fixes.guardrails``, through ``agent.fixes.secrets``)
  refuse an edit that adds one, naming the kind found and never the value;
- the model's read-only repository tools (``agent.escalate.repo_tools``) refuse to open
  a secret file, as the guardrails refuse to write one.

Text from a container or a model is hostile, so it is matched as a reader sees it,
not as it is stored: ``strip_terminal_escapes`` first removes colour codes, cursor
movement, window titles and hyperlinks (CSI, OSC and the other escape sequences),
the remaining C0 and C1 controls (all but newline and tab; a ``\\r`` only when it is
not part of a ``\\r\\n`` line ending) and invisible format characters (zero-width and
bidirectional marks). Any of them placed inside a token splits it for a pattern and
not for a reader: ``ghp_abc\\x1b[0mdef…`` shows as one GitHub token.

``find_secrets`` is the one detector over the stripped text. It knows:

- private keys: a PEM or PuTTY block, also written inside a JSON string (``\\n``
  escapes) or cut short by the end of a log; the body of a block whose ``BEGIN`` line
  was cut off by the start of a log tail, found from its ``END`` line backwards
  (``headless_private_keys``); a base64-encoded PEM block (``LS0tLS1CRUdJTi…``, as a
  Kubernetes secret holds one), when its first bytes decode to a private key header;
- token shapes: Anthropic, OpenAI, Stripe, GitHub, GitLab (including runner, deploy,
  trigger and service-account tokens), Slack (tokens, app tokens, webhooks), AWS
  (access key ids, secret keys after a name that says so, session tokens), Google
  (API keys, OAuth tokens and client secrets, a service-account file's key and key
  id), Hugging Face, npm, PyPI and Docker Hub tokens, and a JSON Web Token or JWE as a
  whole (every part, so no part of one survives);
- a credential after ``Bearer``/``Basic``/``Token``/``Digest`` (redacted, but not a
  reason to refuse an edit: those words are prose as well);
- the password in a URL, also with an empty user name (``postgres://:pw@db``), with
  ``/``, ``#``, ``?`` or ``@`` in it, and in a JSON string that escapes ``/`` as
  ``\\/``. The password runs up to the ``@`` that is followed by a host name and
  then the end of the host; ``host:8080/…@…`` is a port and a path, not a password.

detect-secrets' plugins back up the value patterns. Only the plugins precise enough
to trust one by one are used, and only their ``analyze_string``: the keyword, entropy
and IP plugins flag ordinary values (``REDIS_HOST=redis``), the eager ``scan_line``
does too, and ``analyze_line`` reads process-wide settings and may try to verify a
secret over the network.

Every pattern is linear in the text: a repeated part is bounded or cannot overlap the
part after it, and the one search that reads backwards (a headless key) never reads a
stretch of text twice. A case file redacts tens of KiB of log per incident.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import importlib
import re
import threading
from collections.abc import Callable, Iterable
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


# --- terminal escapes ----------------------------------------------------------------------

#: Characters that show nothing or reorder what is shown, as a regular expression
#: character class: bidirectional marks, embeddings, overrides and isolates, zero-width
#: spaces and joiners, line and paragraph separators, Hangul and Mongolian fillers,
#: the byte order mark and interlinear annotations. The one list medic uses to strip,
#: refuse or escape them (agent/output.py, agent/fixes/guardrails.py).
INVISIBLE = (
    r"\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164"
    r"\ufeff\ufff9-\ufffb"
)

_TERMINAL_ESCAPE = re.compile(
    # CSI, 7-bit and 8-bit: colours, cursor movement, erasing.
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    # OSC, DCS, SOS, PM and APC strings (window titles, hyperlinks), up to BEL or ST.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    # Any other escape sequence (character sets, keypad modes, a lone ST); an unended
    # string's introducer too, so that its text stays, visible and redacted.
    r"|\x1b[ -/]*[0-~]"
    # A carriage return that does not end a line: it overprints, it does not separate.
    r"|\r(?!\n)"
    # The remaining C0 and C1 controls; newline and tab are kept.
    r"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
    # Invisible format characters: zero-width spaces and joiners, bidirectional marks.
    rf"|[{INVISIBLE}]"
)

#: What may hide text from a person: controls other than tab and newline (a carriage
#: return only where it ends a line) and the invisible characters. The fix guardrails
#: refuse an edit holding one; here it is where a payload is looked for.
HIDDEN = re.compile(rf"\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{INVISIBLE}]")


def strip_terminal_escapes(text: str) -> str:
    """``text`` as a terminal shows it: escape sequences, controls other than newline
    and tab, and invisible format characters removed. Match secrets in this, never in
    the raw text."""
    return _TERMINAL_ESCAPE.sub("", text)


def escape_payloads(text: str) -> str:
    """``text`` with every control and invisible character replaced by a line break.

    ``strip_terminal_escapes`` drops a window title or a hyperlink's address along with
    its escape sequence, which is right for what is shown; an edit that writes a secret
    there still writes it, and this is the text to look for it in."""
    return HIDDEN.sub("\n", text)


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
    check: Callable[[str], bool] | None = None
    """A test of the matched value that a regular expression cannot make."""


def _decodes_to_private_key(value: str) -> bool:
    """Whether base64 ``value`` starts with a PEM private key's header."""
    head = "".join(value[:120].split())[:88]
    head = head[: len(head) - len(head) % 4]
    try:
        return b"PRIVATE KEY" in base64.b64decode(head)
    except (binascii.Error, ValueError):
        return False


#: A PEM private key block, from its BEGIN line to its END line or the end of the text
#: (a log tail cut inside it). ``\n`` escapes inside a JSON string are part of the block.
_PEM_BLOCK = ValuePattern(
    "PRIVATE_KEY",
    "a private key",
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
    ),
)

#: Value patterns, the more specific first (``sk-ant-`` before ``sk-``): where two
#: overlap, the redactor names the first.
VALUE_PATTERNS: tuple[ValuePattern, ...] = (
    _PEM_BLOCK,
    ValuePattern(
        "PRIVATE_KEY",
        "a private key",
        re.compile(r"PuTTY-User-Key-File-\d+:[\s\S]*?(?:Private-MAC: \S+|\Z)"),
    ),
    ValuePattern(
        "PRIVATE_KEY",
        "a private key",
        # base64 of "-----BEGIN ", and more whole lines of base64 if it is wrapped.
        re.compile(
            r"\bLS0tLS1CRUdJTi[A-Za-z0-9+/]{20,}={0,2}"
            r"(?:\r?\n[ \t]*[A-Za-z0-9+/]{4,}={0,2}(?=[ \t]*(?:\r?\n|\Z)))*"
        ),
        check=_decodes_to_private_key,
    ),
    ValuePattern(
        "GCP_SERVICE_ACCOUNT_KEY",
        "a Google service-account key",
        re.compile(r"\"private_key\"\s*:\s*\"(-----BEGIN[^\"]*)"),
        group=1,
    ),
    ValuePattern(
        "GCP_SERVICE_ACCOUNT_KEY",
        "a Google service-account key",
        re.compile(r"\"private_key_id\"\s*:\s*\"([0-9a-f]{40})\""),
        group=1,
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
    ValuePattern("STRIPE_KEY", "a Stripe key", re.compile(r"\bwhsec_[A-Za-z0-9+/=]{16,}")),
    ValuePattern("GITHUB_TOKEN", "a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ValuePattern("GITHUB_TOKEN", "a GitHub token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}")),
    ValuePattern(
        "GITLAB_TOKEN",
        "a GitLab token",
        # Personal, deploy, runner, pipeline trigger, service account, CI job, incoming
        # mail, agent, OAuth application, feed, feature flag and workspace tokens; a
        # routable token has dot-separated parts.
        re.compile(
            r"\bgl(?:pat|dt|rt|ptt|soat|cbt|imt|agent|oas|ft|ffct|wt)-[A-Za-z0-9_-]{20,}"
            r"(?:\.[A-Za-z0-9_-]+)*"
        ),
    ),
    ValuePattern(
        "GITLAB_TOKEN", "a GitLab runner token", re.compile(r"\bGR1348941[A-Za-z0-9_-]{20,}")
    ),
    ValuePattern("SLACK_TOKEN", "a Slack token", re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}")),
    ValuePattern("SLACK_TOKEN", "a Slack token", re.compile(r"\bxapp-\d+-[A-Za-z0-9-]{10,}")),
    ValuePattern(
        "SLACK_WEBHOOK",
        "a Slack webhook",
        re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/]+"),
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
    ValuePattern(
        "AWS_SECRET_KEY",
        "an AWS secret access key",
        # What ``aws sts assume-role`` and the SDKs print: "SecretAccessKey": "…".
        re.compile(
            r"(?i)secret_?access_?key[\"']?\s*[:=]\s*[\"']?"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        group=1,
    ),
    ValuePattern(
        "AWS_SESSION_TOKEN",
        "an AWS session token",
        re.compile(r"\b(?:FwoGZXIvYXdz|FQoGZXIvYXdz|IQoJb3JpZ2luX2Vj)[A-Za-z0-9/+=]{40,}"),
    ),
    ValuePattern("GCP_KEY", "a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ValuePattern("GCP_TOKEN", "a Google OAuth token", re.compile(r"\bya29\.[0-9A-Za-z_-]{20,}")),
    ValuePattern(
        "GCP_CLIENT_SECRET",
        "a Google OAuth client secret",
        re.compile(r"\bGOCSPX-[0-9A-Za-z_-]{20,}"),
    ),
    ValuePattern("HUGGINGFACE_TOKEN", "a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ValuePattern("NPM_TOKEN", "an npm token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b")),
    ValuePattern("PYPI_TOKEN", "a PyPI token", re.compile(r"\bpypi-AgE[A-Za-z0-9_-]{50,}")),
    ValuePattern(
        "DOCKER_HUB_TOKEN", "a Docker Hub token", re.compile(r"\bdckr_pat_[A-Za-z0-9_-]{20,}")
    ),
    ValuePattern(
        "JWT",
        "a JSON Web Token",
        # Header, payload and signature (or the five parts of an encrypted token) as one
        # value: a payload left in place reads as well as the whole token. A part may be
        # empty (an unsigned token, a detached payload).
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}={0,2}(?:\.[A-Za-z0-9_-]*={0,2}){2,4}"),
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
            # scheme://user:password@host; ``\/\/`` as JSON may write it; the user may be
            # empty. The password is the shortest run up to an ``@`` that a host name
            # follows and then what ends a host (``/?#``, a space, a quote, the end):
            # ``u:p@ss!@db/x`` → ``p@ss!``. Digits then a path are a port
            # (``http://api:8080/users/@me``), not a password.
            r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,30}:(?:/|\\/){2}"
            r"[^\s:/?#@\[\]\"'<>`\\]{0,128}:"
            r"(?!\d{1,5}(?:[/?#]|\\/))"
            r"([^\s\"'<>`]{1,256}?)"
            r"@(?=[A-Za-z0-9._~%\[\]:-]++(?:[/?#\s\"'<>`,;)\\|]|\Z))"
        ),
        group=1,
    ),
)

#: The password inside a URL (``scheme://user:password@host``), group 1.
URL_PASSWORD = next(p for p in VALUE_PATTERNS if p.label == "URL_PASSWORD")


@dataclass(frozen=True)
class SecretSpan:
    """Where ``find_secrets`` found a secret value in a text."""

    label: str
    kind: str
    start: int
    end: int
    detect: bool
    """As ``ValuePattern.detect``: whether an edit that adds it is refused."""


#: An END line of a PEM private key; the body before it is found by reading backwards.
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
#: A line break inside a key body: a real one, or ``\n`` written inside a JSON string.
_KEY_LINE_BREAK = re.compile(r"\r?\n|\\r\\n|\\n")
#: A whole line of a key body: base64 (``\/`` as JSON writes ``/``), blank, or a header.
_KEY_BODY_LINE = re.compile(
    r"[ \t]*(?:[A-Za-z0-9+/=]|\\/)*[ \t]*|[ \t]*(?:Proc-Type|DEK-Info): [^\n]*"
)
_BASE64_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\\")
#: How far back from an END line a headless key's body is looked for; a 4096-bit RSA
#: key's PEM is about 3.3 KiB.
HEADLESS_KEY_LOOKBACK = 16384


def headless_private_keys(
    text: str, blocks: Iterable[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """(start, end) of each private key body that ends with an END line but whose BEGIN
    line is missing (a log tail that starts inside the key), END line included.

    The body is read backwards from the END line: whole lines of base64 (or a PEM
    header, or blank), then, on the first line that is something else, the base64 run
    it ends with (``key: MIIEow…``) if that is 16 characters or more. ``blocks`` are
    the spans of complete BEGIN…END blocks, whose END lines are not looked at.
    """
    found: list[tuple[int, int]] = []
    covered = sorted(blocks)
    index = 0
    floor = 0
    for end in _KEY_END.finditer(text):
        while index < len(covered) and covered[index][1] <= end.start():
            floor = max(floor, covered[index][1])
            index += 1
        if index < len(covered) and covered[index][0] <= end.start():
            floor = max(floor, end.end())
            continue
        start = _key_body_start(text, max(floor, end.start() - HEADLESS_KEY_LOOKBACK), end.start())
        if start < end.start():
            found.append((start, end.end()))
        floor = end.end()
    return found


def _key_body_start(text: str, low: int, high: int) -> int:
    """Where the key body that ends at ``high`` starts, reading no further back than
    ``low``; ``high`` when there is none."""
    starts = [low]
    ends = []
    for brk in _KEY_LINE_BREAK.finditer(text, low, high):
        ends.append(brk.start())
        starts.append(brk.end())
    ends.append(high)
    start = high
    for line_start, line_end in zip(reversed(starts), reversed(ends), strict=True):
        line = text[line_start:line_end]
        if _KEY_BODY_LINE.fullmatch(line):
            if line.strip():
                start = line_start + len(line) - len(line.lstrip())
            continue
        run_end = len(line.rstrip(" \t"))
        run_start = len(line[:run_end].rstrip("="))
        while run_start > 0 and line[run_start - 1] in _BASE64_CHARACTERS:
            run_start -= 1
        if run_end - run_start >= 16:
            start = line_start + run_start
        break
    return start


def find_secrets(text: str) -> list[SecretSpan]:
    """Every secret value the patterns and the headless-key search find in ``text``,
    pattern by pattern; spans may overlap. Strip terminal escapes from ``text`` first.

    A span may hold a placeholder (``${DB_PASSWORD}``, ``[REDACTED:X]``): what counts is
    the caller's to decide."""
    spans: list[SecretSpan] = []
    blocks: list[tuple[int, int]] = []
    for value in VALUE_PATTERNS:
        for match in value.pattern.finditer(text):
            start, end = match.span(value.group)
            if start == end or (value.check is not None and not value.check(text[start:end])):
                continue
            spans.append(SecretSpan(value.label, value.kind, start, end, value.detect))
            if value is _PEM_BLOCK:
                blocks.append((start, end))
    spans.extend(
        SecretSpan(_PEM_BLOCK.label, _PEM_BLOCK.kind, start, end, detect=True)
        for start, end in headless_private_keys(text, blocks)
    )
    return spans


#: Values that name a secret instead of holding it (``${DB_PASSWORD}``, ``<password>``,
#: a format field ``{password}``).
_PLACEHOLDER = re.compile(
    r"^(?:\$|\{\{|%\(|<|\{[A-Za-z_][\w.]*\}$|\*+$|x+$|\.\.\.|changeme$|password$)", re.I
)


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
            for piece in _windows(line):
                for kind, plugin in plugins:
                    found.extend((kind, str(value)) for value in plugin.analyze_string(piece))
    return list(dict.fromkeys(found))


#: Some plugins' patterns backtrack over a whole line (basic auth's ``://[^\s]+:…@``
#: takes quadratic time on a long line of ``a://b:``), and a log line is as long as
#: its writer likes. Long lines are read in overlapping windows instead: a secret
#: shorter than the overlap is always whole in one of them.
WINDOW = 2048
WINDOW_OVERLAP = 512


def _windows(line: str) -> Iterable[str]:
    if len(line) <= WINDOW:
        yield line
        return
    step = WINDOW - WINDOW_OVERLAP
    for start in range(0, len(line) - WINDOW_OVERLAP, step):
        yield line[start : start + WINDOW]
