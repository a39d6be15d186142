"""Carrying out a plan: one action after another, on a pool of workers.

Each container has at most one plan in flight: ``submit`` refuses a second one.
Containers are healed in parallel, so a container that takes its whole stop
timeout delays nobody else. Temporary Docker errors are retried inside the
gateway (tenacity); what reaches here is a final outcome, captured as an
``ActionResult`` rather than raised. Every action ends with a result, whatever
is raised inside it: an unexpected exception is a bug, logged with its traceback,
and a failed result, so the supervisor's bookkeeping never waits forever.

Every container an action touches passes one scope check here (the healed one,
each dependent of ``restart_dependents``, the container ``recreate`` replaces):
never one out of scope, labelled ``medic.ignore``, or medic's own. Before an
action stops or replaces a container the actor reports a ``Touch`` (and another
when it is over, with the engine's time by which its effects were over), so the
kills it causes fall in medic's own-action windows and are never taken for a
crash or a person's stop.

What each kind of action does is its entry in agent/healing/actions.py; the actor
gives the entry its ``Hands`` (the gateway, the touch reports, the plan's
notification) and the two larger procedures, ``rebuild`` and ``restart_dependents``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock
from agent.engine import compose, compose_graph
from agent.engine.gateway import BuildRequest, DockerGateway, ProjectContainer
from agent.errors import ActionError, DockerError, MedicError
from agent.healing import actions
from agent.healing.actions import Outcome
from agent.model import (
    IGNORE_LABEL,
    Action,
    ActionResult,
    ContainerId,
    ContainerRef,
    Plan,
)
from agent.scope import Scope, label_is_true

T = TypeVar("T")

#: How much of a command's output an attempt keeps: the end, where errors are.
OUTPUT_EXCERPT = 2000

#: Compose's label for one-off containers (``docker compose run``): never restarted.
ONEOFF_LABEL = "com.docker.compose.oneoff"


#: A playbook's notify action, bound by the supervisor to the values it needs.
Announce = Callable[[ContainerRef, Plan, Action], None]


@dataclass(frozen=True)
class Touch:
    """The actor is about to stop or replace a container, or (``ended``) is done with it.

    Reported before the request, so it reaches the supervisor's inbox before any event
    the request causes can."""

    container: ContainerRef
    ended: bool = False


@dataclass(frozen=True)
class InFlight:
    """A plan being carried out right now."""

    container: ContainerRef
    plan: Plan
    started_at: datetime


class _DaemonPool:
    """A fixed number of daemon worker threads.

    Not ``ThreadPoolExecutor``: its workers are joined when the interpreter exits, so a
    restart abandoned at shutdown (its stop timeout still running in the engine) would
    hold ``medic run`` open long after it said it stopped.
    """

    def __init__(self, workers: int) -> None:
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"medic-act-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put((future, fn))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)

    def shutdown(self) -> None:
        """Cancel what has not started; running work is left to finish or be abandoned."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)


