"""Who may use the console and its API: one token, sessions for browsers, CSRF tokens
for their forms, and a limit on sign-in attempts.

- The token is MEDIC_UI_TOKEN. It is compared in constant time (``hmac.compare_digest``
  over SHA-256 digests, so not even its length leaks) and never stored or logged.
- Scripts send it with every request: ``Authorization: Bearer <token>``. Every ``/api/``
  request must; pages accept it too.
- A browser signs in once with the token and gets a session: a random id in a cookie
  that scripts cannot read (HttpOnly) and other sites cannot send (SameSite=Strict).
  Sessions live in this process only: restarting medic signs everyone out.
- Every form carries a CSRF token. A session's is random and kept with the session;
  the sign-in form's is an HMAC of a random cookie under a key made at start-up, so it
  holds without a session. A form posted with a session cookie and without its token is
  refused.
- Failed sign-ins are limited per client address and in all: past the limit, sign-in
  answers 429 with Retry-After, even to the right token, until the window has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

#: How long a browser session lasts without signing in again.
SESSION_SECONDS = 12 * 3600

#: Sessions kept at most; the oldest go first.
MAX_SESSIONS = 1000

SESSION_COOKIE = "medic_session"
SIGN_IN_COOKIE = "medic_sign_in"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in time that does not depend on either."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if it is one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires: float


class Gate:
    """Checks the token, and keeps the browser sessions it opened."""

    def __init__(
        self,
        token: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        lifetime: float = SESSION_SECONDS,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        if not token.strip():
            raise ValueError("the console's token is empty")
        self._token = token
        self._clock = clock
        self.lifetime = lifetime
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._sign_in_key = secrets.token_bytes(32)

    def token_ok(self, given: str | None) -> bool:
        return given is not None and same_secret(given, self._token)

    def bearer_ok(self, header: str | None) -> bool:
        return self.token_ok(bearer_token(header))

    # --- sessions ------------------------------------------------------------------------

    def open_session(self) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=self._clock() + self.lifetime,
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def session(self, session_id: str | None) -> Session | None:
        """The live session with this id, or None (unknown, or expired and forgotten)."""
        if not session_id:
            return None
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if session.expires <= self._clock():
                del self._sessions[session_id]
                return None
            return session

    def close_session(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    # --- the sign-in form's CSRF token ---------------------------------------------------

    def sign_in_csrf(self, nonce: str) -> str:
        """The sign-in form's token for the browser holding ``nonce`` in its cookie."""
        return hmac.new(self._sign_in_key, nonce.encode(), hashlib.sha256).hexdigest()

    def sign_in_csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        if not nonce or not given:
            return False
        return hmac.compare_digest(self.sign_in_csrf(nonce), given)


class SignInLimiter:
    """At most ``per_client`` failed sign-ins from one address, and ``overall`` from all
    addresses together, within ``window`` seconds."""

    def __init__(
        self,
        *,
        per_client: int = 5,
        overall: int = 50,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()
        self._lock = threading.Lock()

    def _forget_old(self, now: float) -> None:
        horizon = now - self.window
        while self._all and self._all[0] <= horizon:
            self._all.popleft()
        for client in list(self._failures):
            times = self._failures[client]
            while times and times[0] <= horizon:
                times.popleft()
            if not times:
                del self._failures[client]

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        now = self._clock()
        with self._lock:
            self._forget_old(now)
            waits = []
            times = self._failures.get(client)
            if times is not None and len(times) >= self.per_client:
                waits.append(times[0] + self.window - now)
            if len(self._all) >= self.overall:
                waits.append(self._all[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            self._failures.setdefault(client, deque()).append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
            self._all.append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
