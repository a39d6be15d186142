"""Playbooks: the YAML files that tell medic what to do about each kind of trouble.

Operators write these by hand, often while something is already broken, so a bad
file must be explained in one pass: every problem in every file, each naming the
file, the line and the field, and saying what to write instead. That is why the
files are read as a YAML node tree (``yaml.compose``) rather than loaded into
plain dicts: nodes keep their line numbers, and they keep duplicate keys that
``yaml.safe_load`` would silently collapse to the last one.

The format is documented in docs/playbooks.md; the playbooks shipped with medic
are in playbooks/default.yml.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.config import parse_duration
from agent.errors import PlaybookError, PlaybookErrors
from agent.healing import actions
from agent.healing.actions import ActionType, Option, OptionType
from agent.model import (
    SIGNAL_KINDS,
    Action,
    Backoff,
    Escalation,
    LogRule,
    Match,
    Playbook,
    ProbeKind,
    ProbeRule,
    Signal,
)

#: File names read from a playbook folder. A file named explicitly may have any name.
PLAYBOOK_SUFFIXES = (".yml", ".yaml")

#: Names end up in labels (``medic.playbook=NAME``), logs and URLs, so keep them plain.
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")

_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL, _INT, _FLOAT, _STR, _MERGE = (
    f"{_TAG}{kind}" for kind in ("null", "bool", "int", "float", "str", "merge")
)

_DURATION_HINT = "write seconds like 30, or 30s, 5m, 1h"

T = TypeVar("T")
N = TypeVar("N", int, float)

#: Reads one node found at a field path into a value, or records why it cannot.
_Parse = Callable[["_Reader", Node, str], T]


def load_playbooks(path: Path) -> list[Playbook]:
    """The playbooks in ``path``: one file, or every *.yml / *.yaml file of a folder.

    A folder's files are read in name order and not recursively; hidden files are
    skipped. Raises PlaybookErrors carrying every problem found in every file.
    """
    playbooks, errors = check_paths([path])
    if errors:
        raise PlaybookErrors(errors)
    return playbooks


def check_paths(paths: Sequence[Path]) -> tuple[list[Playbook], list[PlaybookError]]:
    """Every valid playbook in ``paths`` and every error found, without raising.

    Names are unique across all the paths. A file reached twice (a folder and one
    of its files) is read once. A playbook with an error is left out, and so are
    all playbooks of a file whose ``version`` or ``defaults`` are wrong, because
    they would run with settings the operator did not write.
    """
    playbooks: list[Playbook] = []
    errors: list[PlaybookError] = []
    names: dict[str, str] = {}
    seen: set[Path] = set()
    for path in paths:
        for file in _files(path, errors):
            if file.resolve() in seen:
                continue
            seen.add(file.resolve())
            found, problems = _read_file(file, names)
            playbooks.extend(found)
            errors.extend(problems)
    return playbooks, errors


def _files(path: Path, errors: list[PlaybookError]) -> list[Path]:
    if path.is_dir():
        files = sorted(
            (p for p in path.iterdir() if _is_playbook_file(p)),
            key=lambda p: p.name,
        )
        if not files:
            errors.append(_path_error(path, "this folder has no *.yml or *.yaml playbook files"))
        return files
    if path.exists():
        return [path]
    errors.append(_path_error(path, "no such file or folder"))
    return []


def _is_playbook_file(path: Path) -> bool:
    # Hidden files are editor backups and macOS "._" forks, not playbooks.
    return path.suffix in PLAYBOOK_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _path_error(path: Path, problem: str) -> PlaybookError:
    return PlaybookError(
        f"{problem}; point MEDIC_PLAYBOOKS (or the command line) at a playbook file "
        "or a folder of them",
        file=str(path),
        line=None,
        field=None,
    )


def _read_file(file: Path, names: dict[str, str]) -> tuple[list[Playbook], list[PlaybookError]]:
    reader = _Reader(str(file), names)
    try:
        text = file.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as e:
        reader.report(None, "", f"cannot read the file ({e}); make it a readable UTF-8 text file")
        return [], reader.errors
    except yaml.MarkedYAMLError as e:
        reader.errors.append(_syntax_error(reader.file, e))
        return [], reader.errors
    except yaml.YAMLError as e:
        reader.report(None, "", f"not valid YAML ({e}); fix the file's characters")
        return [], reader.errors
    playbooks: list[Playbook] = []
    if root is None:
        reader.report(
            None, "", "the file is empty; write a 'playbooks:' list (see docs/playbooks.md)"
        )
    else:
        playbooks = reader.attempt(_document, root, "") or []
    # Walk order is almost line order; sorting makes the report read top to bottom.
    return playbooks, sorted(reader.errors, key=lambda e: e.line or 0)


def _syntax_error(file: str, error: yaml.MarkedYAMLError) -> PlaybookError:
    mark = error.problem_mark or error.context_mark
    what = ", ".join(part for part in (error.context, error.problem) if part)
    return PlaybookError(
        f"YAML syntax error: {what}; check the indentation, colons and quotes here",
        file=file,
        line=None if mark is None else mark.line + 1,
        field=None,
    )


class _Invalid(Exception):
    """A value could not be read. Its PlaybookError is already recorded."""


@dataclass
class _Reader:
    """Walks one file's node tree, recording every problem instead of stopping at the first.

    Parsers call ``fail`` for a problem that makes their value unusable; callers
    that can go on without that value read it through ``attempt``, so one bad field
    does not hide the next one.
    """

    file: str
    #: Playbook name -> "file:line" of its definition, shared by all files of one load.
    names: dict[str, str]
    errors: list[PlaybookError] = field(default_factory=list)
    constructor: SafeConstructor = field(default_factory=SafeConstructor)

    def report(self, node: Node | None, path: str, message: str) -> None:
        line = None if node is None else node.start_mark.line + 1
        self.errors.append(PlaybookError(message, file=self.file, line=line, field=path or None))

    def fail(self, node: Node | None, path: str, message: str) -> NoReturn:
        self.report(node, path, message)
        raise _Invalid

    def attempt(self, parse: _Parse[T], node: Node, path: str) -> T | None:
        try:
            return parse(self, node, path)
        except _Invalid:
            return None

    def value(self, node: ScalarNode, path: str) -> Any:
        """The Python value of a scalar, typed as YAML resolved it (int, float, bool, str...)."""
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as e:
            self.fail(node, path, f"cannot read {node.value!r} ({e}); write a plain value")

    def entries(self, node: Node, path: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping; null counts as an empty mapping."""
        if _is_null(node):
            return []
        if not isinstance(node, MappingNode):
            self.fail(node, path, f"must be a mapping of keys to values; found {_describe(node)}")
        found: dict[str, Node] = {}
        entries: list[tuple[str, Node, Node]] = []
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in found:
                # PyYAML would keep the last value without a word; say so instead.
                first = found[key].start_mark.line + 1
                self.report(
                    key_node,
                    _join(path, key),
                    f"duplicate key {key!r}, already set on line {first}; keep only one",
                )
                continue
            found[key] = key_node
            entries.append((key, key_node, value_node))
        return entries

    def _key(self, node: Node, path: str) -> str | None:
        if node.tag == _MERGE:
            # The file-level `defaults:` section covers what merge keys are used for.
            self.report(
                node,
                path,
                "YAML merge keys (<<) are not supported; put shared backoff and escalate "
                "settings under the file's 'defaults:' instead",
            )
            return None
        if not isinstance(node, ScalarNode) or _is_null(node):
            self.report(node, path, f"keys must be plain words; found {_describe(node)}")
            return None
        return str(node.value)

    def mapping(
        self,
        node: Node,
        path: str,
        *,
        allowed: Sequence[str],
        required: Mapping[str, str] | None = None,
    ) -> _Fields:
        """The known keys of a mapping; unknown and missing keys are reported.

        ``required`` maps each required key to an example of how to write it.
        """
        if not (_is_null(node) or isinstance(node, MappingNode)):
            wanted = f"a mapping with keys from: {', '.join(allowed)}" if allowed else "empty"
            self.fail(node, path, f"must be {wanted}; found {_describe(node)}")
        values: dict[str, Node] = {}
        for key, key_node, value_node in self.entries(node, path):
            if key in allowed:
                values[key] = value_node
            else:
                choices = ", ".join(allowed) if allowed else "none, this takes no options"
                self.report(
                    key_node, _join(path, key), f"unknown key {key!r}; allowed keys: {choices}"
                )
        for key, example in (required or {}).items():
            if key not in values:
                self.report(node, _join(path, key), f"required key is missing; add e.g. {example}")
        return _Fields(self, path, values)

    def items(
        self, node: Node, path: str, parse: _Parse[T], *, example: str, allow_empty: bool = False
    ) -> list[T]:
        """The items of a list that could be read; the others are reported."""
        if not isinstance(node, SequenceNode):
            self.fail(node, path, f"must be a list, like {example}; found {_describe(node)}")
        if not node.value and not allow_empty:
            self.fail(node, path, f"must not be empty; list at least one item, like {example}")
        found = (self.attempt(parse, item, f"{path}[{i}]") for i, item in enumerate(node.value))
        return [item for item in found if item is not None]


