"""The /status containers list, rebuilt only where a slot changed."""

from __future__ import annotations

from datetime import UTC, datetime

from agent.status import ContainerView, StatusBoard, container_entry

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def view(name: str, *, state: str = "running", incident: str | None = None) -> ContainerView:
    return ContainerView(
        container=name,
        service=name.split("-")[1],
        state=state,
        health="none",
        incidents=((incident, "exited"),) if incident else (),
        attempts_in_streak=0,
        next_look_at=AT if incident else None,
        circuit_open=False,
        stopped_by_person=False,
        action_in_flight=False,
    )


def test_the_board_lists_every_container_by_name() -> None:
    board: StatusBoard[str] = StatusBoard()
    document = board.update({"b": view("shop-web-2"), "a": view("shop-db-1")})
    assert [e["container"] for e in document] == ["shop-db-1", "shop-web-2"]
    assert document[0] == container_entry(view("shop-db-1"))
    assert document[1]["next_look_at"] is None


def test_a_change_replaces_only_its_slot_and_a_gone_slot_leaves() -> None:
    board: StatusBoard[str] = StatusBoard()
    first = board.update({"a": view("shop-db-1"), "b": view("shop-web-2")})
    second = board.update({"b": view("shop-web-2", state="exited", incident="i1")})
    assert second[0] is first[0]  # the unchanged slot's entry is not built again
    assert second[1]["state"] == "exited"
    assert second[1]["incidents"] == [{"id": "i1", "signal": "exited"}]
    assert second[1]["next_look_at"] == AT.isoformat()
    assert board.update({}) is second
    assert [e["container"] for e in board.update({"a": None})] == ["shop-web-2"]
