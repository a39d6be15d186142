"""Measure how fast incidents reach Postgres, and how big a spool recovers in one poll.

It starts a Postgres container (image from MEDIC_TEST_POSTGRES_IMAGE, default the
locally built ``medic-test/postgres:15``, with its default durable settings) and
records through ``SpoolingStore(PostgresStore)``, as ``medic run`` does:

* **incidents / s** and **attempts / s**: ``record_finding`` for N containers (each
  opens an incident), then ``record_attempt`` twice for each, with Postgres up:
  every call is one committed transaction;
* **replay**: K changes spooled to disk while Postgres is "away" (the backend
  answers StoreUnavailable), then the time to write them all once it is back;
  from that rate, the largest spool that is written within one poll interval
  (default 30 s).

Usage: ``.venv/bin/python bench/store_bench.py [--incidents 2000] [--spool 2000 20000]``.
Figures are printed and written to docs/benchmarks.md between markers. The
container it starts is removed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import psycopg
from docs_block import write_block

from agent.errors import StoreUnavailable
from agent.model import (
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    Diagnosis,
    Finding,
    Fix,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
    Signal,
)
from agent.store import IncidentQuery, new_id
from agent.store.lease import Term
from agent.store.ops import Operation, OperationStore, RecordDiagnosis, RecordNotification
from agent.store.postgres import PostgresStore, run_migrations
from agent.store.spool import SpoolingStore

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- store-bench:begin -->", "<!-- store-bench:end -->"
USER, PASSWORD = "medic", "bench"


class Switchable(OperationStore):
    """Postgres that can be made to look unreachable, to fill the spool."""

    def __init__(self, real: PostgresStore) -> None:
        self.real = real
        self.up = True

    def _check(self) -> None:
        if not self.up:
            raise StoreUnavailable("switched off by the benchmark")

    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        self._check()
        self.real.apply(ops, term=term)

    def record_finding(self, finding: Finding) -> Incident:
        self._check()
        return self.real.record_finding(finding)

    def record_attempt(self, attempt: Attempt) -> None:
        self._check()
        self.real.record_attempt(attempt)

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        self._check()
        return self.real.set_status(incident_id, status, at=at, note=note)

    def get(self, incident_id: str) -> Incident:
        self._check()
        return self.real.get(incident_id)

    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        self._check()
        return self.real.list_incidents(query)

    def close(self) -> None:
        self.real.close()

    # Diagnoses, fixes and notification records are not measured here; they go to the
    # real store as they are.
    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        self.apply([RecordDiagnosis(diagnosis)])

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        return self.real.diagnoses(incident_id)

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        return self.real.find_reusable(fingerprint, since=since)

    def tokens_since(self, since: datetime) -> int:
        return self.real.tokens_since(since)

    def record_fix(self, fix: Fix) -> None:
        self._check()
        self.real.record_fix(fix)

    def update_fix(self, fix: Fix) -> None:
        self._check()
        self.real.update_fix(fix)

    def get_fix(self, ref: str) -> Fix:
        return self.real.get_fix(ref)

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        return self.real.list_fixes(include_decided=include_decided)

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        return self.real.fixes_of_incident(incident_id)

    def record_notification(self, record: NotificationRecord) -> None:
        self.apply([RecordNotification(record)])

    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        return self.real.notifications(incident_id)


def start_postgres(client: Any, image: str) -> tuple[Any, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    container = client.containers.run(
        image,
        detach=True,
        name=f"medic-bench-pg-{uuid.uuid4().hex[:8]}",
        environment={"POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD, "POSTGRES_DB": USER},
        ports={"5432/tcp": ("127.0.0.1", port)},
    )
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{USER}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return container, url
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                container.remove(force=True)
                raise
            time.sleep(0.3)


def findings(count: int, at: datetime) -> list[Finding]:
    return [
        Finding(
            ContainerRef(ContainerId(uuid.uuid4().hex * 2), f"bench-svc{n}-1", "bench", f"svc{n}"),
            Signal.EXITED,
            f"bench-svc{n}-1 exited with code 1.",
            at,
            {"exit_code": 1},
        )
        for n in range(count)
    ]


def attempt(incident_id: IncidentId, at: datetime) -> Attempt:
    return Attempt(
        id=AttemptId(new_id()),
        incident_id=incident_id,
        playbook="start-exited",
        action="start",
        started_at=at,
        finished_at=at + timedelta(seconds=1),
        ok=True,
        output="started",
    )


def measure_writes(url: str, count: int, state_dir: Path) -> dict[str, float]:
    store = SpoolingStore(PostgresStore(url), state_dir=state_dir)
    now = datetime.now(UTC)
    batch = findings(count, now)
    started = time.perf_counter()
    incidents = [store.record_finding(f) for f in batch]
    opened = time.perf_counter()
    for incident in incidents:
        store.record_attempt(attempt(incident.id, now))
        store.record_attempt(attempt(incident.id, now))
    done = time.perf_counter()
    store.close()
    return {
        "incidents_per_s": count / (opened - started),
        "attempts_per_s": 2 * count / (done - opened),
    }


def measure_replay(url: str, changes: int, state_dir: Path) -> dict[str, float]:
    backend = Switchable(PostgresStore(url))
    store = SpoolingStore(backend, state_dir=state_dir, retry_delays=(3600,))
    backend.up = False
    now = datetime.now(UTC)
    # Each incident: opened, two attempts, resolved = 4 changes.
    for f in findings(changes // 4, now):
        incident = store.record_finding(f)
        store.record_attempt(attempt(incident.id, now))
        store.record_attempt(attempt(incident.id, now))
        store.set_status(incident.id, IncidentStatus.RESOLVED, at=now + timedelta(seconds=5))
    pending = store.pending_changes()
    spool_bytes = store.path.stat().st_size
    backend.up = True
    started = time.perf_counter()
    assert store.replay(), "the replay did not finish"
    took = time.perf_counter() - started
    store.close()
    return {
        "changes": float(pending),
        "spool_kib": spool_bytes / 1024,
        "seconds": took,
        "per_s": pending / took,
    }


def write_docs(writes: dict[str, float], replays: list[dict[str, float]], interval: float) -> str:
    per_s = min(r["per_s"] for r in replays)
    lines = [
        BEGIN,
        "## The incident store (`bench/store_bench.py`)",
        "",
        "Writes through `SpoolingStore(PostgresStore)` as `medic run` makes them, one",
        "committed transaction per call; then changes spooled while Postgres was away",
        "(opened, two attempts, resolved per incident) and the time to write them back.",
        "Run it with `.venv/bin/python bench/store_bench.py`.",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `bench/store_bench.py` "
        "(2 cores, Postgres 15 in a local container, fsync on).",
        "",
        "| through SpoolingStore(PostgresStore), Postgres up | per second |",
        "|---|---:|",
        f"| incidents opened (`record_finding`) | {writes['incidents_per_s']:.0f} |",
        f"| attempts recorded (`record_attempt`) | {writes['attempts_per_s']:.0f} |",
        "",
        "| spooled changes | spool size | replay time | changes / s |",
        "|---:|---:|---:|---:|",
    ]
    for r in replays:
        lines.append(
            f"| {r['changes']:.0f} | {r['spool_kib']:.0f} KiB | {r['seconds']:.2f} s "
            f"| {r['per_s']:.0f} |"
        )
    lines += [
        "",
        f"At the slower replay rate, a spool of about **{per_s * interval:,.0f} changes** "
        f"(some {per_s * interval / 4:,.0f} incidents) is written within one {interval:g} s "
        "poll interval.",
        END,
    ]
    block = "\n".join(lines)
    write_block(DOCS, block, BEGIN, END)
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=2000)
    parser.add_argument("--spool", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument(
        "--image", default=os.environ.get("MEDIC_TEST_POSTGRES_IMAGE", "medic-test/postgres:15")
    )
    args = parser.parse_args()
    client = docker.from_env()
    container, url = start_postgres(client, args.image)
    try:
        run_migrations(url)
        with tempfile.TemporaryDirectory() as tmp:
            writes = measure_writes(url, args.incidents, Path(tmp) / "writes")
            print(
                f"{writes['incidents_per_s']:.0f} incidents/s, "
                f"{writes['attempts_per_s']:.0f} attempts/s",
                flush=True,
            )
            replays = []
            for size in args.spool:
                row = measure_replay(url, size, Path(tmp) / f"replay-{size}")
                print(
                    f"replayed {row['changes']:.0f} spooled changes ({row['spool_kib']:.0f} KiB) "
                    f"in {row['seconds']:.2f} s: {row['per_s']:.0f} changes/s",
                    flush=True,
                )
                replays.append(row)
        print(write_docs(writes, replays, args.interval))
    finally:
        container.remove(force=True)
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
