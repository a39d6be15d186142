"""A compose project as compose reads it, and its dependency graph. Pure.

Two kinds of caller read compose files: actions (``rebuild`` needs a service's
``build:``, ``restart_dependents`` its ``depends_on``) and the fix guard, which must
judge an edit by what compose will run, not by the text the model wrote. Both get the
same answer from ``resolve_project``: every file compose would read (``include:``,
``extends:``), every string interpolated, the files merged with compose's rules. It
reads through a ``read`` function it is given, so the same code reads the disk
(``agent.engine.compose``), a commit, or a fix's tree, and it never touches the disk itself.

What it simplifies, on purpose:

* ``include:`` entries are merged under the including file, which wins on a clash;
  compose refuses such a clash, so a project compose accepts reads the same.
* ``extends:`` is resolved per file, before the files are merged, as compose does; a
  base service's ``links``, ``volumes_from`` and ``depends_on`` are kept (compose
  would refuse them), which shows the guard more, never less.
* Sequences merge as the compose specification says for the keys it names (``volumes``
  by target, ``ports``, ``secrets`` and ``configs`` by their key, ``command``,
  ``entrypoint`` and ``healthcheck.test`` replaced); every other sequence is the base's
  entries followed by the new ones, without repeats. ``environment``, ``labels``,
  ``annotations``, ``sysctls``, ``extra_hosts``, ``build.args``, ``depends_on`` and
  ``networks`` merge as mappings whichever way they are written. ``!reset`` and
  ``!override`` work as in compose.
* Relative paths (``build``, bind mount sources, ``env_file``, ``label_file``,
  ``secrets``/``configs`` ``file``, a bind volume's ``device``) are rebased on the
  folder they are relative to, as ``docker compose config`` prints them: the project
  folder for the files given, the included project's folder, the extended file's
  folder. A result that would lose its leading ``.`` keeps ``./``, so a bind source
  never reads as a volume name. ``~`` is left as written.
* The project's ``.env`` is read from the project folder; an ``include:`` reads its
  own ``env_file`` (default: its project folder's ``.env``) for the variables the
  including project does not set.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ActionError


def services_of(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``services`` mapping of a parsed compose file, or an empty one."""
    services = config.get("services")
    if services is None:
        return {}
    if not isinstance(services, dict):
        raise ActionError("the compose file's 'services' is not a mapping")
    return services


