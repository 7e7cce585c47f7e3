"""Process-wide resources for the app: the workspace and the database engine.

Looked up per call (not once per process), so a changed $SYNTHCT_WORKSPACE or
$SYNTHCT_DATABASE_URL takes effect without a restart. The engine comes from
`db.session.engine_for`, the factory the CLI uses too.
"""

from __future__ import annotations

import os

import streamlit as st
from sqlalchemy import Engine

from db.session import engine_for
from synthct.workspace import DEFAULT_WORKSPACE, ENV_WORKSPACE, Workspace


def workspace() -> Workspace:
    """$SYNTHCT_WORKSPACE or ./workspace, created if missing."""
    return _workspace(os.environ.get(ENV_WORKSPACE, DEFAULT_WORKSPACE))


@st.cache_resource(max_entries=4)
def _workspace(path: str) -> Workspace:
    return Workspace.resolve(path).ensure()


def engine() -> Engine:
    """The database engine: $SYNTHCT_DATABASE_URL if set, else SQLite in the workspace."""
    return engine_for(workspace().database)
