"""A medic killed with SIGKILL while it spools loses at most the line it was writing.

Postgres is down throughout the writes (MEDIC_DATABASE_URL points at a closed
port), so every change goes to spool.jsonl. The writer is killed with SIGKILL
in the middle of its writes, then a real ``medic run`` starts on the same state
folder with a real Postgres: every whole line must reach the database once, and
a torn last line must be set aside in a file of its own, never dropped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from helpers import ComposeProject, wait_for
from medic_process import ROOT, medic_env, start

from agent.store.ops import (
    AddEvidence,
    OpenIncident,
    Operation,
    RecordAttempt,
    SetStatus,
    from_json,
)

if TYPE_CHECKING:
    from pgfixtures import PostgresServer

pytestmark = pytest.mark.docker


#: Opens an incident with a large piece of evidence and resolves it, again and again.
#: Lines this large are written in several pieces, so a SIGKILL can cut one.
SPOOLING_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent.clock import utcnow
    from agent.model import ContainerId, ContainerRef, Finding, IncidentStatus, Signal
    from agent.store.postgres import PostgresStore
    from agent.store.spool import SpoolingStore

    state, url = Path(sys.argv[1]), sys.argv[2]
    store = SpoolingStore(PostgresStore(url), state_dir=state, retry_delays=(3600,))
    big = "x" * 2_500_000
    n = 0
    while True:
        ref = ContainerRef(ContainerId(f"{n:064x}"), f"job-{n}", "spoolcrash", "job")
        at = utcnow()
        incident = store.record_finding(
            Finding(ref, Signal.EXITED, f"job-{n} exited", at, {"output": big})
        )
        store.set_status(incident.id, IncidentStatus.RESOLVED, at=at)
        n += 1
    """
)

PLAYBOOK = textwrap.dedent(
    """
    version: 1
    playbooks:
      - name: start-again
        match:
          signals: [exited, crash_loop]
        actions:
          - start
        backoff: {initial: 0.2s, factor: 1, max: 0.2s}
        escalate: {after_attempts: 100000, within: 1m}
    """
)

#: A crash-looping container keeps being started, so spooled changes keep coming.
STEADY = {"MEDIC_CRASH_LOOP_DEATHS": "1000"}


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def whole_lines(spool: Path) -> tuple[list[Operation], bytes]:
    """The operations on the spool's whole lines, and the torn tail after them (or b"")."""
    data = spool.read_bytes()
    cut = data.rfind(b"\n") + 1
    return [from_json(line.decode()) for line in data[:cut].splitlines() if line], data[cut:]


def stored(url: str, op: Operation) -> bool:
    """Whether the database holds the row ``op`` writes."""
    key: str
    if isinstance(op, OpenIncident):
        sql, key = "SELECT 1 FROM incidents WHERE id = %s", op.incident.id
    elif isinstance(op, AddEvidence):
        sql, key = "SELECT 1 FROM incident_evidence WHERE id = %s", op.entry_id
    elif isinstance(op, RecordAttempt):
        sql, key = "SELECT 1 FROM attempts WHERE id = %s", op.attempt.id
    else:
        assert isinstance(op, SetStatus)
        sql, key = "SELECT 1 FROM incident_status_changes WHERE id = %s", op.change_id
    with psycopg.connect(url) as conn:
        return conn.execute(sql.encode(), (key,)).fetchone() is not None


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    assert row is not None
    return int(row[0])


