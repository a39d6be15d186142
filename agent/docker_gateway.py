"""The one place medic talks to the Docker engine.

Only this module imports ``docker``. It turns the engine's JSON into typed
snapshots and events, translates the SDK's exceptions into ``agent.errors`` in a
single context manager, and retries temporary failures with tenacity (with an
injectable sleep, so tests can read the delays without waiting).

Every public method is one Docker API request, except ``exec`` (create, start,
inspect) and the retries themselves; the benchmark counts requests at the HTTP
layer to hold that promise.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from loguru import logger
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from agent.errors import (
    ContainerGone,
    DockerError,
    DockerRequestError,
    DockerServerError,
    DockerUnavailable,
    TemporaryError,
)
from agent.model import (
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Health,
    State,
)

T = TypeVar("T")

#: The container events medic reacts to. ``health_status`` matches all its variants.
#: (Passed to the SDK as a list: its filter encoder turns any other sequence into one string.)
WATCHED_EVENTS = ("die", "oom", "start", "stop", "kill", "health_status", "destroy")

#: How much of an exec's or a health check's output is kept as evidence.
OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class DockerEvent:
    """One container event from the engine."""

    container_id: ContainerId
    action: str
    at: datetime
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``health_status: unhealthy`` → ``health_status``; the others are unchanged."""
        return self.action.split(":", 1)[0].strip()

    @property
    def detail(self) -> str:
        """``health_status: unhealthy`` → ``unhealthy``; empty for the others."""
        parts = self.action.split(":", 1)
        return parts[1].strip() if len(parts) == 2 else ""

    @property
    def name(self) -> str:
        return self.attributes.get("name", self.container_id[:12])


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a container returned."""

    exit_code: int | None
    output: str


class EventStream(ABC):
    """A live stream of events; iterate it, and close it from another thread to stop."""

    @abstractmethod
    def __iter__(self) -> Iterator[DockerEvent]: ...

    @abstractmethod
    def close(self) -> None: ...


class DockerGateway(ABC):
    """What medic needs from a Docker engine. ``DockerSDKGateway`` is the real one."""

    @abstractmethod
    def list_containers(self, label_filter: str) -> list[ContainerSnapshot]:
        """Every container, running or not, carrying ``label_filter`` (``key=value``)."""

    @abstractmethod
    def inspect(self, container_id: str) -> ContainerSnapshot:
        """A detailed snapshot; raises ContainerGone when it no longer exists."""

    @abstractmethod
    def restart(self, container_id: str, *, timeout: float) -> None: ...

    @abstractmethod
    def start(self, container_id: str) -> None: ...

    @abstractmethod
    def stop(self, container_id: str, *, timeout: float) -> None: ...

    @abstractmethod
    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult: ...

    @abstractmethod
    def events(self, label_filter: str, *, since: datetime | None) -> EventStream:
        """Events of containers carrying ``label_filter``, from ``since`` (or now) on."""

    @abstractmethod
    def past_events(
        self, container_id: str, *, since: datetime, until: datetime
    ) -> list[DockerEvent]:
        """The engine's recorded events of one container in a past interval."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# --- parsing: the only code that reads Docker's attribute names -------------------------

_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_IN_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_ZERO_TIME = "0001-01-01T00:00:00Z"


def parse_time(text: str | None) -> datetime | None:
    """Docker's RFC 3339 times with nanoseconds; None for empty or the zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    main, _, rest = text.partition(".")
    if rest:
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        zone = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _state(text: str | None) -> State:
    try:
        return State(text or "created")
    except ValueError:
        return State.CREATED


def _ref(container_id: str, name: str, labels: Mapping[str, str]) -> ContainerRef:
    return ContainerRef(
        id=ContainerId(container_id),
        name=name.lstrip("/"),
        project=labels.get(PROJECT_LABEL),
        service=labels.get(SERVICE_LABEL),
    )


def snapshot_from_list(entry: Mapping[str, Any], now: datetime) -> ContainerSnapshot:
    """A snapshot from one entry of ``GET /containers/json``."""
    labels: dict[str, str] = dict(entry.get("Labels") or {})
    names = entry.get("Names") or [entry["Id"][:12]]
    status = str(entry.get("Status") or "")
    health_match = _HEALTH_IN_STATUS.search(status)
    health = Health.NONE
    if health_match:
        health = Health.STARTING if "starting" in health_match.group(1) else Health(health_match[1])
    exit_match = _EXIT_IN_STATUS.match(status)
    return ContainerSnapshot(
        ref=_ref(entry["Id"], names[0], labels),
        labels=labels,
        image=str(entry.get("Image") or ""),
        state=_state(entry.get("State")),
        health=health,
        exit_code=int(exit_match.group(1)) if exit_match else None,
        observed_at=now,
    )


def snapshot_from_inspect(attrs: Mapping[str, Any], now: datetime) -> ContainerSnapshot:
    """A detailed snapshot from ``GET /containers/{id}/json``."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    labels: dict[str, str] = dict(config.get("Labels") or {})
    health_info = state.get("Health") or {}
    health = Health(health_info["Status"]) if health_info.get("Status") else Health.NONE
    log = health_info.get("Log") or []
    last_output = None
    if log:
        last = log[-1]
        last_output = f"exit {last.get('ExitCode')}: {str(last.get('Output') or '').strip()}"
        last_output = last_output[:OUTPUT_LIMIT]
    status = _state(state.get("Status"))
    policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or None
    return ContainerSnapshot(
        ref=_ref(attrs["Id"], str(attrs.get("Name") or attrs["Id"][:12]), labels),
        labels=labels,
        image=str(config.get("Image") or ""),
        state=status,
        health=health,
        exit_code=int(state["ExitCode"]) if status in (State.EXITED, State.DEAD) else None,
        observed_at=now,
        detailed=True,
        oom_killed=bool(state.get("OOMKilled")),
        restart_count=int(attrs.get("RestartCount") or 0),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        error=str(state.get("Error") or "") or None,
        health_output=last_output,
        failing_streak=int(health_info.get("FailingStreak") or 0),
        restart_policy=policy,
    )