def compose_dependencies(config: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Each service's dependencies: its ``depends_on`` and ``network_mode: service:X``."""
    graph: dict[str, frozenset[str]] = {}
    for name, definition in services_of(config).items():
        needs: set[str] = set()
        if isinstance(definition, dict):
            depends = definition.get("depends_on")
            # A list of names, or a mapping of name to {condition: ...}.
            if isinstance(depends, list | dict):
                needs.update(str(d) for d in depends)
            mode = definition.get("network_mode")
            if isinstance(mode, str) and mode.startswith("service:"):
                needs.add(mode.removeprefix("service:"))
        graph[str(name)] = frozenset(needs)
    return graph


def depends_on_label(value: str | None) -> frozenset[str]:
    """The services named in Compose v2's ``com.docker.compose.depends_on`` label."""
    if not value:
        return frozenset()
    names = (entry.split(":", 1)[0].strip() for entry in value.split(","))
    return frozenset(name for name in names if name)


def merge_graphs(*graphs: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """One dependency graph holding every edge of the given ones."""
    merged: dict[str, set[str]] = {}
    for graph in graphs:
        for service, needs in graph.items():
            merged.setdefault(service, set()).update(needs)
    return {service: frozenset(needs) for service, needs in merged.items()}


def dependents_in_order(graph: Mapping[str, Iterable[str]], root: str) -> list[str]:
    """The services that depend on ``root``, directly or not, parents before dependents.

    ``graph`` maps each service to the services it depends on. Services at the same
    depth keep name order, so the order is the same on every run. A cycle through
    the dependents of ``root`` raises ActionError naming it: restarting around a
    cycle has no right order, and a person has to look at the compose file.
    """
    needs = {service: frozenset(deps) for service, deps in graph.items()}
    dependents: dict[str, set[str]] = {}
    for service, deps in needs.items():
        for dep in deps:
            dependents.setdefault(dep, set()).add(service)
    reached: set[str] = set()
    todo = [root]
    while todo:
        for child in dependents.get(todo.pop(), ()):
            if child not in reached:
                reached.add(child)
                todo.append(child)
    if root in reached:
        raise ActionError(f"services depend on each other in a cycle: {_cycle(needs, root)}")
    order: list[str] = []
    placed = {root}
    remaining = set(reached)
    while remaining:
        ready = sorted(s for s in remaining if needs.get(s, frozenset()) & reached <= placed)
        if not ready:
            raise ActionError(
                "services depend on each other in a cycle: "
                f"{_cycle(needs, min(remaining), within=remaining)}"
            )
        order.extend(ready)
        placed.update(ready)
        remaining.difference_update(ready)
    return order


def _cycle(needs: Mapping[str, frozenset[str]], start: str, within: set[str] | None = None) -> str:
    """A cycle reachable from ``start``, written ``a -> b -> a``."""
    path: list[str] = []
    on_path: set[str] = set()
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for dep in sorted(needs.get(node, frozenset())):
            if within is not None and dep not in within:
                continue
            if dep in on_path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    found = visit(start)
    return " -> ".join(found) if found else start


# --- reading a project as compose reads it --------------------------------------------

#: A file's text, or None when it does not exist.
Reader = Callable[[Path], "str | None"]

#: The file name of medic's own overlay (compose/medic.yml). When one of the files
#: given cannot be found and has this name, it is left out (see ``agent.engine.compose``).
MEDIC_OVERLAY_NAME = "medic.yml"


class ComposeError(ActionError):
    """A compose project that cannot be read as compose would read it.

    ``file`` is the compose file at fault, when one is. The subclasses are what the fix
    guard keys its refusal codes on::

        ComposeError
        ├── UnresolvedVariable   a ${VAR} that is unset (strict), ${VAR:?} unset, bad $
        ├── MultipleDocuments    a file with more than one YAML document
        └── UnreadableCompose    not YAML, not a mapping, a missing file, a cycle
    """

    def __init__(self, message: str, *, file: Path | None = None) -> None:
        super().__init__(message)
        self.file = file


class UnresolvedVariable(ComposeError):
    """A variable that cannot be given a value."""


class MultipleDocuments(ComposeError):
    """A file with more than one YAML document; compose would merge them all."""


class UnreadableCompose(ComposeError):
    """A file that is not a compose mapping, is missing, or includes itself."""


class UnsetVariable(ValueError):
    """``interpolate(strict=True)`` met a variable with no value and no default."""


@dataclass(frozen=True)
class ComposeProject:
    """A project as compose reads it: the merged, interpolated configuration and every
    file that was read for it (compose files, included and extended ones, ``.env``)."""

    config: dict[str, Any]
    files: tuple[Path, ...]


def interpolate(text: str, variables: Mapping[str, str], *, strict: bool = False) -> str:
    """``text`` with ``$VAR``, ``${VAR}`` and their ``:-``, ``-``, ``:+``, ``+``, ``:?``,
    ``?`` forms substituted, and ``$$`` written as ``$``, as Compose does.

    An unset variable without a default becomes empty, as in Compose; with ``strict``
    it raises UnsetVariable, for a reader that must not guess what a value will be.
    ValueError says what is wrong with a malformed ``$`` or a ``${VAR:?message}``
    left unset.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        following = text[i + 1 : i + 2]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "{":
            end = _closing_brace(text, i + 2)
            if end is None:
                raise ValueError(f"{text!r} has a ${{ without its closing }}")
            out.append(_expand(text[i + 2 : end], variables, text, strict))
            i = end + 1
        else:
            name = _VARIABLE_NAME.match(text, i + 1)
            if name is None:
                raise ValueError(
                    f"{text!r} has a $ that starts no variable at position {i}; write $$ for a $"
                )
            out.append(_value(name.group(), variables, strict))
            i = name.end()
    return "".join(out)


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<rest>.*))?", re.S)


def _value(name: str, variables: Mapping[str, str], strict: bool) -> str:
    value = variables.get(name)
    if value is None:
        if strict:
            raise UnsetVariable(f"{name} is not set and has no default")
        return ""
    return value


def _closing_brace(text: str, start: int) -> int | None:
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return None


def _expand(body: str, variables: Mapping[str, str], text: str, strict: bool) -> str:
    found = _BRACED.fullmatch(body)
    if found is None:
        raise ValueError(f"{text!r} has ${{{body}}}, which names no variable")
    name, op, rest = found.group("name"), found.group("op"), found.group("rest") or ""
    value = variables.get(name)
    is_set = value is not None
    has_text = bool(value)
    if op is None:
        return _value(name, variables, strict)
    if op in (":-", "-"):
        use_default = not has_text if op == ":-" else not is_set
        return interpolate(rest, variables, strict=strict) if use_default else (value or "")
    if op in (":+", "+"):
        use_alternative = has_text if op == ":+" else is_set
        return interpolate(rest, variables, strict=strict) if use_alternative else ""
    missing = not has_text if op == ":?" else not is_set
    if missing:
        reason = interpolate(rest, variables, strict=strict) or "it is required"
        raise ValueError(f"{name} must be set: {reason}")
    return value or ""


def parse_dotenv(text: str) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a ``.env`` file, as compose reads the common forms:
    comments, blank lines, ``export KEY=...``, values in matching quotes."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _VARIABLE_NAME.fullmatch(key):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found[key] = value
    return found


def resolve_project(
    files: Sequence[Path],
    *,
    working_dir: Path | None = None,
    environment: Mapping[str, str],
    read: Reader,
    strict: bool = False,
    as_written: bool = False,
) -> ComposeProject:
    """The compose ``files`` read through ``read`` and merged as ``docker compose -f
    ... -f ...`` would: later files override earlier ones, ``include:`` and
    ``extends:`` followed, every string value interpolated from ``environment`` and
    then the ``.env`` in ``working_dir`` (default: the first file's folder).

    ``strict`` refuses to guess: a variable that is unset and has no default raises
    UnresolvedVariable instead of becoming empty. A ``${VAR:?}`` left unset raises in
    both modes, as in compose. ``as_written`` leaves every value as the file wrote
    it, for showing a person where a resolved value came from. A file given that does
    not exist raises UnreadableCompose, unless it is medic's own overlay (``medic.yml``), which
    defines only medic's services and is often not mounted where medic runs.
    """
    reader = _Reader(read, strict=strict, as_written=as_written)
    merged: dict[str, Any] = {}
    variables: dict[str, str] | None = None
    folder = working_dir
    for given in files:
        file = _normal(given)
        text = reader.text(file)
        if text is None:
            if file.name == MEDIC_OVERLAY_NAME:
                continue
            raise UnreadableCompose(
                f"cannot read the compose file {file} (it does not exist); when medic runs "
                "in a container, mount the project folder at the same path "
                "(see docs/actions.md)",
                file=file,
            )
        if variables is None:
            folder = folder if folder is not None else file.parent
            variables = reader.variables(_normal(folder), environment, env_files=None)
        assert folder is not None
        document = reader.document(file, text, variables, paths_from=_normal(folder), stack=())
        merged = _merge_mapping(merged, document, ())
    return ComposeProject(config=_plain(merged), files=tuple(reader.files))


def _normal(path: Path) -> Path:
    """``path`` with ``.``, ``..`` and doubled slashes folded, as text (no links)."""
    return Path(posixpath.normpath(str(path)))


def _rebase(folder: Path, path: str) -> str:
    """A relative ``path`` written in a file whose paths are relative to ``folder``,
    made relative to where ``folder`` itself is written from."""
    if not path or path.startswith("~") or posixpath.isabs(path):
        return path
    joined = posixpath.normpath(posixpath.join(str(folder), path))
    # "./data" must not come out as "data", which compose would read as a volume name.
    return joined if joined.startswith(("/", ".")) else "./" + joined


class _Reset:
    """What ``!reset`` leaves: the key is removed from what it is merged over."""

    def __repr__(self) -> str:
        return "!reset"


_RESET = _Reset()


@dataclass(frozen=True)
class _Override:
    """What ``!override`` leaves: the value replaces, rather than merges with, the base."""

    value: Any


class _ComposeYaml(yaml.SafeLoader):
    """YAML as compose reads it: safe, merge keys, and compose's ``!reset`` and
    ``!override`` tags."""


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> _Reset:
    return _RESET


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    assert isinstance(node, yaml.ScalarNode)
    return _Override(loader.construct_scalar(node))


_ComposeYaml.add_constructor("!reset", _construct_reset)
_ComposeYaml.add_constructor("!override", _construct_override)


class _Reader:
    """One resolution's file reads (each file read once) and the files it read."""

    def __init__(self, read: Reader, *, strict: bool, as_written: bool) -> None:
        self._read = read
        self._as_written = as_written
        self._texts: dict[Path, str | None] = {}
        self.strict = strict
        self.files: list[Path] = []

    def text(self, path: Path) -> str | None:
        if path not in self._texts:
            text = self._read(path)
            self._texts[path] = text
            if text is not None:
                self.files.append(path)
        return self._texts[path]

    def variables(
        self,
        folder: Path,
        given: Mapping[str, str],
        *,
        env_files: Sequence[Path] | None,
    ) -> dict[str, str]:
        """What a project's files are interpolated from: ``given`` first, then its env
        files (default: its folder's ``.env``) for what ``given`` does not set."""
        found: dict[str, str] = {}
        for env_file in env_files if env_files is not None else [folder / ".env"]:
            text = self.text(_normal(env_file))
            if text is None:
                if env_files is not None:
                    raise UnreadableCompose(f"the env_file {env_file} does not exist")
                continue
            found.update(parse_dotenv(text))
        found.update(given)
        return found

    def parse(self, path: Path, text: str) -> dict[str, Any]:
        try:
            documents = [d for d in yaml.load_all(text, Loader=_ComposeYaml) if d is not None]
        except yaml.YAMLError as e:
            raise UnreadableCompose(
                f"the compose file {path} is not valid YAML: {e}", file=path
            ) from e
        if len(documents) > 1:
            raise MultipleDocuments(
                f"the compose file {path} holds {len(documents)} YAML documents; compose "
                "would merge them all, so medic reads only files with one",
                file=path,
            )
        document = documents[0] if documents else {}
        if isinstance(document, _Override):
            document = document.value
        if not isinstance(document, dict):
            raise UnreadableCompose(
                f"the compose file {path} is not a mapping of top-level keys", file=path
            )
        return document

    def document(
        self,
        file: Path,
        text: str,
        variables: Mapping[str, str],
        *,
        paths_from: Path,
        stack: tuple[Path, ...],
    ) -> dict[str, Any]:
        """One file with its variables substituted, its paths rebased, its services'
        ``extends:`` resolved and its ``include:`` merged under it."""
        if file in stack:
            chain = " -> ".join(str(p) for p in (*stack, file))
            raise UnreadableCompose(f"compose files include each other in a cycle: {chain}")
        raw = self.parse(file, text)
        document: dict[str, Any] = self._interpolated(raw, variables, file)
        _rebase_paths(document, paths_from)
        services = document.get("services")
        if services is not None and not isinstance(services, dict):
            raise UnreadableCompose(
                f"the services of the compose file {file} are not a mapping", file=file
            )
        if isinstance(services, dict):
            document["services"] = {
                name: self._extended(file, services, str(name), variables, ()) for name in services
            }
        included = self._included(document.pop("include", None), file, variables, stack)
        if not included:
            # Kept as read: a !reset here may still apply to a file given before this one.
            return document
        return _merge_mapping(included, document, ())

    def _interpolated(self, value: Any, variables: Mapping[str, str], file: Path) -> Any:
        def walk(item: Any, where: tuple[str, ...]) -> Any:
            if isinstance(item, str) and not self._as_written:
                try:
                    return interpolate(item, variables, strict=self.strict)
                except ValueError as e:
                    raise UnresolvedVariable(_unresolved(file, where, e), file=file) from e
            if isinstance(item, dict):
                return {key: walk(v, (*where, str(key))) for key, v in item.items()}
            if isinstance(item, list):
                return [walk(v, (*where, str(n))) for n, v in enumerate(item)]
            if isinstance(item, _Override):
                return _Override(walk(item.value, where))
            return item

        return walk(value, ())

    def _extended(
        self,
        file: Path,
        services: Mapping[Any, Any],
        name: str,
        variables: Mapping[str, str],
        stack: tuple[tuple[Path, str], ...],
    ) -> Any:
        """Service ``name`` of ``file`` with its ``extends:`` chain merged under it."""
        if (file, name) in stack:
            chain = " -> ".join(f"{f}:{s}" for f, s in (*stack, (file, name)))
            raise UnreadableCompose(f"services extend each other in a cycle: {chain}", file=file)
        definition = services.get(name)
        if definition is None:
            definition = {}
        if not isinstance(definition, dict):
            raise UnreadableCompose(
                f"service {name!r} in the compose file {file} is not a mapping", file=file
            )
        extends = definition.get("extends")
        if extends is None:
            return definition
        if isinstance(extends, str):
            base_name, base_file = extends, None
        elif isinstance(extends, dict) and isinstance(extends.get("service"), str):
            base_name, base_file = extends["service"], extends.get("file")
        else:
            raise UnreadableCompose(
                f"service {name!r} in {file} has an extends: without a service name", file=file
            )
        owner: Path = file
        owner_services: Any = services
        if base_file is not None:
            owner = _normal(file.parent / str(base_file))
            text = self.text(owner)
            if text is None:
                raise UnreadableCompose(
                    f"service {name!r} in {file} extends the file {base_file}, which does "
                    "not exist",
                    file=file,
                )
            other = self._interpolated(self.parse(owner, text), variables, owner)
            _rebase_paths(other, owner.parent)
            owner_services = other.get("services") if isinstance(other, dict) else None
            if not isinstance(owner_services, dict):
                owner_services = {}
        if base_name not in owner_services:
            raise UnreadableCompose(
                f"service {name!r} in {file} extends {base_name!r}, which {owner} does not define",
                file=file,
            )
        base = self._extended(owner, owner_services, base_name, variables, (*stack, (file, name)))
        local = {k: v for k, v in definition.items() if k != "extends"}
        return _merge_mapping(_plain(base), local, ("services", name))

    def _included(
        self,
        include: Any,
        file: Path,
        variables: Mapping[str, str],
        stack: tuple[Path, ...],
    ) -> dict[str, Any]:
        """The projects an ``include:`` names, merged in order."""
        if include is None:
            return {}
        if not isinstance(include, list):
            raise UnreadableCompose(f"the include: of {file} is not a list", file=file)
        merged: dict[str, Any] = {}
        for entry in include:
            paths: Any
            env_files: Any
            if isinstance(entry, str):
                paths, directory, env_files = [entry], None, None
            elif isinstance(entry, dict):
                raw_paths = entry.get("path")
                paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths
                directory = entry.get("project_directory")
                raw_env = entry.get("env_file")
                env_files = [raw_env] if isinstance(raw_env, str) else raw_env
            else:
                raise UnreadableCompose(f"an include: entry of {file} is not a path", file=file)
            if (
                not isinstance(paths, list)
                or not paths
                or not all(isinstance(p, str) for p in paths)
            ):
                raise UnreadableCompose(f"an include: entry of {file} names no path", file=file)
            files = [_normal(file.parent / p) for p in paths]
            folder = _normal(file.parent / directory) if directory else files[0].parent
            own_env = None
            if env_files is not None:
                own_env = [_normal(file.parent / str(e)) for e in env_files]
            texts: list[str] = []
            for included in files:
                text = self.text(included)
                if text is None:
                    raise UnreadableCompose(
                        f"the compose file {file} includes {included}, which does not exist",
                        file=file,
                    )
                texts.append(text)
            sub_variables = self.variables(folder, variables, env_files=own_env)
            project: dict[str, Any] = {}
            for included, text in zip(files, texts, strict=True):
                document = self.document(
                    included, text, sub_variables, paths_from=folder, stack=(*stack, file)
                )
                project = _merge_mapping(project, document, ())
            merged = _merge_mapping(merged, project, ())
        return merged


def _unresolved(file: Path, where: tuple[str, ...], error: ValueError) -> str:
    if len(where) >= 3 and where[0] == "services":
        key = ".".join(where[2:])
        return f"the {key} of service {where[1]!r} in {file} cannot be resolved: {error}"
    return f"the value at {'.'.join(where) or 'the top'} in {file} cannot be resolved: {error}"


# --- paths -------------------------------------------------------------------------------

#: A volume name as docker accepts it; any other short-syntax source is a host path.
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def split_volume(entry: str) -> tuple[str | None, str, str | None]:
    """A short-syntax volume ``source:target[:mode]`` as (source, target, mode); a lone
    ``target`` is an anonymous volume with no source."""
    parts = entry.split(":")
    if len(parts) == 1:
        return None, parts[0], None
    mode = ":".join(parts[2:]) if len(parts) > 2 else None
    return parts[0], parts[1], mode


def is_host_path(source: str) -> bool:
    """Whether a short-syntax volume source is a host path rather than a volume name."""
    return VOLUME_NAME.fullmatch(source) is None


def _rebase_paths(document: dict[str, Any], folder: Path) -> None:
    """Rewrite, in place, the relative paths of one file's document onto ``folder``."""
    services = document.get("services")
    if isinstance(services, dict):
        for definition in services.values():
            if isinstance(definition, dict):
                _rebase_service(definition, folder)
    for kind in ("secrets", "configs"):
        entries = document.get(kind)
        if isinstance(entries, dict):
            for entry in entries.values():
                if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                    entry["file"] = _rebase(folder, entry["file"])
    volumes = document.get("volumes")
    if isinstance(volumes, dict):
        for volume in volumes.values():
            options = volume.get("driver_opts") if isinstance(volume, dict) else None
            if (
                isinstance(options, dict)
                and isinstance(options.get("device"), str)
                and "bind" in str(options.get("o", "")).split(",")
            ):
                options["device"] = _rebase(folder, options["device"])


def _is_remote(context: str) -> bool:
    return "://" in context or context.startswith("git@")


def _rebase_service(service: dict[str, Any], folder: Path) -> None:
    build = service.get("build")
    if isinstance(build, str) and not _is_remote(build):
        service["build"] = _rebase(folder, build)
    elif isinstance(build, dict):
        context = build.get("context")
        if isinstance(context, str) and not _is_remote(context):
            build["context"] = _rebase(folder, context)
    for key in ("env_file", "label_file"):
        value = service.get(key)
        if isinstance(value, str):
            service[key] = _rebase(folder, value)
        elif isinstance(value, list):
            service[key] = [_rebase_env_file(folder, item) for item in value]
    volumes = service.get("volumes")
    if isinstance(volumes, list):
        service["volumes"] = [_rebase_volume(folder, item) for item in volumes]


def _rebase_env_file(folder: Path, item: Any) -> Any:
    if isinstance(item, str):
        return _rebase(folder, item)
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return {**item, "path": _rebase(folder, item["path"])}
    return item


def _rebase_volume(folder: Path, item: Any) -> Any:
    if isinstance(item, str):
        source, target, mode = split_volume(item)
        if source is None or not source.startswith("."):
            return item
        return ":".join([_rebase(folder, source), target, *([mode] if mode else [])])
    source = item.get("source") if isinstance(item, dict) else None
    if isinstance(source, str) and item.get("type") == "bind":
        return {**item, "source": _rebase(folder, item["source"])}
    return item


# --- merging -------------------------------------------------------------------------------

#: Service keys whose later value replaces the earlier one, sequence or not.
_REPLACED = frozenset({"command", "entrypoint", "healthcheck.test"})
#: Service keys written as a mapping or as ``KEY=VALUE`` items, merged as mappings.
_MAPPINGS = frozenset(
    {
        "environment",
        "labels",
        "annotations",
        "sysctls",
        "extra_hosts",
        "build.args",
        "build.labels",
        "build.extra_hosts",
        "deploy.labels",
        "depends_on",
        "networks",
    }
)
#: Service keys whose items are unique by a key; a later item replaces an earlier one.
_UNIQUE: dict[str, Callable[[Any], str]] = {}


def _volume_target(item: Any) -> str:
    if isinstance(item, str):
        return split_volume(item)[1]
    if isinstance(item, dict):
        return str(item.get("target"))
    return json.dumps(item, sort_keys=True, default=str)


def _file_target(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target") or item.get("source"))
    return str(item)


def _identity(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)


_UNIQUE.update(
    {
        "volumes": _volume_target,
        "secrets": _file_target,
        "configs": _file_target,
        "ports": _identity,
    }
)


def _service_key(path: tuple[str, ...]) -> str | None:
    """``build.args`` for ``("services", "web", "build", "args")``; None outside services."""
    if len(path) >= 3 and path[0] == "services":
        return ".".join(path[2:])
    return None


def _merge_mapping(
    base: Mapping[Any, Any], override: Mapping[Any, Any], path: tuple[str, ...]
) -> dict[Any, Any]:
    result = dict(base)
    for key, value in override.items():
        if value is _RESET:
            result.pop(key, None)
        elif key in result:
            result[key] = _merge_value(result[key], value, (*path, str(key)))
        else:
            result[key] = _plain(value)
    return result


def _merge_value(base: Any, override: Any, path: tuple[str, ...]) -> Any:
    if isinstance(override, _Override):
        return _plain(override.value)
    key = _service_key(path)
    if key in _MAPPINGS and isinstance(base, list | dict) and isinstance(override, list | dict):
        return _merge_mapping(_as_mapping(base, key), _as_mapping(override, key), path)
    if isinstance(base, dict) and isinstance(override, dict):
        return _merge_mapping(base, override, path)
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED:
        unique = _UNIQUE.get(key or "", _identity)
        merged: dict[str, Any] = {unique(item): item for item in base}
        for item in override:
            if item is not _RESET:
                merged[unique(item)] = _plain(item)
        return list(merged.values())
    return _plain(override)


def _as_mapping(value: Any, key: str | None) -> dict[Any, Any]:
    """A ``KEY=VALUE`` list (or a list of names) as the mapping it stands for."""
    if isinstance(value, dict):
        return value
    found: dict[Any, Any] = {}
    for item in value:
        text = str(item)
        if key == "depends_on":
            found[text] = {"condition": "service_started"}
        elif key == "networks":
            found[text] = None
        elif key in ("extra_hosts", "build.extra_hosts"):
            name, sep, address = text.replace("=", ":", 1).partition(":")
            found[name] = address if sep else None
        else:
            name, sep, setting = text.partition("=")
            found[name] = setting if sep else None
    return found


def _plain(value: Any) -> Any:
    """``value`` with what is left of ``!reset`` and ``!override`` taken out."""
    if isinstance(value, _Override):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not _RESET}
    if isinstance(value, list):
        return [_plain(v) for v in value if v is not _RESET]
    return value
