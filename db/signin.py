"""Repository functions for the researcher sign-in back-off. Each takes the caller's session.

A scope's row counts consecutive failed sign-ins (reset when the last failure is older than the
caller's window) and holds the time until which sign-in is refused. The count is bumped by one
UPDATE statement, so two server processes failing at once both count: the row is write-locked
from the UPDATE until the caller commits (SQLite: the database write lock; PostgreSQL: the row
lock).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.orm import Session

from db.models import SignInThrottle


def _aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def record_failure(session: Session, scope: str, now: datetime, window_s: float) -> int:
    """Count one failed sign-in for `scope` and return its consecutive failures (flushed).

    A failure more than `window_s` after the previous one starts the count again at 1. A
    concurrent first failure for the same scope raises IntegrityError at the flush; the caller
    rolls back and retries.
    """
    t = SignInThrottle
    cutoff = now - timedelta(seconds=window_s)
    result = session.execute(
        update(t)
        .where(t.scope == scope)
        .values(
            failures=case((t.last_failure_at < cutoff, 1), else_=t.failures + 1),
            last_failure_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 0:
        session.add(SignInThrottle(scope=scope, failures=1, last_failure_at=now, locked_until=now))
        session.flush()
        return 1
    return int(session.execute(select(t.failures).where(t.scope == scope)).scalar_one())


def lock_until(session: Session, scope: str, until: datetime) -> None:
    """Refuse sign-in for `scope` until `until` (never shortens an existing lock)."""
    t = SignInThrottle
    session.execute(
        update(t)
        .where(t.scope == scope, t.locked_until < until)
        .values(locked_until=until)
        .execution_options(synchronize_session=False)
    )


def locked_until(session: Session, scopes: Sequence[str]) -> datetime | None:
    """The latest lock time over `scopes` (None when none of them has a row)."""
    t = SignInThrottle
    found = session.scalars(select(t.locked_until).where(t.scope.in_(list(scopes)))).all()
    return max((_aware(v) for v in found), default=None)


def clear(session: Session, scope: str) -> None:
    """Forget a scope's failures (after a successful sign-in)."""
    session.execute(delete(SignInThrottle).where(SignInThrottle.scope == scope))


def prune(session: Session, before: datetime, now: datetime) -> int:
    """Delete rows whose last failure is older than `before` and whose lock has ended."""
    t = SignInThrottle
    result = session.execute(delete(t).where(t.last_failure_at < before, t.locked_until < now))
    return int(result.rowcount or 0)
