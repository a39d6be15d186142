"""Incidents, attempts and health observations kept in Postgres, for people to review.

This is the only module (with the migration runner) that imports psycopg. Its
errors are translated here: a connection that cannot be made or is lost becomes
``StoreUnavailable``, anything else ``StoreError``, so the spooling store and
the CLI decide what to do by type. Every write is an idempotent operation keyed
by an id medic made (see ``agent.store.ops``), so a spool replay stores each row
once. Health observations are sampled here and pruned after the retention period.

The leases of ``agent.store.lease`` live here too (``PostgresLeases``), and every
incident or attempt write made under a term checks that term against the lease row
in its own transaction (``_check_term``), so a medic that no longer leads writes
nothing (docs/ha.md).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from loguru import logger
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from agent.clock import utcnow
from agent.codec import (
    CodecError,
    attempt_from_dict,
    diagnosis_from_dict,
    edit_to_dict,
    evidence_entry_from_dict,
    fix_from_dict,
    incident_from_dict,
    notification_record_from_dict,
    verification_to_dict,
)
from agent.errors import FencedOut, FixNotFound, StoreError, StoreUnavailable
from agent.model import (
    ACTIVE_STATUSES,
    SEVERITY,
    Attempt,
    ContainerSnapshot,
    Diagnosis,
    EvidenceEntry,
    Finding,
    Fix,
    FixId,
    FixStatus,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
    ReviewMark,
)
from agent.store.base import (
    MAX_EVIDENCE,
    FixRecordedAlready,
    Identity,
    IncidentNotFound,
    IncidentQuery,
    fix_not_found,
    new_id,
    new_incident,
)
from agent.store.lease import Claim, Fence, LeaseStore, Term
from agent.store.migrate import migrate
from agent.store.ops import (
    AddEvidence,
    MoveIncident,
    OpenIncident,
    Operation,
    OperationStore,
    RecordAttempt,
    RecordDiagnosis,
    RecordFix,
    RecordNotification,
    SetStatus,
)

T = TypeVar("T")
Row = dict[str, Any]
Cursor = psycopg.Cursor[Row]

#: Observations older than the retention period are deleted this many rows a statement.
PRUNE_BATCH = 5000

#: Containers whose last kept observation is remembered (to sample on change); the
#: least recently seen are forgotten first, and at worst sampled once more.
MAX_KEPT_CONTAINERS = 5_000

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


def connect(url: str, *, prepare: bool = True) -> psycopg.Connection[Row]:
    """A connection in autocommit mode; StoreUnavailable saying what failed, where.

    ``prepare=False`` never prepares statements on the server, which a pooler in
    transaction mode (PgBouncer before 1.21) cannot follow from one transaction to
    the next."""
    options = dict(_CONNECT_OPTIONS) if prepare else {**_CONNECT_OPTIONS, "prepare_threshold": None}
    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row, **options)
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
        now: Callable[[], datetime] = utcnow,
        identity: Identity | None = None,
        fence: Fence | None = None,
    ) -> None:
        """``fence``: asked for the term of each incident or attempt write, which is
        checked against the lease in the write's transaction (None: no lease)."""
        self.identity = identity
        self.fence = fence
        self._url = url
        self._migrated = not migrate
        self._observation_interval = timedelta(seconds=observation_interval)
        self._retention = timedelta(days=retention_days)
        self._now = now
        self._conn: psycopg.Connection[Row] | None = None
        self._lock = threading.RLock()
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
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
                        "the incident (or diagnosis) this change belongs to is not stored: "
                        f"{_one_line(e)}"
                    ) from e
                except psycopg.Error as e:
                    raise StoreError(f"Postgres refused a change: {_one_line(e)}") from e
                except CodecError as e:
                    raise StoreError(f"a row at {self.where} cannot be read: {e}") from e
            raise AssertionError("unreachable")  # pragma: no cover

    def remembered(self) -> int:
        """How many containers' last kept observation is held in memory (bounded)."""
        with self._lock:
            return len(self._kept)

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

    def apply(self, ops: Sequence[Operation], *, term: Term | None = None) -> None:
        if not ops:
            return

        def write(cur: Cursor) -> None:
            if term is not None:
                _check_term(cur, term)
            for op in ops:
                _apply(cur, op)

        self._run(write, pipeline=len(ops) > 1)

    def record_finding(self, finding: Finding) -> Incident:
        term = self.term()
        token = term.token if term is not None else None

        def write(cur: Cursor) -> IncidentId:
            if term is not None:
                _check_term(cur, term)
            cur.execute(
                "SELECT id FROM incidents WHERE container_id = %s"
                " AND status = ANY(%s) AND scope IS NOT DISTINCT FROM %s FOR UPDATE",
                (finding.container.id, list(_ACTIVE), self.scope),
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
                        term=token,
                    ),
                )
                return incident_id
            incident = new_incident(finding, scope=self.scope)
            _apply(cur, OpenIncident(incident, new_id(), term=token))
            return incident.id

        return self.get(self._run(write))

    def record_attempt(self, attempt: Attempt) -> None:
        term = self.term()
        token = term.token if term is not None else None
        self.apply([RecordAttempt(attempt, term=token)], term=term)

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        found = self.get(incident_id)
        self.check_own(found)
        term = self.term()
        token = term.token if term is not None else None
        self.apply([SetStatus(new_id(), found.id, status, at, note, token)], term=term)
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
            entries = [evidence_entry_from_dict(r) for r in cur.fetchall()]
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
        if q.scope is not None:
            where.append("scope = %s")
            params.append(q.scope)
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

    # --- diagnoses ----------------------------------------------------------------------------

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        self.apply([RecordDiagnosis(diagnosis)])

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        def read(cur: Cursor) -> list[Diagnosis]:
            cur.execute(
                "SELECT * FROM diagnoses WHERE incident_id = %s ORDER BY created_at, id",
                (incident_id,),
            )
            return [diagnosis_from_dict(r) for r in cur.fetchall()]

        return self._run(read)

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        def read(cur: Cursor) -> Diagnosis | None:
            cur.execute(
                "SELECT * FROM diagnoses WHERE fingerprint = %s AND created_at >= %s"
                " AND source = 'llm' AND reused_from IS NULL"
                " ORDER BY created_at DESC, id LIMIT 1",
                (fingerprint, since),
            )
            row = cur.fetchone()
            return None if row is None else diagnosis_from_dict(row)

        return self._run(read)

    def tokens_since(self, since: datetime) -> int:
        def read(cur: Cursor) -> int:
            cur.execute(
                "SELECT coalesce(sum(input_tokens + output_tokens + cache_creation_input_tokens"
                " + cache_read_input_tokens), 0) AS spent FROM diagnoses WHERE created_at >= %s",
                (since,),
            )
            row = cur.fetchone()
            return int(row["spent"]) if row else 0

        return self._run(read)

    # --- fixes ---------------------------------------------------------------------------------

    def record_fix(self, fix: Fix) -> None:
        def write(cur: Cursor) -> None:
            cur.execute("SELECT 1 FROM fixes WHERE id = %s FOR UPDATE", (fix.id,))
            if cur.fetchone() is not None:
                raise FixRecordedAlready(f"fix {fix.id} is recorded already")
            _apply(cur, RecordFix(fix))

        self._run(write)

    def update_fix(self, fix: Fix) -> None:
        def write(cur: Cursor) -> None:
            cur.execute("SELECT 1 FROM fixes WHERE id = %s FOR UPDATE", (fix.id,))
            if cur.fetchone() is None:
                raise FixNotFound(f"No fix has the id {fix.id}.")
            cur.execute(
                "UPDATE fixes SET "
                + ", ".join(f"{c} = %s" for c in _FIX_COLUMNS[1:])
                + " WHERE id = %s",
                (*_fix_values(fix)[1:], fix.id),
            )

        self._run(write)

    def get_fix(self, ref: str) -> Fix:
        def read(cur: Cursor) -> Fix:
            cur.execute(
                "SELECT * FROM fixes WHERE id = %s OR id LIKE %s ORDER BY id = %s DESC LIMIT 3",
                (ref, _prefix(ref), ref),
            )
            rows = cur.fetchall()
            if rows and (rows[0]["id"] == ref or (len(rows) == 1 and ref)):
                return _fix(rows[0])
            if not ref:
                raise fix_not_found(ref, 0)
            cur.execute("SELECT count(*) AS n FROM fixes WHERE id LIKE %s", (_prefix(ref),))
            counted = cur.fetchone()
            raise fix_not_found(ref, int(counted["n"]) if counted else 0)

        return self._run(read)

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        sql = "SELECT * FROM fixes"
        if not include_decided:
            sql += " WHERE status = 'proposed'"
        sql += " ORDER BY created_at DESC, id"

        def read(cur: Cursor) -> list[Fix]:
            cur.execute(sql.encode())
            return [_fix(r) for r in cur.fetchall()]

        return self._run(read)

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        def read(cur: Cursor) -> list[Fix]:
            cur.execute(
                "SELECT * FROM fixes WHERE incident_id = %s ORDER BY created_at, id",
                (incident_id,),
            )
            return [_fix(r) for r in cur.fetchall()]

        return self._run(read)

    def review_marks(self, incident_ids: Sequence[IncidentId]) -> dict[IncidentId, ReviewMark]:
        """Two queries for a whole page of incidents, not two per incident."""
        if not incident_ids:
            return {}
        ids = list(incident_ids)

        def read(cur: Cursor) -> dict[IncidentId, ReviewMark]:
            cur.execute(
                "SELECT DISTINCT ON (incident_id) incident_id, rule_id FROM diagnoses "
                "WHERE incident_id = ANY(%s) AND source = 'rules' AND error IS NULL "
                "ORDER BY incident_id, created_at DESC, id DESC",
                (ids,),
            )
            rules = {r["incident_id"]: r["rule_id"] for r in cur.fetchall()}
            cur.execute(
                "SELECT DISTINCT ON (incident_id) incident_id, id, status FROM fixes "
                "WHERE incident_id = ANY(%s) ORDER BY incident_id, created_at DESC, id DESC",
                (ids,),
            )
            fixes = {
                r["incident_id"]: (FixId(r["id"]), FixStatus(r["status"])) for r in cur.fetchall()
            }
            return {
                IncidentId(i): ReviewMark(
                    rule_id=rules.get(i),
                    fix_id=fixes[i][0] if i in fixes else None,
                    fix_status=fixes[i][1] if i in fixes else None,
                )
                for i in rules.keys() | fixes.keys()
            }

        return self._run(read)

    # --- notifications ------------------------------------------------------------------------

    def record_notification(self, record: NotificationRecord) -> None:
        def write(cur: Cursor) -> None:
            _apply(cur, RecordNotification(record))
            if cur.rowcount == 0:
                cur.execute("SELECT 1 FROM incidents WHERE id = %s", (record.incident_id,))
                if cur.fetchone() is None:
                    logger.debug(
                        "The {} record of the {} notification of incident {} is not kept: "
                        "there is no such incident at {}.",
                        record.outcome,
                        record.kind,
                        record.incident_id[:8],
                        self.where,
                    )

        self._run(write)

    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        def read(cur: Cursor) -> list[NotificationRecord]:
            cur.execute(
                "SELECT * FROM notifications WHERE incident_id = %s ORDER BY at, seq",
                (incident_id,),
            )
            return [notification_record_from_dict(r) for r in cur.fetchall()]

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
            for s in snapshots:
                if s.ref.id in self._kept:
                    self._kept.move_to_end(s.ref.id)
            while len(self._kept) > MAX_KEPT_CONTAINERS:
                self._kept.popitem(last=False)
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


