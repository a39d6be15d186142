"""Action kinds: one entry per kind, in one place.

An entry says everything medic knows of one kind of action: the options a playbook
may give it (and which it must), how those options are checked together, whether it
stops the container (its kill and die events are then medic's doing, never a crash
or a person's stop), how a log line and a table name it, and how it runs through
the gateway. The playbook reader, the actor, the slots' bookkeeping and every
printed description read the registry; none of them names a kind.

To add a kind: write a subclass of ``ActionType`` below and decorate it with
``@register``, add its test (tests/unit/test_registries.py for its options and
description, and a test of it on a real engine in tests/integration/test_actions.py),
and add its row to the table in docs/actions.md (a test checks the table lists every
kind). If it needs the engine to do something no kind does yet, the gateway
(agent/engine/gateway.py) and its fake (tests/fakes.py) grow a method.

An entry also says what it becomes on a Swarm task container (``under_swarm``):
medic never restarts, starts, stops or recreates a container Swarm owns, so a kind
that would is translated into a forced update of the task's service, or refused with
the reason (agent/healing/swarm.py applies it; the actor refuses the rest).

Pure: an entry's ``run`` acts only through the ``Hands`` it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol, TypeVar

from agent.engine.gateway import DockerGateway
from agent.errors import ActionError
from agent.model import Action, ContainerId, ContainerRef, Plan


class OptionType(StrEnum):
    """How a playbook writes an option's value (agent/healing/playbooks.py reads each)."""

    STOP_TIMEOUT = "stop_timeout"
    """A duration of 0 or more: how long Docker waits after SIGTERM before it kills."""
    TIME_LIMIT = "time_limit"
    """A duration of more than 0."""
    COMMAND = "command"
    """A list of arguments, or one string split as a POSIX shell would."""
    COMMANDS = "commands"
    """A list of commands."""
    TEXT = "text"
    FLAG = "flag"
    """true or false."""
    CACHE_PATHS = "cache_paths"
    """A list of absolute folders inside the container, never a system folder."""
    CHOICE = "choice"
    """One of the option's ``choices``."""


@dataclass(frozen=True)
class Option:
    """One option of one action kind."""

    type: OptionType
    required: bool = False
    example: str = ""
    """How to write it, for the error that says it is missing."""
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """Why an action's options do not work together; ``option`` is the one to blame
    (None: the action as a whole)."""

    message: str
    option: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What running an action gave: its output, and the new container if it made one."""

    output: str = ""
    replaced_by: ContainerId | None = None


class Hands(Protocol):
    """What an action may use to do its work: the actor's tools."""

    @property
    def gateway(self) -> DockerGateway: ...

    def stop_timeout(self, action: Action) -> float:
        """The action's ``timeout``, or medic's default stop timeout."""
        ...

    def touching(self, container: ContainerRef) -> AbstractContextManager[None]:
        """Report the container as stopped or replaced by medic around the block."""
        ...

    def announce(self, container: ContainerRef, action: Action) -> None:
        """Queue the plan's notification; ActionError when there is nowhere to send it."""
        ...

    def rebuild(self, container: ContainerRef, stop_timeout: float) -> Outcome: ...

    def restart_dependents(self, container: ContainerRef, stop_timeout: float) -> str: ...


class ActionType(ABC):
    """One kind of action. Subclasses set the class attributes and ``run``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """One line for the docs table and ``medic playbooks`` help."""
    options: ClassVar[Mapping[str, Option]] = {}
    stops: ClassVar[bool] = False
    """Whether it stops or replaces the container (see ``stops_container``)."""
    starts: ClassVar[bool] = False
    """Whether it starts a stopped container (and nothing more)."""
    leaves_stopped: ClassVar[bool] = False
    """Whether the container is left stopped, on purpose, when it is the plan's last
    change to whether the container runs."""

    def stops_container(self, action: Action) -> bool:
        """Whether this action makes the container die."""
        return self.stops

    def check(self, action: Action) -> Problem | None:
        """A problem with options that each read well but do not go together."""
        return None

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        """What the action becomes on a Swarm task container: the actions to run in its
        place (``(action,)``: itself), or why it is refused there."""
        return f"{self.name} acts on the container itself, and Swarm owns its task containers"

    def describe(self, action: Action) -> str:
        """How logs, tables and notifications name the action."""
        timeout = action.seconds("timeout")
        if timeout is not None and self.stops:
            return f"{self.name} (stop timeout {timeout:g}s)"
        return self.name

    @abstractmethod
    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        """Do it; raise a MedicError when it did not do its job."""


#: Every kind, by name, in the order the docs list them.
KINDS: dict[str, ActionType] = {}

A = TypeVar("A", bound=type[ActionType])


def register(cls: A) -> A:
    """Add a kind to the registry (a class decorator)."""
    if cls.name in KINDS:
        raise ValueError(f"two action kinds are named {cls.name!r}")
    KINDS[cls.name] = cls()
    return cls


def kind_of(action: Action) -> ActionType:
    """The entry of the action's kind; ActionError for a kind medic does not know."""
    try:
        return KINDS[action.kind]
    except KeyError:
        raise ActionError(f"medic does not know how to {action.kind}") from None


