"""How medic's parts are put together, for ``medic run`` and the commands alike.

The CLI parses arguments and prints; the HTTP server serves. Both get their store,
repository, engine and escalation from here, so that a review in the console and one
on the command line read the same store through the same interface and decide through
the same code (agent/review.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.config import (
    DockerSettings,
    FixesSettings,
    LlmSettings,
    NotifySettings,
    Settings,
    StoreSettings,
)
from agent.engine.docker_sdk import DockerSDKGateway
from agent.engine.gateway import DockerGateway
from agent.errors import ConfigError, DockerError, MedicError
from agent.escalate import providers
from agent.escalate.followup import EscalationNotices, FixMaker, Followup
from agent.escalate.llm import Diagnoser, Limits
from agent.escalate.redact import parse_patterns
from agent.escalate.worker import DiagnosisService, DiagnosisWorker
from agent.fixes.git import Git
from agent.fixes.propose import FixOptions, edit_reviewer
from agent.healing.observe import own_container_id, resolve_scope
from agent.healing.playbooks import load_playbooks
from agent.leader import LeaseLeader
from agent.leadership import LeaseTiming
from agent.model import Diagnosis, Fix, Incident, NotificationRecord
from agent.notify import AppriseNotifier, NotificationQueue, Notifier
from agent.review import Reviewer, fix_diff, rebuild_service
from agent.store import IncidentStore, MemoryStore
from agent.store.base import Identity
from agent.store.lease import Fence
from agent.supervisor import Supervisor
from agent.web.console import Console

if TYPE_CHECKING:  # the Postgres driver is loaded only when a database is set
    from agent.store.postgres import PostgresStore

EXAMPLE_URL = "postgresql://medic:secret@db:5432/medic"


def open_store(
    settings: StoreSettings, *, identity: Identity | None = None, fence: Fence | None = None
) -> IncidentStore:
    """The store ``run`` and ``once`` record in: Postgres behind a spool, or memory only.

    ``identity`` is the medic's (its scope and Docker engine): the store stamps it on
    the incidents it opens and resumes and resolves only those (docs/incidents.md).
    ``fence`` is its leader's: each incident or attempt write carries its lease term
    (docs/ha.md)."""
    if settings.database_url is None:
        logger.warning(
            "MEDIC_DATABASE_URL is not set, so incidents are kept in memory only and are lost "
            "when medic stops. Set it to a Postgres URL like {} to keep them.",
            EXAMPLE_URL,
        )
        return MemoryStore(identity=identity)
    from agent.store.postgres import PostgresStore
    from agent.store.spool import SpoolingStore

    backend = PostgresStore(
        settings.database_url,
        migrate=True,
        observation_interval=settings.observation_interval,
        retention_days=settings.retention_days,
        identity=identity,
    )
    store = SpoolingStore(backend, state_dir=settings.state_dir, identity=identity, fence=fence)
    if store.reachable:
        logger.info("Incidents are recorded in Postgres at {}.", backend.where)
    return store


@contextmanager
def database(settings: StoreSettings) -> Iterator[PostgresStore]:
    """The Postgres store for the review commands, closed afterwards; or ConfigError
    saying what to set."""
    if settings.database_url is None:
        raise ConfigError(
            f"set MEDIC_DATABASE_URL to the incident database, like {EXAMPLE_URL}, "
            "to use this command."
        )
    from agent.store.postgres import PostgresStore

    store = PostgresStore(settings.database_url, migrate=False)
    try:
        yield store
    finally:
        store.close()


def notifications(
    settings: NotifySettings, *, journal: Callable[[NotificationRecord], None] | None = None
) -> NotificationQueue | None:
    """The notification queue, or None without destinations; ``journal`` keeps what
    became of each notification (the incident timeline shows it)."""
    if not settings.targets:
        return None
    sender = AppriseNotifier(settings.targets)
    logger.info("Notifications go to {} destination(s).", sender.count)
    return NotificationQueue(sender, rate=settings.limit, per=3600, journal=journal)


def git_of(repo: Path | None) -> Git | None:
    """MEDIC_REPO's git adapter, or None when it is unset; GitError when it is not a git
    work tree medic can use."""
    if repo is None:
        return None
    git = Git(repo)
    git.check_repository()
    return git


def repo_for_run(repo: Path | None) -> Git | None:
    """The daemon heals whether or not MEDIC_REPO works; a broken one only means no fixes."""
    try:
        return git_of(repo)
    except MedicError as e:
        logger.error(
            "MEDIC_REPO={} cannot be used ({}); medic heals and diagnoses, but makes no fix "
            "branches. Point MEDIC_REPO at a git work tree mounted at the same path.",
            repo,
            e,
        )
        return None


def llm_diagnoser(
    settings: LlmSettings, git: Git | None, options: FixOptions, environ: Mapping[str, str]
) -> Diagnoser | None:
    """The model diagnoser of the provider MEDIC_LLM_PROVIDER names, when it is configured
    (agent/escalate/providers.py says what that takes); None leaves the rules alone.

    ``environ`` holds the SDKs' own variables (ANTHROPIC_API_KEY, OPENAI_BASE_URL, …)."""
    found = providers.endpoint(settings, environ)
    if found is None:
        if settings.provider != "anthropic":
            detail, fix = providers.missing(settings)
            logger.warning("{}, so no model is asked. {}", detail, fix)
        return None
    model = providers.connect(found, timeout=settings.timeout, max_retries=settings.max_retries)
    limits = Limits(
        max_steps=settings.max_steps,
        incident_tokens=settings.incident_tokens,
        incident_calls=settings.incident_calls,
    )
    if git is None:
        return Diagnoser(model, limits=limits)
    return Diagnoser(
        model,
        limits=limits,
        repo=git.repo,
        is_ignored=lambda path: path in git.ignored([path]),
        # The fix guardrails review the edits, so a failed match goes back to the model once.
        review_edits=edit_reviewer(git, options),
    )


