"""Schema versions: ordered migrations of plain DDL, applied in one transaction each.

Why not Alembic: the schema is small and changes rarely; a migration here is one entry in
`MIGRATIONS` (a version number, a description and plain DDL statements), which needs no extra
dependency, no env.py/script folder and no autogenerate step whose output must be reviewed
anyway. Each migration runs inside a transaction (SQLite: `BEGIN IMMEDIATE`, so two processes
starting at once serialise; PostgreSQL: transactional DDL with the version table locked) together
with the row that records its version in `schema_version`, so a failed migration leaves the
database exactly at the previous version.

DDL is written once for both dialects; `{pk}` and `{ts}` are replaced per dialect (SQLite
`INTEGER PRIMARY KEY`, PostgreSQL `SERIAL PRIMARY KEY`; timestamps with time zone). A database
created before versioning existed (by `Base.metadata.create_all`) is adopted: while no version
is recorded, a migration whose tables all exist already is recorded without running its DDL, and
an `ADD COLUMN` or `CREATE INDEX` whose column or index exists already (a table that
`create_all` made from the current models) is skipped. Changing a model in db/models.py means
appending a migration here; a test compares the migrated schema with the models.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, inspect, text

VERSION_TABLE = "schema_version"
_ADD_COLUMN = re.compile(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)
_CREATE_INDEX = re.compile(r"\s*CREATE INDEX (\w+) ON (\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]

    @property
    def creates(self) -> tuple[str, ...]:
        """Names of the tables this migration creates."""
        return tuple(
            m.group(1)
            for st in self.statements
            if (m := re.match(r"\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)", st, re.IGNORECASE))
        )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs table",
        (
            """CREATE TABLE jobs (
                id {pk},
                kind VARCHAR(32) NOT NULL,
                args JSON NOT NULL,
                device VARCHAR(32) NOT NULL,
                status VARCHAR(16) NOT NULL,
                progress DOUBLE PRECISION NOT NULL,
                message TEXT NOT NULL,
                pid INTEGER,
                log_path TEXT,
                result TEXT,
                created_at {ts} NOT NULL,
                started_at {ts},
                finished_at {ts}
            )""",
            "CREATE INDEX ix_jobs_status ON jobs (status)",
        ),
    ),
    Migration(
        2,
        "visual turing test: studies, study cases, raters, assignments, ratings",
        (
            """CREATE TABLE studies (
                id {pk},
                name VARCHAR(128) NOT NULL UNIQUE,
                seed INTEGER NOT NULL,
                manifest_sha256 VARCHAR(64) NOT NULL,
                params JSON NOT NULL,
                created_at {ts} NOT NULL
            )""",
            """CREATE TABLE study_cases (
                id {pk},
                study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
                public_id VARCHAR(32) NOT NULL UNIQUE,
                position INTEGER NOT NULL,
                truth VARCHAR(16) NOT NULL,
                source TEXT NOT NULL,
                case_id TEXT NOT NULL,
                duplicate_of VARCHAR(32),
                png_sha256 VARCHAR(64) NOT NULL,
                CONSTRAINT uq_study_cases_position UNIQUE (study_id, position),
                CONSTRAINT ck_study_cases_truth CHECK (truth IN ('real', 'synthetic'))
            )""",
            "CREATE INDEX ix_study_cases_study_id ON study_cases (study_id)",
            """CREATE TABLE raters (
                id {pk},
                study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
                name VARCHAR(128) NOT NULL,
                token_hash VARCHAR(64) NOT NULL UNIQUE,
                created_at {ts} NOT NULL,
                revoked_at {ts},
                CONSTRAINT uq_raters_study_name UNIQUE (study_id, name)
            )""",
            "CREATE INDEX ix_raters_study_id ON raters (study_id)",
            """CREATE TABLE assignments (
                id {pk},
                rater_id INTEGER NOT NULL REFERENCES raters (id) ON DELETE CASCADE,
                study_case_id INTEGER NOT NULL REFERENCES study_cases (id) ON DELETE CASCADE,
                position INTEGER NOT NULL,
                shown_at {ts},
                CONSTRAINT uq_assignments_position UNIQUE (rater_id, position),
                CONSTRAINT uq_assignments_case UNIQUE (rater_id, study_case_id)
            )""",
            "CREATE INDEX ix_assignments_rater_id ON assignments (rater_id)",
            """CREATE TABLE ratings (
                id {pk},
                rater_id INTEGER NOT NULL REFERENCES raters (id) ON DELETE CASCADE,
                study_case_id INTEGER NOT NULL REFERENCES study_cases (id) ON DELETE CASCADE,
                score INTEGER NOT NULL,
                comment TEXT NOT NULL,
                shown_at {ts} NOT NULL,
                answered_at {ts} NOT NULL,
                duration_s DOUBLE PRECISION NOT NULL,
                CONSTRAINT uq_ratings_rater_case UNIQUE (rater_id, study_case_id),
                CONSTRAINT ck_ratings_score CHECK (score >= 0 AND score <= 10)
            )""",
            "CREATE INDEX ix_ratings_rater_id ON ratings (rater_id)",
        ),
    ),
    Migration(
        3,
        "researcher sign-in back-off",
        (
            """CREATE TABLE sign_in_throttle (
                scope VARCHAR(64) PRIMARY KEY,
                failures INTEGER NOT NULL,
                last_failure_at {ts} NOT NULL,
                locked_until {ts} NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "jobs: executor (local | slurm), owner host or cluster, SLURM id and state, resources",
        (
            "ALTER TABLE jobs ADD COLUMN executor VARCHAR(16) NOT NULL DEFAULT 'local'",
            "ALTER TABLE jobs ADD COLUMN owner VARCHAR(255)",
            "ALTER TABLE jobs ADD COLUMN external_id VARCHAR(64)",
            "ALTER TABLE jobs ADD COLUMN external_state VARCHAR(32)",
            "ALTER TABLE jobs ADD COLUMN resources JSON",
            "ALTER TABLE jobs ADD COLUMN requeues INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX ix_jobs_executor_owner ON jobs (executor, owner)",
        ),
    ),
)