class PostgresLeases(LeaseStore):
    """The leases of ``agent.store.lease`` in Postgres, over a connection of their own,
    so that a slow incident write never holds up a renewal.

    A claim is one statement in autocommit mode that judges expiry by ``now()``, the
    database's clock; it holds no session state, so it works through a pooler in
    transaction mode and after any reconnect (docs/ha.md). The schema is brought up to
    date on the first connection, as the incident store does.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self._url = url
        self._migrated = not migrate
        self._conn: psycopg.Connection[Row] | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return describe_url(self._url)

    def claim(self, scope: str, holder: str, *, seconds: float) -> Claim:
        def claim(conn: psycopg.Connection[Row]) -> Claim:
            # The SET's expressions read the row as it was: a holder renewing in time
            # keeps its term; a new holder, or one whose lease ran out, starts the next.
            row = conn.execute(
                "INSERT INTO leases AS l (scope, holder, token, acquired_at, renewed_at,"
                " expires_at) VALUES (%(scope)s, %(holder)s, 1, now(), now(),"
                " now() + make_interval(secs => %(seconds)s))"
                " ON CONFLICT (scope) DO UPDATE SET"
                " token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()"
                "  THEN l.token ELSE l.token + 1 END,"
                " acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > now()"
                "  THEN l.acquired_at ELSE now() END,"
                " holder = EXCLUDED.holder, renewed_at = now(), expires_at = EXCLUDED.expires_at"
                " WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()"
                " RETURNING scope, holder, token, acquired_at, expires_at",
                {"scope": scope, "holder": holder, "seconds": float(seconds)},
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT scope, holder, token, acquired_at, expires_at FROM leases"
                    " WHERE scope = %s",
                    (scope,),
                ).fetchone()
            if row is None:  # pragma: no cover - a row was there a moment ago
                raise StoreError(f"the lease of {scope} vanished while it was claimed")
            return Claim(
                row["scope"], row["holder"], row["token"], row["acquired_at"], row["expires_at"]
            )

        return self._run(claim)

    def release(self, term: Term) -> None:
        def release(conn: psycopg.Connection[Row]) -> None:
            conn.execute(
                "UPDATE leases SET expires_at = least(expires_at, now())"
                " WHERE scope = %s AND holder = %s AND token = %s",
                (term.scope, term.holder, term.token),
            )

        self._run(release)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _run(self, fn: Callable[[psycopg.Connection[Row]], T]) -> T:
        """Run ``fn`` on the lease connection, made (and migrated) when needed; psycopg's
        errors translated, and a broken connection dropped for the next claim to
        replace. No retry here: the next claim comes within a fraction of an interval."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._url, prepare=False)
                if not self._migrated:
                    migrate(self._conn)
                    self._migrated = True
                return fn(self._conn)
            except StoreError:
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                self._drop()
                raise StoreUnavailable(
                    f"lost the connection to Postgres at {self.where}: {_one_line(e)}"
                ) from e
            except psycopg.Error as e:
                self._drop()
                raise StoreError(f"Postgres refused a lease claim: {_one_line(e)}") from e


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
        found.setdefault(r["incident_id"], []).append(attempt_from_dict(r))
    return found