def event_from_json(raw: Mapping[str, Any]) -> DockerEvent | None:
    """A typed event from the stream's JSON; None for anything but container events."""
    if raw.get("Type") != "container":
        return None
    actor = raw.get("Actor") or {}
    nanos = raw.get("timeNano")
    at = (
        datetime.fromtimestamp(int(nanos) / 1e9, UTC)
        if nanos
        else datetime.fromtimestamp(int(raw.get("time") or 0), UTC)
    )
    return DockerEvent(
        container_id=ContainerId(str(actor.get("ID") or raw.get("id") or "")),
        action=str(raw.get("Action") or raw.get("status") or ""),
        at=at,
        attributes={str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()},
    )


# --- errors: the one place the SDK's exceptions are translated ----------------------------


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn docker and requests exceptions into medic's, naming what was being done."""
    try:
        yield
    except docker.errors.NotFound as e:
        raise ContainerGone(f"{what}: the container no longer exists.") from e
    except docker.errors.APIError as e:
        explanation = e.explanation or str(e)
        if e.status_code is not None and e.status_code >= 500:
            raise DockerServerError(f"{what}: the Docker engine failed: {explanation}") from e
        raise DockerRequestError(f"{what}: the Docker engine refused: {explanation}") from e
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
        raise DockerUnavailable(f"{what}: the Docker engine did not answer ({e}).") from e
    except docker.errors.DockerException as e:
        raise DockerUnavailable(f"{what}: {e}") from e


def _since_param(at: datetime) -> str:
    # Docker takes fractional Unix seconds; the SDK's own datetime conversion assumes naive UTC.
    return f"{at.timestamp():.9f}"


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

    def __init__(
        self,
        client: Any,
        *,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
        sleep: Callable[[float], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._api = client.api
        self._now = now
        self._retry_attempts = retry_attempts
        self._retry_max_delay = retry_max_delay
        self._sleep = sleep

    @classmethod
    def from_env(
        cls,
        environment: Mapping[str, str] | None = None,
        *,
        pool_size: int = 10,
        retry_attempts: int = 4,
        retry_max_delay: float = 8.0,
    ) -> DockerSDKGateway:
        """Connect the way the docker CLI does (DOCKER_HOST, else the local socket)."""
        with translate_errors("Connecting to the Docker engine"):
            client = docker.from_env(
                environment=dict(environment) if environment is not None else None,
                max_pool_size=pool_size,
            )
        return cls(client, retry_attempts=retry_attempts, retry_max_delay=retry_max_delay)

    @property
    def api_client(self) -> Any:
        """The SDK's low-level client, for the benchmark's request counter."""
        return self._api

    def ping(self) -> None:
        self._call("Pinging the Docker engine", self._api.ping)

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
        if self._sleep is not None:
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
        return [snapshot_from_list(e, now) for e in entries]

    def inspect(self, container_id: str) -> ContainerSnapshot:
        attrs = self._call(
            f"Inspecting container {container_id[:12]}",
            self._api.inspect_container,
            container_id,
        )
        return snapshot_from_inspect(attrs, self._now())

    def restart(self, container_id: str, *, timeout: float) -> None:
        self._call(
            f"Restarting container {container_id[:12]}",
            self._api.restart,
            container_id,
            timeout=round(timeout),
        )

    def start(self, container_id: str) -> None:
        self._call(f"Starting container {container_id[:12]}", self._api.start, container_id)

    def stop(self, container_id: str, *, timeout: float) -> None:
        self._call(
            f"Stopping container {container_id[:12]}",
            self._api.stop,
            container_id,
            timeout=round(timeout),
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

    def close(self) -> None:
        self._client.close()
