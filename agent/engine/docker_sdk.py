"""The one place medic talks to the Docker engine: ``DockerSDKGateway``.

Only this module imports ``docker``. It makes the requests, turns the answers into
medic's values with ``agent.engine.translate``, translates the SDK's exceptions into
``agent.errors`` in a single context manager, and retries temporary failures with
tenacity (with an injectable sleep, so tests can read the delays without waiting).

Every public method is one Docker API request, except ``exec`` (create, start,
inspect), ``recreate``, ``build_image`` and ``run_sandbox`` (which are several by
nature) and the retries themselves; the benchmark counts requests at the HTTP layer to
hold that promise.

``run_sandbox`` is where code nobody has approved yet runs (a fix branch's tests, the
candidate image of its service): a throwaway container with no network, no mounts, no
Docker socket, a non-root user, no capabilities and resource limits, removed
afterwards whatever happened. ``build_image`` builds such a candidate from a tar of
the fix's files, without network unless the operator names one, and within a time
limit.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from loguru import logger
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from agent.clock import SYSTEM_CLOCK, Clock
from agent.engine.gateway import (
    OUTPUT_LIMIT,
    SANDBOX_LABEL,
    SANDBOX_LABELS,
    WATCHED_EVENTS,
    BuildRequest,
    BuildResult,
    DockerEvent,
    DockerGateway,
    EventStream,
    ExecResult,
    HealthcheckSpec,
    LogLine,
    ProjectContainer,
    SandboxRequest,
    SandboxResult,
    SandboxUntil,
    SwarmService,
)
from agent.engine.translate import (
    Lister,
    create_args_from_inspect,
    event_from_json,
    parse_log_line,
    project_container_from_list,
    snapshot_from_inspect,
    swarm_service_from_inspect,
)
from agent.errors import (
    ContainerGone,
    DockerError,
    DockerRequestError,
    DockerServerError,
    DockerUnavailable,
    NotSwarmManager,
    TemporaryError,
)
from agent.model import PROJECT_LABEL, ContainerId, ContainerSnapshot, Health

T = TypeVar("T")

#: The user a sandbox runs as: ``nobody``, which owns the copied files and nothing else.
SANDBOX_USER = "65534:65534"

#: The environment a sandbox gets on top of the image's own, besides the request's.
SANDBOX_ENVIRONMENT = (("HOME", "/tmp"), ("TMPDIR", "/tmp"))

#: How often a sandbox that should stay up is looked at, in seconds.
SANDBOX_POLL = 0.5


def _build_output(chunks: Iterator[Mapping[str, Any]]) -> BuildResult:
    """Reads the build's JSON stream: its text, and the image id or the error."""
    lines: list[str] = []
    image_id: str | None = None
    failed = False
    for chunk in chunks:
        if "stream" in chunk:
            lines.append(str(chunk["stream"]))
        if "error" in chunk:
            failed = True
            lines.append(f"ERROR: {chunk['error']}\n")
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = str(aux["ID"])
    output = "".join(lines)
    if image_id is None:
        # Engines that send no "aux" message still end with this line.
        found = _BUILT.findall(output)
        image_id = found[-1] if found else None
    return BuildResult(image_id=None if failed else image_id, output=output)


_BUILT = re.compile(r"^Successfully built ([0-9a-f]+)\s*$", re.MULTILINE)


