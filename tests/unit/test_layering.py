"""The import direction docs/architecture.md describes, checked on the source with ``ast``.

Pure modules decide, I/O modules do: a pure module imports only other pure modules
and libraries that do no I/O. Each library with side effects has one adapter
module. The rules are data, here at the top; a test per rule reads every module
under agent/ and names each import that breaks it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "agent"

#: Modules that decide and never do: no I/O, no clock but one passed in.
PURE = frozenset(
    {
        "agent.model",
        "agent.config",
        "agent.errors",
        "agent.clock",
        "agent.scope",
        "agent.leadership",
        "agent.healing.history",
        "agent.healing.lifecycle",
        "agent.healing.detect",
        "agent.healing.decide",
        "agent.healing.swarm",
        "agent.status",
        "agent.healing.slots",
        "agent.healing.actions",
        "agent.engine.compose_graph",
        "agent.engine.gateway",
        "agent.engine.translate",
        "agent.escalate.casefile",
        "agent.escalate.rules",
        "agent.escalate.calibrate",
        "agent.escalate.redact",
        "agent.fixes.guardrails",
        "agent.fixes.compose_guard",
        "agent.fixes.dockerfile_guard",
        "agent.fixes.manifest_guard",
        "agent.fixes.refusal",
        "agent.fixes.secrets",
        "agent.secrets",
        "agent.codec",
        "agent.store.base",
        "agent.store.ops",
        "agent.store.lease",
    }
)

#: Libraries (top-level names) a pure module must not import: they reach the network,
#: the disk, other processes or the log.
IO_LIBRARIES = frozenset(
    {
        "anthropic",
        "apprise",
        "docker",
        "http",
        "httpx",
        "loguru",
        "openai",
        "prometheus_client",
        "psycopg",
        "requests",
        "shutil",
        "socket",
        "subprocess",
        "tenacity",
        "urllib",
    }
)

#: Parts of those libraries that only compute (``urllib.parse`` splits and quotes text).
PURE_PARTS = frozenset({"urllib.parse"})

#: Libraries only one adapter may import: library -> the modules allowed to.
ADAPTERS: dict[str, frozenset[str]] = {
    "docker": frozenset({"agent.engine.docker_sdk"}),
    "psycopg": frozenset({"agent.store.postgres", "agent.store.migrate"}),
    "anthropic": frozenset({"agent.escalate.claude"}),
    "openai": frozenset({"agent.escalate.openai_compat"}),
}

#: The command, the loop, the wiring, people's decisions, the presenter and the HTTP
#: server sit on top: no package imports them.
TOP = (
    "agent.supervisor",
    "agent.cli",
    "agent.cli_escalation",
    "agent.wiring",
    "agent.review",
    "agent.present",
    "agent.http",
    "agent.web",
    "agent.doctor",
)

#: What each package must not import, so the layout reads as the flow
#: (docs/architecture.md): the engine side and the store know nothing of healing,
#: escalation or fixes; healing knows nothing of escalation or fixes (it hands an
#: escalation to a hook); escalation and fixes know nothing of healing. The store
#: keeps fixes but names no module of agent.fixes (the errors it raises live in
#: agent.errors), so the fix code depends on the store and never the other way round.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "agent.engine": ("agent.healing", "agent.store", "agent.escalate", "agent.fixes", *TOP),
    "agent.store": ("agent.engine", "agent.healing", "agent.escalate", "agent.fixes", *TOP),
    "agent.healing": ("agent.escalate", "agent.fixes", *TOP),
    "agent.escalate": ("agent.healing", *TOP),
    "agent.fixes": ("agent.healing", *TOP),
}

#: Only this module runs git (through subprocess).
GIT_RUNNER = "agent.fixes.git"

#: Modules that run git themselves today, each with why; the test fails when one no
#: longer does, so this list cannot outlive its reason.
GIT_EXCEPTIONS: dict[str, str] = {}


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(AGENT.rglob("*.py")):
        parts = path.relative_to(AGENT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, ast.parse(path.read_text(), filename=str(path))


def imports(module: str, tree: ast.Module) -> Iterator[str]:
    """Every module name imported, absolute, relative ones resolved."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            yield base
            # ``from agent import history`` imports the module agent.healing.history.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def runs_git(tree: ast.Module) -> bool:
    """Imports subprocess and names the git executable in a string."""
    names = {n for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    uses_subprocess = any(alias.name == "subprocess" for alias in names) or any(
        isinstance(node, ast.ImportFrom) and node.module == "subprocess" for node in ast.walk(tree)
    )
    mentions_git = any(
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value == "git" or node.value.startswith("git "))
        for node in ast.walk(tree)
    )
    return uses_subprocess and mentions_git