def escalation(
    llm_settings: LlmSettings,
    fix_settings: FixesSettings,
    *,
    gateway: DockerSDKGateway,
    store: IncidentStore,
    notifier: Notifier | None,
    git: Git | None,
    clock: Clock,
) -> tuple[DiagnosisService, Followup]:
    """The diagnosis service and what follows a diagnosis (notifications, the fix)."""
    redact_patterns = parse_patterns(llm_settings.redact)
    options = FixOptions.from_settings(fix_settings, redact_patterns=redact_patterns)
    llm = llm_diagnoser(llm_settings, git, options, os.environ)

    def repo_head() -> str | None:
        if git is None:
            return None
        try:
            return git.head()
        except MedicError:
            return None

    service = DiagnosisService(
        incidents=store,
        diagnoses=store,
        source=gateway,
        llm=llm,
        daily_tokens=llm_settings.daily_tokens,
        window=llm_settings.diagnosis_window,
        repo_head=repo_head,
        redact_patterns=redact_patterns,
        clock=clock,
    )
    fixes = FixMaker(
        store=store,
        git=git,
        options=options,
        clock=clock,
        gateway=gateway,
        labels_of=lambda incident: service_labels(gateway, incident),
    )
    return service, Followup(fixes=fixes, notifier=notifier, clock=clock)


def supervisor(
    settings: Settings, *, diagnose: bool = False
) -> tuple[Supervisor, DockerSDKGateway, IncidentStore, DiagnosisWorker | None]:
    """The supervisor and its adapters; with ``diagnose``, escalated incidents are queued
    on a diagnosis worker (``medic run``)."""
    healing = settings.healing
    playbooks = load_playbooks(healing.playbooks)
    clock = SYSTEM_CLOCK  # one clock for the gateway and the supervisor (and its actor)
    gateway = DockerSDKGateway.from_env(
        pool_size=healing.workers + 4,
        retry_attempts=settings.docker.retry_attempts,
        retry_max_delay=settings.docker.retry_max_delay,
        clock=clock,
    )
    gateway.ping()
    scope = resolve_scope(
        settings.project, gateway, own_id=own_container_id(), stack=settings.stack
    )
    # One database, many medics: this one's incidents are those of its scope on this engine.
    identity = Identity(gateway.engine_id(), scope.project, stack=scope.stack)
    leader = leader_of(settings, identity, describe=scope.describe())
    store = open_store(
        settings.store, identity=identity, fence=leader.fence if leader is not None else None
    )
    notifier: Notifier | None = notifications(settings.notify, journal=store.record_notification)
    worker = None
    if diagnose and not healing.dry_run:
        notices = EscalationNotices(notifier) if notifier is not None else None
        service, followup = escalation(
            settings.llm,
            settings.fixes,
            gateway=gateway,
            store=store,
            notifier=notifier,
            git=repo_for_run(settings.fixes.repo),
            clock=clock,
        )
        worker = DiagnosisWorker(service, followup=followup, notices=notices, clock=clock)
        notifier = notices or notifier
        found = providers.endpoint(settings.llm, os.environ)
        logger.info(
            "Escalated incidents are diagnosed by medic's rules{}.",
            f" and by {found.describe()}" if service.llm is not None and found else "",
        )
    supervisor = Supervisor(
        healing=healing,
        gateway=gateway,
        store=store,
        playbooks=playbooks,
        scope=scope,
        notifier=notifier,
        clock=clock,
        escalation=worker,
        leader=leader,
    )
    supervisor.metrics.spool_depth.set_function(store.pending_changes)
    logger.debug("Loaded {} playbooks from {}.", len(playbooks), healing.playbooks)
    return supervisor, gateway, store, worker


