"""What medic needs to know from a project's compose files, and the order to act in.

Two actions need more than a container's own configuration: ``rebuild`` needs the
service's ``build:`` section to find the build context, and ``restart_dependents``
needs to know which services depend on which. Docker Compose leaves the way back to
its files on every container (the labels below), so medic reads the same YAML the
operator wrote instead of asking them to repeat it in a playbook.

Everything here is plain file reading and graph walking, with no Docker in it, so it
is tested without an engine. When medic runs in a container, the project folder must
be mounted at the same absolute path (docs/actions.md says how).

Deployed as README says (``-f docker-compose.yml -f /path/to/medic/compose/medic.yml``),
the labels name medic's own overlay too, which lives in medic's checkout and is not
mounted. It defines only medic's services (medic and its database), never one medic
rebuilds or restarts, so an overlay named ``medic.yml`` that cannot be read is left out.
Any other file that cannot be read is an error: it might change the very ``build:``
medic is about to use.
"""

from __future__ import annotations

import itertools
import os
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from loguru import logger

from agent.compose_graph import services_of
from agent.errors import ActionError

#: Labels docker-compose puts on every container it creates.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
#: Set by Compose v2 (2.x): ``svc:condition:restart,...``; absent with docker-compose v1.
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"
#: The file name of medic's own overlay (compose/medic.yml), recognised in the labels.
MEDIC_OVERLAY_NAME = "medic.yml"


@dataclass(frozen=True)
class BuildSpec:
    """Where and how a service's image is built: ``docker build`` with these options."""

    context: Path
    dockerfile: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None


def config_files(labels: Mapping[str, str]) -> tuple[Path, tuple[Path, ...]]:
    """The project's working folder and compose files, from a container's labels.

    Compose v2 writes absolute paths. docker-compose v1 writes each path as it was
    given on the command line, so a relative one is relative to the folder compose
    ran in, which no label records; it is worked out from the working folder, which
    v1 sets to the first file's folder (see ``_invocation_folder``). Without a
    working folder label, absolute paths are enough: the first file's folder is the
    working folder, as Compose makes it.

    Raises ActionError when the labels do not lead to files: the container was not
    made by Compose, or Compose read its file from standard input.
    """
    working_dir = labels.get(WORKING_DIR_LABEL, "").strip()
    names = [name.strip() for name in labels.get(CONFIG_FILES_LABEL, "").split(",")]
    names = [name for name in names if name]
    if not names:
        raise ActionError(
            f"the container has no {CONFIG_FILES_LABEL} label, so medic cannot find its "
            "compose file; only containers made by docker compose can be rebuilt"
        )
    if "-" in names:
        raise ActionError(
            "the project was started from a compose file read from standard input, which "
            "medic cannot read again; start it with -f FILE instead"
        )
    if not working_dir:
        if not all(posixpath.isabs(name) for name in names):
            raise ActionError(
                f"the container has no {WORKING_DIR_LABEL} label and its compose files "
                f"({', '.join(names)}) are relative paths, so medic cannot tell where they are"
            )
        working_dir = posixpath.dirname(posixpath.normpath(names[0]))
    base = posixpath.normpath(working_dir)
    invoked = _invocation_folder(base, names[0])
    return Path(base), tuple(Path(_place(name, base, invoked)) for name in names)


def _invocation_folder(working_dir: str, first: str) -> tuple[str, int] | None:
    """Where compose ran, from the working folder and the first file as compose wrote it.

    docker-compose v1 sets the working folder to ``abspath(dirname(first))``, the
    first path being relative to where it ran. So ``-f app/compose.yml`` run in /srv
    gives /srv/app and ran in /srv; a path that climbs (``../compose.yml``, written
    when compose found the file in a parent folder) leaves some folders below a
    known one unknown. The answer is that known folder and the number of unknown
    levels below it, or None when the working folder does not end the way the first
    path says (``--project-directory`` was given): then nothing is known.
    """
    if posixpath.isabs(first):
        return working_dir, 0
    parts = [p for p in posixpath.normpath(posixpath.dirname(first)).split("/") if p != "."]
    climbs = len(parts) - len(list(itertools.dropwhile(lambda p: p == "..", parts)))
    descents = parts[climbs:]
    known = working_dir.split("/")
    if descents:
        if known[-len(descents) :] != descents:
            return None
        known = known[: -len(descents)]
    return "/".join(known) or "/", climbs


