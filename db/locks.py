"""A named lock held in the database, shared by every process and host that uses it.

PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) on a key derived from the name;
it blocks no table and is released when the holder's connection ends, so a killed holder never
leaves it stuck. SQLite: an IMMEDIATE transaction, which admits one writer at a time to the
whole file (hold it briefly).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text


def lock_key(name: str) -> int:
    """A signed 64-bit key for `name` (stable across processes and hosts)."""
    return zlib.crc32(name.encode()) - 2**31


@contextmanager
def named_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock `name` for the duration of the block (waits for other holders)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(name)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(name)})
                conn.commit()
        return
    with engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        old = dbapi.isolation_level
        dbapi.isolation_level = None  # pysqlite: let BEGIN IMMEDIATE through as written
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.exec_driver_sql("COMMIT")
        finally:
            dbapi.isolation_level = old
            conn.rollback()
