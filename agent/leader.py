"""Whether this medic leads its scope: the lease claimed on a thread of its own.

``LeaseLeader`` claims the lease of its scope (agent/store/lease.py) every
``LeaseTiming.every`` seconds, whatever the decision thread is doing, so a slow poll
never costs the lease. The decision thread asks ``holds()`` before it records or acts:
the answer comes from this process's steady clock alone (agent/leadership.py), so a
medic that was paused, starved or cut off from Postgres past its lease finds out
before it does anything, and steps down. Each change of role is said in one log line,
whichever thread sees it first, and wakes the supervisor (``start``'s ``wake``).

``fence()`` is what the store asks before each incident or attempt write: the term to
write under, or ``FencedOut``. Postgres then checks that term against the lease row in
the write's own transaction; when it refuses, the supervisor tells ``fenced()``.

``Sole`` is the leader of a medic without a database: the only one, always leading.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from loguru import logger

from agent.clock import SYSTEM_CLOCK, Clock, steady
from agent.errors import FencedOut, StoreError
from agent.leadership import (
    Change,
    LeaseTiming,
    Role,
    Standing,
    after_claim,
    fenced,
    holds,
    lapse,
    standing_by,
)
from agent.store.lease import LeaseStore, Term


def holder_id() -> str:
    """This process's name in the lease row: host (a container's id, in a container),
    process id and a few random characters, so a restarted medic is a new holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leader(Protocol):
    """What the supervisor asks of leadership."""

    @property
    def elected(self) -> bool:
        """Whether a lease decides (False: this medic is the only one and always leads)."""
        ...

    @property
    def holder(self) -> str: ...

    def holds(self) -> bool:
        """Whether this medic may act now."""
        ...

    def standing(self) -> Standing: ...

    def claim(self) -> None:
        """Claim (or renew) the lease now."""
        ...

    def start(self, wake: Callable[[], None]) -> None:
        """Claim in the background from now on; ``wake`` is called after each change."""
        ...

    def fenced(self, error: FencedOut) -> None:
        """Postgres refused a write of this medic's term: step down."""
        ...

    def close(self) -> None:
        """Stop claiming and let the lease go, so a standby takes over at once."""
        ...


class Sole:
    """The leader of a medic without a database: it alone watches its scope."""

    elected = False

    def __init__(self, *, since: datetime, holder: str | None = None) -> None:
        self.holder = holder or holder_id()
        self._standing = Standing(Role.LEADER, since, leader=self.holder)

    def holds(self) -> bool:
        return True

    def standing(self) -> Standing:
        return self._standing

    def claim(self) -> None:
        pass

    def start(self, wake: Callable[[], None]) -> None:
        pass

    def fenced(self, error: FencedOut) -> None:
        pass

    def close(self) -> None:
        pass