def _place(name: str, working_dir: str, invoked: tuple[str, int] | None) -> str:
    """The absolute path of one compose file the labels name."""
    if posixpath.isabs(name):
        return posixpath.normpath(name)
    if invoked is None:
        # Where compose ran is unknown: the working folder is the best guess, and is
        # right whenever compose ran in the project folder.
        return posixpath.normpath(posixpath.join(working_dir, name))
    folder, unknown_levels = invoked
    parts = posixpath.normpath(name).split("/")
    climbs = len(parts) - len(list(itertools.dropwhile(lambda p: p == "..", parts)))
    if climbs < unknown_levels:
        raise ActionError(
            f"compose ran in a folder below {folder} and wrote the compose file {name!r} "
            "relative to it, so medic cannot tell which file it is; start the project from "
            "its own folder, or with absolute -f paths"
        )
    return posixpath.normpath(posixpath.join(folder, *parts[unknown_levels:]))


def load_compose(
    files: Sequence[Path],
    *,
    working_dir: Path | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The compose files merged in order, later files overriding earlier ones.

    Mappings are merged key by key and anything else is replaced, which is how
    Compose combines ``-f a.yml -f b.yml`` for the keys medic reads (``build``,
    ``depends_on``, ``network_mode``). Variables in ``build:`` sections (``${TAG}``,
    ``${TAG:-latest}``) are substituted as Compose does, from ``environment``
    (default: medic's own) and then the project's ``.env`` file in ``working_dir``
    (default: the first file's folder); other keys are left as written.

    medic's own overlay is left out when it cannot be read (see the module's
    docstring); any other file that cannot be read raises ActionError.
    """
    merged: dict[str, Any] = {}
    variables: Mapping[str, str] | None = None
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            if file.name == MEDIC_OVERLAY_NAME:
                logger.debug(
                    "The compose file {} is taken to be medic's own overlay and is not read: "
                    "it is not mounted here ({}), and it defines only medic's own services.",
                    file,
                    e.strerror or e,
                )
                continue
            raise ActionError(
                f"cannot read the compose file {file} ({e.strerror or e}); when medic runs in "
                "a container, mount the project folder at the same path (see docs/actions.md)"
            ) from e
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ActionError(f"the compose file {file} is not valid YAML: {e}") from e
        if document is None:
            continue
        if not isinstance(document, dict):
            raise ActionError(f"the compose file {file} is not a mapping of top-level keys")
        if variables is None:
            folder = working_dir if working_dir is not None else file.parent
            variables = _variables(folder, os.environ if environment is None else environment)
        merged = _merge(merged, _substitute_builds(document, variables, file))
    return merged


def _variables(working_dir: Path, environment: Mapping[str, str]) -> dict[str, str]:
    """What Compose substitutes from: the ``.env`` file, overridden by the environment."""
    found = dict(_dotenv(working_dir / ".env"))
    found.update(environment)
    return found


def _dotenv(path: Path) -> Iterator[tuple[str, str]]:
    """``KEY=VALUE`` lines of a ``.env`` file; none when it cannot be read.

    A ``.env`` often holds secrets and is readable by its owner only; medic then
    substitutes from its own environment alone rather than failing the action.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        if not isinstance(e, FileNotFoundError):
            logger.debug("The file {} cannot be read ({}); its variables are not used.", path, e)
        return
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
        yield key, value


def _substitute_builds(
    document: dict[str, Any], variables: Mapping[str, str], file: Path
) -> dict[str, Any]:
    """``document`` with the variables in each service's ``build:`` substituted."""
    services = document.get("services")
    if not isinstance(services, dict):
        return document
    substituted: dict[str, Any] = {}
    for name, definition in services.items():
        if isinstance(definition, dict) and "build" in definition:
            try:
                build = _substitute(definition["build"], variables)
            except ValueError as e:
                raise ActionError(
                    f"the build: section of service {name!r} in {file} cannot be read: {e}"
                ) from e
            substituted[name] = {**definition, "build": build}
        else:
            substituted[name] = definition
    return {**document, "services": substituted}


def _substitute(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, dict):
        return {key: _substitute(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, variables) for item in value]
    return value


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with ``$VAR``, ``${VAR}`` and their ``:-``, ``-``, ``:+``, ``+``, ``:?``,
    ``?`` forms substituted, and ``$$`` written as ``$``, as Compose does.

    An unset variable without a default becomes empty, as in Compose. ValueError
    says what is wrong with a malformed ``$`` or a ``${VAR:?message}`` left unset.
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
            out.append(_expand(text[i + 2 : end], variables, text))
            i = end + 1
        else:
            name = _VARIABLE_NAME.match(text, i + 1)
            if name is None:
                raise ValueError(
                    f"{text!r} has a $ that starts no variable at position {i}; write $$ for a $"
                )
            out.append(variables.get(name.group(), ""))
            i = name.end()
    return "".join(out)


_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-+?])(?P<rest>.*))?", re.S)


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


