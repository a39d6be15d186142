"""Swarm tasks: what their labels say, and what medic does for their trouble (pure).

The decision table: a task Swarm replaces by itself is left to it (and a crash loop it
keeps replacing is escalated); one Swarm will not replace, or trouble Swarm cannot see,
is healed through the service, with each playbook action as its kind does it on a task.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from agent.engine.gateway import SwarmRestart, SwarmService, SwarmTaskStatus
from agent.engine.translate import snapshot_from_list, swarm_service_from_inspect
from agent.healing import actions
from agent.healing.history import Slot
from agent.healing.swarm import current_tasks, translate, under_swarm
from agent.model import (
    Action,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Escalate,
    Finding,
    Match,
    Plan,
    Playbook,
    Signal,
    Skip,
    SwarmTask,
    task_slot_name,
)
from agent.scope import Scope

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
TASK_ID = "vujf1gyfaqz2za6un7wsjnsvt"
NEW_TASK_ID = "vlph6j87wdxx79fqxnx3b44tp"
NODE = "xrs0dz3dy2u7fa6on6iue0tf1"

#: A task container's labels, as the engine sets them for `docker stack deploy ... shop`.
LABELS = {
    "com.docker.swarm.service.id": "xa4fp0gn556ilgpjzed5dk6j8",
    "com.docker.swarm.service.name": "shop_web",
    "com.docker.swarm.task": "",
    "com.docker.swarm.task.id": TASK_ID,
    "com.docker.swarm.task.name": f"shop_web.1.{TASK_ID}",
    "com.docker.swarm.node.id": NODE,
    "com.docker.stack.namespace": "shop",
}


def task(labels: dict[str, str] | None = None) -> SwarmTask:
    found = SwarmTask.from_labels(LABELS if labels is None else labels)
    assert found is not None
    return found


# --- labels ----------------------------------------------------------------------------------


def test_a_task_containers_labels_name_its_service_stack_slot_and_node() -> None:
    t = task()
    assert (t.service_id, t.service_name, t.task_id, t.node_id, t.stack) == (
        "xa4fp0gn556ilgpjzed5dk6j8",
        "shop_web",
        TASK_ID,
        NODE,
        "shop",
    )
    assert t.service == "web"  # as the stack file names it, for playbooks' services
    assert t.slot == "1"
    assert t.slot_name == "shop_web.1"


def test_a_global_services_slot_is_its_node_and_a_service_outside_a_stack_keeps_its_name() -> None:
    labels = {
        **LABELS,
        "com.docker.swarm.service.name": "agent",
        "com.docker.swarm.task.name": f"agent.{NODE}.{TASK_ID}",
    }
    del labels["com.docker.stack.namespace"]
    t = task(labels)
    assert (t.service, t.stack, t.slot, t.slot_name) == ("agent", None, NODE, f"agent.{NODE}")


@pytest.mark.parametrize(
    "missing",
    ["com.docker.swarm.service.id", "com.docker.swarm.service.name", "com.docker.swarm.task.id"],
)
def test_a_container_without_swarms_task_labels_is_no_task(missing: str) -> None:
    labels = {k: v for k, v in LABELS.items() if k != missing}
    assert SwarmTask.from_labels(labels) is None
    assert SwarmTask.from_labels({"com.docker.compose.project": "shop"}) is None


def test_a_task_container_is_known_by_its_stack_and_service_as_a_compose_one_is() -> None:
    ref = ContainerRef.from_labels("c1", f"/shop_web.1.{TASK_ID}", LABELS)
    assert (ref.project, ref.service, ref.name) == ("shop", "web", f"shop_web.1.{TASK_ID}")
    assert ref.swarm == task()
    assert ref.label == f"shop_web.1.{TASK_ID} (Swarm service shop_web)"
    compose = ContainerRef.from_labels(
        "c2",
        "/shop-web-1",
        {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"},
    )
    assert (compose.project, compose.service, compose.swarm) == ("shop", "web", None)


def test_every_task_swarm_puts_in_a_slot_is_the_same_slot_even_read_back_from_the_store() -> None:
    first = ContainerRef.from_labels("c1", f"shop_web.1.{TASK_ID}", LABELS)
    second_labels = {
        **LABELS,
        "com.docker.swarm.task.id": NEW_TASK_ID,
        "com.docker.swarm.task.name": f"shop_web.1.{NEW_TASK_ID}",
    }
    second = ContainerRef.from_labels("c2", f"shop_web.1.{NEW_TASK_ID}", second_labels)
    stored = ContainerRef(ContainerId("c1"), f"shop_web.1.{TASK_ID}", "shop", "web")
    assert Slot.of(first) == Slot.of(second) == Slot.of(stored) == Slot("shop", "web", "shop_web.1")
    other = replace(second, swarm=replace(task(second_labels), task_name="shop_web.2.x"))
    assert Slot.of(other) != Slot.of(first)


def test_only_a_name_swarm_gives_reads_as_a_task_slot() -> None:
    assert task_slot_name(f"shop_web.1.{TASK_ID}") == "shop_web.1"
    assert task_slot_name(f"/agent.{NODE}.{TASK_ID}") == f"agent.{NODE}"
    assert task_slot_name("shop-web-1") is None
    assert task_slot_name("shop_web.1.short") is None


def test_a_stack_scope_filters_on_the_stacks_label() -> None:
    scope = Scope(project=None, stack="shop")
    assert scope.label_filter == "com.docker.stack.namespace=shop"
    assert scope.includes("c1", LABELS)
    assert not scope.includes("c1", {**LABELS, "com.docker.stack.namespace": "other"})
    assert not scope.includes("c1", {**LABELS, "medic.ignore": "true"})
    assert scope.describe() == "Swarm stack 'shop'"


# --- the service as the manager answers ------------------------------------------------------


def test_a_service_is_read_with_its_restart_policy_counter_and_tasks_by_slot() -> None:
    attrs = {
        "ID": "svc",
        "Version": {"Index": 57},
        "Spec": {
            "Name": "shop_web",
            "Mode": {"Replicated": {"Replicas": 2}},
            "TaskTemplate": {
                "ForceUpdate": 2,
                "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            },
        },
    }
    tasks = [
        {
            "ID": TASK_ID,
            "Slot": 1,
            "NodeID": NODE,
            "DesiredState": "shutdown",
            "Status": {"State": "failed", "Err": "task: non-zero exit (1)"},
        },
        {"ID": NEW_TASK_ID, "Slot": 1, "NodeID": NODE, "DesiredState": "running", "Status": {}},
    ]
    service = swarm_service_from_inspect(attrs, tasks)
    assert (service.name, service.version, service.force_update) == ("shop_web", 57, 2)
    assert (service.restart, service.global_mode) == (SwarmRestart.NONE, False)
    failed, new = service.in_slot("1")
    assert (failed.state, failed.error, failed.meant_to_run) == (
        "failed",
        "task: non-zero exit (1)",
        False,
    )
    assert new.meant_to_run


def test_a_service_without_a_restart_policy_restarts_any_and_a_global_ones_slots_are_nodes() -> (
    None
):
    attrs = {"ID": "svc", "Spec": {"Name": "agent", "Mode": {"Global": {}}, "TaskTemplate": {}}}
    tasks = [{"ID": TASK_ID, "NodeID": NODE, "DesiredState": "running", "Status": {}}]
    service = swarm_service_from_inspect(attrs, tasks)
    assert (service.restart, service.global_mode, service.max_attempts) == (
        SwarmRestart.ANY,
        True,
        0,
    )
    assert [t.slot for t in service.tasks] == [NODE]


# --- the decision --------------------------------------------------------------------------

PLAYBOOK = Playbook("start-exited", Match(frozenset({Signal.EXITED})), (Action("start"),))


def plan(signal: Signal = Signal.EXITED, *kinds: Action, attempt: int = 1) -> Plan:
    ref = ContainerRef.from_labels("c1", f"shop_web.1.{TASK_ID}", LABELS)
    finding = Finding(ref, signal, f"{ref.label} shows {signal}.", T0)
    book = replace(PLAYBOOK, actions=kinds or (Action("start"),))
    return Plan(finding, book, book.actions, attempt=attempt)


def service(
    *tasks: SwarmTaskStatus,
    restart: SwarmRestart = SwarmRestart.ANY,
    max_attempts: int = 0,
) -> SwarmService:
    return SwarmService(
        id="svc",
        name="shop_web",
        version=10,
        force_update=0,
        global_mode=False,
        restart=restart,
        max_attempts=max_attempts,
        tasks=tasks,
    )


def own(desired: str, state: str) -> SwarmTaskStatus:
    return SwarmTaskStatus(TASK_ID, "1", desired, state)


def replacement(desired: str = "running") -> SwarmTaskStatus:
    return SwarmTaskStatus(NEW_TASK_ID, "1", desired, "running")


FORCE = Action("force_update")


def test_an_exited_task_swarm_already_replaced_is_recorded_and_left_to_swarm() -> None:
    review = under_swarm(plan(), task(), service(own("shutdown", "failed"), replacement()))
    assert isinstance(review.decision, Skip)
    assert f"Swarm has already put task {NEW_TASK_ID[:12]} in its place" in review.decision.reason
    assert "records the incident and does not act" in review.decision.reason
    assert not review.dismissed


def test_a_replacement_waiting_out_the_restart_delay_is_swarm_acting_too() -> None:
    review = under_swarm(plan(), task(), service(own("shutdown", "failed"), replacement("ready")))
    assert isinstance(review.decision, Skip)


@pytest.mark.parametrize("restart", [SwarmRestart.ANY, SwarmRestart.ON_FAILURE])
@pytest.mark.parametrize("signal", [Signal.EXITED, Signal.UNHEALTHY, Signal.OOM_KILLED])
def test_trouble_swarms_restart_policy_covers_is_left_to_swarm(
    restart: SwarmRestart, signal: Signal
) -> None:
    # The engine shows the end before the manager has marked the task failed.
    review = under_swarm(plan(signal), task(), service(own("running", "running"), restart=restart))
    assert isinstance(review.decision, Skip)
    assert f"restart policy (condition {restart})" in review.decision.reason


def test_a_task_swarm_will_not_restart_is_healed_by_a_forced_update_of_its_service() -> None:
    review = under_swarm(
        plan(), task(), service(own("shutdown", "failed"), restart=SwarmRestart.NONE)
    )
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (FORCE,)
    assert review.decision.attempt == 1
    assert review.notes == (
        "start of playbook start-exited becomes force_update of Swarm service shop_web: "
        "medic restarts no task container",
    )


def test_an_unhealthy_task_under_condition_none_is_healed_through_the_service() -> None:
    review = under_swarm(
        plan(Signal.UNHEALTHY, Action("restart", timeout=10)),
        task(),
        service(own("running", "running"), restart=SwarmRestart.NONE),
    )
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (FORCE,)


def test_a_task_whose_restart_attempts_swarm_used_up_is_healed_through_the_service() -> None:
    # max_attempts reached: the task is shut down and nothing is meant to run in its slot.
    ended = [SwarmTaskStatus(f"old{n}", "1", "shutdown", "failed") for n in range(3)]
    review = under_swarm(plan(), task(), service(own("shutdown", "failed"), *ended, max_attempts=3))
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (FORCE,)


@pytest.mark.parametrize("signal", [Signal.LOG_MATCH, Signal.PROBE_FAILED])
def test_trouble_only_medic_sees_is_healed_through_the_service_whatever_the_policy(
    signal: Signal,
) -> None:
    review = under_swarm(
        plan(signal, Action("restart")), task(), service(own("running", "running"))
    )
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (FORCE,)


def test_a_crash_loop_swarm_keeps_replacing_is_escalated_not_restarted_once_more() -> None:
    review = under_swarm(
        plan(Signal.CRASH_LOOP), task(), service(own("shutdown", "failed"), replacement("ready"))
    )
    assert isinstance(review.decision, Escalate)
    assert "Swarm keeps replacing the task of shop_web.1" in review.decision.reason
    assert "another restart would not help" in review.decision.reason


def test_a_crash_loop_swarm_gave_up_on_is_healed_by_the_playbook_through_the_service() -> None:
    review = under_swarm(
        plan(Signal.CRASH_LOOP, attempt=2),
        task(),
        service(own("shutdown", "failed"), restart=SwarmRestart.NONE),
    )
    assert isinstance(review.decision, Plan)
    assert (review.decision.actions, review.decision.attempt) == ((FORCE,), 2)


@pytest.mark.parametrize("state", ["shutdown", "complete"])
def test_a_task_swarm_ended_on_purpose_is_no_failure_at_all(state: str) -> None:
    # A rolling update, a scale-down or the service's removal stops tasks on purpose.
    review = under_swarm(plan(), task(), service(own("shutdown", state), replacement()))
    assert isinstance(review.decision, Skip)
    assert review.dismissed
    assert "Swarm shut task" in review.decision.reason and "on purpose" in review.decision.reason


def test_when_the_service_cannot_be_read_the_task_is_left_to_swarm_saying_why() -> None:
    why = "this Docker engine is not a Swarm manager"
    review = under_swarm(plan(), task(), None, unreadable=why)
    assert isinstance(review.decision, Skip)
    assert "medic cannot read Swarm service shop_web (this Docker engine is not a Swarm" in (
        review.decision.reason
    )
    assert not review.dismissed


# --- each action kind on a task ----------------------------------------------------------------


def test_restart_start_and_recreate_are_one_forced_update_of_the_service() -> None:
    p = plan(Signal.LOG_MATCH, Action("restart"), Action("start"), Action("recreate"))
    review = translate(p, "shop_web")
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (FORCE,)
    assert len(review.notes) == 3


def test_what_runs_inside_the_task_stays_and_a_cache_clears_restart_goes_through_the_service() -> (
    None
):
    clear = Action("cache_clear", paths=["/var/cache/app"], restart=True, timeout=5.0)
    exec_ = Action("exec", command=["sh", "-c", "true"])
    p = plan(Signal.LOG_MATCH, exec_, clear, Action("reload"), Action("notify"))
    review = translate(p, "shop_web")
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (
        exec_,
        Action("cache_clear", paths=["/var/cache/app"]),
        FORCE,
        Action("reload"),
        Action("notify"),
    )


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("stop", "scale it to 0"),
        ("rebuild", "build and push the image"),
        ("restart_dependents", "no compose dependency order"),
    ],
)
def test_actions_that_make_no_sense_under_swarm_are_refused_with_the_reason(
    kind: str, why: str
) -> None:
    review = translate(plan(Signal.LOG_MATCH, Action(kind), Action("notify")), "shop_web")
    assert isinstance(review.decision, Plan)
    assert review.decision.actions == (Action("notify"),)
    [note] = review.notes
    assert note.startswith(f"Under Swarm medic refuses {kind}") and why in note


def test_a_playbook_of_refused_actions_only_is_skipped_naming_each_reason() -> None:
    review = translate(plan(Signal.LOG_MATCH, Action("stop"), Action("rebuild")), "shop_web")
    assert isinstance(review.decision, Skip)
    assert "every action of playbook start-exited is refused under Swarm" in review.decision.reason


def test_the_actor_refuses_to_restart_a_task_container_whatever_asks() -> None:
    ref = ContainerRef.from_labels("c1", f"shop_web.1.{TASK_ID}", LABELS)
    compose = ContainerRef(ContainerId("c2"), "shop-web-1", "shop", "web")
    for kind in ("restart", "start", "stop", "recreate", "rebuild", "restart_dependents"):
        refused = actions.swarm_refusal(ref, Action(kind))
        assert refused is not None, kind
        assert actions.swarm_refusal(compose, Action(kind)) is None
    for allowed in (FORCE, Action("exec", command=["true"]), Action("notify")):
        assert actions.swarm_refusal(ref, allowed) is None
    assert actions.swarm_refusal(ref, Action("restart")) == (
        "on a Swarm task medic does force_update instead"
    )


# --- which of a slot's task containers is its present ----------------------------------------


def listed(name: str, task_id: str, *, state: str, created: int) -> ContainerSnapshot:
    labels = {
        **LABELS,
        "com.docker.swarm.task.id": task_id,
        "com.docker.swarm.task.name": f"shop_web.{name}.{task_id}",
    }
    entry = {
        "Id": f"{task_id}{'0' * 39}",
        "Names": [f"/shop_web.{name}.{task_id}"],
        "Labels": labels,
        "State": state,
        "Status": "Exited (1) 3 seconds ago" if state == "exited" else "Up 2 seconds",
        "Created": created,
    }
    return snapshot_from_list(entry, T0)


def test_of_a_slots_task_containers_only_the_newest_is_judged() -> None:
    old = listed("1", TASK_ID, state="exited", created=1_700_000_000)
    new = listed("1", NEW_TASK_ID, state="running", created=1_700_000_010)
    other = listed("2", "a" * 25, state="exited", created=1_699_000_000)
    compose = replace(old, ref=ContainerRef(ContainerId("c9"), "shop-db-1", "shop", "db"))
    assert old.created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert current_tasks([old, compose, new, other]) == [compose, new, other]
    # Without creation times a running task is the present one.
    assert current_tasks([replace(new, created_at=None), replace(old, created_at=None)]) == [
        replace(new, created_at=None)
    ]