@dataclass
class _Fields:
    """The known keys of one mapping, read one at a time so every bad field is reported."""

    reader: _Reader
    path: str
    nodes: dict[str, Node]

    def read(self, key: str, parse: _Parse[T]) -> T | None:
        """The key's value; None when it is absent or could not be read (then reported)."""
        node = self.nodes.get(key)
        if node is None:
            return None
        return self.reader.attempt(parse, node, _join(self.path, key))

    def read_all(self, parsers: Mapping[str, _Parse[T]]) -> dict[str, T]:
        """The values of those keys in ``parsers`` that are present and valid."""
        values = {key: self.read(key, parse) for key, parse in parsers.items()}
        return {key: value for key, value in values.items() if value is not None}


# --- The document --------------------------------------------------------------------


@dataclass(frozen=True)
class _Defaults:
    """The file-level ``defaults:`` a playbook starts from before its own settings."""

    backoff: Backoff = field(default_factory=Backoff)
    escalation: Escalation = field(default_factory=Escalation)


_PLAYBOOKS_EXAMPLE = "[{name: restart-web, match: {signals: [unhealthy]}, actions: [restart]}]"


def _document(r: _Reader, node: Node, path: str) -> list[Playbook]:
    if not isinstance(node, MappingNode):
        r.fail(
            node,
            path,
            f"a playbook file is a mapping with a 'playbooks:' list; found {_describe(node)} "
            "(see docs/playbooks.md)",
        )
    mark = len(r.errors)
    top = r.mapping(
        node,
        path,
        allowed=("version", "defaults", "playbooks"),
        required={"playbooks": f"playbooks: {_PLAYBOOKS_EXAMPLE}"},
    )
    top.read("version", _version)
    defaults = top.read("defaults", _defaults) or _Defaults()
    header_ok = len(r.errors) == mark
    items = top.nodes.get("playbooks")
    if items is None:
        return []
    each = _list(lambda r, n, p: _playbook(r, n, p, defaults), example=_PLAYBOOKS_EXAMPLE)
    playbooks = r.attempt(each, items, "playbooks")
    # Still walked when the header is wrong, so that all errors are reported at once.
    return (playbooks or []) if header_ok else []