def _incident(
    row: Row,
    *,
    evidence: tuple[EvidenceEntry, ...] = (),
    attempts: tuple[Attempt, ...] = (),
) -> Incident:
    """An incident row as the codec reads it: the table names the container's name
    ``container_name``; evidence and attempts come from their own tables."""
    try:
        incident = incident_from_dict({**row, "container": row["container_name"]})
    except CodecError as e:
        raise StoreError(f"the stored incident {row.get('id')!r} cannot be read: {e}") from e
    return replace(incident, evidence=evidence, attempts=attempts)


#: The fixes table's columns in the order ``_fix_values`` gives them.
_FIX_COLUMNS = (
    "id",
    "incident_id",
    "diagnosis_id",
    "status",
    "summary",
    "files",
    "branch",
    "base",
    "base_branch",
    "commit_id",
    "refusal_reasons",
    "verification",
    "pushed_to",
    "push_error",
    "created_at",
    "decided_at",
    "decided_by",
    "reason",
)


def _fix_values(fix: Fix) -> tuple[Any, ...]:
    f = fix
    checked = None if f.verification is None else Jsonb(verification_to_dict(f.verification))
    return (
        f.id,
        f.incident_id,
        f.diagnosis_id,
        str(f.status),
        f.summary,
        Jsonb(list(f.files)),
        f.branch,
        f.base,
        f.base_branch,
        f.commit,
        Jsonb(list(f.refusal_reasons)),
        checked,
        f.pushed_to,
        f.push_error,
        f.created_at,
        f.decided_at,
        f.decided_by,
        f.reason,
    )