def _timed_build(stream: Iterator[Mapping[str, Any]], time_limit: float) -> BuildResult:
    """Reads a build's stream for at most ``time_limit`` seconds, then stops it.

    A watchdog shuts the response's socket down at the limit, which ends a read that
    waits on a silent RUN step; closing the connection makes the engine cancel the
    build and remove its intermediate container (``forcerm``).
    """
    response = _response_of(stream)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        if response is not None:
            try:
                response.raw.shutdown()
            except (AttributeError, ValueError, RuntimeError, OSError) as e:
                logger.debug("Shutting down a build's connection at its time limit: {}.", e)

    watchdog = threading.Timer(time_limit, expire)
    watchdog.daemon = True
    watchdog.start()
    chunks: list[Mapping[str, Any]] = []
    broken: BaseException | None = None
    try:
        for chunk in stream:
            if expired.is_set():
                break
            chunks.append(chunk)
    except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError) as e:
        broken = e
    finally:
        watchdog.cancel()
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        if response is not None:
            response.close()
    if expired.is_set() or isinstance(
        broken, urllib3.exceptions.ReadTimeoutError | requests.exceptions.ReadTimeout
    ):
        partial = _build_output(iter(chunks))
        return BuildResult(
            image_id=None,
            output=partial.output
            + f"ERROR: the build did not finish within {time_limit:g} s and was stopped.\n",
            timed_out=True,
        )
    if broken is not None:
        raise DockerUnavailable(f"the engine stopped sending the build's output ({broken})")
    return _build_output(iter(chunks))


def _response_of(stream: Any) -> Any:
    """The HTTP response a build's output stream reads (the SDK's generator holds it),
    or None; the watchdog needs it to interrupt a read."""
    frame = getattr(stream, "gi_frame", None)
    return None if frame is None else frame.f_locals.get("response")


def _healthcheck(spec: HealthcheckSpec | None) -> dict[str, Any] | None:
    """A health check in the engine's terms (durations in nanoseconds)."""
    if spec is None:
        return None
    check: dict[str, Any] = {"test": list(spec.test)}
    for key, seconds in (
        ("interval", spec.interval),
        ("timeout", spec.timeout),
        ("start_period", spec.start_period),
    ):
        if seconds is not None:
            check[key] = round(seconds * 1e9)
    if spec.retries is not None:
        check["retries"] = spec.retries
    return check


# --- errors: the one place the SDK's exceptions are translated ----------------------------


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn docker and requests exceptions into medic's, naming what was being done."""
    try:
        yield
    except docker.errors.NotFound as e:
        raise ContainerGone(f"{what}: the container no longer exists") from e
    except docker.errors.APIError as e:
        explanation = _clause(e.explanation or str(e))
        if any(words in explanation.lower() for words in _NOT_A_MANAGER_WORDS):
            # A worker (or an engine in no swarm) answers 503 to every question about
            # services, for good: not a server error worth retrying.
            raise NotSwarmManager(f"{what}: {_NOT_A_MANAGER}") from e
        if e.status_code is not None and e.status_code >= 500:
            raise DockerServerError(f"{what}: the Docker engine failed: {explanation}") from e
        raise DockerRequestError(f"{what}: the Docker engine refused: {explanation}") from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise DockerUnavailable(f"{what}: the Docker engine did not answer ({e})") from e
    except docker.errors.DockerException as e:
        raise DockerUnavailable(f"{what}: {_clause(str(e))}") from e


#: How the engine says it cannot answer for Swarm services.
_NOT_A_MANAGER_WORDS = ("not a swarm manager", "not part of a swarm")
_NOT_A_MANAGER = (
    "this Docker engine is not a Swarm manager, and only a manager can read or update a "
    "service; run medic on a manager node, or have a person run docker service update --force"
)


def _clause(text: str) -> str:
    """The library's text without its final period: medic's messages end without one
    (see agent/errors.py), so they can sit inside a sentence."""
    text = text.strip()
    return text[:-1] if text.endswith(".") and not text.endswith("...") else text


#: Where the docker SDK (and the docker CLI) connect when DOCKER_HOST is not set.
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"


@contextmanager
def connecting(host: str) -> Iterator[None]:
    """Turn a failure to reach the engine at ``host`` into one line saying what to check.

    Connecting is where a user meets a wrong DOCKER_HOST or a missing socket, and the
    SDK's own text (urllib3's connection pool, its retries, the URL it asked for) does
    not say what to do. Other Docker errors pass through unchanged.
    """
    try:
        yield
    except DockerUnavailable as e:
        raise DockerUnavailable(unreachable_message(host, e)) from e