def _version(r: _Reader, node: Node, path: str) -> int:
    if isinstance(node, ScalarNode) and node.tag == _INT and r.value(node, path) == 1:
        return 1
    r.fail(
        node,
        path,
        f"only version 1 exists; write version: 1 or leave it out, not {_describe(node)}",
    )


def _defaults(r: _Reader, node: Node, path: str) -> _Defaults:
    fields = r.mapping(node, path, allowed=("backoff", "escalate"))
    base = _Defaults()
    return _Defaults(
        backoff=fields.read("backoff", _layer(_backoff, base.backoff)) or base.backoff,
        escalation=fields.read("escalate", _layer(_escalation, base.escalation)) or base.escalation,
    )


_PLAYBOOK_KEYS = ("name", "description", "match", "actions", "backoff", "escalate")
_REQUIRED_PLAYBOOK_KEYS = {
    "name": "name: restart-web",
    "match": "match: {signals: [unhealthy]}",
    "actions": "actions: [restart]",
}


def _playbook(r: _Reader, node: Node, path: str, defaults: _Defaults) -> Playbook:
    mark = len(r.errors)
    fields = r.mapping(node, path, allowed=_PLAYBOOK_KEYS, required=_REQUIRED_PLAYBOOK_KEYS)
    name = fields.read("name", _name)
    description = fields.read("description", _text)
    match = fields.read("match", _match)
    actions = fields.read("actions", _actions)
    backoff = fields.read("backoff", _layer(_backoff, defaults.backoff))
    escalation = fields.read("escalate", _layer(_escalation, defaults.escalation))
    if name is None or match is None or actions is None or len(r.errors) > mark:
        raise _Invalid
    return Playbook(
        name=name,
        description=(description or "").strip(),
        match=match,
        actions=tuple(actions),
        backoff=backoff or defaults.backoff,
        escalation=escalation or defaults.escalation,
        source=r.file,
        line=node.start_mark.line + 1,
    )