def _fix(row: Row) -> Fix:
    """A fixes row as the codec reads it: the fix commit is in ``commit_id``."""
    return fix_from_dict({**row, "commit": row["commit_id"]})


def _record_diagnosis(cur: Cursor, d: Diagnosis) -> None:
    cur.execute(
        "INSERT INTO diagnoses (id, incident_id, source, rule_id, model, summary, root_cause,"
        " confidence, evidence, unverified_evidence, edits, no_edits_reason, case_file,"
        " fingerprint, input_tokens, output_tokens, cache_creation_input_tokens,"
        " cache_read_input_tokens, error, reused_from, created_at, cause_service, cause_state)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (
            d.id,
            d.incident_id,
            str(d.source),
            d.rule_id,
            d.model,
            d.summary,
            d.root_cause,
            str(d.confidence),
            Jsonb(list(d.evidence)),
            Jsonb(list(d.unverified_evidence)),
            Jsonb([edit_to_dict(e) for e in d.edits]),
            d.no_edits_reason,
            d.case_file,
            d.fingerprint,
            d.input_tokens,
            d.output_tokens,
            d.cache_creation_input_tokens,
            d.cache_read_input_tokens,
            d.error,
            d.reused_from,
            d.created_at,
            d.cause_service,
            d.cause_state,
        ),
    )