class LeaseLeader:
    """Leads while it holds the lease of its scope in the database; stands by otherwise."""

    elected = True

    def __init__(
        self,
        leases: LeaseStore,
        *,
        scope: str,
        describe: str,
        timing: LeaseTiming,
        holder: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        mono: Callable[[], float] = steady,
    ) -> None:
        """``scope`` keys the lease row (``Identity.scope``); ``describe`` names it for
        people (``compose project 'shop' on engine ABCD``)."""
        self.holder = holder or holder_id()
        self.timing = timing
        self._leases = leases
        self._scope = scope
        self._describe = describe
        self._clock = clock
        self._mono = mono
        self._lock = threading.RLock()
        self._standing = standing_by(clock.now())
        self._failure: str | None = None
        self._said_unreachable = False
        self._said_standing_by = False
        self._wake: Callable[[], None] | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the supervisor and the store ask ------------------------------------------

    def holds(self) -> bool:
        with self._lock:
            self._lapse()
            return holds(self._standing, mono=self._mono(), timing=self.timing)

    def standing(self) -> Standing:
        with self._lock:
            return self._standing

    def fence(self) -> Term:
        """The term to write under; FencedOut when this medic may not act now."""
        with self._lock:
            self._lapse()
            term = self._standing.term
            if term is None or not holds(self._standing, mono=self._mono(), timing=self.timing):
                raise FencedOut(f"this medic does not lead {self._describe}, so it writes nothing")
            return term

    def fenced(self, error: FencedOut) -> None:
        with self._lock:
            standing, change = fenced(
                self._standing,
                now=self._clock.now(),
                why=f"Postgres refused its write ({error})",
            )
            self._change(standing, change)

    # --- claiming -------------------------------------------------------------------------

    def claim(self) -> None:
        sent = self._mono()
        try:
            answer = self._leases.claim(self._scope, self.holder, seconds=self.timing.duration)
        except StoreError as e:
            with self._lock:
                self._failure = str(e)
                self._unreachable(e)
                self._lapse()
            return
        with self._lock:
            if self._said_unreachable:
                logger.info("Postgres answers this medic's lease claims again.")
            self._failure = None
            self._said_unreachable = False
            self._lapse()
            standing, change = after_claim(
                self._standing,
                answer,
                me=self.holder,
                sent=sent,
                mono=self._mono(),
                now=self._clock.now(),
                timing=self.timing,
            )
            self._change(standing, change)
            if not standing.leading and not self._said_standing_by:
                self._said_standing_by = True
                logger.info(
                    "medic stands by: {} leads {} (lease term {}). This medic observes and "
                    "serves its pages but records nothing and takes no action; it takes over "
                    "within {:g} s if that medic stops renewing its lease.",
                    answer.holder,
                    self._describe,
                    answer.token,
                    self.timing.takeover,
                )

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="medic-lease", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            term = self._standing.term if self._standing.leading else None
            self._standing = standing_by(self._clock.now())
        if term is not None:
            try:
                self._leases.release(term)
            except StoreError as e:
                logger.warning(
                    "medic could not let go of its lease of {} ({}); a standby takes over "
                    "when it runs out, within {:g} s.",
                    self._describe,
                    e,
                    self.timing.duration,
                )
            else:
                logger.info(
                    "medic let go of its lease of {}; a medic standing by takes over within "
                    "{:g} s.",
                    self._describe,
                    self.timing.every,
                )
        self._leases.close()

    def _run(self) -> None:
        while not self._closing.is_set():
            started = self._mono()
            self.claim()
            pause = self.timing.every - (self._mono() - started)
            if self._closing.wait(max(0.0, pause)):
                return

    # --- changes of role ---------------------------------------------------------------------

    def _lapse(self) -> None:
        """Step down when the last renewal is too old to act on. Hold the lock."""
        standing, change = lapse(
            self._standing,
            mono=self._mono(),
            now=self._clock.now(),
            timing=self.timing,
            failure=self._failure,
        )
        self._change(standing, change)

    def _change(self, standing: Standing, change: Change | None) -> None:
        """Take the new standing and say the change in one line. Hold the lock."""
        was = self._standing
        self._standing = standing
        if change is None:
            return
        if change.role is Role.STANDBY or was.leading:
            logger.warning(
                "medic stepped down from leading {}: {}. It stands by and takes no action; "
                "if this repeats, check that this host reaches Postgres quickly and is not "
                "paused or starved (medic status shows which medic leads).",
                self._describe,
                change.why,
            )
            self._said_standing_by = True
        if change.role is Role.LEADER and change.term is not None:
            before = f", taking over from {change.before}" if change.before else ""
            logger.info(
                "medic leads {} now (lease term {}, holder {}{}): it records, heals and "
                "escalates, and medics standing by only observe.",
                self._describe,
                change.term.token,
                self.holder,
                before,
            )
        if self._wake is not None:
            self._wake()

    def _unreachable(self, error: StoreError) -> None:
        """Say once per outage that the lease cannot be claimed. Hold the lock."""
        if self._said_unreachable:
            return
        self._said_unreachable = True
        if self._standing.leading and self._standing.sent is not None:
            left = self.timing.acting - (self._mono() - self._standing.sent)
            logger.warning(
                "medic cannot renew its lease of {} ({}); it stops acting in {:.1f} s "
                "unless Postgres answers before. Incidents are spooled meanwhile.",
                self._describe,
                error,
                max(0.0, left),
            )
        else:
            logger.warning(
                "medic cannot claim the lease of {} ({}), so it stands by and acts only "
                "once Postgres answers and it holds the lease.",
                self._describe,
                error,
            )