_DIALECT_TYPES = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY", "ts": "TIMESTAMP WITH TIME ZONE"},
    "postgresql": {"pk": "SERIAL PRIMARY KEY", "ts": "TIMESTAMP WITH TIME ZONE"},
}


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return max((m.version for m in migrations), default=0)


def render_ddl(statement: str, dialect: str) -> str:
    """Substitute the per-dialect type placeholders in one DDL statement."""
    types = _DIALECT_TYPES.get(dialect, _DIALECT_TYPES["postgresql"])
    return statement.format(**types)


@contextmanager
def _exclusive_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that also covers DDL and excludes other migrators until it ends."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite opens transactions only before DML; take control so DDL is transactional.
            dbapi = conn.connection.driver_connection
            old = dbapi.isolation_level
            dbapi.isolation_level = None
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                conn.exec_driver_sql("COMMIT")
            finally:
                dbapi.isolation_level = old
                conn.rollback()  # close SQLAlchemy's (empty) autobegun transaction
        else:
            with conn.begin():
                conn.execute(text(f"LOCK TABLE {VERSION_TABLE} IN SHARE ROW EXCLUSIVE MODE"))
                yield conn


def _ensure_version_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                " version INTEGER PRIMARY KEY,"
                " description TEXT NOT NULL,"
                " applied_at VARCHAR(40) NOT NULL)"
            )
        )


def current_version(conn: Connection) -> int:
    """Highest applied migration (0 for an empty database or one without the version table)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return 0
    v = conn.execute(text(f"SELECT MAX(version) FROM {VERSION_TABLE}")).scalar()
    return int(v or 0)


def _record(conn: Connection, m: Migration) -> None:
    conn.execute(
        text(f"INSERT INTO {VERSION_TABLE} (version, description, applied_at) VALUES (:v, :d, :t)"),
        {"v": m.version, "d": m.description, "t": datetime.now(UTC).isoformat()},
    )


def _already_applied(ins, statement: str) -> bool:
    """An ADD COLUMN whose column, or a CREATE INDEX whose index, exists already."""
    if m := _ADD_COLUMN.match(statement):
        table, column = m.group(1), m.group(2)
        return ins.has_table(table) and column in {c["name"] for c in ins.get_columns(table)}
    if m := _CREATE_INDEX.match(statement):
        name, table = m.group(1), m.group(2)
        return ins.has_table(table) and name in {i["name"] for i in ins.get_indexes(table)}
    return False


def upgrade(
    engine: Engine, migrations: Sequence[Migration] = MIGRATIONS, target: int | None = None
) -> int:
    """Apply pending migrations in order (up to `target`, default all) and return the version.

    Each migration and its version row commit together; on an error that migration is rolled
    back, earlier ones stay, and the error propagates.
    """
    ordered = sorted(migrations, key=lambda m: m.version)
    versions = [m.version for m in ordered]
    if len(set(versions)) != len(versions) or any(v < 1 for v in versions):
        raise ValueError(f"migration versions must be unique and >= 1, got {versions}")
    target = latest_version(ordered) if target is None else target
    _ensure_version_table(engine)
    dialect = engine.dialect.name
    version = 0
    with engine.connect() as conn:
        adopting = current_version(conn) == 0  # unversioned: maybe made by create_all
    for m in ordered:
        if m.version > target:
            break
        with _exclusive_transaction(engine) as conn:
            version = current_version(conn)
            if m.version <= version:
                continue
            ins = inspect(conn)
            if adopting and m.creates and all(ins.has_table(t) for t in m.creates):
                _record(conn, m)  # its tables predate versioning: record, do not re-create
                version = m.version
                continue
            adopting = False
            for statement in m.statements:
                if _already_applied(ins, statement):
                    continue  # a table made by create_all from the current models has it
                conn.exec_driver_sql(render_ddl(statement, dialect))
            _record(conn, m)
            version = m.version
    with engine.connect() as conn:
        return current_version(conn)
