"""PostgreSQL for the database tests: a private throw-away cluster, or $SYNTHCT_TEST_POSTGRES_URL.

Loaded by test modules with `pytest_plugins = ["conftest_pg"]`. `postgres_server` (session scope)
starts a cluster with Debian's binaries (/usr/lib/postgresql/<v>/bin: initdb + pg_ctl) on a spare
port in a fresh temp folder — as the `postgres` user when running as root, since initdb refuses
root — and stops it at the end. It skips only when no PostgreSQL binaries exist and no URL is
given. `postgres_url` (function scope) creates an empty database per test and drops it after.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ENV_URL = "SYNTHCT_TEST_POSTGRES_URL"


def _pg_bin() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], user: str | None) -> None:
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def postgres_server():
    """A SQLAlchemy URL (postgresql+psycopg://…) of a server where databases can be created."""
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL binaries (install Debian's postgresql) and no " + ENV_URL)
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
            user = "postgres"
        except KeyError:
            pytest.fail("running as root needs a 'postgres' user to run initdb")
    root = Path(tempfile.mkdtemp(prefix="synthct-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if user:
        info = pwd.getpwnam(user)
        for p in (root, sock):
            os.chown(p, info.pw_uid, info.pw_gid)
    port = _free_port()
    try:
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ],
            user,
        )
        opts = (
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        )
        _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w"]
            + ["start"],
            user,
        )
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stderr or e.stdout}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        try:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"synthct_test_{secrets.token_hex(6)}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """The same test on a SQLite file (WAL) and on PostgreSQL: an empty database's URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'synthct.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db_engine(db_url):
    """An engine on `db_url` with the schema at the latest version."""
    from db.session import init_db, make_engine

    engine = make_engine(db_url)
    init_db(engine)
    yield engine
    engine.dispose()
