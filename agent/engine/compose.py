"""What medic needs to know from a project's compose files, and the order to act in.

Two actions need more than a container's own configuration: ``rebuild`` needs the
service's ``build:`` section to find the build context, and ``restart_dependents``
needs to know which services depend on which. Docker Compose leaves the way back to
its files on every container (the labels below), so medic reads the same YAML the
operator wrote instead of asking them to repeat it in a playbook.

Everything here is plain file reading and graph walking, with no Docker in it, so it
is tested without an engine. How compose files are read (interpolation, ``include:``,
``extends:``, merging) lives in ``agent.engine.compose_graph``, which is pure, so the fix
guard judges an edit by the same reading; this module gives it the disk to read.
When medic runs in a container, the project folder must be mounted at the same
absolute path (docs/actions.md says how).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from agent.engine.compose_graph import (
    MEDIC_OVERLAY_NAME,
    ComposeProject,
    Reader,
    interpolate,
    resolve_project,
    services_of,
)
from agent.errors import ActionError

#: Labels docker-compose puts on every container it creates.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
#: Set by Compose v2 (2.x): ``svc:condition:restart,...``; absent with docker-compose v1.
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"
__all__ = [
    "CONFIG_FILES_LABEL",
    "DEPENDS_ON_LABEL",
    "MEDIC_OVERLAY_NAME",
    "WORKING_DIR_LABEL",
    "BuildSpec",
    "ComposeProject",
    "build_spec",
    "config_files",
    "interpolate",
    "load_compose",
    "load_project",
]


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


def load_project(
    files: Sequence[Path],
    *,
    working_dir: Path | None = None,
    environment: Mapping[str, str] | None = None,
    read: Reader | None = None,
    strict: bool = False,
) -> ComposeProject:
    """The project the compose ``files`` make, read as compose reads them, and the
    files that were read for it.

    Files are merged in order, later ones overriding earlier ones; ``include:`` and
    ``extends:`` are followed; every string value is interpolated as Compose does,
    from ``environment`` (default: medic's own) and then the project's ``.env`` in
    ``working_dir`` (default: the first file's folder). Relative paths come back
    rebased on the project folder, as ``docker compose config`` prints them
    (``agent.engine.compose_graph`` says what else it simplifies).

    ``read`` returns a file's text, or None when it does not exist (default: the
    disk). ``strict`` makes an unset variable without a default an error
    (UnresolvedVariable) instead of an empty string; the fix guard uses it, rebuild
    does not, as compose does not. medic's own overlay is left out when it cannot
    be read (see the module's docstring); any other file that cannot be read raises
    ActionError, and so does a file with more than one YAML document.
    """
    return resolve_project(
        files,
        working_dir=working_dir,
        environment=os.environ if environment is None else environment,
        read=_read_disk if read is None else read,
        strict=strict,
    )


def load_compose(
    files: Sequence[Path],
    *,
    working_dir: Path | None = None,
    environment: Mapping[str, str] | None = None,
    read: Reader | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """The merged configuration of ``load_project``: the keys medic reads, resolved."""
    return load_project(
        files, working_dir=working_dir, environment=environment, read=read, strict=strict
    ).config


def _read_disk(path: Path) -> str | None:
    """A file's text from the disk; None when it does not exist.

    A ``.env`` often holds secrets and is readable by its owner only; medic then
    substitutes from its own environment alone rather than failing the action. A
    compose file that cannot be read is an error, except medic's own overlay.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.name == MEDIC_OVERLAY_NAME:
            _overlay_not_read(path, "it does not exist here")
        return None
    except (OSError, UnicodeDecodeError) as e:
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
        if path.name == ".env":
            logger.debug("The file {} cannot be read ({}); its variables are not used.", path, e)
            return None
        if path.name == MEDIC_OVERLAY_NAME:
            _overlay_not_read(path, reason)
            return None
        raise ActionError(
            f"cannot read the compose file {path} ({reason}); when medic runs in "
            "a container, mount the project folder at the same path (see docs/actions.md)"
        ) from e


def _overlay_not_read(path: Path, reason: str) -> None:
    logger.debug(
        "The compose file {} is taken to be medic's own overlay and is not read: "
        "it is not mounted here ({}), and it defines only medic's own services.",
        path,
        reason,
    )


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
