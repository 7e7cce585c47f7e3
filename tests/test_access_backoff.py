"""The researcher sign-in back-off: exponential delays per browser session and globally, kept in
the database (SQLite and PostgreSQL), counted correctly when several processes fail at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from db.session import init_db, make_engine, session_scope
from synthct.access import (
    GLOBAL_BACKOFF,
    GLOBAL_SCOPE,
    SESSION_BACKOFF,
    Backoff,
    new_session_key,
    record_failed_sign_in,
    record_successful_sign_in,
    sign_in_wait,
)

pytest_plugins = ["conftest_pg"]
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def test_backoff_delays_double_up_to_the_cap():
    b = Backoff(free=3, base_s=5.0, cap_s=60.0, window_s=3600.0)
    assert [b.delay(n) for n in range(1, 9)] == [0, 0, 5, 10, 20, 40, 60, 60]
    assert GLOBAL_BACKOFF.free > SESSION_BACKOFF.free  # one session is stopped first
    assert GLOBAL_BACKOFF.cap_s <= 60  # a researcher is never locked out for long


def _fail(engine, key, now):
    with session_scope(engine) as s:
        return record_failed_sign_in(s, key, now=now).wait_s


def _wait(engine, key, now):
    with session_scope(engine) as s:
        return sign_in_wait(s, key, now=now)


def test_one_session_is_paused_after_three_failures(db_engine):
    key, other = new_session_key(), new_session_key()
    with session_scope(db_engine) as s:
        assert record_failed_sign_in(s, key, now=T0) == (0.0, SESSION_BACKOFF.free - 1)
    assert _fail(db_engine, key, T0 + timedelta(seconds=1)) == 0.0
    assert _wait(db_engine, key, T0 + timedelta(seconds=2)) == 0.0
    t3 = T0 + timedelta(seconds=2)
    assert _fail(db_engine, key, t3) == SESSION_BACKOFF.base_s
    assert _wait(db_engine, key, t3 + timedelta(seconds=1)) == pytest.approx(
        SESSION_BACKOFF.base_s - 1
    )
    assert _wait(db_engine, other, t3 + timedelta(seconds=1)) == 0.0  # other sessions go on
    t4 = t3 + timedelta(seconds=SESSION_BACKOFF.base_s)
    assert _wait(db_engine, key, t4) == 0.0  # the pause has ended
    assert _fail(db_engine, key, t4) == 2 * SESSION_BACKOFF.base_s  # and doubles next time
    with session_scope(db_engine) as s:
        record_successful_sign_in(s, key)
    assert _wait(db_engine, key, t4) == 0.0


def test_new_sessions_do_not_escape_the_global_backoff(db_engine):
    """A reload is a new session: after GLOBAL_BACKOFF.free failures from fresh sessions every
    session, including a brand-new one, has to wait."""
    now = T0
    for i in range(GLOBAL_BACKOFF.free - 1):
        assert _fail(db_engine, new_session_key(), now + timedelta(seconds=i)) == 0.0
    now += timedelta(seconds=GLOBAL_BACKOFF.free)
    assert _fail(db_engine, new_session_key(), now) == GLOBAL_BACKOFF.base_s
    assert _wait(db_engine, new_session_key(), now) == pytest.approx(GLOBAL_BACKOFF.base_s)
    # a success in one session does not lift the global pause for the others
    lucky = new_session_key()
    with session_scope(db_engine) as s:
        record_successful_sign_in(s, lucky)
    assert _wait(db_engine, new_session_key(), now) > 0
    # the count starts again once the last failure is older than the window
    later = now + timedelta(seconds=GLOBAL_BACKOFF.window_s + 1)
    assert _wait(db_engine, new_session_key(), later) == 0.0
    assert _fail(db_engine, new_session_key(), later) == 0.0


def test_the_backoff_survives_a_new_engine(db_url):
    """Kept in the database: another server process (here another engine) sees the pause."""
    a, b = make_engine(db_url), make_engine(db_url)
    init_db(a)
    key = new_session_key()
    for i in range(SESSION_BACKOFF.free):
        _fail(a, key, T0 + timedelta(seconds=i))
    assert _wait(b, key, T0 + timedelta(seconds=SESSION_BACKOFF.free)) > 0
    a.dispose()
    b.dispose()


def test_concurrent_failures_are_all_counted(db_url):
    """Two processes' worth of simultaneous failures: the global count loses none of them."""
    from db.models import SignInThrottle

    engines = [make_engine(db_url) for _ in range(4)]
    init_db(engines[0])
    per_thread = 8
    errors: list[BaseException] = []

    def worker(engine):
        try:
            for _ in range(per_thread):
                _fail(engine, new_session_key(), T0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with session_scope(engines[0]) as s:
        row = s.get(SignInThrottle, GLOBAL_SCOPE)
        assert row.failures == per_thread * len(engines)
    for e in engines:
        e.dispose()
