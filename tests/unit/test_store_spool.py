"""The spool: changes made while the database is away are kept on disk and written later."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import wait_for
from loguru import logger
from store_fakes import FakeLeases, FlakyDatabase

from agent.errors import FencedOut, StoreError, StoreUnavailable
from agent.model import (
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    EvidenceEntry,
    Finding,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store import IncidentNotFound, IncidentStore, MemoryStore, new_id
from agent.store.base import new_incident
from agent.store.lease import Term
from agent.store.memory import MAX_RESOLVED_KEPT
from agent.store.migrate import available
from agent.store.ops import (
    AddEvidence,
    BadSpoolLine,
    MoveIncident,
    OpenIncident,
    Operation,
    RecordAttempt,
    SetStatus,
    from_json,
    to_json,
)
from agent.store.spool import SpoolError, SpoolingStore

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
WEB = ContainerRef(ContainerId("c" * 64), "shop-web-1", "shop", "web")


def finding(at: datetime, summary: str = "shop-web-1 exited with code 3.") -> Finding:
    return Finding(WEB, Signal.EXITED, summary, at, {"exit_code": 3})


def attempt(incident_id: IncidentId, at: datetime, *, ok: bool = True) -> Attempt:
    return Attempt(
        id=AttemptId(new_id()),
        incident_id=incident_id,
        playbook="start-exited",
        action="start",
        started_at=at,
        finished_at=at + timedelta(seconds=1),
        ok=ok,
        error=None if ok else "no such container",
    )


def spooled_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_writes_go_straight_to_the_database_when_it_is_reachable(tmp_path: Path) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path)
    incident = store.record_finding(finding(T0))
    again = store.record_finding(finding(T0 + timedelta(seconds=5), "still exited"))
    store.record_attempt(attempt(incident.id, T0 + timedelta(seconds=6)))
    store.close()

    assert again.id == incident.id
    assert [type(op).__name__ for op in db.applied] == [
        "OpenIncident",
        "AddEvidence",
        "RecordAttempt",
    ]
    stored = db.rows.get(incident.id)
    assert stored.status is IncidentStatus.HEALING
    assert len(stored.evidence) == 2
    assert spooled_lines(tmp_path / "spool.jsonl") == []


def test_changes_made_while_the_database_is_down_are_spooled_then_written_in_order(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    db.down = True
    incident = store.record_finding(finding(T0))
    first = attempt(incident.id, T0 + timedelta(seconds=1), ok=False)
    store.record_attempt(first)
    store.set_status(incident.id, IncidentStatus.ESCALATED, at=T0 + timedelta(seconds=2))

    assert db.applied == []
    lines = spooled_lines(tmp_path / "spool.jsonl")
    assert [line["op"] for line in lines] == ["open_incident", "record_attempt", "set_status"]
    assert lines[0]["id"] == incident.id
    assert lines[1]["id"] == first.id
    assert store.pending_changes() == 3
    assert (tmp_path / "spool.jsonl").stat().st_mode & 0o777 == 0o600
    # Reads fall back to the in-memory view while the database is away.
    assert store.get(incident.id[:8]).status is IncidentStatus.ESCALATED
    assert [i.id for i in store.active_incidents(WEB.id)] == [incident.id]

    db.down = False
    assert store.replay() is True
    assert [type(op).__name__ for op in db.applied] == [
        "OpenIncident",
        "RecordAttempt",
        "SetStatus",
    ]
    assert db.rows.get(incident.id).status is IncidentStatus.ESCALATED
    assert (tmp_path / "spool.jsonl").read_text() == ""
    assert store.pending_changes() == 0
    store.close()


def test_the_background_retry_writes_the_spool_when_the_database_is_back(tmp_path: Path) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(0.05,))
    db.down = True
    incident = store.record_finding(finding(T0))
    assert store.pending_changes() == 1
    db.down = False
    wait_for(lambda: store.pending_changes() == 0, timeout=5, message="the spool to be written")
    assert db.rows.get(incident.id).id == incident.id
    assert store.reachable
    store.close()


def test_a_replay_repeated_after_a_crash_stores_each_change_once(tmp_path: Path) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    db.down = True
    incident = store.record_finding(finding(T0))
    store.record_attempt(attempt(incident.id, T0 + timedelta(seconds=1)))
    spool = (tmp_path / "spool.jsonl").read_text()
    store.close()

    # The first replay committed, then medic died before the spool was cut.
    db.down = False
    db.apply([from_json(line) for line in spool.splitlines()])
    (tmp_path / "spool.jsonl").write_text(spool)
    restarted = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    assert restarted.pending_changes() == 0
    assert len(db.applied) == 2
    assert len(db.rows.get(incident.id).attempts) == 1
    # The restarted store knows the incident: a new finding adds evidence to it.
    assert restarted.record_finding(finding(T0 + timedelta(seconds=9))).id == incident.id
    restarted.close()


def test_a_spool_left_by_an_earlier_run_is_written_at_start(tmp_path: Path) -> None:
    db = FlakyDatabase()
    db.down = True
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = store.record_finding(finding(T0))
    store.close()
    assert store.pending_changes() == 1

    db.down = False
    SpoolingStore(db, state_dir=tmp_path).close()
    assert db.rows.get(incident.id).summary == "shop-web-1 exited with code 3."
    assert (tmp_path / "spool.jsonl").read_text() == ""


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """The WARNING (and worse) lines medic logs during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).rstrip()), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