ALL = dict(modules())

#: Packages: importing one for its modules (``from agent.healing import history``) is
#: importing those modules, which the checks name on their own.
PACKAGES = frozenset(
    ".".join(path.relative_to(AGENT.parent).parent.parts) for path in AGENT.rglob("__init__.py")
)


def agent_modules() -> set[str]:
    return set(ALL)


@pytest.mark.parametrize("module", sorted(m for m in ALL if m in PURE))
def test_a_pure_module_imports_only_pure_modules_and_no_io_library(module: str) -> None:
    known = agent_modules()
    bad = []
    for name in imports(module, ALL[module]):
        if name.startswith("agent.") or name == "agent":
            if name in known and name not in PURE and name not in PACKAGES:
                bad.append(name)
        elif name.split(".")[0] in IO_LIBRARIES and name not in PURE_PARTS:
            bad.append(name)
    assert bad == [], f"{module} is pure but imports {sorted(set(bad))}"


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_only_its_adapter_imports_a_library(library: str) -> None:
    bad = sorted(
        module
        for module, tree in ALL.items()
        if module not in ADAPTERS[library]
        and any(name.split(".")[0] == library for name in imports(module, tree))
    )
    assert bad == [], f"only {sorted(ADAPTERS[library])} may import {library}, not {bad}"


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def forbidden_imports(package: str, module: str, tree: ast.Module) -> list[str]:
    """What ``module``, when it is in ``package``, imports that ``package`` must not."""
    if not within(module, package):
        return []
    return sorted(
        {
            name
            for name in imports(module, tree)
            if any(within(name, other) for other in FORBIDDEN[package])
        }
    )


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_does_not_import_what_it_must_not(package: str) -> None:
    bad = {m: found for m, tree in ALL.items() if (found := forbidden_imports(package, m, tree))}
    assert bad == {}, f"{package} must not import {FORBIDDEN[package]}: {bad}"


def test_only_the_git_adapter_runs_git() -> None:
    runners = {module for module, tree in ALL.items() if runs_git(tree)}
    assert runners - {GIT_RUNNER} - set(GIT_EXCEPTIONS) == set()
    stale = set(GIT_EXCEPTIONS) - runners
    assert stale == set(), f"{sorted(stale)} no longer run git: drop them from GIT_EXCEPTIONS"


def test_the_checks_catch_what_they_are_for() -> None:
    # A check that cannot fail proves nothing: feed each one a module that breaks it.
    pure = ast.parse("from agent import supervisor\nimport socket\n")
    found = list(imports("agent.healing.decide", pure))
    assert "agent.supervisor" in found
    assert "socket" in found
    assert runs_git(ast.parse('import subprocess\nsubprocess.run(["git", "status"])\n'))
    assert not runs_git(ast.parse('import subprocess\nsubprocess.run(["ls"])\n'))
    relative = ast.parse("from ..model import Finding\n")
    assert "agent.model" in set(imports("agent.store.base", relative))
    store = ast.parse("from agent.fixes.errors import FixNotFound\nfrom ..fixes import git\n")
    assert forbidden_imports("agent.store", "agent.store.memory", store) == [
        "agent.fixes",
        "agent.fixes.errors",
        "agent.fixes.errors.FixNotFound",
        "agent.fixes.git",
    ]
    assert forbidden_imports("agent.store", "agent.escalate.worker", store) == []
    upward = ast.parse("from agent.healing.recorder import Recorder\nimport agent.supervisor\n")
    assert forbidden_imports("agent.engine", "agent.engine.events", upward) == [
        "agent.healing.recorder",
        "agent.healing.recorder.Recorder",
        "agent.supervisor",
    ]


def loaded_by_importing(importing: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after importing ``importing``."""
    code = f"import sys, {importing}; print(sorted(m for m in {watched!r} if m in sys.modules))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    return list(ast.literal_eval(found))


def test_no_model_sdk_is_imported_until_a_model_is_asked() -> None:
    # Each SDK costs tens of MiB; a medic without a model (or with the other) never pays.
    importing = "agent.cli, agent.wiring, agent.supervisor, agent.escalate.worker"
    assert loaded_by_importing(importing, ("anthropic", "openai")) == []


def test_the_postgres_driver_is_loaded_only_with_a_database() -> None:
    # psycopg and libpq cost some 9 MiB: a medic keeping incidents in memory never pays.
    importing = "agent.cli, agent.wiring, agent.supervisor"
    assert loaded_by_importing(importing, ("psycopg", "agent.store.postgres")) == []
