"""The lease of a scope: which medic acts for it, as the database keeps it.

Several medics may watch one scope (a compose project on one Docker engine,
``Identity.scope``); one row per scope says which of them leads. A claim takes the
row when it is free or has run out, and renews it when the claimer holds it; each
time the row passes to a new term its fencing token goes up by one. Expiry is judged
by the database's clock alone, inside the statement, so no two hosts' clocks are ever
compared (docs/ha.md).

Every incident and attempt write of a leading medic carries its ``Term``; the store
compares it with the row in the same transaction and refuses the write with
``FencedOut`` when it is not the row's term any more.

This module holds the values and the interface; ``postgres.PostgresLeases`` is the
real one, and the tests have an honest fake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Term:
    """One medic's hold on the lease of its scope: who (``holder``) and which term
    (``token``, the fencing token). Writes carry it; a later term refuses them."""

    scope: str
    holder: str
    token: int


@dataclass(frozen=True)
class Claim:
    """The lease row of a scope as the database answered a claim: who holds it, in
    which term, since when and until when (both in the database's time)."""

    scope: str
    holder: str
    token: int
    acquired_at: datetime
    expires_at: datetime

    @property
    def term(self) -> Term:
        return Term(self.scope, self.holder, self.token)


#: What a store asks before each incident or attempt write: the term to write under,
#: or FencedOut when this medic may not write now (agent/leader.py's ``fence``).
Fence = Callable[[], Term]


class LeaseStore(ABC):
    """Where the leases live: one row per scope."""

    @abstractmethod
    def claim(self, scope: str, holder: str, *, seconds: float) -> Claim:
        """Take the lease of ``scope`` for ``holder`` for ``seconds`` of the database's
        time, or renew it when ``holder`` holds it and it has not run out.

        The token stays the same while one holder renews in time; it goes up by one
        when the lease passes to another holder, or back to a holder whose lease ran
        out. Returns the row as it is afterwards: another holder's when that one holds
        a lease that has not run out (nothing changes then). StoreUnavailable when the
        database cannot be reached, StoreError when it refuses.
        """

    @abstractmethod
    def release(self, term: Term) -> None:
        """Let the lease run out now, if ``term`` is still its term, so that a medic
        standing by takes over at its next claim instead of waiting for the expiry."""

    def close(self) -> None:  # noqa: B027 - optional hook, a fake holds nothing
        """Close the connection, if any."""