def unreachable_message(host: str, error: BaseException) -> str:
    """``cannot reach the Docker engine at HOST: REASON; WHAT TO CHECK`` for ``error``."""
    found = _os_error(error)
    number = found.errno if found is not None else None
    if number == errno.ENOENT:
        reason = "there is no socket there"
        check = (
            "start the Docker engine, or mount its socket into medic's container "
            "(-v /var/run/docker.sock:/var/run/docker.sock), or set DOCKER_HOST to where it "
            "listens"
        )
    elif number in (errno.EACCES, errno.EPERM):
        reason = "permission denied"
        check = (
            "give medic's user the socket's group (DOCKER_GID with compose/medic.yml, see "
            "README) or run medic as root"
        )
    elif number == errno.ECONNREFUSED:
        reason = "connection refused"
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    elif isinstance(found, socket.gaierror):
        reason = "its host name does not resolve"
        check = "check the host name in DOCKER_HOST"
    elif found is not None and found.strerror:
        reason = found.strerror[:1].lower() + found.strerror[1:]
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    elif _chain_has(error, requests.exceptions.Timeout):
        reason = "it did not answer in time"
        check = "check that the Docker engine runs there and that DOCKER_HOST is right"
    else:
        reason = _last_words(error)
        check = "check DOCKER_HOST (unset, medic uses the local socket)"
    return f"cannot reach the Docker engine at {host}: {reason}; {check}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: causes, contexts, urllib3's ``reason``, and args."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop(0)
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(arg for arg in current.args if isinstance(arg, BaseException))
        todo.extend(e for e in linked if isinstance(e, BaseException))


def _os_error(error: BaseException) -> OSError | None:
    """The operating system's own error under the library wrappers, if there is one."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
    return None


def _chain_has(error: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(error))


def _last_words(error: BaseException) -> str:
    """The innermost message, on one line and short: the SDK's outer text is its plumbing."""
    *_, innermost = _causes(error)
    text = " ".join(str(innermost).split()) or type(innermost).__name__
    return text if len(text) <= 160 else f"{text[:157]}..."


def _since_param(at: datetime) -> str:
    # Docker takes fractional Unix seconds; the SDK's own datetime conversion assumes naive UTC.
    return f"{at.timestamp():.9f}"


#: Reads and updates of a service's spec when another update slips in between.
_UPDATE_TRIES = 3


@contextmanager
def _service_gone(what: str) -> Iterator[None]:
    """The engine's 404 for a service is not about a container."""
    try:
        yield
    except ContainerGone as e:
        raise DockerRequestError(f"{what}: the Swarm service no longer exists") from e


