"""No secret in any output: database URLs are shown without their password in `jobs show`, job
rows, job logs (on disk and tailed) and error messages (real PostgreSQL where marked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from synthct.redact import redact, redact_url

pytest_plugins = ["conftest_pg"]

SECRET = "S3cret-pw_91"
SYNTHCT = shutil.which("synthct", path=str(Path(sys.executable).parent)) or shutil.which("synthct")


@pytest.mark.parametrize(
    "text,expected",
    [
        (f"postgresql+psycopg://synthct:{SECRET}@db.example.org:5432/synthct",
         "postgresql+psycopg://synthct:***@db.example.org:5432/synthct"),
        (f"could not parse 'postgres://u:{SECRET}/x@h/db' at all",
         "could not parse 'postgres://u:***@h/db' at all"),
        (f"host=db user=u password={SECRET} dbname=x", "host=db user=u password=*** dbname=x"),
        (f"postgresql://u@h/db?password={SECRET}&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        (f'PGPASSWORD="{SECRET} x" psql', "PGPASSWORD=*** psql"),
    ],
)  # fmt: skip
def test_redact_masks_passwords_in_free_text(text, expected):
    assert redact(text) == expected
    assert redact(redact(text)) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/ws/synthct.db",
        "http://localhost:8501/?token=abc",
        "see http://host:8501/x and mail a@b.org",
        "the password must not be empty",
        "postgresql://user@host/db",
    ],
)
def test_redact_leaves_text_without_secrets_alone(text):
    assert redact(text) == text


def test_redact_url_uses_sqlalchemys_rendering():
    url = f"postgresql+psycopg://synthct:{SECRET}@db:5432/synthct?sslmode=require"
    assert redact_url(url) == make_url(url).render_as_string(hide_password=True)
    assert SECRET not in redact_url(url) and "***" in redact_url(url)
    assert SECRET not in redact_url(f"not a url://u:{SECRET}@h")


def _run(*args, env):
    return subprocess.run([SYNTHCT, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def _env(url: str, ws) -> dict:
    env = {**os.environ, "SYNTHCT_DATABASE_URL": url, "SYNTHCT_WORKSPACE": str(ws.root)}
    env.pop("SYNTHCT_JOB_ID", None)
    return env


def test_unreachable_database_is_one_line_without_its_password(workspace):
    url = f"postgresql+psycopg://synthct:{SECRET}@127.0.0.1:1/synthct"
    for args in (["jobs", "list"], ["jobs", "show", "3"], ["study", "list"]):
        res = _run(*args, env=_env(url, workspace))
        assert res.returncode == 2, res.stderr
        assert SECRET not in res.stderr + res.stdout and "Traceback" not in res.stderr
        assert res.stderr.startswith("error: database postgresql+psycopg://synthct:***@127.0.0.1")
    res = _run("jobs", "list", env=_env(f"postgresq l://u:{SECRET}@h/db", workspace))
    assert res.returncode == 2 and SECRET not in res.stderr and "not valid" in res.stderr


@pytest.mark.postgres
def test_jobs_show_list_tail_and_logs_never_show_the_password(postgres_url, workspace):
    """PostgreSQL with a password in its URL (the test server trusts any): a missing job names
    the database without it; a job whose error quotes a URL has it masked in its row, in
    `jobs show`, `jobs list`, `jobs tail` and in the log file itself."""
    url = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    env = _env(url, workspace)
    res = _run("jobs", "show", "999", env=env)
    assert res.returncode == 2 and SECRET not in res.stderr
    assert f"does not exist in {make_url(url).render_as_string(hide_password=True)}" in res.stderr

    leaked = f"postgresql://admin:{SECRET}@db.example.org/prod"
    res = _run("jobs", "submit", "--device", "cpu", "--", "generate", "--run", leaked, "--n", "1",
               "--out", "o", env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.split()[1].rstrip(":")
    deadline = time.monotonic() + 60
    while '"status": "failed"' not in (show := _run("jobs", "show", job_id, env=env)).stdout:
        assert time.monotonic() < deadline, show.stdout + show.stderr
        time.sleep(0.2)
    tail = _run("jobs", "tail", job_id, env=env).stdout
    listing = _run("jobs", "list", env=env).stdout
    for out in (show.stdout, tail, listing):
        assert SECRET not in out and "admin:***@db.example.org" in out
    log = Path(workspace.root / "jobs" / f"{job_id}.log").read_text()
    assert "run name 'postgresql://admin:***@db.example.org/prod'" in log
    assert SECRET not in log and url not in log

    from sqlalchemy import create_engine, text  # the stored row itself holds no secret

    engine = create_engine(url)
    with engine.connect() as conn:
        message = conn.execute(text("SELECT message FROM jobs WHERE id = :i"), {"i": int(job_id)})
        assert SECRET not in message.scalar_one()
    engine.dispose()