def _record_fix(cur: Cursor, fix: Fix) -> None:
    """Insert the fix, or replace the stored one, unless that would change a decision
    (approved, rejected) already stored into another status."""
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _FIX_COLUMNS[1:])
    cur.execute(
        f"INSERT INTO fixes ({', '.join(_FIX_COLUMNS)})"
        f" VALUES ({', '.join(['%s'] * len(_FIX_COLUMNS))})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
        " WHERE fixes.status NOT IN ('approved', 'rejected') OR fixes.status = EXCLUDED.status",
        _fix_values(fix),
    )


#: The incident is changed only when no later lease term has written to it: a change a
#: former leader spooled and replays after another medic took over stays history.
_NOT_OLDER = "(%(term)s::bigint IS NULL OR incidents.term IS NULL OR incidents.term <= %(term)s)"


def _check_term(cur: Cursor, term: Term) -> None:
    """FencedOut unless ``term`` is the lease's term and has not run out, by the
    database's clock; the row is locked (FOR SHARE) until the write's transaction
    ends, so no medic takes the lease over in between."""
    cur.execute(
        "SELECT 1 FROM leases WHERE scope = %s AND holder = %s AND token = %s"
        " AND expires_at > now() FOR SHARE",
        (term.scope, term.holder, term.token),
    )
    if cur.fetchone() is not None:
        return
    cur.execute(
        "SELECT holder, token, expires_at > now() AS live FROM leases WHERE scope = %s",
        (term.scope,),
    )
    row = cur.fetchone()
    if row is None:
        now = "nobody holds it"
    elif row["token"] != term.token or row["holder"] != term.holder:
        now = f"{row['holder']} holds it in term {row['token']}"
    else:
        now = "it ran out"
    raise FencedOut(f"the lease of {term.scope} is not in term {term.token} any more: {now}")