def spool_with_two_changes_and_a_torn_third(tmp_path: Path) -> tuple[list[str], bytes]:
    """A spool as a crash while writing its third line leaves it: two whole lines."""
    db = FlakyDatabase()
    db.down = True
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = store.record_finding(finding(T0))
    store.record_attempt(attempt(incident.id, T0 + timedelta(seconds=1)))
    store.close()
    whole = (tmp_path / "spool.jsonl").read_text().splitlines()
    third = to_json(RecordAttempt(attempt(incident.id, T0 + timedelta(seconds=9)))).encode()
    torn = third[: len(third) // 2]
    with (tmp_path / "spool.jsonl").open("ab") as spool:
        spool.write(torn)
    return whole, torn


def test_a_torn_last_line_is_set_aside_named_and_the_whole_lines_written(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    whole, torn = spool_with_two_changes_and_a_torn_third(tmp_path)
    db = FlakyDatabase()
    db.down = True
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))

    [aside] = list(tmp_path.glob("spool.jsonl.torn-*"))
    assert aside.read_bytes() == torn
    assert aside.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"spool\.jsonl\.torn-\d{8}T\d{6}\.\d{6}Z", aside.name)
    assert any(str(aside) in line and "cut short" in line for line in warnings_logged)
    assert (tmp_path / "spool.jsonl").read_text().splitlines() == whole
    assert store.pending_changes() == 2

    # The next change is a line of its own, and every whole line reaches the database.
    later = store.record_finding(finding(T0 + timedelta(minutes=5), "exited again"))
    lines = (tmp_path / "spool.jsonl").read_text().splitlines()
    assert lines[:2] == whole
    [added] = [from_json(line) for line in lines[2:]]
    assert isinstance(added, AddEvidence)
    assert added.summary == "exited again"
    db.down = False
    assert store.replay()
    store.close()
    assert len(db.applied) == 3
    assert db.rows.get(later.id).evidence[-1].summary == "exited again"
    assert list(tmp_path.glob("spool.jsonl.torn-*")) == [aside]


def test_a_last_line_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    whole, _ = spool_with_two_changes_and_a_torn_third(tmp_path)
    spool = tmp_path / "spool.jsonl"
    spool.write_text("\n".join(whole))  # the second line is whole but has no newline
    db = FlakyDatabase()
    db.down = True
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    assert store.pending_changes() == 2
    assert spool.read_text() == "\n".join(whole) + "\n"
    assert list(tmp_path.glob("spool.jsonl.torn-*")) == []
    store.close()


