"""The action and signal registries: one entry per kind, each complete, each documented.

These tests read the registries the rest of medic reads, so a kind added without
its docs row, or a signal without its entry, fails here rather than misbehaving
quietly somewhere else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import finding
from fakes import FakeDocker

from agent.engine.gateway import ExecResult
from agent.errors import ActionError, PlaybookErrors
from agent.healing import actions, lifecycle
from agent.healing.act import Actor
from agent.healing.actions import KINDS, describe, leaves_stopped, stops_container
from agent.healing.playbooks import load_playbooks
from agent.model import (
    SEVERITY,
    SIGNAL_KINDS,
    Action,
    Match,
    Plan,
    Playbook,
    Recovery,
    Signal,
    Source,
    State,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def table(path: Path, header: str) -> dict[str, list[str]]:
    """The rows of the markdown table under ``header``: first cell (unquoted) -> cells."""
    lines = path.read_text().splitlines()
    start = lines.index(header)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


# --- actions -------------------------------------------------------------------------------

ACTIONS_TABLE = "| kind | options | stops the container | what it does |"


def test_the_actions_docs_table_lists_every_kind_with_its_options_and_summary() -> None:
    rows = table(DOCS / "actions.md", ACTIONS_TABLE)
    assert list(rows) == list(KINDS)
    for name, entry in KINDS.items():
        options, _stops, summary = rows[name]
        documented = re.findall(r"`(\w+)`", options)
        assert documented == list(entry.options), name
        assert summary == entry.summary, name


@pytest.mark.parametrize(
    ("action", "stops"),
    [
        (Action("restart"), True),
        (Action("stop", timeout=3), True),
        (Action("recreate"), True),
        (Action("rebuild"), True),
        (Action("restart_dependents"), True),
        (Action("cache_clear", paths=("/cache",), restart=True), True),
        (Action("cache_clear", paths=("/cache",)), False),
        (Action("start"), False),
        (Action("exec", command=("true",)), False),
        (Action("notify"), False),
        (Action("no_such_kind"), False),
    ],
)
def test_which_actions_stop_the_container(action: Action, *, stops: bool) -> None:
    assert stops_container(action) is stops


def test_an_action_keeps_only_the_options_given_so_equal_writings_are_equal() -> None:
    assert Action("cache_clear", paths=["/a"], restart=False, user=None) == Action(
        "cache_clear", paths=("/a",)
    )
    assert Action("restart", timeout=2) != Action("restart")
    assert hash(Action("restart", timeout=2)) == hash(Action("restart", timeout=2.0))
    assert repr(Action("exec", command=("true",))) == "Action('exec', command=('true',))"


def test_descriptions_come_from_each_kind() -> None:
    assert describe(Action("restart", timeout=5)) == "restart (stop timeout 5s)"
    assert describe(Action("start")) == "start"
    assert describe(Action("exec", command=("rm", "-f", "/tmp/x"))) == "exec rm -f /tmp/x"
    assert describe(Action("notify", message="db down")) == "notify 'db down'"
    assert describe(Action("no_such_kind")) == "no_such_kind"


def plan_of(*steps: Action) -> Plan:
    book = Playbook("p", Match(frozenset({Signal.EXITED})), steps)
    return Plan(finding(), book, steps, attempt=1)


def test_a_plan_leaves_the_container_stopped_when_its_last_run_change_is_a_stop() -> None:
    assert leaves_stopped(plan_of(Action("stop")))
    assert leaves_stopped(plan_of(Action("start"), Action("notify"), Action("stop")))
    assert not leaves_stopped(plan_of(Action("stop"), Action("start")))
    assert not leaves_stopped(plan_of(Action("stop"), Action("restart")))
    assert not leaves_stopped(plan_of(Action("exec", command=("true",))))


def test_an_unknown_kind_is_an_error_when_run_never_a_default() -> None:
    with pytest.raises(ActionError, match="medic does not know how to vanish"):
        actions.kind_of(Action("vanish"))


def test_a_second_entry_with_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="two action kinds are named 'restart'"):

        @actions.register
        class Again(actions.Restart):
            pass


# --- signals -------------------------------------------------------------------------------

SIGNALS_TABLE = "| signal | found by | what it means | clear when | costs per poll |"


def test_every_signal_has_one_entry_and_the_severity_order_covers_them_all() -> None:
    assert set(SIGNAL_KINDS) == set(Signal)
    assert all(kind.signal is signal for signal, kind in SIGNAL_KINDS.items())
    assert sorted(SEVERITY) == sorted(Signal)
    # A rule-found signal names the playbook key that asks for it; an engine one none.
    for kind in SIGNAL_KINDS.values():
        assert (kind.rule is None) == (kind.source is Source.ENGINE), kind.signal


def test_the_signals_docs_table_lists_every_signal_in_severity_order() -> None:
    rows = table(DOCS / "signals.md", SIGNALS_TABLE)
    assert list(rows) == list(SEVERITY)
    words = {Recovery.HEALTHY: "healthy", Recovery.PROBE_PASSES: "probe passes"}
    words[Recovery.LOG_QUIET] = "log quiet"
    for signal, kind in SIGNAL_KINDS.items():
        found_by, means, clear_when, _costs = rows[signal]
        assert found_by == kind.source.value, signal
        assert means == kind.summary, signal
        assert clear_when == words[kind.recovery], signal


@pytest.mark.parametrize("signal", list(Signal))
def test_each_signal_resolves_by_its_own_recovery_rule(signal: Signal) -> None:
    healthy_only = lifecycle.Clear(healthy_since=T0)
    everything = lifecycle.Clear(
        healthy_since=T0, probe_ok_since=T0 + timedelta(seconds=5), log_quiet_at=T0
    )
    recovery = SIGNAL_KINDS[signal].recovery
    if recovery is Recovery.HEALTHY:
        assert lifecycle.clear_since([signal], healthy_only) == T0
    else:
        # Healthy is not enough: a probe or log signal needs its own kind of clear.
        assert lifecycle.clear_since([signal], healthy_only) is None
    assert lifecycle.clear_since([signal], everything) is not None


# --- reload: the kind added as one entry, its tests and its docs row ---------------------


def test_reload_reads_from_a_playbook_with_its_signal_checked(tmp_path: Path) -> None:
    path = tmp_path / "reload.yml"
    path.write_text(
        "playbooks:\n"
        "  - name: reload-proxy\n"
        "    match: {signals: [probe_failed], probe: {http: 80}}\n"
        "    actions: [reload, {reload: {signal: USR2}}]\n"
    )
    [book] = load_playbooks(path)
    assert book.actions == (Action("reload"), Action("reload", signal="USR2"))
    assert [describe(a) for a in book.actions] == ["reload (SIGHUP)", "reload (SIGUSR2)"]
    assert not any(stops_container(a) for a in book.actions)

    path.write_text(path.read_text().replace("USR2", "TERM"))
    with pytest.raises(PlaybookErrors, match=r"reload.yml:4: .*signal: 'TERM' is not one of"):
        load_playbooks(path)


class RecordingDocker(FakeDocker):
    """The fake engine, noting each command medic runs inside a container."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, ...]] = []

    def exec(
        self, container_id: str, command: Sequence[str], *, user: str | None, timeout: float | None
    ) -> ExecResult:
        self.commands.append(tuple(command))
        return super().exec(container_id, command, user=user, timeout=timeout)


def test_reload_sends_the_signal_to_the_main_process_through_exec() -> None:
    fake = RecordingDocker()
    proxy = fake.add("proxy", {}, state=State.RUNNING)
    actor = Actor(fake)
    try:
        result = actor.run_action(fake.inspect(proxy.id).ref, Action("reload", signal="USR1"))
    finally:
        actor.shutdown(timeout=1)
    assert result.ok, result.error
    assert result.output == "sent SIGUSR1 to the main process"
    assert fake.commands == [("sh", "-c", actions.SIGNAL_MAIN_PROCESS, "USR1")]
    assert fake.requests.count("restart") == fake.requests.count("stop") == 0
