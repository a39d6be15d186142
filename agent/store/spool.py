"""Keeps every incident change while Postgres is away, and writes it when it is back.

medic must go on healing when its database is down, and the history people
review must not have holes. ``SpoolingStore`` sits in front of the durable
store: it decides what a finding means (a new incident or more evidence for the
active one) from an in-memory view, turns that into an idempotent operation
(``agent.store.ops``) and writes it. When the durable store is unreachable the
operation is appended to ``spool.jsonl`` (one JSON line, flushed and fsync'd)
and the call still succeeds. Pending operations are written in order on the next
successful write, and by a background retry with backoff; the spool is cut only
after they are committed. Because every operation carries its own id, a replay
that is interrupted and repeated stores each change once.

A crash (or a full disk) while a line is written leaves it cut short. At
start, and before appending after a write that failed, the spool is made whole
lines again: the torn tail is moved to ``spool.jsonl.torn-<UTC time>`` (mode
0600) with a warning naming it, so each later change is a line of its own and
a crash loses at most the line it cut. Whole lines this medic cannot read are
set aside the same way (``spool.jsonl.unreadable-<UTC time>``), never dropped.

Diagnoses, fixes and notification records are operations like the others
(``RecordDiagnosis``, ``RecordFix``, ``RecordNotification``), so a diagnosis
made, a fix decided or a notification sent while Postgres is away reaches it, in
order, when it is back. The view keeps them with their incident.

A spooling store made with an ``Identity`` stamps its scope on the incidents it
opens, and its active incidents (the supervisor's start-up and every check) are
only those of its scope, read from Postgres or from the view.

A spooling store made with a ``fence`` (a medic that leads by a lease, docs/ha.md)
asks it before each incident or attempt change: FencedOut (nothing written, nothing
spooled, the view unchanged) when the medic may not act now. A change written to
Postgres carries the term, which Postgres checks in the same transaction; a change
spooled carries it too, and is written later as history (the medic spools only
while its own clock says its lease holds, and stops acting when it runs out).

Health observations are samples, not history: they are not spooled.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from loguru import logger

from agent.clock import utcnow
from agent.codec import format_duration
from agent.errors import FencedOut, FixNotFound, StoreError, StoreUnavailable
from agent.model import (
    Attempt,
    ContainerId,
    ContainerRef,
    ContainerSnapshot,
    Diagnosis,
    Finding,
    Fix,
    Incident,
    IncidentId,
    IncidentStatus,
    NotificationRecord,
)
from agent.store.base import (
    FixRecordedAlready,
    ForeignIncident,
    Identity,
    IncidentNotFound,
    IncidentQuery,
    IncidentStore,
    new_id,
)
from agent.store.lease import Fence, Term
from agent.store.memory import MemoryStore
from agent.store.ops import (
    AddEvidence,
    BadSpoolLine,
    MoveIncident,
    OpenIncident,
    Operation,
    OperationStore,
    RecordAttempt,
    RecordDiagnosis,
    RecordFix,
    RecordNotification,
    SetStatus,
    from_json,
    to_json,
)

T = TypeVar("T")

#: Pauses between background attempts to write the spool; the last one repeats.
RETRY_DELAYS: tuple[float, ...] = (1, 2, 4, 8, 15, 30)

#: Spooled operations written in one transaction during a replay.
REPLAY_BATCH = 500

SPOOL_FILE = "spool.jsonl"
REJECTED_FILE = "spool.rejected.jsonl"


class SpoolError(StoreError):
    """The spool file cannot be written: a change would be lost."""


class SpoolingStore(IncidentStore):
    """A durable store's front: writes through when it is reachable, spools when not."""

    def __init__(
        self,
        backend: OperationStore,
        *,
        state_dir: Path,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        batch: int = REPLAY_BATCH,
        sleep: Callable[[float], object] | None = None,
        now: Callable[[], datetime] = utcnow,
        identity: Identity | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.identity = identity
        self.fence = fence
        self._backend = backend
        self._state_dir = state_dir
        self.path = state_dir / SPOOL_FILE
        self._rejected_path = state_dir / REJECTED_FILE
        self._retry_delays = tuple(retry_delays) or (1.0,)
        self._batch = max(1, batch)
        self._view = MemoryStore(identity=identity)
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._sleep = sleep
        self._retry: threading.Thread | None = None
        self._retrying = False
        self._down = False
        self._seeded = False
        self._advised_delay: float | None = None
        self._now = now
        self._whole = True
        self._unreadable_set_aside = False
        self._pending: list[Operation] = self._load()
        if self._unreadable_set_aside:
            self._rewrite()
        for op in self._pending:
            self._apply_to_view(op)
        with self._lock:
            self._replay()

    # --- the IncidentStore interface -----------------------------------------------------------

    def record_finding(self, finding: Finding) -> Incident:
        with self._lock:
            term = self.term()
            token = term.token if term is not None else None
            active = {i.id: i for i in self._view.active_incidents(finding.container.id)}
            incident = self._view.record_finding(finding)
            op: Operation
            if incident.id in active:
                op = AddEvidence(
                    new_id(),
                    incident.id,
                    finding.observed_at,
                    finding.summary,
                    dict(finding.evidence),
                    signal=finding.signal,
                    term=token,
                )
            else:
                op = OpenIncident(incident, new_id(), term=token)
            self._write(op, incident.id, before=active.get(incident.id), term=term)
            return incident

    def record_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            term = self.term()
            self._know(attempt.incident_id)
            before = self._known(attempt.incident_id)
            self._view.record_attempt(attempt)
            op = RecordAttempt(attempt, term=term.token if term is not None else None)
            self._write(op, attempt.incident_id, before=before, term=term)

    def set_status(
        self,
        incident_id: IncidentId,
        status: IncidentStatus,
        *,
        at: datetime,
        note: str | None = None,
    ) -> Incident:
        with self._lock:
            term = self.term()
            token = term.token if term is not None else None
            before = self._own_before_change(incident_id)
            incident = self._view.set_status(incident_id, status, at=at, note=note)
            op = SetStatus(new_id(), incident.id, status, at, note, token)
            self._write(op, incident.id, before=before, term=term)
            return incident

    def move_incident(
        self, incident_id: IncidentId, container: ContainerRef, *, at: datetime, note: str
    ) -> Incident:
        with self._lock:
            term = self.term()
            token = term.token if term is not None else None
            before = self._own_before_change(incident_id)
            incident = self._view.move_incident(incident_id, container, at=at, note=note)
            op = MoveIncident(new_id(), incident.id, container, at, note, token)
            self._write(op, incident.id, before=before, term=term)
            return incident

    def get(self, incident_id: str) -> Incident:
        with self._lock:
            if self._flush():
                try:
                    return self._backend.get(incident_id)
                except StoreUnavailable as e:
                    self._went_down(e)
            return self._view.get(incident_id)

    def list_incidents(self, query: IncidentQuery | None = None) -> list[Incident]:
        with self._lock:
            if self._flush():
                try:
                    found = self._backend.list_incidents(query)
                except StoreUnavailable as e:
                    self._went_down(e)
                else:
                    self._mirror(found)
                    return found
            return self._view.list_incidents(query)

    def active_incidents(self, container_id: ContainerId | None = None) -> list[Incident]:
        """Active incidents; ones a person resolved in the database leave the view too."""
        with self._lock:
            if self._flush():
                try:
                    found = self._backend.list_incidents(self._active_query(container_id))
                    still = {i.id for i in found}
                    for mine in self._view.active_incidents(container_id):
                        if mine.id not in still:
                            self._view.put(self._backend.get(mine.id))
                except StoreUnavailable as e:
                    self._went_down(e)
                else:
                    self._mirror(found)
                    return found
            return self._view.active_incidents(container_id)

    def _active_query(self, container_id: ContainerId | None = None) -> IncidentQuery:
        return IncidentQuery(active_only=True, container_id=container_id, scope=self.scope)

    # --- diagnoses and fixes: written like every change, read from Postgres when it answers --

    def record_diagnosis(self, diagnosis: Diagnosis) -> None:
        with self._lock:
            self._know(diagnosis.incident_id)
            self._store(RecordDiagnosis(diagnosis))
            with contextlib.suppress(IncidentNotFound):
                self._view.record_diagnosis(diagnosis)

    def diagnoses(self, incident_id: IncidentId) -> list[Diagnosis]:
        return self._read(
            lambda: self._backend.diagnoses(incident_id),
            lambda: self._view.diagnoses(incident_id),
        )

    def find_reusable(self, fingerprint: str, *, since: datetime) -> Diagnosis | None:
        return self._read(
            lambda: self._backend.find_reusable(fingerprint, since=since),
            lambda: self._view.find_reusable(fingerprint, since=since),
        )

    def tokens_since(self, since: datetime) -> int:
        return self._read(
            lambda: self._backend.tokens_since(since),
            lambda: self._view.tokens_since(since),
        )

    def record_fix(self, fix: Fix) -> None:
        with self._lock:
            if self._known_fix(fix.id):
                raise FixRecordedAlready(f"fix {fix.id} is recorded already")
            self._know(fix.incident_id)
            self._store(RecordFix(fix))
            with contextlib.suppress(IncidentNotFound):
                self._view.put_fix(fix)

    def update_fix(self, fix: Fix) -> None:
        """Store a changed fix. One that neither the view nor Postgres knows is
        FixNotFound; while Postgres is away one the view does not know is spooled all
        the same (the change carries the whole fix), so a decision is never lost."""
        with self._lock:
            if not self._known_fix(fix.id) and self._flush():
                try:
                    self._backend.get_fix(fix.id)
                except StoreUnavailable as e:
                    self._went_down(e)
                except FixNotFound:
                    raise FixNotFound(f"No fix has the id {fix.id}.") from None
            self._know(fix.incident_id)
            self._store(RecordFix(fix))
            with contextlib.suppress(IncidentNotFound):
                self._view.put_fix(fix)

    def get_fix(self, ref: str) -> Fix:
        return self._read(lambda: self._backend.get_fix(ref), lambda: self._view.get_fix(ref))

    def list_fixes(self, *, include_decided: bool = False) -> list[Fix]:
        return self._read(
            lambda: self._backend.list_fixes(include_decided=include_decided),
            lambda: self._view.list_fixes(include_decided=include_decided),
        )

    def fixes_of_incident(self, incident_id: IncidentId) -> list[Fix]:
        return self._read(
            lambda: self._backend.fixes_of_incident(incident_id),
            lambda: self._view.fixes_of_incident(incident_id),
        )

    def record_notification(self, record: NotificationRecord) -> None:
        """Store the record like any change. One of an incident the view does not hold
        is written all the same: Postgres may have it, and skips it when it has not."""
        with self._lock:
            self._store(RecordNotification(record))
            self._view.record_notification(record)

    def notifications(self, incident_id: IncidentId) -> list[NotificationRecord]:
        return self._read(
            lambda: self._backend.notifications(incident_id),
            lambda: self._view.notifications(incident_id),
        )

    def _read(self, durable: Callable[[], T], view: Callable[[], T]) -> T:
        """Postgres's answer once nothing is pending; the view's while it is away."""
        with self._lock:
            if self._flush():
                try:
                    return durable()
                except StoreUnavailable as e:
                    self._went_down(e)
            return view()

    def _known_fix(self, fix_id: str) -> bool:
        try:
            return self._view.get_fix(fix_id).id == fix_id
        except FixNotFound:
            return False

    def record_observations(self, snapshots: Sequence[ContainerSnapshot]) -> None:
        with self._lock:
            if not self._flush():
                return
            try:
                self._backend.record_observations(snapshots)
            except StoreUnavailable as e:
                self._went_down(e)

    def pending_changes(self) -> int:
        with self._lock:
            return len(self._pending)

    def remembered(self) -> int:
        """How many incidents the in-memory view holds: every active one, and at most
        ``MAX_RESOLVED_KEPT`` resolved ones."""
        return self._view.held()

    def close(self) -> None:
        """Stop retrying in the background, try one last write, and close the backend."""
        self._closed.set()
        retry = self._retry
        if retry is not None:
            retry.join(timeout=10)
        with self._lock:
            self._flush()
            if self._pending:
                logger.warning(
                    "{} incident changes are still spooled in {}; medic writes them to "
                    "Postgres when it next starts and reaches it.",
                    len(self._pending),
                    self.path,
                )
        self._backend.close()

    def replay(self) -> bool:
        """Try the database now and write what is spooled; whether nothing is left pending."""
        with self._lock:
            return self._replay()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready while Postgres answers, or while the spool can take the writes."""
        pending = self.pending_changes()
        if self.reachable:
            return True, {"status": "ok", "database": "reachable", "spooled": pending}
        writable = os.access(self._state_dir, os.W_OK)
        return writable, {
            "status": "spooling" if writable else "failing: the spool cannot be written",
            "database": "unreachable",
            "spooled": pending,
            "spool": str(self.path),
        }

    @property
    def reachable(self) -> bool:
        """Whether the last use of the database worked."""
        return not self._down

    # --- writing and spooling ------------------------------------------------------------------

    def _write(
        self, op: Operation, incident_id: IncidentId, *, before: Incident | None, term: Term | None
    ) -> None:
        """Store ``op``, already applied to the view; when it cannot be stored anywhere
        (or Postgres refused its term), put the view back to ``before`` so it does not
        know more than was kept."""
        try:
            self._store(op, term=term)
        except (SpoolError, FencedOut):
            self._view.restore(incident_id, before)
            raise

    def _store(self, op: Operation, *, term: Term | None = None) -> None:
        """Write ``op`` to Postgres (checking ``term`` in the same transaction), or to the
        spool while Postgres is away. Hold the lock."""
        if self._flush():
            try:
                self._backend.apply([op], term=term)
                return
            except StoreUnavailable as e:
                self._went_down(e)
        self._append(op)

    def _append(self, op: Operation) -> None:
        """Add ``op`` to the spool file durably, or raise SpoolError: never drop it silently."""
        line = to_json(op) + "\n"
        if not self._whole:
            self._make_whole()
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            # Evidence can hold health-check output: the spool is for medic's eyes only.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as spool:
                spool.write(line)
                spool.flush()
                os.fsync(spool.fileno())
        except OSError as e:
            # Part of the line may be in the file: the next append mends it first.
            self._whole = False
            logger.error(
                "Cannot write the incident spool {} ({}), and Postgres is unreachable: this "
                "change is lost. Make MEDIC_STATE_DIR writable and give it free space.",
                self.path,
                e,
            )
            raise SpoolError(f"cannot write the incident spool {self.path}: {e}") from e
        self._pending.append(op)
        self._start_retry()

    def _went_down(self, error: StoreUnavailable) -> None:
        """From now on, write to the spool and read the view until the retry gets through.

        The supervisor's thread does not wait on an unreachable database again and
        again: only the background retry tries it, with backoff.
        """
        self._advised_delay = error.delay
        if not self._down:
            self._down = True
            pending = f" ({len(self._pending)} pending)" if self._pending else ""
            logger.warning(
                "Postgres is unreachable ({}); incidents are spooled to {}{} and will be "
                "written when it is back.",
                error,
                self.path,
                pending,
            )
        self._start_retry()

    def _flush(self) -> bool:
        """Whether the database is in use and nothing is pending. Hold the lock."""
        if self._down:
            return False
        return not self._pending or self._replay()

    def _replay(self) -> bool:
        """Write every pending operation in order, then refresh the view. Hold the lock."""
        was_down = self._down
        written = 0
        try:
            while self._pending:
                batch = self._pending[: self._batch]
                try:
                    self._backend.apply(batch)
                except StoreUnavailable:
                    raise
                except StoreError:
                    batch = self._apply_one_by_one(batch)
                del self._pending[: len(batch)]
                written += len(batch)
        except StoreUnavailable as e:
            self._went_down(e)
        finally:
            if written:
                self._rewrite()
        if self._pending:
            return False
        if written:
            logger.info("Wrote {} spooled changes to Postgres.", written)
        if was_down or not self._seeded:
            try:
                self._mirror(self._backend.list_incidents(self._active_query()))
            except StoreUnavailable as e:
                self._went_down(e)
                return False
            self._seeded = True
        if was_down and not written:
            logger.info("Postgres at {} is reachable again.", self._where())
        self._down = False
        return True

    def _where(self) -> str:
        return str(getattr(self._backend, "where", "the incident database"))

    def _apply_one_by_one(self, batch: list[Operation]) -> list[Operation]:
        """Write ``batch`` one operation a transaction, setting aside those refused."""
        for op in batch:
            try:
                self._backend.apply([op])
            except StoreUnavailable:
                raise
            except StoreError as e:
                self._reject(op, e)
        return batch

    def _reject(self, op: Operation, error: StoreError) -> None:
        logger.error(
            "Postgres refused a spooled change ({}); it is kept in {} for a person to look at.",
            error,
            self._rejected_path,
        )
        try:
            with self._rejected_path.open("a", encoding="utf-8") as out:
                out.write(to_json(op) + "\n")
                out.flush()
                os.fsync(out.fileno())
        except OSError as e:
            logger.error("Cannot write {} either ({}); the change is lost.", self._rejected_path, e)

    def _rewrite(self) -> None:
        """Make the spool file hold exactly the pending operations."""
        try:
            if not self._pending:
                with self.path.open("w", encoding="utf-8") as spool:
                    spool.flush()
                    os.fsync(spool.fileno())
                return
            tmp = self.path.with_suffix(".jsonl.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as spool:
                spool.writelines(to_json(op) + "\n" for op in self._pending)
                spool.flush()
                os.fsync(spool.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            # The written operations stay in the file; replaying them again is harmless.
            logger.error("Cannot shorten the incident spool {}: {}.", self.path, e)

    def _load(self) -> list[Operation]:
        """The operations spooled by an earlier run, after making the file whole lines.

        A line cut short by a crash is set aside (``_mend``); a whole line this medic
        cannot read is set aside too, and the spool rewritten without it, so neither
        is lost nor read again at every start.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SpoolError(f"cannot read the incident spool {self.path}: {e}") from e
        data = self._mend(data)
        ops: list[Operation] = []
        unreadable: list[bytes] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                ops.append(from_json(raw.decode("utf-8")))
            except (UnicodeDecodeError, BadSpoolLine) as e:
                logger.warning("Line {} of {} cannot be read: {}.", number, self.path, e)
                unreadable.append(raw)
        if unreadable:
            kept = self._set_aside(b"\n".join(unreadable) + b"\n", "unreadable")
            logger.warning(
                "{} line(s) of the incident spool {} cannot be read by this medic; they are "
                "kept in {} for a person to look at, and the rest is written to Postgres.",
                len(unreadable),
                self.path,
                kept,
            )
            self._unreadable_set_aside = True
        if ops:
            logger.info("Found {} spooled incident changes in {}.", len(ops), self.path)
        return ops

    def _mend(self, data: bytes) -> bytes:
        """Make the spool end with a whole line, so the next change is a line of its own.

        ``data`` is the file's content; what is returned is what stays in it. A
        last line without its newline was cut short by a crash (or a full disk)
        while it was written: it is moved to ``spool.jsonl.torn-<UTC time>`` with a
        warning naming that file. A last line that is a whole operation and lacks
        only its newline gets the newline instead.
        """
        if not data or data.endswith(b"\n"):
            return data
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            from_json(tail.decode("utf-8"))
        except (UnicodeDecodeError, BadSpoolLine):
            pass
        else:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                with os.fdopen(fd, "wb") as spool:
                    spool.write(b"\n")
                    spool.flush()
                    os.fsync(spool.fileno())
            except OSError as e:
                raise SpoolError(f"cannot end the last line of {self.path}: {e}") from e
            return data + b"\n"
        kept = self._set_aside(tail, "torn")
        try:
            os.truncate(self.path, cut)
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise SpoolError(
                f"cannot cut the torn last line off {self.path} (it is copied to {kept}): {e}"
            ) from e
        logger.warning(
            "The last line of the incident spool {} was cut short, most likely by a crash "
            "while it was written; its {} bytes are kept in {} for a person to look at, and "
            "the spool goes on from the last whole line.",
            self.path,
            len(tail),
            kept,
        )
        return data[:cut]

    def _set_aside(self, content: bytes, kind: str) -> Path:
        """Write ``content`` to a new file ``spool.jsonl.<kind>-<UTC time>`` (mode 0600)
        next to the spool, durably; SpoolError when it cannot be written."""
        stamp = self._now().astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for n in range(1000):
            target = self._state_dir / f"{SPOOL_FILE}.{kind}-{stamp}{f'-{n}' if n else ''}"
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as e:
                raise SpoolError(f"cannot set aside part of {self.path} in {target}: {e}") from e
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as e:
                raise SpoolError(f"cannot set aside part of {self.path} in {target}: {e}") from e
            return target
        raise SpoolError(f"cannot find a free name to set aside part of {self.path}")

    def _make_whole(self) -> None:
        """Before appending after a write that failed half-way: mend the file again."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise SpoolError(f"cannot read the incident spool {self.path}: {e}") from e
        self._mend(data)
        self._whole = True

    def _start_retry(self) -> None:
        """Start the background retry unless it runs already. Hold the lock.

        ``_retrying`` is set and cleared under the lock, so a retry that is about
        to finish cannot leave a new outage without one.
        """
        if self._closed.is_set() or self._retrying:
            return
        self._retrying = True
        self._retry = threading.Thread(target=self._retry_loop, name="medic-spool", daemon=True)
        self._retry.start()

    def _next_pause(self, failures: int) -> float:
        """Seconds before the next try: the database's advice when its error gave one,
        else the backoff for ``failures`` failed tries. Hold the lock."""
        if self._advised_delay is not None:
            return self._advised_delay
        return self._retry_delays[min(failures, len(self._retry_delays) - 1)]

    def _retry_loop(self) -> None:
        failures = 0
        while True:
            with self._lock:
                delay = self._next_pause(failures)
                self._advised_delay = None
            if self._sleep is not None:
                self._sleep(delay)
            else:
                self._closed.wait(delay)
            with self._lock:
                if self._closed.is_set():
                    self._retrying = False
                    return
                try:
                    done = self._replay()
                except StoreError as e:
                    logger.error(
                        "Writing the spooled incident changes failed: {}. medic tries again in {}.",
                        e,
                        format_duration(self._next_pause(failures + 1)),
                    )
                    done = False
                if done:
                    self._retrying = False
                    return
            failures += 1

    # --- the in-memory view --------------------------------------------------------------------

    def _mirror(self, incidents: Sequence[Incident]) -> None:
        """Copy what the database says into the view, unless the view knows more. Another
        medic's incidents are not this one's to remember."""
        for incident in incidents:
            if self.identity is not None and incident.scope != self.scope:
                continue
            if self._pending:
                try:
                    self._view.get(incident.id)
                    continue
                except IncidentNotFound:
                    pass
            known = self._known(incident.id)
            if known is not None and known.evidence and not incident.evidence:
                self._view.put(replace(incident, evidence=known.evidence))
            else:
                self._view.put(incident)

    def _known(self, incident_id: str) -> Incident | None:
        try:
            found = self._view.get(incident_id)
        except IncidentNotFound:
            return None
        return found if found.id == incident_id else None

    def _own_before_change(self, incident_id: IncidentId) -> Incident | None:
        """The incident as the view holds it before a change to its status or container
        (None when no store has it); ForeignIncident when it is another medic's."""
        self._know(incident_id)
        before = self._known(incident_id)
        if before is not None:
            self.check_own(before)
        return before

    def _know(self, incident_id: IncidentId) -> None:
        """Make sure the view holds ``incident_id``, fetching it when only Postgres has it;
        ForeignIncident (and nothing remembered) when it is another medic's."""
        if self._known(incident_id) is not None:
            return
        try:
            found = self._backend.get(incident_id)
        except StoreUnavailable as e:
            self._went_down(e)
            return
        self.check_own(found)
        self._view.put(found)

    def _apply_to_view(self, op: Operation) -> None:
        """Replay a spooled operation from an earlier run onto the view."""
        try:
            if isinstance(op, OpenIncident):
                self._view.put(op.incident)
            elif isinstance(op, RecordAttempt):
                self._view.record_attempt(op.attempt)
            elif isinstance(op, SetStatus):
                self._view.set_status(op.incident_id, op.status, at=op.at, note=op.note)
            elif isinstance(op, MoveIncident):
                self._view.move_incident(op.incident_id, op.container, at=op.at, note=op.note)
            elif isinstance(op, RecordDiagnosis):
                self._view.record_diagnosis(op.diagnosis)
            elif isinstance(op, RecordFix):
                self._view.put_fix(op.fix)
            elif isinstance(op, RecordNotification):
                self._view.record_notification(op.record)
        except (IncidentNotFound, ForeignIncident):
            # A change this store accepted earlier is replayed to Postgres as written,
            # whoever's scope its incident has (a spool left by a medic from before
            # scopes); the view only holds what this medic may act on.
            pass
