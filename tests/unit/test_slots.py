"""The decision thread's slot memory: what it keeps up to date so that the loop's
work per event does not grow with the number of containers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agent.healing.history import Slot
from agent.healing.slots import Slots
from agent.model import ContainerId, ContainerRef, ContainerSnapshot, Health, Signal, State

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def ref(n: int) -> ContainerRef:
    return ContainerRef(ContainerId(f"{n:064x}"), f"shop-web-{n}", "shop", "web")


def test_wake_times_and_due_slots_follow_every_change() -> None:
    slots = Slots()
    tracked = [slots.track(ref(n))[0] for n in range(100)]
    assert slots.wake_times() == []
    slots.update(tracked[3], wake_at=T0 + timedelta(seconds=5))
    slots.update(tracked[7], wake_at=T0 + timedelta(seconds=60))
    slots.update(tracked[9], wake_at=T0 + timedelta(seconds=1))
    slots.update(tracked[9], wake_at=None)
    assert sorted(slots.wake_times()) == [T0 + timedelta(seconds=5), T0 + timedelta(seconds=60)]
    assert slots.due(T0 + timedelta(seconds=10)) == [tracked[3]]
    assert slots[tracked[3]].wake_at is None
    assert slots.due(T0 + timedelta(seconds=10)) == []
    slots.pop(tracked[7])
    assert slots.wake_times() == []
    assert slots.due(T0 + timedelta(hours=1)) == []


def test_changed_names_the_slots_put_or_popped_since_it_was_last_asked() -> None:
    slots = Slots()
    a, _ = slots.track(ref(1))
    b, _ = slots.track(ref(2))
    assert slots.changed() == {a, b}
    assert slots.changed() == set()
    slots.update(b, said="told")
    slots.pop(a)
    assert slots.changed() == {a, b}
    assert slots.view(a, None) is None
    view = slots.view(b, ("inc-1", Signal.EXITED))
    assert view is not None
    assert view.container == "shop-web-2"
    assert view.incidents == (("inc-1", "exited"),)


def test_seen_again_unchanged_a_slot_is_not_changed() -> None:
    slots = Slots()
    slot, tracked = slots.track(ref(1))
    assert tracked is not None
    slots.changed()
    slots.track(ref(1))
    assert slots.changed() == set()
    assert isinstance(slot, Slot)


def test_a_slot_is_at_rest_only_when_seen_healthy_as_before_with_no_healing_under_way() -> None:
    slots = Slots()
    slot, tracked = slots.track(ref(1))
    assert tracked is not None
    seen = ContainerSnapshot(
        ref=ref(1),
        labels={},
        image="shop/web",
        state=State.RUNNING,
        health=Health.NONE,
        exit_code=None,
        observed_at=T0,
    )
    assert not tracked.at_rest(seen)  # never seen before
    tracked = slots.update(slot, state="running", health="none")
    assert tracked.at_rest(seen)
    assert not tracked.at_rest(replace(seen, detailed=True))
    assert not tracked.at_rest(replace(seen, health=Health.UNHEALTHY))
    assert not slots.update(slot, wake_at=T0).at_rest(seen)
    slots.update(slot, wake_at=None)
    healing = replace(tracked.healing, attempts=(T0,))
    assert not slots.update(slot, healing=healing).at_rest(seen)
