"""Parsing Docker's JSON into snapshots and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.engine.translate import (
    Lister,
    event_from_json,
    parse_time,
    snapshot_from_inspect,
    snapshot_from_list,
)
from agent.model import Health, State

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CID = "a" * 64


def test_times_keep_microseconds_and_the_zero_time_is_none() -> None:
    assert parse_time("2026-11-21T12:00:01.123456789Z") == datetime(
        2026, 11, 21, 12, 0, 1, 123456, tzinfo=UTC
    )
    assert parse_time("2026-11-21T12:00:01Z") == datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("") is None


@pytest.mark.parametrize(
    ("status", "state", "health", "exit_code", "closer"),
    [
        ("Up 3 minutes (healthy)", "running", Health.HEALTHY, None, False),
        ("Up 3 minutes", "running", Health.NONE, None, False),
        ("Up 5 seconds (health: starting)", "running", Health.STARTING, None, False),
        ("Up 3 minutes (unhealthy)", "running", Health.UNHEALTHY, None, True),
        ("Exited (0) 2 minutes ago", "exited", Health.NONE, 0, False),
        ("Exited (137) 2 minutes ago", "exited", Health.NONE, 137, True),
        ("Restarting (1) 1 second ago", "restarting", Health.NONE, None, True),
        ("Dead", "dead", Health.NONE, None, True),
    ],
)
def test_list_entries_say_enough_to_skip_inspect_for_healthy_containers(
    status: str, state: str, health: Health, exit_code: int | None, closer: bool
) -> None:
    snap = snapshot_from_list(
        {
            "Id": CID,
            "Names": ["/shop-web-1"],
            "Image": "shop/web",
            "State": state,
            "Status": status,
            "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"},
        },
        NOW,
    )
    assert snap.ref.name == "shop-web-1"
    assert snap.ref.project == "shop"
    assert snap.ref.service == "web"
    assert snap.state is State(state)
    assert snap.health is health
    assert snap.exit_code == exit_code
    assert snap.needs_closer_look is closer
    assert not snap.detailed


def test_inspect_gives_oom_times_and_the_last_health_check_output() -> None:
    snap = snapshot_from_inspect(
        {
            "Id": CID,
            "Name": "/shop-web-1",
            "RestartCount": 2,
            "Config": {"Image": "shop/web", "Labels": {"com.docker.compose.service": "web"}},
            "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}},
            "State": {
                "Status": "exited",
                "ExitCode": 137,
                "OOMKilled": True,
                "StartedAt": "2026-11-21T11:59:00.5Z",
                "FinishedAt": "2026-11-21T11:59:59.000000001Z",
                "Health": {
                    "Status": "unhealthy",
                    "FailingStreak": 4,
                    "Log": [
                        {"ExitCode": 1, "Output": "old"},
                        {"ExitCode": 7, "Output": "refused\n"},
                    ],
                },
            },
        },
        NOW,
    )
    assert snap.detailed
    assert snap.state is State.EXITED
    assert snap.exit_code == 137
    assert snap.oom_killed
    assert snap.restart_count == 2
    assert snap.restart_policy == "unless-stopped"
    assert snap.health is Health.UNHEALTHY
    assert snap.failing_streak == 4
    assert snap.health_output == "exit 7: refused"
    assert snap.finished_at == datetime(2026, 11, 21, 11, 59, 59, tzinfo=UTC)


def test_events_are_typed_and_health_status_splits_into_kind_and_detail() -> None:
    event = event_from_json(
        {
            "Type": "container",
            "Action": "health_status: unhealthy",
            "Actor": {
                "ID": CID,
                "Attributes": {"name": "shop-web-1", "com.docker.compose.service": "web"},
            },
            "time": 1,
            "timeNano": 1_700_000_000_250_000_000,
        }
    )
    assert event is not None
    assert event.kind == "health_status"
    assert event.detail == "unhealthy"
    assert event.name == "shop-web-1"
    assert (event.ref.id, event.ref.name, event.ref.service) == (CID, "shop-web-1", "web")
    assert event.at == datetime.fromtimestamp(1_700_000_000.25, UTC)
    assert event_from_json({"Type": "network", "Action": "connect"}) is None


def _entry(cid: str, name: str, status: str = "Up 3 minutes", **extra: object) -> dict[str, object]:
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "shop/web",
        "State": "running",
        "Status": status,
        "Created": 1_764_000_000,
        "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"},
        "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.18.0.5"}}},
        **extra,
    }


def test_a_listing_poll_after_poll_gives_what_a_fresh_translation_gives() -> None:
    lister = Lister()
    later = datetime(2026, 11, 21, 12, 0, 30, tzinfo=UTC)
    first = lister.snapshots([_entry(CID, "shop-web-1"), _entry("c" * 64, "y")], NOW)
    entries = [
        _entry(CID, "shop-web-1", "Up 4 minutes (unhealthy)"),
        _entry("b" * 64, "x"),
        _entry("c" * 64, "y"),  # listed as it was
    ]
    again = lister.snapshots(entries, later)
    assert again == [snapshot_from_list(e, later) for e in entries]
    assert again[0].health is Health.UNHEALTHY
    assert [s.observed_at for s in again] == [later] * 3
    assert first[1].observed_at == NOW  # the earlier snapshot is left as it was
    # What cannot change for a container is read once and kept.
    assert again[0].ref is first[0].ref
    assert again[0].labels is first[0].labels
    # A container listed as it was is the same reading, stamped again.
    assert again[2] is not first[1]
    assert again[2].ref is first[1].ref
    third = lister.snapshots(
        [_entry("c" * 64, "y", "Exited (3) 1 second ago", State="exited")], later
    )
    assert third == [
        snapshot_from_list(_entry("c" * 64, "y", "Exited (3) 1 second ago", State="exited"), later)
    ]
    assert third[0].exit_code == 3


def test_a_renamed_container_is_read_again_and_a_gone_one_is_forgotten() -> None:
    lister = Lister()
    (before,) = lister.snapshots([_entry(CID, "shop-web-1")], NOW)
    (renamed,) = lister.snapshots([_entry(CID, "shop-web-old")], NOW)
    assert renamed.ref.name == "shop-web-old"
    assert renamed.ref is not before.ref
    lister.snapshots([], NOW)
    (back,) = lister.snapshots([_entry(CID, "shop-web-old")], NOW)
    assert back.ref is not renamed.ref