def half_written_after_whole_lines(spool: Path, writer: subprocess.Popen[bytes], log: Path) -> bool:
    """Whether the spool holds a few whole lines and does not end in a newline."""
    assert writer.poll() is None, log.read_text()
    try:
        fd = os.open(spool, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(fd).st_size
        return size > 3 * 2_500_000 and os.pread(fd, 1, size - 1) != b"\n"
    finally:
        os.close(fd)


def recover_with_medic_run(
    started: list[subprocess.Popen[bytes]], *, env: dict[str, str], log: Path, spool: Path
) -> None:
    """Start medic run with Postgres up; wait until the spool is written; stop it."""
    medic = start(started, [sys.executable, "-m", "agent", "run"], env, log)
    wait_for(
        lambda: medic.poll() is not None or (spool.exists() and spool.stat().st_size == 0),
        timeout=120,
        interval=0.5,
        message="the spool to be written to Postgres",
    )
    # It handles SIGTERM once it supervises; before that the signal would kill it.
    wait_for(
        lambda: medic.poll() is not None or "medic is supervising" in log.read_text(),
        timeout=60,
        message="medic run to be supervising",
    )
    assert medic.poll() is None, log.read_text()
    medic.send_signal(signal.SIGTERM)
    assert medic.wait(timeout=60) == 0, log.read_text()


def test_a_writer_killed_mid_line_loses_only_that_line(
    tmp_path: Path, own_postgres: PostgresServer, processes: list[subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "state"
    spool = state / "spool.jsonl"
    down = f"postgresql://medic:medic-test@127.0.0.1:{closed_port()}/medic"
    ops: list[Operation] = []
    torn = b""
    # The kill is sent as soon as a line is seen half written; the writer may still
    # finish that line before the kill lands. Then it is started again, on the same
    # spool, and killed again.
    for _ in range(5):
        writer = start(
            processes,
            [sys.executable, "-c", SPOOLING_CHILD, str(state), down],
            {**os.environ, "PYTHONPATH": str(ROOT)},
            tmp_path / "writer.log",
        )
        wait_for(
            lambda w=writer: half_written_after_whole_lines(spool, w, tmp_path / "writer.log"),
            timeout=120,
            interval=0,
            message="a line half written",
        )
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        ops, torn = whole_lines(spool)
        if torn:
            break
    assert torn, "five kills all came after the line was finished"
    assert len(ops) >= 4

    url = own_postgres.url()
    playbooks = tmp_path / "playbooks.yml"
    playbooks.write_text(PLAYBOOK)
    env = medic_env(
        state=state, url=url, project=f"spoolcrash-{time.time_ns()}", playbooks=playbooks, **STEADY
    )
    recover_with_medic_run(processes, env=env, log=tmp_path / "medic.log", spool=spool)

    assert all(stored(url, op) for op in ops)
    opened = sum(isinstance(op, OpenIncident) for op in ops)
    assert count(url, "incidents") == opened
    [aside] = list(state.glob("spool.jsonl.torn-*"))
    assert aside.read_bytes() == torn
    assert aside.stat().st_mode & 0o777 == 0o600
    assert str(aside) in (tmp_path / "medic.log").read_text()
    assert spool.read_bytes() == b""


def test_medic_run_killed_while_it_spools_a_crash_loop_loses_no_whole_line(
    tmp_path: Path,
    own_postgres: PostgresServer,
    compose_project: ComposeProject,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    compose_project.run("job", command=["sh", "-c", "sleep 0.5; exit 3"], stop_timeout=1)
    state = tmp_path / "state"
    spool = state / "spool.jsonl"
    playbooks = tmp_path / "playbooks.yml"
    playbooks.write_text(PLAYBOOK)
    down = f"postgresql://medic:medic-test@127.0.0.1:{closed_port()}/medic"
    log = tmp_path / "medic-down.log"
    medic = start(
        processes,
        [sys.executable, "-m", "agent", "run"],
        medic_env(
            state=state,
            url=down,
            project=compose_project.name,
            playbooks=playbooks,
            # A medic that never reaches Postgres can hold no lease, so it would only
            # stand by: this is the lone medic that heals through an outage (docs/ha.md).
            MEDIC_LEADER_ELECTION="false",
            **STEADY,
        ),
        log,
    )

    def lines() -> int:
        assert medic.poll() is None, log.read_text()
        return spool.read_bytes().count(b"\n") if spool.exists() else 0

    # It keeps writing (findings, attempts) while the container crash-loops; kill it
    # in the middle of that, without warning.
    wait_for(lambda: lines() >= 12, timeout=120, interval=0.05, message="a dozen spooled lines")
    medic.send_signal(signal.SIGKILL)
    medic.wait(timeout=30)
    ops, torn = whole_lines(spool)
    attempts = [op for op in ops if isinstance(op, RecordAttempt)]
    assert attempts, "the crash loop should have been healed at least once"

    url = own_postgres.url()
    env = medic_env(
        state=state, url=url, project=compose_project.name, playbooks=playbooks, **STEADY
    )
    recover_with_medic_run(processes, env=env, log=tmp_path / "medic-up.log", spool=spool)

    assert all(stored(url, op) for op in ops)
    asides = list(state.glob("spool.jsonl.torn-*"))
    if torn:  # where the kill fell is chance: a torn line is set aside, whole
        assert [p.read_bytes() for p in asides] == [torn]
    else:
        assert asides == []
    spooled_ids = {op.attempt.id for op in attempts}
    with psycopg.connect(url) as conn:
        rows = conn.execute(b"SELECT id, count(*) FROM attempts GROUP BY id").fetchall()
    counts: dict[str, Any] = dict(rows)
    assert spooled_ids <= set(counts)
    assert all(n == 1 for n in counts.values())