def leader_of(settings: Settings, identity: Identity, *, describe: str) -> LeaseLeader | None:
    """The lease this medic leads by, when it shares a database with others of its
    scope (docs/ha.md); None when it is the only one and always leads: no database,
    MEDIC_LEADER_ELECTION=false, or a dry run (which must not keep a real medic from
    acting)."""
    url = settings.store.database_url
    healing = settings.healing
    if url is None or not healing.leader_election or healing.dry_run:
        return None
    from agent.store.postgres import PostgresLeases

    return LeaseLeader(
        PostgresLeases(url),
        scope=identity.scope,
        describe=f"{describe} on Docker engine {identity.engine_id[:12]}",
        timing=LeaseTiming.for_interval(healing.interval),
    )


def readiness(store: IncidentStore, supervisor: Supervisor) -> tuple[bool, dict[str, object]]:
    """/readyz: whether incidents are being recorded (the store), and this medic's role."""
    ok, detail = store.readiness()
    return ok, {**detail, "leadership": supervisor.leadership()}


def optional_gateway(settings: DockerSettings) -> DockerSDKGateway | None:
    """The Docker engine when it answers, else None with a line saying what is skipped."""
    try:
        gateway = DockerSDKGateway.from_env(retry_attempts=settings.retry_attempts)
        gateway.ping(retry=False)
    except MedicError as e:
        logger.warning(
            "The Docker engine does not answer ({}); the fix's candidate image is left for "
            "you to remove (docker images --filter label=medic.candidate=true).",
            e,
        )
        return None
    return gateway


def quiet_git(repo: Path | None) -> Git | None:
    try:
        return git_of(repo)
    except MedicError:
        return None


def service_labels(gateway: DockerSDKGateway, incident: Incident) -> dict[str, str] | None:
    """The compose labels of the incident's container, or of the container that runs its
    service now (medic may have replaced it); None when neither can be read."""
    ref = incident.container
    try:
        attrs = gateway.inspect_attrs(ref.id)
        return dict((attrs.get("Config") or {}).get("Labels") or {})
    except DockerError:
        pass
    if ref.project and ref.service:
        try:
            for container in gateway.project_containers(ref.project):
                if container.service == ref.service:
                    return dict(container.labels)
        except DockerError:
            return None
    return None


def reviewer(
    settings: Settings, store: IncidentStore, *, gateway: DockerGateway | None = None
) -> Reviewer:
    """The decisions of people on ``store``'s incidents and fixes, in MEDIC_REPO. The
    engine (which removes a decided fix's candidate image) is ``gateway`` when the
    caller holds one (``medic run``), else one opened for each decision."""

    def engine() -> AbstractContextManager[DockerGateway | None]:
        if gateway is not None:
            return nullcontext(gateway)
        return _engine_for_one_decision(settings.docker)

    return Reviewer(store, repo=settings.fixes.repo, fixes=settings.fixes, engine=engine)


@contextmanager
def _engine_for_one_decision(settings: DockerSettings) -> Iterator[DockerGateway | None]:
    gateway = optional_gateway(settings)
    try:
        yield gateway
    finally:
        if gateway is not None:
            gateway.close()


def console(
    settings: Settings, *, store: IncidentStore, gateway: DockerSDKGateway
) -> tuple[Console, Callable[[], None]]:
    """The review console of ``medic run`` and what closes it.

    With a database it reads and decides through a connection of its own, as the CLI
    does, so a page never waits behind a heal's writes; without one it shares the
    run's memory store. Rebuilds after an approval run on a thread of their own, and
    say in the log how they went."""
    assert settings.http.ui_token is not None
    url = settings.store.database_url
    review_store: IncidentStore = store
    if url:
        from agent.store.postgres import PostgresStore

        review_store = PostgresStore(url, migrate=False)
    repo = settings.fixes.repo

    def diff_of(fix: Fix, diagnosis: Diagnosis | None) -> str | None:
        return fix_diff(quiet_git(repo), fix, diagnosis)

    def rebuild(incident: Incident) -> None:
        def work() -> None:
            try:
                rebuilt = rebuild_service(
                    incident, gateway=gateway, stop_timeout=settings.healing.stop_timeout
                )
            except MedicError as e:
                logger.error("The fix is merged, but it cannot be rebuilt: {}.", e)
                return
            if rebuilt.ok:
                logger.info(rebuilt.message)
            else:
                logger.error(rebuilt.message)

        threading.Thread(target=work, name="medic-rebuild", daemon=True).start()

    made = Console(
        store=review_store,
        reviewer=reviewer(settings, review_store, gateway=gateway),
        token=settings.http.ui_token,
        diff_of=diff_of,
        rebuild=rebuild,
    )

    def close() -> None:
        if review_store is not store:
            review_store.close()

    return made, close