def describe(action: Action) -> str:
    """How logs, tables and notifications name the action."""
    entry = KINDS.get(action.kind)
    return entry.describe(action) if entry is not None else action.kind


def stops_container(action: Action) -> bool:
    """Whether the action makes the container die (its kill, die and stop events are
    medic's doing, not a crash or a person's)."""
    entry = KINDS.get(action.kind)
    return entry is not None and entry.stops_container(action)


def leaves_stopped(plan: Plan) -> bool:
    """Whether the plan's last action that changes whether the container runs is one
    that leaves it stopped (a ``stop``)."""
    changes = [
        a for a in plan.actions if stops_container(a) or (a.kind in KINDS and KINDS[a.kind].starts)
    ]
    return bool(changes) and KINDS[changes[-1].kind].leaves_stopped


def swarm_refusal(container: ContainerRef, action: Action) -> str | None:
    """Why the action must not run as it is on this container, a Swarm task: None when
    it may (it runs inside the container, or goes through the service)."""
    if container.swarm is None or action.kind not in KINDS:
        return None
    becomes = KINDS[action.kind].under_swarm(action)
    if becomes == (action,):
        return None
    if isinstance(becomes, str):
        return becomes
    instead = ", then ".join(describe(a) for a in becomes)
    return f"on a Swarm task medic does {instead} instead"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


#: Output kept from a failing command in an error message: its end, where errors are.
_ERROR_EXCERPT = 300