def _apply(cur: Cursor, op: Operation) -> None:
    """Write one operation; a second write of the same operation changes nothing.

    Apart from opening an incident, each is one statement whose UPDATE only runs when
    its INSERT stored a new row, so a batch needs no answers until its commit and
    can be sent in one pipeline. An operation's ``term`` is the lease term it was made
    in: the incident remembers the latest (``incidents.term``), and a change of an
    older term leaves the incident as a later term made it (its row is kept).
    """
    if isinstance(op, OpenIncident):
        _open(cur, op)
    elif isinstance(op, AddEvidence):
        # No signal (an older spool line): array_position(..., NULL) is NULL, no change.
        signal = str(op.signal) if op.signal is not None else None
        cur.execute(
            "WITH new AS ("
            " INSERT INTO incident_evidence (id, incident_id, observed_at, summary, evidence)"
            " VALUES (%(id)s, %(incident)s, %(at)s, %(summary)s, %(evidence)s)"
            " ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
            " UPDATE incidents SET updated_at = greatest(updated_at, %(at)s),"
            # One failure episode takes the name of its gravest signal (exits that
            # become a crash loop); the fingerprint follows the signal.
            " signal = CASE WHEN array_position(%(severity)s::text[], %(signal)s::text)"
            "  < array_position(%(severity)s::text[], signal) THEN %(signal)s::text"
            "  ELSE signal END,"
            " fingerprint = CASE WHEN array_position(%(severity)s::text[], %(signal)s::text)"
            "  < array_position(%(severity)s::text[], signal)"
            "  THEN coalesce(project, '-') || '/' || coalesce(service, container_name)"
            "   || '/' || %(signal)s::text ELSE fingerprint END,"
            " term = greatest(term, %(term)s::bigint)"
            " FROM new WHERE incidents.id = new.incident_id",
            {
                "id": op.entry_id,
                "incident": op.incident_id,
                "at": op.observed_at,
                "summary": op.summary,
                "evidence": Jsonb(dict(op.evidence)),
                "severity": _SEVERITY,
                "signal": signal,
                "term": op.term,
            },
        )
    elif isinstance(op, MoveIncident):
        # The evidence entry keys the move: a replay inserts nothing and moves nothing.
        cur.execute(
            "WITH new AS ("
            " INSERT INTO incident_evidence (id, incident_id, observed_at, summary, evidence)"
            " VALUES (%(id)s, %(incident)s, %(at)s, %(note)s, %(evidence)s)"
            " ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
            " UPDATE incidents SET container_id = %(container_id)s,"
            " container_name = %(container_name)s, updated_at = greatest(updated_at, %(at)s),"
            " term = greatest(term, %(term)s::bigint)"
            f" FROM new WHERE incidents.id = new.incident_id AND {_NOT_OLDER}",
            {
                "id": op.entry_id,
                "incident": op.incident_id,
                "at": op.at,
                "note": op.note,
                "evidence": Jsonb({}),
                "container_id": op.container.id,
                "container_name": op.container.name,
                "term": op.term,
            },
        )
    elif isinstance(op, RecordDiagnosis):
        _record_diagnosis(cur, op.diagnosis)
    elif isinstance(op, RecordFix):
        _record_fix(cur, op.fix)
    elif isinstance(op, RecordNotification):
        # Inserted only when its incident is stored: a record of an unknown incident is
        # skipped rather than refused by the foreign key, so it cannot hold up a replay.
        n = op.record
        cur.execute(
            "INSERT INTO notifications (id, incident_id, kind, title, at, outcome, error)"
            " SELECT %s, id, %s, %s, %s, %s, %s FROM incidents WHERE id = %s"
            " ON CONFLICT (id) DO NOTHING",
            (n.id, n.kind, n.title, n.at, str(n.outcome), n.error, n.incident_id),
        )
    elif isinstance(op, RecordAttempt):
        # A started attempt is a row 'running'; its end (finished or interrupted) is
        # the same id written again, which completes it. A completed row is never
        # changed, so a replay of the start after its end changes nothing.
        a = op.attempt
        cur.execute(
            "WITH new AS ("
            " INSERT INTO attempts (id, incident_id, playbook, action, started_at, finished_at,"
            " ok, error, output, status) VALUES (%(id)s, %(incident)s, %(playbook)s,"
            " %(action)s, %(started)s, %(finished)s, %(ok)s, %(error)s, %(output)s, %(status)s)"
            " ON CONFLICT (id) DO UPDATE SET incident_id = EXCLUDED.incident_id,"
            " action = EXCLUDED.action, started_at = EXCLUDED.started_at,"
            " finished_at = EXCLUDED.finished_at, ok = EXCLUDED.ok,"
            " error = EXCLUDED.error, output = EXCLUDED.output, status = EXCLUDED.status"
            " WHERE attempts.status = 'running' AND EXCLUDED.status <> 'running'"
            " RETURNING incident_id)"
            " UPDATE incidents SET"
            " status = CASE WHEN status = 'open' THEN 'healing' ELSE status END,"
            " updated_at = greatest(updated_at, %(updated)s),"
            " term = greatest(term, %(term)s::bigint)"
            " FROM new WHERE incidents.id = new.incident_id",
            {
                "id": a.id,
                "incident": a.incident_id,
                "playbook": a.playbook,
                "action": a.action,
                "started": a.started_at,
                "finished": a.finished_at,
                "ok": a.ok,
                "error": a.error,
                "output": a.output,
                "status": str(a.status),
                "updated": a.finished_at or a.started_at,
                "term": op.term,
            },
        )
    else:
        _set_status(cur, op)


