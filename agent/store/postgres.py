"""Incidents, attempts and health observations kept in Postgres, for people to review.

This is the only module (with the migration runner) that imports psycopg. Its
errors are translated here: a connection that cannot be made or is lost becomes
``StoreUnavailable``, anything else ``StoreError``, so the spooling store and
the CLI decide what to do by type. Every write is an idempotent operation keyed
by an id medic made (see ``agent.store.ops``), so a spool replay stores each row
once. Health observations are sampled here and pruned after the retention period.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from loguru import logger
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agent.errors import StoreError, StoreUnavailable
from agent.model import (
    ACTIVE_STATUSES,
    SEVERITY,
    Attempt,
    AttemptId,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    EvidenceEntry,
    Finding,
    Incident,
    IncidentId,
    IncidentStatus,
    Signal,
)
from agent.store.base import MAX_EVIDENCE, IncidentNotFound, IncidentQuery, new_id, new_incident
from agent.store.migrate import migrate
from agent.store.ops import (
    AddEvidence,
    OpenIncident,
    Operation,
    OperationStore,
    RecordAttempt,
    SetStatus,
)

T = TypeVar("T")
Row = dict[str, Any]
Cursor = psycopg.Cursor[Row]

#: Observations older than the retention period are deleted this many rows a statement.
PRUNE_BATCH = 5000

#: How often retention pruning runs at most.
PRUNE_EVERY = timedelta(hours=1)

_ACTIVE = tuple(str(s) for s in ACTIVE_STATUSES)
_SEVERITY = [str(s) for s in SEVERITY]

#: Sent with every connection so a lost network or a dead server is noticed in
#: seconds rather than at the kernel's default of minutes.
_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 15000,
    "application_name": "medic",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a libpq URL, without its password, for messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "the database in MEDIC_DATABASE_URL"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or parts.get("user") or ""
    return f"{host}:{port}/{db}"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def connect(url: str) -> psycopg.Connection[Row]:
    """A connection in autocommit mode; StoreUnavailable saying what failed, where."""
    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row, **_CONNECT_OPTIONS)
    except psycopg.OperationalError as e:
        raise StoreUnavailable(
            f"cannot connect to Postgres at {describe_url(url)}: {_one_line(e)}"
        ) from e
    except psycopg.Error as e:
        raise StoreError(f"cannot use MEDIC_DATABASE_URL: {_one_line(e)}") from e


def run_migrations(url: str) -> list[str]:
    """Apply missing migrations to the database at ``url``; the names applied."""
    conn = connect(url)
    try:
        return migrate(conn)
    except psycopg.OperationalError as e:
        raise StoreUnavailable(
            f"lost the connection to Postgres at {describe_url(url)} while migrating: "
            f"{_one_line(e)}"
        ) from e
    except psycopg.Error as e:
        raise StoreError(f"a database migration failed: {_one_line(e)}") from e
    finally:
        conn.close()


@dataclass
class _Kept:
    state: str
    health: str
    at: datetime


class PostgresStore(OperationStore):
    """The durable store. One connection, shared by the supervisor's threads under a lock.

    With ``migrate=True`` the schema is brought up to date on the first successful
    connection, which may come long after start-up when Postgres was away then.
    """

    def __init__(
        self,
        url: str,
        *,
        migrate: bool = True,
        observation_interval: float = 300.0,
        retention_days: int = 30,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._url = url
        self._migrated = not migrate
        self._observation_interval = timedelta(seconds=observation_interval)
        self._retention = timedelta(days=retention_days)
        self._now = now
        self._conn: psycopg.Connection[Row] | None = None
        self._lock = threading.RLock()
        self._kept: dict[str, _Kept] = {}
        self._next_prune_at: datetime | None = None

    @property
    def where(self) -> str:
        """Where the database is, for log lines: host, port and database name."""
        return describe_url(self._url)

    # --- connection and error translation ---------------------------------------------------

    def _connection(self) -> tuple[psycopg.Connection[Row], bool]:
        fresh = self._conn is None or self._conn.closed
        if fresh:
            self._conn = connect(self._url)
        assert self._conn is not None
        if not self._migrated:
            try:
                migrate(self._conn)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as e:
                raise StoreError(f"a database migration failed: {_one_line(e)}") from e
            self._migrated = True
        return self._conn, fresh

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _run(self, fn: Callable[[Cursor], T], *, pipeline: bool = False) -> T:
        """Run ``fn`` in one transaction, translating psycopg's errors.

        A connection found broken when it was reused is replaced once: after a
        Postgres restart the first statement on the old connection always fails.
        """
        with self._lock:
            for retry in (True, False):
                try:
                    conn, fresh = self._connection()
                    # A pipeline sends a batch's statements without waiting for each answer.
                    batching = conn.pipeline() if pipeline else contextlib.nullcontext()
                    with batching, conn.transaction(), conn.cursor() as cur:
                        return fn(cur)
                except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                    self._drop()
                    if retry and not fresh and not isinstance(e, psycopg.errors.QueryCanceled):
                        continue
                    raise StoreUnavailable(
                        f"lost the connection to Postgres at {self.where}: {_one_line(e)}"
                    ) from e
                except psycopg.errors.UndefinedTable as e:
                    raise StoreError(
                        f"the incident tables are missing at {self.where}; create them with "
                        "medic db migrate"
                    ) from e
                except psycopg.errors.ForeignKeyViolation as e:
                    raise IncidentNotFound(
                        f"the incident this change belongs to is not stored: {_one_line(e)}"
                    ) from e
                except psycopg.Error as e:
                    raise StoreError(f"Postgres refused a change: {_one_line(e)}") from e
            raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        """One line about the database, read over a real connection (for medic doctor)."""

        def read(cur: Cursor) -> str:
            cur.execute("SELECT current_setting('server_version') AS version")
            row = cur.fetchone()
            version = row["version"] if row else "?"
            cur.execute("SELECT count(*) AS applied FROM medic_schema_migrations")
            applied = cur.fetchone()
            count = applied["applied"] if applied else 0
            return f"Postgres {version} at {self.where}; {count} migration(s) applied"

        return self._run(read)

    def close(self) -> None:
        with self._lock:
            self._drop()

    # --- writes --------------------------------------------------------------------------------

    def apply(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return

        def write(cur: Cursor) -> None:
            for op in ops:
                _apply(cur, op)

        self._run(write, pipeline=len(ops) > 1)

    def record_finding(self, finding: Finding) -> Incident:
        def write(cur: Cursor) -> IncidentId:
            cur.execute(
                "SELECT id FROM incidents WHERE container_id = %s AND status = ANY(%s) FOR UPDATE",
                (finding.container.id, list(_ACTIVE)),
            )
            row = cur.fetchone()
            if row is not None:
                incident_id = IncidentId(row["id"])
                _apply(
                    cur,
                    AddEvidence(
                        new_id(),
                        incident_id,
                        finding.observed_at,
                        finding.summary,
                        dict(finding.evidence),
                        signal=finding.signal,
                    ),
                )
                return incident_id
            incident = new_incident(finding)
            _apply(cur, OpenIncident(incident, new_id()))
            return incident.id

        return self.get(self._run(write))

    def record_attempt(self, attempt: Attempt) -> None:
        self.apply([RecordAttempt(attempt)])

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        found = self.get(incident_id)
        self.apply([SetStatus(new_id(), found.id, status, at, note)])
        return self.get(found.id)

    # --- reads ---------------------------------------------------------------------------------

    def get(self, incident_id: str) -> Incident:
        def read(cur: Cursor) -> Incident:
            cur.execute(
                "SELECT * FROM incidents WHERE id = %s OR id LIKE %s ORDER BY id = %s DESC LIMIT 3",
                (incident_id, _prefix(incident_id), incident_id),
            )
            rows = cur.fetchall()
            exact = bool(rows) and rows[0]["id"] == incident_id
            if exact or (len(rows) == 1 and incident_id):
                row = rows[0]
            elif rows and incident_id:
                raise IncidentNotFound(
                    f"Incident id {incident_id!r} is ambiguous: several incidents start with it."
                )
            else:
                raise IncidentNotFound(f"There is no incident with id {incident_id!r}.")
            cur.execute(
                "SELECT * FROM incident_evidence WHERE incident_id = %s ORDER BY observed_at, seq",
                (row["id"],),
            )
            entries = [
                EvidenceEntry(r["observed_at"], r["summary"], r["evidence"]) for r in cur.fetchall()
            ]
            if len(entries) > MAX_EVIDENCE:
                entries = [entries[0], *entries[-(MAX_EVIDENCE - 1) :]]
            attempts = _attempts(cur, [row["id"]]).get(row["id"], [])
            return _incident(row, evidence=tuple(entries), attempts=tuple(attempts))

        return self._run(read)

    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        """Incidents newest first, with their attempts but without their evidence (see get)."""
        q = query or IncidentQuery()
        where: list[str] = []
        params: list[Any] = []
        if q.active_only:
            where.append("status <> 'resolved'")
        if q.service is not None:
            where.append("service = %s")
            params.append(q.service)
        if q.since is not None:
            where.append("opened_at >= %s")
            params.append(q.since)
        if q.container_id is not None:
            where.append("container_id = %s")
            params.append(q.container_id)
        sql = "SELECT * FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY opened_at DESC, id"
        if q.limit is not None:
            sql += " LIMIT %s"
            params.append(q.limit)

        def read(cur: Cursor) -> list[Incident]:
            cur.execute(sql.encode(), params)
            rows = cur.fetchall()
            attempts = _attempts(cur, [r["id"] for r in rows])
            return [_incident(r, attempts=tuple(attempts.get(r["id"], []))) for r in rows]

        return self._run(read)

    # --- observations and retention ------------------------------------------------------------

    def record_observations(self, snapshots: Sequence[ContainerSnapshot]) -> None:
        """Keep a snapshot when its state or health changed, or the interval has passed."""
        keep: list[ContainerSnapshot] = []
        with self._lock:
            for s in snapshots:
                last = self._kept.get(s.ref.id)
                if (
                    last is None
                    or last.state != s.state
                    or last.health != s.health
                    or s.observed_at - last.at >= self._observation_interval
                ):
                    keep.append(s)
            if keep:
                self._run(lambda cur: _insert_observations(cur, keep))
                for s in keep:
                    self._kept[s.ref.id] = _Kept(str(s.state), str(s.health), s.observed_at)
            now = self._now()
            if self._next_prune_at is None or now >= self._next_prune_at:
                self._next_prune_at = now + PRUNE_EVERY
                removed = self.prune_observations(before=now - self._retention)
                if removed:
                    logger.info(
                        "Deleted {} health observations older than {} days.",
                        removed,
                        self._retention.days,
                    )

    def prune_observations(self, *, before: datetime, batch: int = PRUNE_BATCH) -> int:
        """Delete observations older than ``before``, ``batch`` rows a transaction."""
        total = 0
        while True:

            def delete(cur: Cursor) -> int:
                cur.execute(
                    "DELETE FROM observations WHERE id IN ("
                    " SELECT id FROM observations WHERE observed_at < %s LIMIT %s)",
                    (before, batch),
                )
                return cur.rowcount

            removed = self._run(delete)
            total += removed
            if removed < batch:
                return total


def _prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _insert_observations(cur: Cursor, snapshots: Sequence[ContainerSnapshot]) -> None:
    cur.executemany(
        "INSERT INTO observations (container_id, container_name, project, service, state,"
        " health, restart_count, exit_code, observed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                s.ref.id,
                s.ref.name,
                s.ref.project,
                s.ref.service,
                str(s.state),
                str(s.health),
                s.restart_count,
                s.exit_code,
                s.observed_at,
            )
            for s in snapshots
        ],
    )


def _attempts(cur: Cursor, incident_ids: list[str]) -> dict[str, list[Attempt]]:
    if not incident_ids:
        return {}
    cur.execute(
        "SELECT * FROM attempts WHERE incident_id = ANY(%s) ORDER BY started_at, id",
        (incident_ids,),
    )
    found: dict[str, list[Attempt]] = {}
    for r in cur.fetchall():
        found.setdefault(r["incident_id"], []).append(
            Attempt(
                id=AttemptId(r["id"]),
                incident_id=IncidentId(r["incident_id"]),
                playbook=r["playbook"],
                action=r["action"],
                started_at=r["started_at"],
                finished_at=r["finished_at"],
                ok=r["ok"],
                error=r["error"],
                output=r["output"],
            )
        )
    return found


def _incident(
    row: Row,
    *,
    evidence: tuple[EvidenceEntry, ...] = (),
    attempts: tuple[Attempt, ...] = (),
) -> Incident:
    return Incident(
        id=IncidentId(row["id"]),
        container=ContainerRef(
            id=ContainerId(row["container_id"]),
            name=row["container_name"],
            project=row["project"],
            service=row["service"],
        ),
        signal=Signal(row["signal"]),
        status=IncidentStatus(row["status"]),
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        summary=row["summary"],
        resolved_at=row["resolved_at"],
        evidence=evidence,
        attempts=attempts,
        note=row["note"],
    )


def _apply(cur: Cursor, op: Operation) -> None:
    """Write one operation; a second write of the same operation changes nothing.

    Apart from opening an incident, each is one statement whose UPDATE only runs when
    its INSERT stored a new row, so a batch needs no answers until its commit and
    can be sent in one pipeline.
    """
    if isinstance(op, OpenIncident):
        _open(cur, op)
    elif isinstance(op, AddEvidence):
        # No signal (an older spool line): array_position(..., NULL) is NULL, no change.
        signal = str(op.signal) if op.signal is not None else None
        cur.execute(
            "WITH new AS ("
            " INSERT INTO incident_evidence (id, incident_id, observed_at, summary, evidence)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
            " UPDATE incidents SET updated_at = greatest(updated_at, %s),"
            # One failure episode takes the name of its gravest signal (exits that
            # become a crash loop); the fingerprint follows the signal.
            " signal = CASE WHEN array_position(%s::text[], %s::text)"
            "  < array_position(%s::text[], signal) THEN %s::text ELSE signal END,"
            " fingerprint = CASE WHEN array_position(%s::text[], %s::text)"
            "  < array_position(%s::text[], signal)"
            "  THEN coalesce(project, '-') || '/' || coalesce(service, container_name)"
            "   || '/' || %s::text ELSE fingerprint END"
            " FROM new WHERE incidents.id = new.incident_id",
            (
                op.entry_id,
                op.incident_id,
                op.observed_at,
                op.summary,
                Jsonb(dict(op.evidence)),
                op.observed_at,
                *((_SEVERITY, signal, _SEVERITY, signal) * 2),
            ),
        )
    elif isinstance(op, RecordAttempt):
        a = op.attempt
        cur.execute(
            "WITH new AS ("
            " INSERT INTO attempts (id, incident_id, playbook, action, started_at, finished_at,"
            " ok, error, output) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
            " UPDATE incidents SET"
            " status = CASE WHEN status = 'open' THEN 'healing' ELSE status END,"
            " updated_at = greatest(updated_at, %s)"
            " FROM new WHERE incidents.id = new.incident_id",
            (
                a.id,
                a.incident_id,
                a.playbook,
                a.action,
                a.started_at,
                a.finished_at,
                a.ok,
                a.error,
                a.output,
                a.finished_at,
            ),
        )
    else:
        resolved = op.status is IncidentStatus.RESOLVED
        cur.execute(
            "WITH new AS ("
            " INSERT INTO incident_status_changes (id, incident_id, status, at, note)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
            " UPDATE incidents SET status = %s, updated_at = %s, resolved_at = %s,"
            " note = coalesce(%s, note)"
            " FROM new WHERE incidents.id = new.incident_id",
            (
                op.change_id,
                op.incident_id,
                str(op.status),
                op.at,
                op.note,
                str(op.status),
                op.at,
                op.at if resolved else None,
                op.note,
            ),
        )


def _open(cur: Cursor, op: OpenIncident) -> None:
    i = op.incident
    cur.execute("SELECT 1 FROM incidents WHERE id = %s", (i.id,))
    if cur.fetchone() is not None:
        return  # written before: a replay
    # Another incident for this container may be active in the database:
    # opened by a medic that ran before this one, while this one could not see
    # Postgres. The newer one carries on; the older one is closed, saying why.
    cur.execute(
        "SELECT id FROM incidents WHERE container_id = %s AND status = ANY(%s) FOR UPDATE",
        (i.container.id, list(_ACTIVE)),
    )
    for row in cur.fetchall():
        _apply(
            cur,
            SetStatus(
                change_id=f"{i.id}-supersedes-{row['id']}",
                incident_id=IncidentId(row["id"]),
                status=IncidentStatus.RESOLVED,
                at=i.opened_at,
                note=f"superseded by incident {i.id[:8]}, opened while Postgres was unreachable",
            ),
        )
    first = i.evidence[0] if i.evidence else EvidenceEntry(i.opened_at, i.summary)
    cur.execute(
        "INSERT INTO incidents (id, project, service, container_id, container_name, signal,"
        " status, summary, fingerprint, opened_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            i.id,
            i.container.project,
            i.container.service,
            i.container.id,
            i.container.name,
            str(i.signal),
            str(i.status),
            i.summary,
            i.fingerprint,
            i.opened_at,
            i.opened_at,
        ),
    )
    cur.execute(
        "INSERT INTO incident_evidence (id, incident_id, observed_at, summary, evidence)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (op.entry_id, i.id, first.observed_at, first.summary, Jsonb(dict(first.evidence))),
    )