def excerpt(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def _exit(code: int | None) -> str:
    return "no exit code" if code is None else f"exit code {code}"


_STOP: Mapping[str, Option] = {"timeout": Option(OptionType.STOP_TIMEOUT)}

#: The kind a Swarm task's restart, start and recreate become.
FORCE_UPDATE = "force_update"


def _touched(hands: Hands, container: ContainerRef, request: Callable[[], object]) -> Outcome:
    """Make a request that stops or starts the container, reported as medic's doing."""
    with hands.touching(container):
        request()
    return Outcome()


def _in_container(
    hands: Hands,
    container: ContainerRef,
    command: tuple[str, ...],
    *,
    what: str,
    user: str | None = None,
    timeout: float | None,
) -> str:
    """Run a command inside the container; its output, or ActionError naming ``what``."""
    result = hands.gateway.exec(container.id, command, user=user, timeout=timeout)
    if result.exit_code != 0:
        raise ActionError(
            f"{what} ended with {_exit(result.exit_code)}: {excerpt(result.output, _ERROR_EXCERPT)}"
        )
    return result.output


# --- the kinds ----------------------------------------------------------------------------


@register
class Restart(ActionType):
    name = "restart"
    summary = "Stop the container (SIGTERM, then SIGKILL after `timeout`) and start it again."
    options = _STOP
    stops = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (Action(FORCE_UPDATE),)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        timeout = hands.stop_timeout(action)
        return _touched(
            hands, container, lambda: hands.gateway.restart(container.id, timeout=timeout)
        )


@register
class Start(ActionType):
    name = "start"
    summary = "Start a stopped container."
    starts = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        # A task's container is never started again: Swarm runs a new task instead.
        return (Action(FORCE_UPDATE),)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        return _touched(hands, container, lambda: hands.gateway.start(container.id))


@register
class Stop(ActionType):
    name = "stop"
    summary = "Stop the container and leave it stopped until a person starts it."
    options = _STOP
    stops = True
    leaves_stopped = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (
            "a stopped task is a failed task to Swarm, which starts another in its place; "
            "to stop a service, scale it to 0 (docker service scale NAME=0)"
        )

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        timeout = hands.stop_timeout(action)
        return _touched(hands, container, lambda: hands.gateway.stop(container.id, timeout=timeout))


@register
class Exec(ActionType):
    name = "exec"
    summary = "Run a command inside the container; a non-zero exit fails the attempt."
    options: ClassVar[Mapping[str, Option]] = {
        "command": Option(OptionType.COMMAND, required=True, example='["sh", "-c", "..."]'),
        "user": Option(OptionType.TEXT),
        "timeout": Option(OptionType.TIME_LIMIT, example="30s"),
    }

    def describe(self, action: Action) -> str:
        return f"exec {' '.join(action.words('command'))}"

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (action,)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        output = _in_container(
            hands,
            container,
            action.words("command"),
            what=self.describe(action),
            user=action.text("user"),
            timeout=action.seconds("timeout"),
        )
        return Outcome(output)


@register
class Recreate(ActionType):
    name = "recreate"
    summary = (
        "Stop and remove the container, then create and start it again from what "
        "`docker inspect` said of it."
    )
    options = _STOP
    stops = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        # A new task from the service's spec is what a recreate means under Swarm.
        return (Action(FORCE_UPDATE),)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        with hands.touching(container):
            new_id = ContainerId(
                hands.gateway.recreate(container.id, timeout=hands.stop_timeout(action))
            )
        return Outcome(f"recreated as {new_id[:12]}", new_id)


@register
class Rebuild(ActionType):
    name = "rebuild"
    summary = (
        "Build the service's image from its compose build context, then recreate the "
        "container on it; a failed build leaves the container as it was."
    )
    options = _STOP
    stops = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (
            "rebuild builds from a compose build context on this host, and a Swarm service "
            "runs its image on any node; build and push the image, then run docker service "
            "update --image"
        )

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        return hands.rebuild(container, hands.stop_timeout(action))


#: Removes the contents of each folder given as an argument, dot files included, and
#: keeps the folder (its owner and mode matter to the program that fills it). Paths are
#: passed as arguments, never pasted into the script, so no path needs quoting.
CLEAR_PATHS_SCRIPT = """\
status=0
for dir in "$@"; do
  if [ ! -d "$dir" ]; then
    echo "$dir is not a folder in this container" >&2
    status=1
    continue
  fi
  rm -rf -- "$dir"/* "$dir"/.[!.]* "$dir"/..?* || status=1
  echo "cleared $dir"
done
exit $status
"""

#: How long each cache_clear command may run. The engine cannot kill an exec, so
#: without a limit a hung command would keep the container busy for good.
CACHE_CLEAR_COMMAND_TIMEOUT = 300.0

_CACHE_CLEAR_EXAMPLE = "cache_clear: {paths: [/var/cache/nginx], restart: true}"


@register
class CacheClear(ActionType):
    name = "cache_clear"
    summary = (
        "Empty cache folders and run cache commands inside the container, then restart "
        "it if `restart: true`."
    )
    options: ClassVar[Mapping[str, Option]] = {
        "paths": Option(OptionType.CACHE_PATHS),
        "commands": Option(OptionType.COMMANDS),
        "user": Option(OptionType.TEXT),
        "restart": Option(OptionType.FLAG),
        "timeout": Option(OptionType.STOP_TIMEOUT),
    }

    def stops_container(self, action: Action) -> bool:
        return action.flag("restart")

    def check(self, action: Action) -> Problem | None:
        if not action.words("paths") and not action.commands("commands"):
            return Problem(
                f"cache_clear needs paths, commands or both; write e.g. {_CACHE_CLEAR_EXAMPLE}"
            )
        if action.seconds("timeout") is not None and not action.flag("restart"):
            return Problem(
                "timeout is the stop timeout of the restart; add restart: true or remove timeout",
                option="timeout",
            )
        return None

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        if not action.flag("restart"):
            return (action,)
        kept = {k: v for k, v in action.options if k not in ("restart", "timeout")}
        # The clearing runs in the task's container; its restart goes through the service.
        return (Action(self.name, **kept), Action(FORCE_UPDATE))

    def describe(self, action: Action) -> str:
        parts = []
        if action.words("paths"):
            parts.append(plural(len(action.words("paths")), "path"))
        if action.commands("commands"):
            parts.append(plural(len(action.commands("commands")), "command"))
        text = f"{self.name} {', '.join(parts)}".rstrip()
        if action.flag("restart"):
            text += ", then restart"
            timeout = action.seconds("timeout")
            if timeout is not None:
                text += f" (stop timeout {timeout:g}s)"
        return text

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        outputs: list[str] = []
        runs: list[tuple[str, tuple[str, ...]]] = []
        paths = action.words("paths")
        user = action.text("user")
        if paths:
            script = ("sh", "-c", CLEAR_PATHS_SCRIPT, "sh", *paths)
            runs.append((f"clearing {', '.join(paths)}", script))
        runs.extend((" ".join(command), command) for command in action.commands("commands"))
        for what, command in runs:
            output = _in_container(
                hands,
                container,
                command,
                what=f"cache_clear: {what}",
                user=user,
                timeout=CACHE_CLEAR_COMMAND_TIMEOUT,
            )
            outputs.append(output.strip())
        if action.flag("restart"):
            timeout = hands.stop_timeout(action)
            _touched(hands, container, lambda: hands.gateway.restart(container.id, timeout=timeout))
            outputs.append(f"restarted {container.name}")
        return Outcome("\n".join(o for o in outputs if o))


@register
class RestartDependents(ActionType):
    name = "restart_dependents"
    summary = (
        "Restart the project's containers that depend on this one (depends_on, "
        "network_mode), in dependency order."
    )
    options = _STOP
    stops = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (
            "Swarm services have no compose dependency order, and medic restarts no task "
            "container; update the dependent services with docker service update --force"
        )

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        return Outcome(hands.restart_dependents(container, hands.stop_timeout(action)))


@register
class Notify(ActionType):
    name = "notify"
    summary = "Send a notification to MEDIC_NOTIFY_URLS, with an optional `message`."
    options: ClassVar[Mapping[str, Option]] = {"message": Option(OptionType.TEXT)}

    def describe(self, action: Action) -> str:
        message = action.text("message")
        return f"notify {message!r}" if message else self.name

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (action,)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        hands.announce(container, action)
        return Outcome("queued for sending")


#: Signals a reload may send: the ones servers read as "reread your configuration",
#: never one that stops the process.
RELOAD_SIGNALS = ("HUP", "USR1", "USR2")

#: Sends the signal named by the first argument to the container's main process, with
#: the shell's own kill, so the image needs a shell and nothing more.
SIGNAL_MAIN_PROCESS = 'kill -s "$0" 1'


@register
class Reload(ActionType):
    name = "reload"
    summary = (
        "Send the container's main process a reload signal (`signal`: HUP, USR1 or USR2; "
        "default HUP) so it rereads its configuration; the container keeps running."
    )
    options: ClassVar[Mapping[str, Option]] = {
        "signal": Option(OptionType.CHOICE, choices=RELOAD_SIGNALS, example="HUP"),
    }

    def describe(self, action: Action) -> str:
        return f"reload (SIG{action.text('signal') or 'HUP'})"

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (action,)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        signal = action.text("signal") or "HUP"
        _in_container(
            hands,
            container,
            ("sh", "-c", SIGNAL_MAIN_PROCESS, signal),
            what=f"sending SIG{signal} to the main process",
            timeout=30.0,
        )
        return Outcome(f"sent SIG{signal} to the main process")


@register
class ForceUpdate(ActionType):
    name = FORCE_UPDATE
    summary = (
        "Force a rolling update of the Swarm service the task container belongs to (as "
        "`docker service update --force`): Swarm replaces its tasks by the service's update "
        "policy. Only for Swarm tasks; restart, start and recreate become this on one."
    )
    stops = True

    def under_swarm(self, action: Action) -> tuple[Action, ...] | str:
        return (action,)

    def run(self, hands: Hands, container: ContainerRef, action: Action) -> Outcome:
        task = container.swarm
        if task is None:
            raise ActionError(
                f"{container.label} is no Swarm task, so it has no service to update; use "
                "restart or recreate for it"
            )
        with hands.touching(container):
            service = hands.gateway.force_update(task.service_id)
        return Outcome(
            f"forced an update of Swarm service {service.name or task.service_name} "
            f"(update counter {service.force_update}, spec version {service.version}); Swarm "
            "replaces its tasks"
        )