class Actor:
    """Runs plans through the gateway, never two at once on one container."""

    def __init__(
        self,
        gateway: DockerGateway,
        *,
        workers: int = 4,
        stop_timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        scope: Scope | None = None,
        touch: Callable[[Touch], None] | None = None,
        gate: Callable[[], str | None] | None = None,
    ) -> None:
        """``scope`` None acts on any container except those labelled ``medic.ignore``;
        ``touch`` hears of every container an action stops or replaces; ``gate``, asked
        on the worker right before each action, says why medic may not act now (it no
        longer leads its scope), or None."""
        self.gateway = gateway
        self._gate = gate
        self.default_stop_timeout = stop_timeout
        self._clock = clock
        self._scope = scope
        self._touch = touch
        self._pool = _DaemonPool(workers)
        self._lock = threading.Lock()
        self._in_flight: dict[ContainerId, tuple[InFlight, Future[list[ActionResult]]]] = {}

    def refusal(self, container_id: str, labels: Mapping[str, str]) -> str | None:
        """Why medic must not act on this container, or None: the one scope check."""
        if self._scope is not None:
            return self._scope.refusal(container_id, labels)
        if label_is_true(labels.get(IGNORE_LABEL)):
            return f"it is labelled {IGNORE_LABEL}={labels.get(IGNORE_LABEL)}"
        return None

    def run_action(
        self,
        container: ContainerRef,
        action: Action,
        plan: Plan | None = None,
        *,
        announce: Announce | None = None,
    ) -> ActionResult:
        """Carry out one action and say how it went; never raises."""
        started = self._clock.now()
        clock = time.monotonic()
        outcome = Outcome()
        error: str | None = None
        try:
            refused = actions.swarm_refusal(container, action)
            if refused is not None:
                # Swarm owns its task containers: restarting one would fight it.
                raise ActionError(
                    f"medic does not {action.kind} {container.label}, a Swarm task: {refused}"
                )
            hands = _Hands(self, plan, announce)
            outcome = actions.kind_of(action).run(hands, container, action)
        except MedicError as e:
            error = str(e)
        except Exception as e:  # a bug: the action still ends, with a failed result
            logger.opt(exception=e).error(
                "{} on {} failed unexpectedly: {!r}. medic counts it as a failed attempt.",
                actions.describe(action),
                container.label,
                e,
            )
            error = f"medic failed unexpectedly: {type(e).__name__}: {e}"
        # A wall clock stepped back during a long action must not make a negative duration.
        finished = max(self._clock.now(), started)
        elapsed = time.monotonic() - clock
        logger.debug("{} on {} took {:.2f} s.", actions.describe(action), container.label, elapsed)
        return ActionResult(
            action=action,
            ok=error is None,
            started_at=started,
            finished_at=finished,
            error=error,
            output=actions.excerpt(outcome.output, OUTPUT_EXCERPT),
            replaced_by=outcome.replaced_by,
        )

    def run_plan(
        self,
        container: ContainerRef,
        plan: Plan,
        *,
        labels: Mapping[str, str] | None = None,
        announce: Announce | None = None,
    ) -> list[ActionResult]:
        """Every action of the plan in order, stopping at the first that fails.

        ``labels`` are the container's (from the snapshot the plan came from); without
        them the container is inspected for the scope check.
        """
        started = self._clock.now()
        refused = self._refuse_plan(container, labels)
        if refused is not None:
            return [
                ActionResult(
                    action=plan.actions[0],
                    ok=False,
                    started_at=started,
                    finished_at=started,
                    error=refused,
                )
            ]
        results: list[ActionResult] = []
        for action in plan.actions:
            stopped = self._gate() if self._gate is not None else None
            if stopped is not None:
                now = self._clock.now()
                results.append(ActionResult(action, False, now, now, error=stopped))
                break
            result = self.run_action(container, action, plan, announce=announce)
            results.append(result)
            if result.replaced_by is not None:
                # Later actions are for the container that took its place.
                container = replace(container, id=result.replaced_by)
            if not result.ok:
                break
        return results

    def _refuse_plan(self, container: ContainerRef, labels: Mapping[str, str] | None) -> str | None:
        if labels is None:
            try:
                labels = self.gateway.inspect(container.id).labels
            except DockerError as e:
                return f"medic could not look at {container.label} before acting: {e}"
        why = self.refusal(container.id, labels)
        if why is None:
            return None
        logger.bind(container=container.name).error(
            "medic refused to act on {}: {}.", container.label, why
        )
        return f"medic does not act on {container.label}: {why}"

    def submit(
        self,
        container: ContainerRef,
        plan: Plan,
        on_done: Callable[[InFlight, list[ActionResult]], None],
        *,
        labels: Mapping[str, str] | None = None,
        announce: Announce | None = None,
    ) -> bool:
        """Start the plan on a worker; False (and nothing done) if one is in flight."""
        with self._lock:
            if container.id in self._in_flight:
                return False
            flight = InFlight(container, plan, self._clock.now())
            future = self._pool.submit(
                partial(self.run_plan, container, plan, labels=labels, announce=announce)
            )
            self._in_flight[container.id] = (flight, future)

        def finished(f: Future[list[ActionResult]]) -> None:
            with self._lock:
                self._in_flight.pop(container.id, None)
            if f.cancelled():
                return
            error = f.exception()
            if error is None:
                on_done(flight, f.result())
                return
            # run_plan turns every exception into a result, so this is a bug; the plan
            # still ends, as a failed attempt, so nothing waits for it forever.
            logger.opt(exception=error).error(
                "Healing {} failed unexpectedly: {!r}.", container.label, error
            )
            now = self._clock.now()
            on_done(
                flight,
                [
                    ActionResult(
                        action=plan.actions[0],
                        ok=False,
                        started_at=flight.started_at,
                        finished_at=max(now, flight.started_at),
                        error=f"medic failed unexpectedly: {type(error).__name__}: {error}",
                    )
                ],
            )

        future.add_done_callback(finished)
        return True

    def busy(self, container_id: ContainerId) -> bool:
        with self._lock:
            return container_id in self._in_flight

    def in_flight(self) -> list[InFlight]:
        with self._lock:
            return [flight for flight, _ in self._in_flight.values()]

    def shutdown(self, timeout: float) -> tuple[list[InFlight], list[InFlight]]:
        """Wait up to ``timeout`` s for in-flight plans: (finished, abandoned)."""
        with self._lock:
            pending = dict(self._in_flight)
        done, not_done = wait_futures([f for _, f in pending.values()], timeout=timeout)
        finished = [flight for flight, f in pending.values() if f in done]
        abandoned = [flight for flight, f in pending.values() if f in not_done]
        self._pool.shutdown()
        return finished, abandoned

    @contextmanager
    def touching(self, container: ContainerRef) -> Iterator[None]:
        """Report the container as touched around the block (see ``Touch``)."""
        if self._touch is not None:
            self._touch(Touch(container))
        try:
            yield
        finally:
            if self._touch is not None:
                self._touch(Touch(container, ended=True))

    def rebuild(self, container: ContainerRef, stop_timeout: float) -> Outcome:
        """Build the service's image from its compose build context, then recreate on it.

        The build comes first and the container is touched only if it succeeds, so a
        broken Dockerfile leaves the old container running.
        """
        snapshot = self.gateway.inspect(container.id)
        service = container.service or snapshot.ref.service
        if not service:
            raise ActionError(
                f"{container.label} has no compose service label; it cannot be rebuilt"
            )
        working_dir, files = compose.config_files(snapshot.labels)
        config = compose.load_compose(files, working_dir=working_dir)
        spec = compose.build_spec(config, service, working_dir)
        if not spec.context.is_dir():
            raise ActionError(
                f"the build context {spec.context} of service {service!r} is not a folder medic "
                "can read; when medic runs in a container, mount the project folder at the same "
                "path (see docs/actions.md)"
            )
        tag = snapshot.image
        if not tag or tag.startswith("sha256:"):
            raise ActionError(
                f"{container.label} runs image {tag or '(none)'} by id, not by name, so a "
                "rebuilt image could not replace it; give the service an image: name"
            )
        built = self.gateway.build_image(
            BuildRequest(
                context=str(spec.context),
                tag=tag,
                dockerfile=spec.dockerfile,
                args=spec.args,
                target=spec.target,
            )
        )
        if built.image_id is None:
            raise ActionError(
                f"building {tag} from {spec.context} failed, and the container was left as it "
                f"was; the build said:\n{actions.excerpt(built.output, 1500)}"
            )
        logger.info("Image {} of {} was rebuilt as {}.", tag, container.label, built.image_id[:19])
        with self.touching(container):
            new_id = ContainerId(self.gateway.recreate(container.id, timeout=stop_timeout))
        return Outcome(
            f"{built.output.rstrip()}\n"
            f"rebuilt {tag} as {built.image_id[:19]}; recreated as {new_id[:12]}",
            new_id,
        )

    def restart_dependents(self, container: ContainerRef, stop_timeout: float) -> str:
        """Restart the project's containers that depend on this one, parents first."""
        if not container.project or not container.service:
            raise ActionError(
                f"{container.label} is not a compose service, so nothing depends on it"
            )
        members = self.gateway.project_containers(container.project)
        notes: list[str] = []
        graph = _dependency_graph(container, members, notes)
        order = compose_graph.dependents_in_order(graph, container.service)
        replacement = _replacement(container, members)
        done: list[str] = []
        failed: list[str] = []
        finished: list[str] = []
        left_alone: list[str] = []
        for service in order:
            for member in sorted((m for m in members if m.service == service), key=_by_name):
                if label_is_true(member.labels.get(ONEOFF_LABEL)):
                    continue
                why = self.refusal(member.id, member.labels)
                if why is not None:
                    left_alone.append(f"{member.name} ({why})")
                    continue
                if member.finished:
                    # A job that ran to completion (a migration, a seed) is not restarted:
                    # running it again is not healing, and may not be harmless.
                    finished.append(member.name)
                    continue
                ref = ContainerRef(member.id, member.name, container.project, member.service)
                try:
                    target = _network_target(member)
                    with self.touching(ref):
                        if replacement is not None and target and container.id.startswith(target):
                            # Its network stack belonged to the container that was recreated:
                            # a restart cannot join a namespace that is gone, so it is made
                            # again on the new container's stack.
                            self.gateway.recreate(
                                member.id,
                                timeout=stop_timeout,
                                network_mode=f"container:{replacement.id}",
                            )
                            done.append(f"{member.name} (recreated on the new network stack)")
                        else:
                            self.gateway.restart(member.id, timeout=stop_timeout)
                            done.append(member.name)
                except MedicError as e:
                    failed.append(f"{member.name}: {e}")
        if left_alone:
            logger.info(
                "restart_dependents of {} left alone what medic may not touch: {}.",
                container.label,
                ", ".join(left_alone),
            )
        if done:
            summary = f"restarted in order: {', '.join(done)}"
        else:
            summary = "restarted none" if failed else "no dependents to restart"
        if finished:
            notes.append(f"left alone, finished or never started: {', '.join(finished)}")
        text = "\n".join([*notes, summary])
        if failed:
            raise ActionError(f"{text}; failed: {'; '.join(failed)}")
        return text