def _set_status(cur: Cursor, op: SetStatus) -> None:
    resolved = op.status is IncidentStatus.RESOLVED
    cur.execute(
        "WITH new AS ("
        " INSERT INTO incident_status_changes (id, incident_id, status, at, note)"
        " VALUES (%(id)s, %(incident)s, %(status)s, %(at)s, %(note)s)"
        " ON CONFLICT (id) DO NOTHING RETURNING incident_id)"
        " UPDATE incidents SET status = %(status)s, updated_at = %(at)s,"
        " resolved_at = %(resolved_at)s, note = coalesce(%(note)s, note),"
        " term = greatest(term, %(term)s::bigint)"
        f" FROM new WHERE incidents.id = new.incident_id AND {_NOT_OLDER}",
        {
            "id": op.change_id,
            "incident": op.incident_id,
            "status": str(op.status),
            "at": op.at,
            "note": op.note,
            "resolved_at": op.at if resolved else None,
            "term": op.term,
        },
    )


def _open(cur: Cursor, op: OpenIncident) -> None:
    i = op.incident
    cur.execute("SELECT 1 FROM incidents WHERE id = %s", (i.id,))
    if cur.fetchone() is not None:
        return  # written before: a replay
    # Another incident for this container may be active in the database: opened by
    # a medic that ran before this one while this one could not see Postgres (the
    # newer one carries on; the older one is closed, saying why), or opened by a
    # medic that took the lease over while this one, its former leader, could not
    # see Postgres (that later term's incident carries on, and this one is kept as
    # history, resolved).
    cur.execute(
        "SELECT id, term FROM incidents WHERE container_id = %s AND status = ANY(%s)"
        " AND (scope IS NOT DISTINCT FROM %s OR scope IS NULL) FOR UPDATE",
        (i.container.id, list(_ACTIVE), i.scope),
    )
    active = cur.fetchall()
    later = [r for r in active if op.term is not None and (r["term"] or 0) > op.term]
    first = i.evidence[0] if i.evidence else EvidenceEntry(i.opened_at, i.summary)
    status, note, term = str(i.status), i.note, op.term
    if later:
        newest = max(later, key=lambda r: r["term"])
        status, term = str(IncidentStatus.RESOLVED), newest["term"]
        note = (
            f"superseded by incident {newest['id'][:8]}, which the medic that took the lease "
            f"over (term {newest['term']}) opened while this one's medic could not reach Postgres"
        )
    else:
        for row in active:
            _set_status(
                cur,
                SetStatus(
                    change_id=f"{i.id}-supersedes-{row['id']}",
                    incident_id=IncidentId(row["id"]),
                    status=IncidentStatus.RESOLVED,
                    at=i.opened_at,
                    note=f"superseded by incident {i.id[:8]}, opened while Postgres was "
                    "unreachable",
                    term=op.term,
                ),
            )
    cur.execute(
        "INSERT INTO incidents (id, project, service, container_id, container_name, signal,"
        " status, summary, fingerprint, opened_at, updated_at, scope, term, resolved_at, note)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            i.id,
            i.container.project,
            i.container.service,
            i.container.id,
            i.container.name,
            str(i.signal),
            status,
            i.summary,
            i.fingerprint,
            i.opened_at,
            i.opened_at,
            i.scope,
            term,
            i.opened_at if later else None,
            note,
        ),
    )
    cur.execute(
        "INSERT INTO incident_evidence (id, incident_id, observed_at, summary, evidence)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (op.entry_id, i.id, first.observed_at, first.summary, Jsonb(dict(first.evidence))),
    )
    if later:
        cur.execute(
            "INSERT INTO incident_status_changes (id, incident_id, status, at, note)"
            " VALUES (%s, %s, 'resolved', %s, %s) ON CONFLICT (id) DO NOTHING",
            (f"{i.id}-superseded", i.id, i.opened_at, note),
        )