def _name(r: _Reader, node: Node, path: str) -> str:
    name = _text(r, node, path)
    if not _NAME.fullmatch(name):
        r.fail(
            node,
            path,
            f"{name!r} is not a valid playbook name; use lowercase letters, digits, "
            "'.', '_' and '-', starting with a letter or digit, like restart-web",
        )
    if name in r.names:
        where = r.names[name]
        r.fail(node, path, f"playbook {name!r} is already defined at {where}; rename one of them")
    r.names[name] = f"{r.file}:{node.start_mark.line + 1}"
    return name


# --- match -----------------------------------------------------------------------------


def _match(r: _Reader, node: Node, path: str) -> Match:
    fields = r.mapping(
        node,
        path,
        allowed=("signals", "services", "labels", "log", "probe"),
        required={"signals": "signals: [unhealthy]"},
    )
    signals = fields.read("signals", _list(_signal, example="[unhealthy]"))
    services = fields.read("services", _list(_text, example="[web, api]", allow_empty=True))
    labels = fields.read("labels", _labels)
    log = fields.read("log", _log_rule)
    probe = fields.read("probe", _probe_rule)
    if signals is None:
        raise _Invalid
    # A rule without its signal would never fire. (The signal without a rule is fine:
    # the playbook then handles what another playbook's rule finds.)
    rules = {"log": log, "probe": probe}
    for kind in SIGNAL_KINDS.values():
        key, signal = kind.rule, kind.signal
        if key is not None and rules[key] is not None and signal not in signals:
            r.report(fields.nodes[key], _join(path, key), f"a {key} rule needs {signal} in signals")
    return Match(
        signals=frozenset(signals),
        services=frozenset(services or ()),
        labels=labels or {},
        log=log,
        probe=probe,
    )


_LOG_EXAMPLE = '{pattern: "remaining connection slots", count: 3, window: 2m}'
_PROBE_EXAMPLE = "{http: 8080, path: /healthz} or {tcp: 5432}"


def _regex(r: _Reader, node: Node, path: str) -> str:
    text = _text(r, node, path)
    try:
        re.compile(text)
    except re.error as e:
        # What is wrong and where: YAML quoting never fixes a pattern, so say what does.
        where = "" if e.pos is None else f" at position {e.pos}"
        if e.pos is not None and e.pos < len(text):
            where += f" ({text[e.pos]!r})"
        r.fail(
            node,
            path,
            f"{text!r} is not a regular expression: {e.msg}{where}; fix the pattern "
            "(a character meant literally takes a \\ before it, like \\( in a single-quoted "
            "YAML string)",
        )
    return text


def _log_rule(r: _Reader, node: Node, path: str) -> LogRule:
    fields = r.mapping(node, path, allowed=tuple(_LOG_FIELDS), required={"pattern": _LOG_EXAMPLE})
    values = fields.read_all(_LOG_FIELDS)
    if "pattern" not in values:
        raise _Invalid
    return LogRule(**values)


def _port(r: _Reader, node: Node, path: str) -> int:
    port = _whole_number(r, node, path)
    if not 1 <= port <= 65535:
        r.fail(node, path, f"{port} is not a port; write a number from 1 to 65535")
    return port


