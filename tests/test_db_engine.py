"""One engine factory for every shell: `db.session.engine_for` honours $SYNTHCT_DATABASE_URL,
migrates once per URL and is the only place the CLI, the app, jobs and the demo get an engine."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from db import session as db_session
from db.migrations import current_version, latest_version, upgrade
from db.session import engine_for, engine_for_url, make_engine, session_scope
from synthct import jobs
from synthct.cli import app
from synthct.vtt import flow
from synthct.workspace import atomic_write_json
from tests.app.helpers import APP, make_study

pytest_plugins = ["conftest_pg"]

ROOT = Path(__file__).resolve().parents[1]
# Builds a private SQLite file for `synthct bench vtt` (a throw-away study in a temp folder,
# never the user's database, whatever $SYNTHCT_DATABASE_URL says).
PRIVATE_ENGINES = {("synthct/bench/vtt.py", "run_vtt_bench")}


def test_engine_for_honours_the_environment_and_migrates_once(db_url, tmp_path, monkeypatch):
    upgrades = []
    monkeypatch.setattr(db_session, "upgrade", lambda e: upgrades.append(e) or upgrade(e))
    monkeypatch.setenv("SYNTHCT_DATABASE_URL", db_url)
    engine = engine_for(tmp_path / "ignored.db")
    assert engine.url.render_as_string(hide_password=False) == db_url
    assert engine_for(tmp_path / "other.db") is engine_for_url(db_url) is engine  # one per URL
    assert upgrades == [engine]  # migrated once, before the first session
    assert not (tmp_path / "ignored.db").exists()
    with engine.connect() as conn:
        assert current_version(conn) == latest_version()


def test_without_the_environment_it_is_the_workspace_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    engine = engine_for(tmp_path / "ws" / "synthct.db")
    assert engine.url.database == str(tmp_path / "ws" / "synthct.db")
    with engine.connect() as conn:
        assert current_version(conn) == latest_version()
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_engine_cache_is_bounded_and_a_pushed_out_engine_keeps_working(tmp_path, monkeypatch):
    monkeypatch.setattr(db_session, "MAX_CACHED_ENGINES", 2)
    urls = [f"sqlite:///{tmp_path / f'{i}.db'}" for i in range(3)]
    first = engine_for_url(urls[0])
    with session_scope(first) as s:
        held = s.connection()  # checked out while the engine is pushed out of the cache
        engine_for_url(urls[1])
        engine_for_url(urls[2])
        assert held.execute(text("SELECT 1")).scalar() == 1
    assert urls[0] not in db_session._engines and len(db_session._engines) <= 2
    with session_scope(first) as s:  # a disposed engine opens new connections when used
        assert s.execute(text("SELECT COUNT(*) FROM schema_version")).scalar() == latest_version()
    assert engine_for_url(urls[0]) is not first


def _engine_builders(path: Path) -> list[tuple[str, int]]:
    """(top-level function or class, line) of every make_engine / create_engine / init_db call."""
    found = []
    for top in ast.parse(path.read_text(), str(path)).body:
        owner = getattr(top, "name", "<module>")
        for node in ast.walk(top):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("make_engine", "create_engine", "init_db"):
                    found.append((owner, node.lineno))
    return found


def test_no_shell_builds_its_own_engine():
    files = [ROOT / "streamlit_app.py"]
    for folder in ("synthct", "ui", "pages"):
        files += sorted((ROOT / folder).rglob("*.py"))
    builders = {
        (str(p.relative_to(ROOT)), owner, line)
        for p in files
        for owner, line in _engine_builders(p)
    }
    unexpected = {b for b in builders if b[:2] not in PRIVATE_ENGINES}
    assert not unexpected, f"build engines with db.session.engine_for instead: {sorted(unexpected)}"


@pytest.mark.postgres
def test_every_shell_uses_the_database_the_environment_names(
    postgres_url, workspace, monkeypatch, tmp_path
):
    """A study kept in PostgreSQL is what the CLI lists, rates and exports, what the app's
    Studies page and a rater's link see, and where jobs write; no SQLite file appears."""
    seeded = make_engine(postgres_url)
    tokens = make_study(workspace, seeded, name="pg-study", n=2, raters=("Dr A", "Dr B"))
    with session_scope(seeded) as s:
        rater = flow.rater_for_token(s, tokens["Dr A"])
        while (case := flow.next_case(s, rater)) is not None:
            flow.submit(s, rater, case.public_id, 7)
    seeded.dispose()
    monkeypatch.setenv("SYNTHCT_DATABASE_URL", postgres_url)
    monkeypatch.delenv("SYNTHCT_RESEARCHER_PASSWORD_HASH", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml
    atomic_write_json(workspace.case_index, {"cases": []})  # ingested: the app builds no demo

    def cli(*args: str) -> str:
        res = CliRunner().invoke(app, ["study", *args, "-w", str(workspace.root)])
        assert res.exit_code == 0, res.output
        return res.output

    (listed,) = json.loads(cli("list", "--json"))
    assert (listed["name"], listed["ratings"], listed["raters"]) == ("pg-study", 4, 2)
    assert json.loads(cli("stats", "pg-study", "--json"))["raters"][0]["mean_real"] == 7
    assert "wrote 4 ratings" in cli("export", "pg-study", "--out", "pg.csv")
    link = cli("invite", "pg-study", "--name", "Dr C").splitlines()[0]

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/studies.py").run()
    assert not at.exception, at.exception
    assert list(at.dataframe[0].value["study"]) == ["pg-study"]
    assert list(at.dataframe[1].value["rater"]) == ["Dr A", "Dr B", "Dr C"]
    rater_app = AppTest.from_file(APP, default_timeout=120)
    rater_app.query_params["token"] = link.split("token=", 1)[1]
    rater_app.run()
    assert not rater_app.exception, rater_app.exception
    assert rater_app.title[0].value == "Visual Turing Test"  # the token was found in PostgreSQL

    assert jobs.engine_for(workspace) is engine_for(workspace.database)
    assert jobs.engine_for(workspace).url.get_backend_name() == "postgresql"
    assert not workspace.database.exists()  # nothing fell back to the workspace's SQLite file