def test_an_unreadable_line_is_set_aside_once_and_the_rest_written(
    tmp_path: Path, warnings_logged: list[str]
) -> None:
    whole, _ = spool_with_two_changes_and_a_torn_third(tmp_path)
    spool = tmp_path / "spool.jsonl"
    spool.write_text(f'{whole[0]}\n{{"op": "from_the_future"}}\n{whole[1]}\n')
    db = FlakyDatabase()
    db.down = True
    SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,)).close()
    [aside] = list(tmp_path.glob("spool.jsonl.unreadable-*"))
    assert aside.read_text() == '{"op": "from_the_future"}\n'
    assert any(str(aside) in line for line in warnings_logged)
    assert spool.read_text().splitlines() == whole

    db.down = False
    SpoolingStore(db, state_dir=tmp_path).close()
    assert len(db.applied) == 2
    assert list(tmp_path.glob("spool.jsonl.unreadable-*")) == [aside]


def test_after_a_write_that_failed_half_way_the_next_one_starts_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=state, retry_delays=(3600,))
    db.down = True
    state.write_text("a file where the state folder should be")
    with pytest.raises(SpoolError):
        store.record_finding(finding(T0))
    # A person frees the folder; the failed write had left half a line behind.
    state.unlink()
    state.mkdir()
    (state / "spool.jsonl").write_text('{"op":"open_incident","id":"ab')
    incident = store.record_finding(finding(T0 + timedelta(seconds=5)))
    [line] = (state / "spool.jsonl").read_text().splitlines()
    op = from_json(line)
    assert isinstance(op, OpenIncident)
    assert op.incident.id == incident.id
    [aside] = list(state.glob("spool.jsonl.torn-*"))
    assert aside.read_text() == '{"op":"open_incident","id":"ab'
    store.close()


def test_a_spool_that_cannot_be_written_is_a_loud_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=state, retry_delays=(3600,))
    state.write_text("a file where the state folder should be")
    db.down = True
    with pytest.raises(SpoolError, match="cannot write the incident spool"):
        store.record_finding(finding(T0))
    assert isinstance(SpoolError("x"), StoreError)
    store.close()


def test_a_state_folder_that_cannot_be_read_stops_medic_at_start(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the state folder should be")
    with pytest.raises(SpoolError, match="cannot read the incident spool"):
        SpoolingStore(FlakyDatabase(), state_dir=blocked)


def test_an_incident_moved_to_a_new_container_while_the_database_is_away_moves_there_too(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    incident = store.record_finding(finding(T0))
    new = replace(WEB, id=ContainerId("d" * 64))
    db.down = True

    store.move_incident(incident.id, new, at=T0 + timedelta(seconds=5), note="recreated")
    assert [line["op"] for line in spooled_lines(tmp_path / "spool.jsonl")] == ["move_incident"]
    assert [i.id for i in store.active_incidents(new.id)] == [incident.id]

    db.down = False
    assert store.replay() is True
    assert store.replay() is True  # written once, however often replayed
    assert db.rows.get(incident.id).container == new
    assert [e.summary for e in db.rows.get(incident.id).evidence] == [
        "shop-web-1 exited with code 3.",
        "recreated",
    ]
    store.close()


def test_a_person_resolving_in_the_database_leaves_the_view(tmp_path: Path) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path)
    incident = store.record_finding(finding(T0))
    store.set_status(incident.id, IncidentStatus.ESCALATED, at=T0 + timedelta(seconds=1))
    db.apply([SetStatus(new_id(), incident.id, IncidentStatus.RESOLVED, T0 + timedelta(hours=1))])

    assert store.active_incidents(WEB.id) == []
    # The next finding opens a new incident instead of adding to the resolved one.
    assert store.record_finding(finding(T0 + timedelta(hours=2))).id != incident.id
    store.close()


@pytest.mark.parametrize(
    "op",
    [
        OpenIncident(
            Incident(
                id=IncidentId("a" * 32),
                container=WEB,
                signal=Signal.EXITED,
                status=IncidentStatus.OPEN,
                opened_at=T0,
                updated_at=T0,
                summary="shop-web-1 exited with code 3.",
                evidence=(EvidenceEntry(T0, "shop-web-1 exited with code 3.", {"exit_code": 3}),),
            ),
            entry_id="e" * 32,
        ),
        AddEvidence("e" * 32, IncidentId("a" * 32), T0, "again", {"exit_code": 3, "oom": False}),
        RecordAttempt(attempt(IncidentId("a" * 32), T0, ok=False)),
        SetStatus("s" * 32, IncidentId("a" * 32), IncidentStatus.RESOLVED, T0, "by hand: fixed"),
        MoveIncident(
            "m" * 32,
            IncidentId("a" * 32),
            replace(WEB, id=ContainerId("d" * 64)),
            T0,
            "shop-web-1 was recreated as dddddddddddd",
        ),
    ],
)
def test_operations_survive_a_trip_through_a_spool_line(op: Operation) -> None:
    line = to_json(op)
    assert "\n" not in line
    assert from_json(line) == op


def test_a_line_that_is_no_operation_is_named() -> None:
    with pytest.raises(BadSpoolLine, match="unknown operation 'drop_table'"):
        from_json('{"op": "drop_table"}')
    with pytest.raises(BadSpoolLine, match="cannot be read"):
        from_json("{not json")


class FailsAfter(FlakyDatabase):
    """Goes down after ``batches`` successful writes, as a database dying mid-replay does."""

    def __init__(self) -> None:
        super().__init__()
        self.batches_left: int | None = None

    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        if self.batches_left is not None:
            if self.batches_left == 0:
                raise StoreUnavailable("the server closed the connection")
            self.batches_left -= 1
        super().apply(ops, term=term)


def test_a_replay_cut_short_keeps_exactly_what_was_not_committed(tmp_path: Path) -> None:
    db = FailsAfter()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,), batch=2)
    db.down = True
    incident = store.record_finding(finding(T0))
    attempts = [attempt(incident.id, T0 + timedelta(seconds=n)) for n in range(4)]
    for a in attempts:
        store.record_attempt(a)
    assert store.pending_changes() == 5

    db.down = False
    db.batches_left = 1  # the first batch (opened, first attempt) commits, then it dies
    assert store.replay() is False
    assert len(db.applied) == 2
    left = spooled_lines(tmp_path / "spool.jsonl")
    assert [line["id"] for line in left] == [a.id for a in attempts[1:]]
    assert store.pending_changes() == 3
    db.batches_left = None
    assert store.replay() is True
    assert len(db.rows.get(incident.id).attempts) == 4
    store.close()