class _Hands:
    """What one action may use: the actor's gateway and helpers, and the plan's
    notification (agent/healing/actions.py, ``Hands``)."""

    def __init__(self, actor: Actor, plan: Plan | None, announce: Announce | None) -> None:
        self._actor = actor
        self._plan = plan
        self._announce = announce

    @property
    def gateway(self) -> DockerGateway:
        return self._actor.gateway

    def stop_timeout(self, action: Action) -> float:
        timeout = action.seconds("timeout")
        return timeout if timeout is not None else self._actor.default_stop_timeout

    def touching(self, container: ContainerRef) -> AbstractContextManager[None]:
        return self._actor.touching(container)

    def announce(self, container: ContainerRef, action: Action) -> None:
        if self._announce is None or self._plan is None:
            raise ActionError("no notification destination is configured; set MEDIC_NOTIFY_URLS")
        self._announce(container, self._plan, action)

    def rebuild(self, container: ContainerRef, stop_timeout: float) -> Outcome:
        return self._actor.rebuild(container, stop_timeout)

    def restart_dependents(self, container: ContainerRef, stop_timeout: float) -> str:
        return self._actor.restart_dependents(container, stop_timeout)


def _by_name(member: ProjectContainer) -> str:
    return member.name


def _network_target(member: ProjectContainer) -> str | None:
    """The container whose network stack ``member`` shares (an id or a name), if any."""
    mode = member.network_mode
    target = mode.removeprefix("container:") if mode.startswith("container:") else ""
    return target or None


