"""``medic doctor``: is everything medic needs in place, and if not, what to do.

Each check is independent and ends in one result with a sentence saying what to
fix, so one run lists every problem instead of stopping at the first. The checks
take their collaborators as parameters (the environment, a way to reach Docker,
a way to reach the database), so they are tested without patching.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.config import LlmSettings, unknown_variables, unread_variables
from agent.engine.docker_sdk import DockerSDKGateway
from agent.errors import MedicError
from agent.escalate.providers import Endpoint, endpoint, missing
from agent.fixes.git import Git
from agent.healing.observe import own_container_id, resolve_scope
from agent.healing.playbooks import load_playbooks


@dataclass(frozen=True)
class CheckResult:
    """One check: ``ok`` False means medic cannot work as configured."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def check_docker(
    connect: Callable[[], DockerSDKGateway],
) -> tuple[CheckResult, DockerSDKGateway | None]:
    try:
        gateway = connect()
        gateway.ping()
        version = gateway.api_client.version()
    except MedicError as e:
        return (
            CheckResult(
                "docker",
                False,
                str(e),
                "Mount the Docker socket (-v /var/run/docker.sock:/var/run/docker.sock), give "
                "medic the socket's group (DOCKER_GID), or set DOCKER_HOST.",
            ),
            None,
        )
    return (
        CheckResult(
            "docker",
            True,
            f"Docker Engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})",
        ),
        gateway,
    )


def check_scope(
    project: str | None, gateway: DockerSDKGateway | None, *, stack: str | None = None
) -> CheckResult:
    if gateway is None:
        return CheckResult(
            "scope", False, "not checked: Docker is unreachable", "Fix docker first."
        )
    own = own_container_id()
    try:
        scope = resolve_scope(project, gateway, own_id=own, stack=stack)
        count = len(gateway.list_containers(scope.label_filter))
    except MedicError as e:
        return CheckResult("scope", False, str(e), "Fix docker first.")
    if stack or project:
        where = "from MEDIC_STACK" if stack else "from MEDIC_PROJECT"
    elif scope.project or scope.stack:
        where = "from medic's own container"
    else:
        where = "no project: opt-in by label"
    detail = f"{scope.describe()} ({where}); {count} container(s) in scope"
    if count == 0:
        return CheckResult(
            "scope",
            False,
            detail,
            "Set MEDIC_PROJECT to your compose project's name, run medic in that project, "
            "or label containers medic.enable=true.",
        )
    return CheckResult("scope", True, detail)


def check_playbooks(path: Path) -> CheckResult:
    try:
        books = load_playbooks(path)
    except MedicError as e:
        first = str(e).splitlines()
        return CheckResult(
            "playbooks",
            False,
            " ".join(first[:2]),
            f"Run: medic playbooks validate {path}",
        )
    return CheckResult("playbooks", True, f"{len(books)} playbooks from {path}")


def check_database(environ: Mapping[str, str], probe: Callable[[str], str] | None) -> CheckResult:
    url = environ.get("MEDIC_DATABASE_URL", "")
    if not url:
        return CheckResult(
            "database",
            False,
            "MEDIC_DATABASE_URL is not set: incidents are kept in memory only",
            "Set MEDIC_DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DB.",
        )
    if probe is None:
        return CheckResult("database", True, "MEDIC_DATABASE_URL is set (not probed)")
    try:
        detail = probe(url)
    except MedicError as e:
        return CheckResult(
            "database", False, str(e), "Check that Postgres runs and MEDIC_DATABASE_URL is right."
        )
    return CheckResult("database", True, detail)


def check_repository(environ: Mapping[str, str]) -> CheckResult:
    repo = environ.get("MEDIC_REPO", "")
    if not repo:
        return CheckResult(
            "repository",
            True,
            "MEDIC_REPO is not set",
            "Set MEDIC_REPO to the absolute path of your repository, mounted at that path.",
            optional=True,
        )
    path = Path(repo)
    if not path.is_dir():
        return CheckResult(
            "repository", False, f"{repo} is not a folder here", "Mount it at the same path."
        )
    git = Git(path, timeout=10)
    try:
        top = git.check_repository()
        branch = git.current_branch()
    except MedicError as e:
        return CheckResult(
            "repository",
            False,
            f"{repo} cannot be used: {e}",
            "Point MEDIC_REPO at a git work tree, and install git where medic runs.",
        )
    if branch is None:
        return CheckResult(
            "repository",
            True,
            f"git repository at {top}, on a detached HEAD: fixes are made but cannot be "
            "approved (there is no branch to merge them into)",
            "Check out the branch fixes should be merged into.",
            optional=True,
        )
    return CheckResult("repository", True, f"git repository at {top}, on branch {branch}")


def check_settings(environ: Mapping[str, str]) -> CheckResult:
    """MEDIC_ variables medic does not read: a misspelt setting is otherwise silently
    left at its default."""
    unknown = unknown_variables(unread_variables(environ))
    if not unknown:
        return CheckResult("settings", True, "every MEDIC_ variable set is one medic reads")
    return CheckResult(
        "settings",
        True,
        " ".join(unknown),
        "Rename or remove the variables medic does not read.",
        optional=True,
    )


def check_llm(
    environ: Mapping[str, str],
    ask: Callable[[Endpoint], str] | None = None,
    *,
    settings: LlmSettings | None = None,
) -> CheckResult:
    """The provider MEDIC_LLM_PROVIDER names and what it needs; with ``ask`` (``medic
    doctor --llm``), one tiny call that the model answers. Only that provider is asked."""
    settings = settings or LlmSettings()
    found = endpoint(settings, environ)
    if found is None:
        detail, fix = missing(settings)
        # Choosing openai and naming no server is a mistake; no key for Claude is a choice.
        chosen = settings.provider != "anthropic"
        return CheckResult("llm", not chosen, detail, fix, optional=not chosen)
    if found.provider == "anthropic":
        what = f"{found.key_from} is set (for {found.where})"
        check = "Check ANTHROPIC_API_KEY, MEDIC_LLM_MODEL and ANTHROPIC_BASE_URL."
    else:
        key = f"the key from {found.key_from}" if found.key_from else "no key"
        what = f"MEDIC_LLM_PROVIDER is openai: {found.describe()}, with {key}"
        check = (
            "Check MEDIC_LLM_BASE_URL (the server's /v1 address, reachable from medic), "
            "MEDIC_LLM_MODEL (a model the server has) and MEDIC_LLM_API_KEY."
        )
    if ask is None:
        return CheckResult("llm", True, f"{what}; run medic doctor --llm to ask the model")
    try:
        answer = ask(found)
    except MedicError as e:
        return CheckResult("llm", False, f"the model at {found.where} did not answer: {e}", check)
    return CheckResult("llm", True, f"{what}; {answer}")


def run_checks(
    environ: Mapping[str, str],
    *,
    project: str | None,
    playbooks: Path,
    connect: Callable[[], DockerSDKGateway],
    stack: str | None = None,
    probe_database: Callable[[str], str] | None,
    ask_llm: Callable[[Endpoint], str] | None = None,
    llm: LlmSettings | None = None,
) -> list[CheckResult]:
    """Every check, in the order an operator would fix them."""
    docker_result, gateway = check_docker(connect)
    try:
        return [
            docker_result,
            check_scope(project, gateway, stack=stack),
            check_playbooks(playbooks),
            check_database(environ, probe_database),
            check_repository(environ),
            check_llm(environ, ask_llm, settings=llm),
            check_settings(environ),
        ]
    finally:
        if gateway is not None:
            gateway.close()
