"""Schema versions, upgrades from older databases, and constraints — on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from db.migrations import MIGRATIONS, Migration, current_version, latest_version, upgrade
from db.models import Base, Job
from db.session import init_db, make_engine, session_scope

pytest_plugins = ["conftest_pg"]


def _version(engine) -> int:
    with engine.connect() as conn:
        return current_version(conn)


def test_init_db_creates_schema_matching_models(db_engine):
    assert _version(db_engine) == latest_version() == 4
    ins = inspect(db_engine)
    for table in Base.metadata.sorted_tables:
        cols = {c["name"]: c for c in ins.get_columns(table.name)}
        assert set(cols) == set(table.columns.keys()), table.name
        for col in table.columns:
            if not col.primary_key:
                assert cols[col.name]["nullable"] == col.nullable, (table.name, col.name)
        uniques = {u["name"] for u in ins.get_unique_constraints(table.name)}
        for cons in table.constraints:
            if type(cons).__name__ == "UniqueConstraint" and cons.name:
                assert cons.name in uniques, (table.name, cons.name)


def test_init_db_is_idempotent(db_engine):
    assert init_db(db_engine) == 4
    with db_engine.connect() as conn:
        rows = conn.execute(text("SELECT version FROM schema_version ORDER BY version")).all()
    assert [r[0] for r in rows] == [1, 2, 3, 4]


def _job(now):
    return Job(kind="train", args=["train", "--steps", "1"], created_at=now, status="queued")


def test_upgrade_from_version_1_keeps_jobs(db_url):
    engine = make_engine(db_url)
    assert upgrade(engine, target=1) == 1
    assert not inspect(engine).has_table("ratings")
    with engine.begin() as conn:  # a row as version-1 code wrote it (the columns of then)
        conn.execute(
            text(
                "INSERT INTO jobs (kind, args, device, status, progress, message, created_at) "
                """VALUES ('train', '["train", "--steps", "1"]', 'cpu', 'queued', 0, '', :t)"""
            ),
            {"t": datetime.now(UTC)},
        )
    assert init_db(engine) == 4
    assert inspect(engine).has_table("ratings")
    with session_scope(engine) as s:
        job = s.query(Job).one()
        assert job.args == ["train", "--steps", "1"] and job.kind == "train"
    engine.dispose()


def test_upgrade_from_version_2_keeps_studies_and_adds_the_sign_in_backoff(db_url):
    from db.studies import list_studies

    engine = make_engine(db_url)
    assert upgrade(engine, target=2) == 2
    assert not inspect(engine).has_table("sign_in_throttle")
    with session_scope(engine) as s:
        _seed_study(s)
    assert init_db(engine) == 4
    assert inspect(engine).has_table("sign_in_throttle")
    with session_scope(engine) as s:
        assert [st.name for st in list_studies(s)] == ["s"]
    engine.dispose()


def test_adopts_unversioned_database_created_by_create_all(db_url):
    """A database made by the pre-versioning code (create_all of the jobs table only)."""
    engine = make_engine(db_url)
    Base.metadata.create_all(engine, tables=[Job.__table__])
    with session_scope(engine) as s:
        s.add(_job(datetime.now(UTC)))
    assert init_db(engine) == 4
    with session_scope(engine) as s:
        assert s.query(Job).count() == 1
    engine.dispose()


def test_adopts_unversioned_database_with_every_table(db_url):
    engine = make_engine(db_url)
    Base.metadata.create_all(engine)
    assert init_db(engine) == 4
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT version FROM schema_version"))] == [
            1,
            2,
            3,
            4,
        ]
    engine.dispose()


def test_failed_migration_rolls_back_completely(db_url):
    engine = make_engine(db_url)
    broken = (
        *MIGRATIONS,
        Migration(5, "half-broken", ("CREATE TABLE extra (id INTEGER)", "CREATE TABLE oops (")),
    )
    with pytest.raises((OperationalError, ProgrammingError)):
        upgrade(engine, broken)
    assert _version(engine) == 4
    assert not inspect(engine).has_table("extra")  # DDL rolled back with the failing statement
    engine.dispose()


def _seed_study(session):
    from db.raters import add_assignments, add_rater
    from db.studies import add_study

    now = datetime.now(UTC)
    study = add_study(
        session,
        name="s",
        seed=0,
        manifest_sha256="0" * 64,
        params={},
        cases=[
            {
                "public_id": "a" * 16,
                "truth": "real",
                "source": "x",
                "case_id": "A",
                "png_sha256": "",
            },
            {
                "public_id": "b" * 16,
                "truth": "synthetic",
                "source": "y",
                "case_id": "B",
                "png_sha256": "",
            },
        ],
        created_at=now,
    )
    rater = add_rater(session, study_id=study.id, name="r", token_hash="f" * 64, created_at=now)
    from db.studies import study_cases

    cases = study_cases(session, study.id)
    add_assignments(session, rater.id, [c.id for c in cases])
    return rater, cases


@pytest.mark.parametrize("score", [-1, 11])
def test_score_check_constraint(db_engine, score):
    from db.ratings import add_rating

    now = datetime.now(UTC)
    with session_scope(db_engine) as s:
        rater, cases = _seed_study(s)
        ids = (rater.id, cases[0].id)
    with pytest.raises(IntegrityError), session_scope(db_engine) as s:
        add_rating(s, rater_id=ids[0], study_case_id=ids[1], score=score, comment="",
                   shown_at=now, answered_at=now, duration_s=0.0)  # fmt: skip


def test_one_rating_per_rater_and_case(db_engine):
    from db.ratings import add_rating

    now = datetime.now(UTC)
    with session_scope(db_engine) as s:
        rater, cases = _seed_study(s)
        ids = (rater.id, cases[0].id)
    kw = dict(comment="", shown_at=now, answered_at=now, duration_s=1.0)
    with session_scope(db_engine) as s:
        add_rating(s, rater_id=ids[0], study_case_id=ids[1], score=3, **kw)
    with pytest.raises(IntegrityError), session_scope(db_engine) as s:
        add_rating(s, rater_id=ids[0], study_case_id=ids[1], score=4, **kw)


def test_truth_check_constraint(db_engine):
    from db.studies import add_study

    case = {
        "public_id": "c" * 16,
        "truth": "maybe",
        "source": "x",
        "case_id": "A",
        "png_sha256": "",
    }
    with pytest.raises(IntegrityError), session_scope(db_engine) as s:
        add_study(s, name="t", seed=0, manifest_sha256="", params={}, cases=[case],
                  created_at=datetime.now(UTC))  # fmt: skip


def test_upgrade_from_version_3_keeps_jobs_as_local_ones(db_url):
    """Jobs written before executors existed become local jobs without an owner (every host's,
    as before), with no SLURM id and no requeues."""
    engine = make_engine(db_url)
    assert upgrade(engine, target=3) == 3
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (kind, args, device, status, progress, message, created_at) "
                "VALUES ('train', '[]', 'cpu', 'done', 1.0, 'done', :t)"
            ),
            {"t": datetime.now(UTC)},
        )
    assert init_db(engine) == 4
    with session_scope(engine) as s:
        job = s.query(Job).one()
        assert (job.executor, job.owner, job.external_id, job.requeues) == ("local", None, None, 0)
    assert "ix_jobs_executor_owner" in {i["name"] for i in inspect(engine).get_indexes("jobs")}
    engine.dispose()
