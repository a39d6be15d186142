"""The dependency graph of a compose project: pure walks over parsed compose data.

``compose.py`` reads the files; this module only looks at what was read (and at
Compose v2's ``depends_on`` label), so the case file and ``restart_dependents`` can
share it without touching the disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