class _SDKEventStream(EventStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[DockerEvent]:
        with translate_errors("Reading Docker events"):
            for raw in self._stream:
                event = event_from_json(raw)
                if event is not None and event.container_id:
                    yield event

    def close(self) -> None:
        # Closing from another thread makes the iteration above end; errors while the
        # socket is torn down mean only that it is already closed.
        try:
            self._stream.close()
        except Exception as e:
            logger.debug("Closing the Docker events stream raised {}; it is closed anyway.", e)


class DockerSDKGateway(DockerGateway):
    """The real gateway, over the docker SDK's low-level API client."""

    #: Where the engine is, as the operator wrote it (DOCKER_HOST); set by from_env.
    host: str = "the configured Docker host"

    def __init__(
        self,
        client: Any,
        *,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``clock`` stamps snapshots (``observed_at``, the host's time) and waits between
        retries; ``sleep`` replaces only the waiting, for tests that read the delays."""
        self._client = client
        self._api = client.api
        self._lister = Lister()  # what never changes of each listed container, kept
        self._now = clock.now
        self._retry_attempts = retry_attempts
        self._retry_max_delay = retry_max_delay
        self._sleep = sleep or clock.sleep

    @classmethod
    def from_env(
        cls,
        environment: Mapping[str, str] | None = None,
        *,
        pool_size: int = 10,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> DockerSDKGateway:
        """Connect the way the docker CLI does (DOCKER_HOST, else the local socket).

        A failure to reach the engine raises DockerUnavailable with one line that names
        the host and what to check (see ``connecting``).
        """
        env = os.environ if environment is None else environment
        host = env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
        with connecting(host), translate_errors("Connecting to the Docker engine"):
            client = docker.from_env(
                environment=dict(environment) if environment is not None else None,
                max_pool_size=pool_size,
            )
        gateway = cls(
            client, retry_attempts=retry_attempts, retry_max_delay=retry_max_delay, clock=clock
        )
        gateway.host = host
        return gateway

    @property
    def api_client(self) -> Any:
        """The SDK's low-level client, for the benchmark's request counter."""
        return self._api

    def ping(self, *, retry: bool = True) -> None:
        what = "Pinging the Docker engine"
        with connecting(self.host):
            if retry:
                self._call(what, self._api.ping)
                return
            with translate_errors(what):
                self._api.ping()

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "{} failed ({}); trying again in {:.1f} s (try {} of {}).",
                what,
                error,
                delay,
                state.attempt_number + 1,
                self._retry_attempts,
            )

        retrying = Retrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_random_exponential(multiplier=0.5, max=self._retry_max_delay),
            retry=retry_if_exception_type(TemporaryError),
            before_sleep=log_retry,
            reraise=True,
        )
        retrying = retrying.copy(sleep=self._sleep)
        for attempt in retrying:
            with attempt, translate_errors(what):
                return fn(*args, **kwargs)
        raise DockerError(f"{what}: gave up")  # pragma: no cover - reraise=True returns above

    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        entries = self._call(
            "Listing containers",
            self._api.containers,
            all=True,
            filters={"label": [label_filter]},
        )
        now = self._now()
        return self._lister.snapshots(entries, now)

    def inspect(self, container_id: str) -> ContainerSnapshot:
        attrs = self._call(
            f"Inspecting container {container_id[:12]}",
            self._api.inspect_container,
            container_id,
        )
        return snapshot_from_inspect(attrs, self._now())

    def restart(self, container_id: str, *, timeout: float) -> None:
        self._with_stop_timeout("Restarting", self._api.restart, container_id, timeout)

    def start(self, container_id: str) -> None:
        self._call(f"Starting container {container_id[:12]}", self._api.start, container_id)

    def stop(self, container_id: str, *, timeout: float) -> None:
        self._with_stop_timeout("Stopping", self._api.stop, container_id, timeout)

    def _with_stop_timeout(
        self, doing: str, fn: Callable[..., object], container_id: str, timeout: float
    ) -> None:
        """Restart or stop: the engine takes the stop timeout in whole seconds."""
        self._call(
            f"{doing} container {container_id[:12]}", fn, container_id, timeout=round(timeout)
        )

    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult:
        what = f"Running {' '.join(command)!r} in container {container_id[:12]}"
        created = self._call(
            what, self._api.exec_create, container_id, list(command), user=user or ""
        )
        exec_id = created["Id"]
        # The engine has no exec timeout, so the output is read on a helper thread and
        # abandoned (not killed: Docker cannot kill an exec) when it runs too long.
        done: Future[bytes] = Future()

        def read() -> None:
            try:
                with translate_errors(what):
                    done.set_result(self._api.exec_start(exec_id))
            except BaseException as e:  # handed to the waiting thread
                done.set_exception(e)

        threading.Thread(target=read, name=f"exec-{exec_id[:8]}", daemon=True).start()
        try:
            raw = done.result(timeout=timeout)
        except TimeoutError:
            return ExecResult(
                exit_code=None,
                output=f"the command did not finish within {timeout:g} s; it may still be running",
            )
        info = self._call(what, self._api.exec_inspect, exec_id)
        output = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        code = info.get("ExitCode")
        return ExecResult(exit_code=int(code) if code is not None else None, output=output)

    def recreate(
        self, container_id: str, *, timeout: float, network_mode: str | None = None
    ) -> ContainerId:
        short = container_id[:12]
        attrs = self._call(
            f"Inspecting container {short}", self._api.inspect_container, container_id
        )
        if (attrs.get("HostConfig") or {}).get("AutoRemove"):
            # Stopping it would make the engine remove it, anonymous volumes and all.
            raise DockerRequestError(
                f"Recreating container {short}: it was started with --rm (AutoRemove), and "
                "stopping it would delete it with its anonymous volumes; medic leaves it alone"
            )
        image_attrs = self._call(
            f"Inspecting the image of container {short}", self._api.inspect_image, attrs["Image"]
        )
        args = create_args_from_inspect(attrs, image_attrs)
        if network_mode is not None:
            args["config"]["HostConfig"]["NetworkMode"] = network_mode
            args["config"].pop("NetworkingConfig", None)
            args["connect"] = []
        name = args["name"]
        was_running = bool((attrs.get("State") or {}).get("Running"))
        self.stop(container_id, timeout=timeout)
        # The old container steps aside under another name instead of being removed
        # first: if the new one cannot be made or started, the old one comes back.
        aside = f"{name}-replaced-{uuid.uuid4().hex[:8]}"
        self._call(f"Renaming container {short}", self._api.rename, container_id, aside)
        new_id: str | None = None
        try:
            created = self._call(
                f"Creating container {name}",
                self._api.create_container_from_config,
                args["config"],
                name=name,
            )
            new_id = str(created["Id"])
            for connect in args["connect"]:
                network = connect.pop("network")
                self._call(
                    f"Connecting container {new_id[:12]} to network {network}",
                    self._api.connect_container_to_network,
                    new_id,
                    network,
                    **connect,
                )
            self.start(new_id)
        except ContainerGone as e:
            self._put_back(container_id, name, new_id, restart=was_running)
            # A 404 here is about what the new container needs, not the old one.
            raise DockerRequestError(
                f"Recreating container {name}: the engine could not find the image "
                f"{args['config'].get('Image')} or a network or volume it uses ({e.__cause__}); "
                "the old container was put back"
            ) from e
        except DockerError:
            self._put_back(container_id, name, new_id, restart=was_running)
            raise
        try:
            self._call(
                f"Removing container {short}", self._api.remove_container, container_id, v=False
            )
        except DockerError as e:
            # The new container runs; the old one (stopped, renamed) is only clutter.
            logger.warning(
                "Container {} was replaced by {}, but removing the old one failed ({}); "
                "remove {} by hand.",
                short,
                new_id[:12],
                e,
                aside,
            )
        logger.info("Container {} ({}) was recreated as {}.", name, short, new_id[:12])
        return ContainerId(new_id)

    def _put_back(self, old_id: str, name: str, new_id: str | None, *, restart: bool) -> None:
        """Undo a failed recreate: drop the new container, give the old one its name back."""
        try:
            if new_id is not None:
                self._call(
                    f"Removing container {new_id[:12]}",
                    self._api.remove_container,
                    new_id,
                    v=False,
                    force=True,
                )
            self._call(f"Renaming container {old_id[:12]}", self._api.rename, old_id, name)
            if restart:
                self.start(old_id)
        except DockerError as e:
            logger.error(
                "Recreating container {} failed, and putting the old one back failed too ({}).",
                name,
                e,
            )

    # --- Swarm services ---------------------------------------------------------------

    def swarm_service(self, service_id: str) -> SwarmService:
        what = f"Reading Swarm service {service_id[:12]}"
        with _service_gone(what):
            attrs = self._call(what, self._api.inspect_service, service_id)
            tasks = self._call(
                f"Listing the tasks of Swarm service {service_id[:12]}",
                self._api.tasks,
                filters={"service": [service_id]},
            )
        return swarm_service_from_inspect(attrs, list(tasks or ()))

    def force_update(self, service_id: str) -> SwarmService:
        what = f"Forcing an update of Swarm service {service_id[:12]}"
        with _service_gone(what):
            for _ in range(_UPDATE_TRIES):
                attrs = self._call(what, self._api.inspect_service, service_id)
                current = swarm_service_from_inspect(attrs)
                try:
                    # Not retried as a whole: an update the engine applied before failing
                    # to answer must not become two rolling updates. The version makes a
                    # concurrent change of the spec a refusal rather than a lost update.
                    with translate_errors(what):
                        self._api.update_service(
                            service_id,
                            version=current.version,
                            task_template={"ForceUpdate": current.force_update + 1},
                            fetch_current_spec=True,
                        )
                except DockerRequestError as e:
                    if "out of sequence" in str(e):
                        continue  # someone updated the service meanwhile: read it again
                    raise
                after = self._call(what, self._api.inspect_service, service_id)
                return swarm_service_from_inspect(after)
        raise DockerRequestError(
            f"{what}: the service's spec kept changing under medic ({_UPDATE_TRIES} tries)"
        )

    def build_image(self, spec: BuildRequest) -> BuildResult:
        what = f"Building image {spec.tag} from {spec.context}"
        kwargs: dict[str, Any] = {
            "tag": spec.tag,
            "dockerfile": spec.dockerfile,
            "buildargs": dict(spec.args) or None,
            "target": spec.target,
            "rm": True,
            "forcerm": True,
            "decode": True,
        }
        if spec.archive is not None:
            kwargs.update(fileobj=io.BytesIO(spec.archive), custom_context=True)
        else:
            kwargs["path"] = spec.context
        if spec.network_mode is not None:
            kwargs["network_mode"] = spec.network_mode
        if spec.memory_mb is not None:
            memory = spec.memory_mb * 1024 * 1024
            kwargs["container_limits"] = {"memory": memory, "memswap": memory}
        if spec.labels:
            kwargs["labels"] = dict(spec.labels)
        if not spec.proxy:
            kwargs["use_config_proxy"] = False
        if spec.time_limit is not None:
            # The HTTP timeout limits each wait for output; the watchdog in
            # _timed_build limits the whole build.
            kwargs["timeout"] = max(spec.time_limit, 1.0)
        # Not retried: a build is long and not idempotent in time; the playbook's
        # backoff decides when to try again.
        with translate_errors(what):
            stream = self._api.build(**kwargs)
            if spec.time_limit is None:
                return _build_output(stream)
            return _timed_build(stream, spec.time_limit)

    def remove_image(self, tag: str) -> bool:
        what = f"Removing image {tag}"
        try:
            with translate_errors(what):
                try:
                    self._api.remove_image(tag)
                except docker.errors.ImageNotFound:
                    return False
        except ContainerGone:
            # The engine answers 404 for a tag that went away between two calls too.
            return False
        return True

    def run_sandbox(self, request: SandboxRequest) -> SandboxResult:
        what = f"Running a sandbox container of image {request.image}"
        container_id = self._create_sandbox(request, what)
        short = container_id[:12]
        try:
            with translate_errors(what):
                if request.workspace is not None and not self._api.put_archive(
                    container_id, "/", request.workspace
                ):
                    raise DockerRequestError(
                        f"{what}: the engine did not take the copy of the files"
                    )
                self._api.start(container_id)
            if request.until is SandboxUntil.EXIT:
                return self._sandbox_until_exit(container_id, request, what)
            return self._sandbox_settled(container_id, request, what)
        finally:
            try:
                with translate_errors(f"Removing sandbox container {short}"):
                    self._api.remove_container(container_id, v=True, force=True)
            except DockerError as e:
                logger.warning(
                    "Sandbox container {} could not be removed ({}); remove it with docker rm "
                    "-f {} (sandbox containers carry the label {}=true).",
                    short,
                    e,
                    short,
                    SANDBOX_LABEL,
                )

    def _create_sandbox(self, request: SandboxRequest, what: str) -> str:
        limits = request.limits
        memory = limits.memory_mb * 1024 * 1024
        with translate_errors(what):
            host_config = self._api.create_host_config(
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
                mem_limit=memory,
                memswap_limit=memory,
                pids_limit=limits.pids,
                nano_cpus=round(limits.cpus * 1e9),
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={max(limits.memory_mb // 4, 16)}m,mode=1777"},
                # Its log is read back by medic: the json-file driver whatever the engine's
                # default, and small, so a chatty command cannot fill the disk.
                log_config={"type": "json-file", "config": {"max-size": "4m", "max-file": "1"}},
            )
            environment = dict(SANDBOX_ENVIRONMENT)
            environment.update(request.environment)
            try:
                created = self._api.create_container(
                    request.image,
                    command=list(request.command) if request.command is not None else None,
                    entrypoint=list(request.entrypoint) if request.entrypoint is not None else None,
                    user=SANDBOX_USER,
                    working_dir=request.working_dir,
                    environment=[f"{k}={v}" for k, v in environment.items()],
                    labels={**dict(request.labels), **dict(SANDBOX_LABELS)},
                    host_config=host_config,
                    network_disabled=True,
                    healthcheck=_healthcheck(request.healthcheck),
                    hostname="sandbox",
                    name=f"medic-sandbox-{uuid.uuid4().hex[:12]}",
                    detach=True,
                )
            except docker.errors.ImageNotFound as e:
                raise DockerRequestError(
                    f"{what}: there is no image {request.image} on the engine"
                ) from e
        return str(created["Id"])

    def _sandbox_until_exit(
        self, container_id: str, request: SandboxRequest, what: str
    ) -> SandboxResult:
        exit_code: int | None = None
        still_running = False
        try:
            with translate_errors(what):
                try:
                    status = self._api.wait(container_id, timeout=max(request.time_limit, 0.001))
                    exit_code = int(status.get("StatusCode", -1))
                except requests.exceptions.ReadTimeout:
                    still_running = True
        except DockerUnavailable:
            # The SDK reports some read time-outs of a unix socket as a broken connection;
            # the container's state says which it was.
            still_running = True
        if still_running:
            attrs = self._sandbox_state(container_id, what)
            state = attrs.get("State") or {}
            if state.get("Running"):
                self._kill_sandbox(container_id, what)
            else:
                still_running = False
                exit_code = int(state.get("ExitCode") or 0)
        return self._sandbox_result(container_id, request, what, exit_code, still_running)

    def _sandbox_settled(
        self, container_id: str, request: SandboxRequest, what: str
    ) -> SandboxResult:
        deadline = self._now() + timedelta(seconds=request.time_limit)
        while True:
            state = self._sandbox_state(container_id, what).get("State") or {}
            if not state.get("Running"):
                exit_code = int(state.get("ExitCode") or 0)
                return self._sandbox_result(container_id, request, what, exit_code, False)
            health = (state.get("Health") or {}).get("Status")
            left = (deadline - self._now()).total_seconds()
            if health == Health.UNHEALTHY or left <= 0:
                self._kill_sandbox(container_id, what)
                # Health as it was while it ran: a killed container reads as unhealthy.
                return self._sandbox_result(container_id, request, what, None, True, seen=state)
            self._sleep(min(SANDBOX_POLL, left))

    def _sandbox_state(self, container_id: str, what: str) -> Mapping[str, Any]:
        with translate_errors(what):
            attrs: Mapping[str, Any] = self._api.inspect_container(container_id)
        return attrs

    def _kill_sandbox(self, container_id: str, what: str) -> None:
        try:
            with translate_errors(what):
                self._api.kill(container_id)
        except DockerRequestError:
            pass  # it ended between the look and the kill

    def _sandbox_result(
        self,
        container_id: str,
        request: SandboxRequest,
        what: str,
        exit_code: int | None,
        still_running: bool,
        *,
        seen: Mapping[str, Any] | None = None,
    ) -> SandboxResult:
        attrs = self._sandbox_state(container_id, what)
        state = attrs.get("State") or {}
        health_info = (seen if seen is not None else state).get("Health") or {}
        log = health_info.get("Log") or []
        with translate_errors(what):
            raw = self._api.logs(
                container_id, stdout=True, stderr=True, tail=max(request.output_lines, 1)
            )
        output = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return SandboxResult(
            exit_code=exit_code,
            output=output,
            still_running=still_running,
            health=Health(health_info["Status"]) if health_info.get("Status") else Health.NONE,
            health_output=str(log[-1].get("Output") or "").strip()[:OUTPUT_LIMIT] if log else None,
            oom_killed=bool(state.get("OOMKilled")),
        )

    def project_containers(self, project: str) -> list[ProjectContainer]:
        entries = self._call(
            f"Listing the containers of project {project}",
            self._api.containers,
            all=True,
            filters={"label": [f"{PROJECT_LABEL}={project}"]},
        )
        return [project_container_from_list(e) for e in entries]

    def events(self, label_filter: str, *, since: datetime | None) -> EventStream:
        kwargs: dict[str, Any] = {
            "decode": True,
            "filters": {
                "type": "container",
                "label": [label_filter],
                "event": list(WATCHED_EVENTS),
            },
        }
        if since is not None:
            kwargs["since"] = _since_param(since)
        # No retries here: the supervisor reconnects the stream with its own backoff.
        with translate_errors("Subscribing to Docker events"):
            stream = self._api.events(**kwargs)
        return _SDKEventStream(stream)

    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        stream = self._call(
            f"Reading past events of container {container_id[:12]}",
            self._api.events,
            since=_since_param(since),
            until=_since_param(until),
            filters={
                "type": "container",
                "container": [container_id],
                "event": list(WATCHED_EVENTS),
            },
            decode=True,
        )
        with translate_errors(f"Reading past events of container {container_id[:12]}"):
            found = [event_from_json(raw) for raw in stream]
        return [e for e in found if e is not None]

    def logs(self, container_id: str, *, since: datetime, limit: int = 1000) -> list[LogLine]:
        text = self._log_text(
            container_id, timestamps=True, since=max(since.timestamp(), 0.001), tail=limit
        )
        return [line for line in map(parse_log_line, text.splitlines()) if line is not None]

    def _log_text(self, container_id: str, **options: Any) -> str:
        """The container's log, stdout and stderr, as text; ``options`` go to the engine's
        logs request (timestamps, since, tail)."""
        raw = self._call(
            f"Reading the log of container {container_id[:12]}",
            self._api.logs,
            container_id,
            stdout=True,
            stderr=True,
            **options,
        )
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    def close(self) -> None:
        self._client.close()

    # --- evidence for a case file (agent/escalate/casefile.py's EvidenceSource) ----------

    def inspect_attrs(self, container_id: str) -> Mapping[str, Any]:
        """The raw inspect JSON of one container (one request)."""
        attrs: Mapping[str, Any] = self._call(
            f"Inspecting container {container_id[:12]}",
            self._api.inspect_container,
            container_id,
        )
        return attrs

    def log_tail(self, container_id: str, *, lines: int) -> list[str]:
        """The last ``lines`` log lines, stdout and stderr, read with the engine's ``tail``
        so that a container with gigabytes of logs costs no more than one with a few."""
        return self._log_text(container_id, timestamps=False, tail=max(lines, 1)).splitlines()

    def image_platform(self, image_id: str) -> str:
        """``os/arch[/variant]`` the image was built for, from its inspect; one request."""
        attrs = self._call(
            f"Inspecting image {image_id.removeprefix('sha256:')[:12]}",
            self._api.inspect_image,
            image_id,
        )
        return _platform(attrs.get("Os"), attrs.get("Architecture"), attrs.get("Variant"))

    def engine_platform(self) -> str:
        """``os/arch`` of the engine, from ``docker version``; one request."""
        version = self._call("Reading the Docker engine's version", self._api.version)
        return _platform(version.get("Os"), version.get("Arch"), None)

    # --- identity (agent/store/base.py's Identity) ---------------------------------------

    def engine_id(self) -> str:
        """The engine's own ID (``docker info``'s ``ID``), which tells this host's incidents
        from another host's in a shared database; one request."""
        info = self._call("Reading the Docker engine's ID", self._api.info)
        found = info.get("ID") if isinstance(info, Mapping) else None
        if not isinstance(found, str) or not found.strip():
            raise DockerError(
                "The Docker engine did not give its ID in `docker info`; medic needs it to tell "
                "its incidents from those of medics on other hosts."
            )
        return found.strip()


def _platform(os_name: object, arch: object, variant: object) -> str:
    """``os/arch[/variant]`` from the engine's fields; empty when the architecture is unknown."""
    if not isinstance(arch, str) or not arch:
        return ""
    parts = [os_name if isinstance(os_name, str) and os_name else "linux", arch]
    if isinstance(variant, str) and variant:
        parts.append(variant)
    return "/".join(parts)