class Refuses(FlakyDatabase):
    """Refuses one attempt for good, as a database with a constraint medic broke would."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused

    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        if any(isinstance(op, RecordAttempt) and op.attempt.id == self.refused for op in ops):
            raise StoreError("new row violates check constraint")
        super().apply(ops, term=term)


def test_a_change_the_database_refuses_is_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    bad = attempt(IncidentId("0" * 32), T0)
    db = Refuses(bad.id)
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    db.down = True
    incident = store.record_finding(finding(T0))
    store.record_attempt(replace(bad, incident_id=incident.id))
    good = attempt(incident.id, T0 + timedelta(seconds=5))
    store.record_attempt(good)
    db.down = False
    assert store.replay() is True
    assert [a.id for a in db.rows.get(incident.id).attempts] == [good.id]
    [rejected] = spooled_lines(tmp_path / "spool.rejected.jsonl")
    assert rejected["id"] == bad.id
    assert (tmp_path / "spool.jsonl").read_text() == ""
    store.close()


def test_migration_files_are_numbered_plain_sql_and_a_missing_set_is_an_error(
    tmp_path: Path,
) -> None:
    names = [m.name for m in available()]
    assert names[0] == "0001_incidents.sql"
    assert {"0003_diagnoses.sql", "0004_fixes.sql", "0005_incident_scope.sql"} <= set(names)
    assert [m.version for m in available()] == sorted(m.version for m in available())
    with pytest.raises(StoreError, match="lacks its SQL files"):
        available(tmp_path)
    (tmp_path / "0002_a.sql").write_text("SELECT 1;")
    (tmp_path / "0002_b.sql").write_text("SELECT 1;")
    with pytest.raises(StoreError, match="share a number"):
        available(tmp_path)
    (tmp_path / "0002_b.sql").unlink()
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(StoreError, match=r"not named like 0001_what\.sql"):
        available(tmp_path)


def test_an_open_incident_line_written_before_the_codec_is_still_read() -> None:
    earlier = (
        '{"container_id":"' + "c" * 64 + '","container_name":"shop-web-1","entry_id":"e1",'
        '"evidence":{"exit_code":3},"id":"' + "a" * 32 + '","op":"open_incident",'
        '"opened_at":"2026-05-01T12:00:00+00:00","project":"shop","service":"web",'
        '"signal":"exited","status":"open","summary":"shop-web-1 exited with code 3."}'
    )
    op = from_json(earlier)
    assert op == OpenIncident(
        Incident(
            id=IncidentId("a" * 32),
            container=WEB,
            signal=Signal.EXITED,
            status=IncidentStatus.OPEN,
            opened_at=T0,
            updated_at=T0,
            summary="shop-web-1 exited with code 3.",
            evidence=(EvidenceEntry(T0, "shop-web-1 exited with code 3.", {"exit_code": 3}),),
        ),
        entry_id="e1",
    )


def test_a_spool_line_with_a_wrong_type_is_named_not_guessed() -> None:
    line = to_json(RecordAttempt(attempt(IncidentId("a" * 32), T0))).replace(
        '"ok":true', '"ok":"yes"'
    )
    with pytest.raises(BadSpoolLine, match="'ok' must be true or false"):
        from_json(line)


class StartingUp(FlakyDatabase):
    """A database that says how long to wait, as a server still starting up can."""

    def __init__(self, advice: list[float | None]) -> None:
        super().__init__()
        self.advice = advice

    def _check(self) -> None:
        if self.advice:
            raise StoreUnavailable("the database system is starting up", delay=self.advice.pop(0))


def test_the_background_retry_waits_as_long_as_the_database_advises(tmp_path: Path) -> None:
    db = StartingUp([])
    pauses: list[float] = []
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(1, 2, 4), sleep=pauses.append)
    db.advice.extend([7.0, None, 0.5])
    incident = store.record_finding(finding(T0))
    wait_for(lambda: store.pending_changes() == 0, timeout=5, message="the spool to be written")
    store.close()
    # Advice first (7 s), the own backoff when there is none (2 s after two failures),
    # advice again (0.5 s); then the write goes through.
    assert pauses == [7.0, 2, 0.5]
    assert db.rows.get(incident.id).id == incident.id


def test_temporary_errors_carry_their_delay_and_old_callers_work_unchanged() -> None:
    from agent.errors import DockerUnavailable, TemporaryError

    assert StoreUnavailable("refused").delay is None
    assert StoreUnavailable("starting up", delay=2).delay == 2
    assert str(DockerUnavailable("no socket", delay=1.5)) == "no socket"
    assert isinstance(DockerUnavailable("x"), TemporaryError)
    with pytest.raises(ValueError, match="cannot be negative"):
        StoreUnavailable("x", delay=-1)


def resolved_incidents(store: IncidentStore, count: int, *, start: int = 0) -> list[Incident]:
    """``count`` incidents on as many containers, each opened then resolved."""
    made = []
    for n in range(start, start + count):
        ref = ContainerRef(ContainerId(f"{n:064x}"), f"shop-job-{n}", "shop", "job")
        at = T0 + timedelta(seconds=n)
        incident = store.record_finding(Finding(ref, Signal.EXITED, "exited", at))
        made.append(store.set_status(incident.id, IncidentStatus.RESOLVED, at=at))
    return made


def test_the_memory_store_keeps_every_active_incident_and_a_bounded_number_of_resolved() -> None:
    store = MemoryStore()
    active = store.record_finding(finding(T0))
    first, *_ = resolved_incidents(store, MAX_RESOLVED_KEPT + 300)
    assert store.held() == MAX_RESOLVED_KEPT + 1
    assert store.get(active.id).is_active
    with pytest.raises(IncidentNotFound):
        store.get(first.id)
    assert MAX_RESOLVED_KEPT == 1_000


def test_a_resolved_incident_used_recently_is_kept_longer() -> None:
    store = MemoryStore(max_resolved=3)
    a, b, c = resolved_incidents(store, 3)
    store.get(a.id)
    resolved_incidents(store, 1, start=10)
    assert store.get(a.id) == a
    with pytest.raises(IncidentNotFound):
        store.get(b.id)
    assert store.get(c.id) == c


def test_the_spools_view_of_postgres_is_bounded_and_the_database_keeps_everything(
    tmp_path: Path,
) -> None:
    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,))
    active = store.record_finding(finding(T0))
    made = resolved_incidents(store, MAX_RESOLVED_KEPT + 50)
    assert store.remembered() == MAX_RESOLVED_KEPT + 1
    assert db.rows.held() == MAX_RESOLVED_KEPT + 51
    # An incident the view forgot is read from the database.
    assert store.get(made[0].id).status is IncidentStatus.RESOLVED
    assert [i.id for i in store.active_incidents()] == [active.id]
    store.close()


# --- a medic that leads by a lease (docs/ha.md) ----------------------------------------------


def test_every_operation_on_incidents_keeps_its_lease_term_in_the_spool() -> None:
    incident = new_incident(finding(T0), scope="project=shop@ENGINE")
    ops: list[Operation] = [
        OpenIncident(incident, new_id(), term=3),
        AddEvidence(new_id(), incident.id, T0, "again", {}, signal=Signal.EXITED, term=3),
        RecordAttempt(attempt(incident.id, T0), term=3),
        SetStatus(new_id(), incident.id, IncidentStatus.ESCALATED, T0, "why", term=3),
        MoveIncident(new_id(), incident.id, WEB, T0, "moved", term=3),
    ]
    for op in ops:
        line = to_json(op)
        assert json.loads(line)["term"] == 3
        assert from_json(line) == op
    unleased = to_json(RecordAttempt(attempt(incident.id, T0)))
    assert "term" not in json.loads(unleased)
    assert from_json(unleased) == RecordAttempt(from_json(unleased).attempt)  # type: ignore[union-attr]
    with pytest.raises(BadSpoolLine, match="term must be a positive whole number"):
        from_json(to_json(ops[0]).replace('"term":3', '"term":"3"'))


def test_a_medic_that_may_not_act_writes_and_spools_nothing(tmp_path: Path) -> None:
    leading = [True]

    def fence() -> Term:
        if not leading[0]:
            raise FencedOut("this medic does not lead")
        return Term("project=shop@ENGINE", "a", 1)

    db = FlakyDatabase()
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,), fence=fence)
    incident = store.record_finding(finding(T0))
    leading[0] = False
    db.down = True
    with pytest.raises(FencedOut):
        store.record_finding(finding(T0 + timedelta(seconds=5), "exited again"))
    with pytest.raises(FencedOut):
        store.record_attempt(attempt(incident.id, T0))
    with pytest.raises(FencedOut):
        store.set_status(incident.id, IncidentStatus.RESOLVED, at=T0)
    assert store.pending_changes() == 0
    assert not (tmp_path / "spool.jsonl").exists() or spooled_lines(tmp_path / "spool.jsonl") == []
    db.down = False
    assert [len(i.evidence) for i in store.active_incidents()] == [1]
    store.close()


def test_a_leader_spools_under_its_term_and_the_replay_is_written_after_a_takeover(
    tmp_path: Path,
) -> None:
    """The leader spools while Postgres is away from it; another medic takes the lease
    (term 2); the spooled changes are history, written without the live term check."""
    clock_now = [T0]
    leases = FakeLeases(lambda: clock_now[0])
    scope = "project=shop@ENGINE"
    first = leases.claim(scope, "a", seconds=3).term
    db = FlakyDatabase(leases)
    store = SpoolingStore(db, state_dir=tmp_path, retry_delays=(3600,), fence=lambda: first)
    db.down = True
    incident = store.record_finding(finding(T0))
    store.record_attempt(attempt(incident.id, T0))
    assert [line["term"] for line in spooled_lines(tmp_path / "spool.jsonl")] == [1, 1]
    clock_now[0] = T0 + timedelta(seconds=10)
    assert leases.claim(scope, "b", seconds=3).token == 2
    db.down = False
    assert store.replay() is True
    assert len(db.rows.get(incident.id).attempts) == 1
    # A live write of the old term is refused by the database now.
    with pytest.raises(FencedOut):
        store.record_attempt(attempt(incident.id, T0 + timedelta(seconds=11)))
    assert len(db.rows.get(incident.id).attempts) == 1
    store.close()
