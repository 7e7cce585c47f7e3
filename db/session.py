"""The database of both shells (CLI and app): one engine per URL, and one session per action.

SQLite in the workspace by default (WAL journal, busy timeout, foreign keys on); PostgreSQL (or
any SQLAlchemy URL) when `SYNTHCT_DATABASE_URL` is set. `engine_for` is the one place the CLI,
the app and background jobs get their engine from, so every shell reads the same database and
the schema is migrated once per process, before the first session.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from db.migrations import upgrade

ENV_DATABASE_URL = "SYNTHCT_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000
MAX_CACHED_ENGINES = 8  # a process normally uses one URL; tests and the app may switch a few

_engines: OrderedDict[str, Engine] = OrderedDict()
_engines_lock = threading.Lock()


def database_url(sqlite_path: str | os.PathLike | None = None) -> str:
    """$SYNTHCT_DATABASE_URL if set, else a SQLite file (default ./workspace/synthct.db)."""
    url = os.environ.get(ENV_DATABASE_URL)
    if url:
        return url
    path = Path(sqlite_path or Path("workspace") / "synthct.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def engine_for(sqlite_path: str | os.PathLike | None = None) -> Engine:
    """The engine of the shells: $SYNTHCT_DATABASE_URL if set, else SQLite at `sqlite_path`
    (the workspace's synthct.db); see `engine_for_url`."""
    return engine_for_url(database_url(sqlite_path))


def engine_for_url(url: str) -> Engine:
    """The process's engine for `url`, its schema upgraded to the latest version on first use.

    Engines are cached per URL (the most recent `MAX_CACHED_ENGINES`), so sessions of one
    process share a connection pool and migrations run once. An engine pushed out of the cache
    is disposed: its idle connections close, and connections still checked out close when they
    are returned, so a caller still holding it keeps working. A URL whose migration fails is not
    cached; the next call tries again.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is not None:
            _engines.move_to_end(url)
            return engine
        engine = make_engine(url)
        try:
            init_db(engine)
        except BaseException:
            engine.dispose()
            raise
        _engines[url] = engine
        while len(_engines) > MAX_CACHED_ENGINES:
            _, old = _engines.popitem(last=False)
            old.dispose()
        return engine


def make_engine(url: str) -> Engine:
    """A new engine without migrations; SQLite connections get WAL, a busy timeout and foreign
    keys. The shells use `engine_for`; this is for a private database (tests, benchmarks)."""
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
    return upgrade(engine)