def _find(members: list[ProjectContainer], ref: str) -> ProjectContainer | None:
    for member in members:
        if member.id.startswith(ref) or member.name == ref:
            return member
    return None


def _replacement(
    container: ContainerRef, members: list[ProjectContainer]
) -> ProjectContainer | None:
    """The container now holding the healed one's name, when it has a new id (recreated)."""
    for member in members:
        if member.name == container.name and member.id != container.id:
            return member
    return None


def _dependency_graph(
    container: ContainerRef, members: list[ProjectContainer], notes: list[str]
) -> dict[str, frozenset[str]]:
    """Service -> services it depends on, from compose files, labels and network modes."""
    from_labels: dict[str, set[str]] = {}
    for member in members:
        if not member.service:
            continue
        needs = from_labels.setdefault(member.service, set())
        needs.update(compose_graph.depends_on_label(member.labels.get(compose.DEPENDS_ON_LABEL)))
        target = _network_target(member)
        if target is None:
            continue
        if container.id.startswith(target):
            # The healed container itself, perhaps under an id that is gone by now.
            needs.add(str(container.service))
        else:
            found = _find(members, target)
            if found is not None and found.service:
                needs.add(found.service)
    from_files: dict[str, frozenset[str]] = {}
    labelled = next((m.labels for m in members if compose.CONFIG_FILES_LABEL in m.labels), None)
    if labelled is not None:
        try:
            _, files = compose.config_files(labelled)
            from_files = compose_graph.compose_dependencies(compose.load_compose(files))
        except ActionError as e:
            notes.append(f"dependencies read from labels only: {e}")
            logger.warning(
                "The compose files of project {} could not be read ({}); dependents are "
                "found from container labels and network modes only.",
                container.project,
                e,
            )
    return compose_graph.merge_graphs(from_labels, from_files)