def _probe_rule(r: _Reader, node: Node, path: str) -> ProbeRule:
    fields = r.mapping(node, path, allowed=tuple(_PROBE_FIELDS))
    values = fields.read_all(_PROBE_FIELDS)
    kinds = [k for k in ("http", "tcp") if k in fields.nodes]
    if len(kinds) != 1:
        r.fail(node, path, f"needs exactly one of http or tcp; write probe: {_PROBE_EXAMPLE}")
    kind = ProbeKind(kinds[0])
    if kind is ProbeKind.TCP and "path" in fields.nodes:
        r.fail(fields.nodes["path"], _join(path, "path"), "path goes with http probes only")
    port = values.pop(kind.value, None)
    if port is None:
        raise _Invalid
    path_value = values.pop("path", "/")
    if not path_value.startswith("/"):
        r.fail(
            fields.nodes["path"], _join(path, "path"), f"write a path from /, like /{path_value}"
        )
    return ProbeRule(kind=kind, port=port, path=path_value, **values)


def _signal(r: _Reader, node: Node, path: str) -> Signal:
    text = _text(r, node, path)
    try:
        return Signal(text)
    except ValueError:
        r.fail(node, path, f"{text!r} is not a signal; use one of: {', '.join(Signal)}")


def _labels(r: _Reader, node: Node, path: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, _, value_node in r.entries(node, path):
        value = r.attempt(_text, value_node, _join(path, key))
        if value is not None:
            labels[key] = value
    return labels


# --- actions ---------------------------------------------------------------------------

_ACTION_EXAMPLE = "[restart] or [{restart: {timeout: 10s}}]"
_ACTION_KINDS = ", ".join(actions.KINDS)


def _actions(r: _Reader, node: Node, path: str) -> list[Action]:
    return r.items(node, path, _action, example=_ACTION_EXAMPLE)


def _action(r: _Reader, node: Node, path: str) -> Action:
    """An action is a bare kind (``start``) or one kind with its options (``stop: {...}``).

    What each kind takes is its entry in the action registry (agent/healing/actions.py).
    """
    if isinstance(node, ScalarNode) and not _is_null(node):
        entry = _action_kind(r, node, path)
        required = [name for name, option in entry.options.items() if option.required]
        if required:
            option = entry.options[required[0]]
            r.fail(
                node,
                path,
                f"{entry.name} needs {required[0]}; write "
                f"{entry.name}: {{{required[0]}: {option.example}}}",
            )
        action = Action(entry.name)
        _check(r, entry, action=action, node=node, path=path, nodes={})
        return action
    if not isinstance(node, MappingNode):
        r.fail(node, path, f"must be an action like {_ACTION_EXAMPLE}; found {_describe(node)}")
    entries = r.entries(node, path)
    if len(entries) != 1:
        keys = ", ".join(key for key, _, _ in entries) or "none"
        r.fail(
            node,
            path,
            f"an action is one kind with its options, like restart: {{timeout: 10s}}; "
            f"found keys: {keys}; write each action as its own list item",
        )
    key, key_node, options = entries[0]
    entry = _action_kind(r, key_node, path)
    where = _join(path, key)
    fields = r.mapping(
        options,
        where,
        allowed=tuple(entry.options),
        required={
            name: f"{name}: {option.example}"
            for name, option in entry.options.items()
            if option.required
        }
        or None,
    )
    parsers = {name: _option_parser(option) for name, option in entry.options.items()}
    values = fields.read_all(parsers)
    action = Action(entry.name, **values)
    if values.keys() == fields.nodes.keys():
        # Checked together only when each option read well on its own.
        _check(r, entry, action=action, node=options, path=where, nodes=fields.nodes)
    return action


def _check(
    r: _Reader,
    entry: ActionType,
    *,
    action: Action,
    node: Node,
    path: str,
    nodes: Mapping[str, Node],
) -> None:
    """The kind's own check of options that must go together."""
    problem = entry.check(action)
    if problem is None:
        return
    if problem.option is not None and problem.option in nodes:
        r.fail(nodes[problem.option], _join(path, problem.option), problem.message)
    r.fail(node, path, problem.message)


def _action_kind(r: _Reader, node: Node, path: str) -> ActionType:
    entry = actions.KINDS.get(str(node.value))
    if entry is None:
        r.fail(node, path, f"{node.value!r} is not an action; use one of: {_ACTION_KINDS}")
    return entry


def _choice(choices: tuple[str, ...]) -> _Parse[str]:
    def read(r: _Reader, node: Node, path: str) -> str:
        text = _text(r, node, path)
        if text not in choices:
            r.fail(node, path, f"{text!r} is not one of: {', '.join(choices)}")
        return text

    return read


def _option_parser(option: Option) -> _Parse[Any]:
    if option.type is OptionType.CHOICE:
        return _choice(option.choices)
    return _OPTION_PARSERS[option.type]


def _command(r: _Reader, node: Node, path: str) -> tuple[str, ...]:
    """A list of arguments, or one string split the way a POSIX shell would split it."""
    example = '["sh", "-c", "rm -rf /tmp/cache/*"]'
    if isinstance(node, SequenceNode):
        return tuple(r.items(node, path, _text, example=example))
    text = _text(r, node, path)
    try:
        words = shlex.split(text)
    except ValueError as e:
        r.fail(node, path, f"cannot split {text!r} into words ({e}); write a list like {example}")
    if not words:
        r.fail(node, path, f"the command is empty; write one like {example}")
    return tuple(words)


def _commands(r: _Reader, node: Node, path: str) -> tuple[tuple[str, ...], ...]:
    """A list of commands, each written the way exec's ``command`` is."""
    example = '["redis-cli FLUSHALL"] or [["redis-cli", "-n", "0", "FLUSHDB"]]'
    return tuple(r.items(node, path, _command, example=example))


#: Folders whose contents are the system, not a cache. Clearing one would break the
#: container beyond what a restart can mend, so a playbook naming one is refused.
_SYSTEM_FOLDERS = frozenset(
    f"/{name}"
    for name in (
        *("bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "opt"),
        *("proc", "root", "run", "sbin", "srv", "sys", "usr", "var"),
    )
)


def _cache_path(r: _Reader, node: Node, path: str) -> str:
    """An absolute folder inside the container whose contents may be removed."""
    text = _text(r, node, path).strip()
    if not text:
        r.fail(node, path, "the path is empty; write the cache folder, like /var/cache/nginx")
    if not text.startswith("/"):
        r.fail(
            node,
            path,
            f"{text!r} is not an absolute path; write the full path inside the container, "
            "like /var/cache/nginx",
        )
    normal = posixpath.normpath(text)
    # normpath keeps a leading "//"; any spelling of the root folder is refused.
    if not normal.strip("/"):
        r.fail(node, path, f"{text!r} is the root folder; name the cache folder itself")
    normal = "/" + normal.lstrip("/")
    if normal in _SYSTEM_FOLDERS:
        r.fail(
            node,
            path,
            f"{text!r} is a system folder, not a cache; name the cache folder inside it, "
            f"like {normal}/cache",
        )
    return normal


def _boolean(r: _Reader, node: Node, path: str) -> bool:
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        return bool(r.value(node, path))
    r.fail(node, path, f"must be true or false; found {_describe(node)}")


# --- backoff and escalate --------------------------------------------------------------

S = TypeVar("S", Backoff, Escalation)


def _layer(parse: Callable[[_Reader, Node, str, S], S], base: S) -> _Parse[S]:
    """A parser of settings that start from ``base``: the file defaults, or the model's."""
    return lambda r, node, path: parse(r, node, path, base)


def _backoff(r: _Reader, node: Node, path: str, base: Backoff) -> Backoff:
    fields = r.mapping(node, path, allowed=tuple(_BACKOFF_FIELDS))
    changes = fields.read_all(_BACKOFF_FIELDS)
    backoff = replace(base, **changes)
    if backoff.max < backoff.initial:
        # Blame whichever of the two this mapping sets; if neither, the conflict
        # comes from the defaults and was reported there.
        if "max" in changes:
            r.fail(
                fields.nodes["max"],
                _join(path, "max"),
                f"max ({backoff.max:g}s) is less than initial ({backoff.initial:g}s); "
                f"make max at least {backoff.initial:g}s",
            )
        if "initial" in changes:
            r.fail(
                fields.nodes["initial"],
                _join(path, "initial"),
                f"initial ({backoff.initial:g}s) is more than max ({backoff.max:g}s); "
                f"make initial at most {backoff.max:g}s",
            )
    return backoff


def _escalation(r: _Reader, node: Node, path: str, base: Escalation) -> Escalation:
    fields = r.mapping(node, path, allowed=tuple(_ESCALATION_FIELDS))
    # Any: after_attempts is an int and within a float; each parser checked its own.
    changes: dict[str, Any] = fields.read_all(_ESCALATION_FIELDS)
    return replace(base, **changes)


# --- scalars ---------------------------------------------------------------------------


def _text(r: _Reader, node: Node, path: str) -> str:
    # The text as written, not YAML's reading of it: `user: 1000` means "1000",
    # and `tier: true` must match the label value "true", not Python's True.
    if not isinstance(node, ScalarNode) or _is_null(node):
        r.fail(node, path, f"must be a string; found {_describe(node)}")
    return str(node.value)


def _duration(r: _Reader, node: Node, path: str) -> float:
    value = r.value(node, path) if isinstance(node, ScalarNode) else None
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        r.fail(node, path, f"must be a duration; found {_describe(node)}; {_DURATION_HINT}")
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        r.fail(node, path, f"{node.value!r} is not a duration; {_DURATION_HINT}")
    return seconds


def _number(r: _Reader, node: Node, path: str) -> float:
    if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT):
        value = float(r.value(node, path))
        if math.isfinite(value):
            return value
    r.fail(node, path, f"must be a number like 2; found {_describe(node)}")


def _whole_number(r: _Reader, node: Node, path: str) -> int:
    if isinstance(node, ScalarNode) and node.tag == _INT:
        return int(r.value(node, path))
    r.fail(node, path, f"must be a whole number like 3; found {_describe(node)}")


def _at_least(parse: _Parse[N], minimum: N, *, example: str, strictly: bool = False) -> _Parse[N]:
    """``parse``, then a check that the value is at least (or more than) ``minimum``."""

    def read(r: _Reader, node: Node, path: str) -> N:
        value = parse(r, node, path)
        if value < minimum or (strictly and value == minimum):
            bound = "more than" if strictly else "at least"
            r.fail(
                node, path, f"must be {bound} {minimum:g}, not {node.value}; write e.g. {example}"
            )
        return value

    return read


def _list(parse: _Parse[T], *, example: str, allow_empty: bool = False) -> _Parse[list[T]]:
    return lambda r, node, path: r.items(
        node, path, parse, example=example, allow_empty=allow_empty
    )


_BACKOFF_FIELDS: dict[str, _Parse[float]] = {
    "initial": _at_least(_duration, 0.0, strictly=True, example="10s"),
    "factor": _at_least(_number, 1.0, example="2"),
    "max": _at_least(_duration, 0.0, strictly=True, example="5m"),
    "reset_after": _at_least(_duration, 0.0, example="10m"),
}

_ESCALATION_FIELDS: dict[str, _Parse[float]] = {
    "after_attempts": _at_least(_whole_number, 1, example="3"),
    "within": _at_least(_duration, 0.0, strictly=True, example="30m"),
}

#: How each type of action option is read. restart and stop take the stop timeout
#: Docker waits before it kills the process; 0 is allowed and means kill at once. An
#: exec time limit of 0 would never run anything.
_OPTION_PARSERS: dict[OptionType, _Parse[Any]] = {
    OptionType.STOP_TIMEOUT: _duration,
    OptionType.TIME_LIMIT: _at_least(_duration, 0.0, strictly=True, example="30s"),
    OptionType.COMMAND: _command,
    OptionType.COMMANDS: _commands,
    OptionType.TEXT: _text,
    OptionType.FLAG: _boolean,
    OptionType.CACHE_PATHS: _list(_cache_path, example="[/var/cache/nginx]"),
}


# --- node helpers ----------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _describe(node: Node) -> str:
    """How an error message names what it found, in YAML's words."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "nothing"
    if node.tag == _STR:
        return f"the string {node.value!r}"
    if node.tag in (_INT, _FLOAT):
        return f"the number {node.value}"
    if node.tag == _BOOL:
        return f"{node.value} (true or false)"
    return f"{node.value!r} ({node.tag})"


# match.log and match.probe
_LOG_FIELDS: dict[str, _Parse[Any]] = {
    "pattern": _regex,
    "count": _at_least(_whole_number, 1, example="3"),
    "window": _at_least(_duration, 0.0, strictly=True, example="2m"),
}

_PROBE_FIELDS: dict[str, _Parse[Any]] = {
    "http": _port,
    "tcp": _port,
    "path": _text,
    "timeout": _at_least(_duration, 0.0, strictly=True, example="2s"),
    "failures": _at_least(_whole_number, 1, example="3"),
}
