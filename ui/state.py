"""Process-wide resources for the app: the workspace and the database engine.

Cached per workspace path / database URL (not once per process), so a changed
$SYNTHCT_WORKSPACE or $SYNTHCT_DATABASE_URL takes effect without a restart.
"""

from __future__ import annotations

import os

import streamlit as st

from synthct.workspace import DEFAULT_WORKSPACE, ENV_WORKSPACE, Workspace


def workspace() -> Workspace:
    """$SYNTHCT_WORKSPACE or ./workspace, created if missing."""
    return _workspace(os.environ.get(ENV_WORKSPACE, DEFAULT_WORKSPACE))


@st.cache_resource(max_entries=4)
def _workspace(path: str) -> Workspace:
    return Workspace.resolve(path).ensure()


def engine():
    """The SQLAlchemy engine (SQLite in the workspace unless SYNTHCT_DATABASE_URL is set)."""
    from db.session import database_url

    return _engine(database_url(workspace().database))


@st.cache_resource(max_entries=4)
def _engine(url: str):
    from db.session import init_db, make_engine

    eng = make_engine(url)
    init_db(eng)
    return eng
