"""Who may use the console (agent/web/auth.py): the token, sessions, the sign-in form's
CSRF token and the limit on failed sign-ins, on a clock the test moves."""

from __future__ import annotations

import pytest

from agent.web.auth import Gate, SignInLimiter, bearer_token, same_secret

TOKEN = "a-long-console-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_the_exact_token_passes() -> None:
    gate = Gate(TOKEN)
    assert gate.token_ok(TOKEN)
    for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), f" {TOKEN}"):
        assert not gate.token_ok(wrong), wrong
    assert same_secret("ü", "ü") and not same_secret("\udcff", "ü")


def test_bearer_headers_are_read_strictly() -> None:
    assert bearer_token(f"Bearer {TOKEN}") == TOKEN
    assert bearer_token(f"bearer  {TOKEN} ") == TOKEN
    for header in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN):
        assert bearer_token(header) is None, header
    gate = Gate(TOKEN)
    assert gate.bearer_ok(f"Bearer {TOKEN}") and not gate.bearer_ok("Bearer nope")


def test_an_empty_token_cannot_make_a_gate() -> None:
    with pytest.raises(ValueError, match="empty"):
        Gate("  ")


def test_sessions_are_random_expire_and_close() -> None:
    clock = Clock()
    gate = Gate(TOKEN, clock=clock, lifetime=60)
    one, two = gate.open_session(), gate.open_session()
    assert len({one.id, two.id, one.csrf, two.csrf}) == 4
    assert len(one.id) >= 40 and len(one.csrf) >= 40
    assert gate.session(one.id) == one
    assert gate.session("forged") is None and gate.session(None) is None
    gate.close_session(one.id)
    assert gate.session(one.id) is None
    clock.now += 61
    assert gate.session(two.id) is None


def test_sessions_are_bounded_and_the_oldest_go_first() -> None:
    gate = Gate(TOKEN, max_sessions=3)
    sessions = [gate.open_session() for _ in range(5)]
    assert [gate.session(s.id) is not None for s in sessions] == [False, False, True, True, True]


def test_the_sign_in_forms_token_belongs_to_its_cookie_and_to_this_process() -> None:
    gate = Gate(TOKEN)
    csrf = gate.sign_in_csrf("nonce-1")
    assert gate.sign_in_csrf_ok("nonce-1", csrf)
    assert not gate.sign_in_csrf_ok("nonce-2", csrf)
    assert not gate.sign_in_csrf_ok(None, csrf) and not gate.sign_in_csrf_ok("nonce-1", None)
    # Another medic (or this one restarted) has another key.
    assert not Gate(TOKEN).sign_in_csrf_ok("nonce-1", csrf)


def test_failed_sign_ins_are_limited_per_client_and_in_all() -> None:
    clock = Clock()
    limiter = SignInLimiter(per_client=3, overall=5, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.failed("10.0.0.1")
    wait = limiter.retry_after("10.0.0.1")
    assert wait is not None and 59 <= wait <= 60
    # Another address may still try, until the failures in all reach the limit.
    assert limiter.retry_after("10.0.0.2") is None
    limiter.failed("10.0.0.2")
    limiter.failed("10.0.0.3")
    assert limiter.retry_after("10.0.0.9") is not None
    clock.now += 61
    assert limiter.retry_after("10.0.0.1") is None
    assert limiter.retry_after("10.0.0.9") is None


def test_a_success_forgets_that_clients_failures() -> None:
    limiter = SignInLimiter(per_client=2, overall=100, window=60, clock=Clock())
    limiter.failed("10.0.0.1")
    limiter.succeeded("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") is None
