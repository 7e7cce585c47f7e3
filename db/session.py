"""Engine factory and session-per-action helper.

SQLite in the workspace by default (WAL journal, busy timeout, foreign keys on); PostgreSQL (or
any SQLAlchemy URL) when `SYNTHCT_DATABASE_URL` is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

ENV_DATABASE_URL = "SYNTHCT_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url(sqlite_path: str | os.PathLike | None = None) -> str:
    """$SYNTHCT_DATABASE_URL if set, else a SQLite file (default ./workspace/synthct.db)."""
    url = os.environ.get(ENV_DATABASE_URL)
    if url:
        return url
    path = Path(sqlite_path or Path("workspace") / "synthct.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite connections get WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            if ":memory:" not in url and url != "sqlite://":
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One session per user action: commit on success, roll back on error, always close."""
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def init_db(engine: Engine) -> int:
    """Create the schema or upgrade it to the latest version (db/migrations.py); return the version."""
    from db.migrations import upgrade

    return upgrade(engine)
