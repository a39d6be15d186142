"""What medic needs to know from a project's compose files, and the order to act in.

Two actions need more than a container's own configuration: ``rebuild`` needs the
service's ``build:`` section to find the build context, and ``restart_dependents``
needs to know which services depend on which. Docker Compose leaves the way back to
its files on every container (the labels below), so medic reads the same YAML the
operator wrote instead of asking them to repeat it in a playbook.

Everything here is plain file reading and graph walking, with no Docker in it, so it
is tested without an engine. When medic runs in a container, the project folder must
be mounted at the same absolute path (docs/actions.md says how).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agent.errors import ActionError

#: Labels docker-compose puts on every container it creates.
WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"
CONFIG_FILES_LABEL = "com.docker.compose.project.config_files"
#: Set by Compose v2 (2.x): ``svc:condition:restart,...``; absent with docker-compose v1.
DEPENDS_ON_LABEL = "com.docker.compose.depends_on"


@dataclass(frozen=True)
class BuildSpec:
    """Where and how a service's image is built: ``docker build`` with these options."""

    context: Path
    dockerfile: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None


def config_files(labels: Mapping[str, str]) -> tuple[Path, tuple[Path, ...]]:
    """The project's working folder and compose files, from a container's labels.

    Raises ActionError when the labels are missing: the container was not made by
    Compose, so there is no file to read.
    """
    working_dir = labels.get(WORKING_DIR_LABEL)
    files = labels.get(CONFIG_FILES_LABEL)
    if not working_dir or not files:
        raise ActionError(
            f"the container has no {WORKING_DIR_LABEL} and {CONFIG_FILES_LABEL} labels, so "
            "medic cannot find its compose file; only containers made by docker compose "
            "can be rebuilt"
        )
    base = Path(working_dir)
    # Compose writes the paths it was given, comma separated, relative or absolute.
    paths = tuple(base / name.strip() for name in files.split(",") if name.strip())
    return base, paths


def load_compose(files: Sequence[Path]) -> dict[str, Any]:
    """The compose files merged in order, later files overriding earlier ones.

    Mappings are merged key by key and anything else is replaced, which is how
    Compose combines ``-f a.yml -f b.yml`` for the keys medic reads (``build``,
    ``depends_on``, ``network_mode``). Variables (``${TAG}``) are not substituted:
    medic does not have the environment the project was started with.
    """
    merged: dict[str, Any] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
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
        merged = _merge(merged, document)
    return merged


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in override.items():
        old = result.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            result[key] = _merge(old, value)
        else:
            result[key] = value
    return result


def _services(config: Mapping[str, Any]) -> Mapping[str, Any]:
    services = config.get("services")
    if services is None:
        return {}
    if not isinstance(services, dict):
        raise ActionError("the compose file's 'services' is not a mapping")
    return services


def build_spec(config: Mapping[str, Any], service: str, working_dir: Path) -> BuildSpec:
    """How ``service`` is built: its ``build:`` section with paths resolved.

    ``build:`` is either the context path or a mapping with ``context``,
    ``dockerfile``, ``args`` (a mapping or a list of ``KEY=VALUE``) and ``target``.
    A relative context is relative to the project's working folder; the Dockerfile
    stays relative to the context, as ``docker build`` reads it.
    """
    definition = _services(config).get(service)
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


def compose_dependencies(config: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """Each service's dependencies: its ``depends_on`` and ``network_mode: service:X``."""
    graph: dict[str, frozenset[str]] = {}
    for name, definition in _services(config).items():
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