def _expand(body: str, variables: Mapping[str, str], text: str) -> str:
    found = _BRACED.fullmatch(body)
    if found is None:
        raise ValueError(f"{text!r} has ${{{body}}}, which names no variable")
    name, op, rest = found.group("name"), found.group("op"), found.group("rest") or ""
    value = variables.get(name)
    is_set = value is not None
    has_text = bool(value)
    if op is None:
        return value or ""
    if op in (":-", "-"):
        use_default = not has_text if op == ":-" else not is_set
        return interpolate(rest, variables) if use_default else (value or "")
    if op in (":+", "+"):
        use_alternative = has_text if op == ":+" else is_set
        return interpolate(rest, variables) if use_alternative else ""
    missing = not has_text if op == ":?" else not is_set
    if missing:
        raise ValueError(f"{name} must be set: {interpolate(rest, variables) or 'it is required'}")
    return value or ""


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        old = result.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            result[key] = _merge(old, value)
        else:
            result[key] = value
    return result


def build_spec(config: Mapping[str, Any], service: str, working_dir: Path) -> BuildSpec:
    """How ``service`` is built: its ``build:`` section with paths resolved.

    ``build:`` is either the context path or a mapping with ``context``,
    ``dockerfile``, ``args`` (a mapping or a list of ``KEY=VALUE``) and ``target``.
    A relative context is relative to the project's working folder; the Dockerfile
    stays relative to the context, as ``docker build`` reads it.
    """
    definition = services_of(config).get(service)
    if not isinstance(definition, dict):
        raise ActionError(f"the compose file has no service {service!r}")
    build = definition.get("build")
    if build is None:
        raise ActionError(
            f"service {service!r} has no build: section; only services built from a "
            "Dockerfile can be rebuilt (use recreate for the others)"
        )
    if isinstance(build, str):
        return BuildSpec(context=_resolve(working_dir, build))
    if not isinstance(build, dict):
        raise ActionError(f"service {service!r} has a build: that is neither a path nor a mapping")
    context = build.get("context", ".")
    dockerfile = build.get("dockerfile")
    target = build.get("target")
    return BuildSpec(
        context=_resolve(working_dir, str(context)),
        dockerfile=None if dockerfile is None else str(dockerfile),
        args=_build_args(build.get("args"), service),
        target=None if target is None else str(target),
    )


def _resolve(working_dir: Path, context: str) -> Path:
    if "://" in context or context.startswith("git@"):
        raise ActionError(
            f"the build context {context!r} is a remote URL; medic builds only from local folders"
        )
    path = Path(context).expanduser()
    # normpath, not resolve(): the folder may be a mount whose links mean something else here.
    return Path(posixpath.normpath(working_dir / path))


def _build_args(raw: Any, service: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            # A key without a value takes it from the environment at build time in
            # Compose; medic has not got that environment, so such args are left out.
            if value is not None:
                pairs.append((str(key), _scalar_text(value)))
    elif isinstance(raw, list):
        for item in raw:
            key, sep, value = str(item).partition("=")
            if sep:
                pairs.append((key, value))
    else:
        raise ActionError(
            f"service {service!r} has build args that are neither a mapping nor a list"
        )
    return tuple(pairs)


def _scalar_text(value: Any) -> str:
    # YAML reads `DEBUG: true` as a bool; the build arg is the text compose would pass.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
