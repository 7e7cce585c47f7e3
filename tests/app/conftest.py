"""Fixtures for the page tests: one tiny library-built workspace per session, copied per test."""

from __future__ import annotations

import shutil

import pytest

from tests.app.tiny_workspace import build_tiny_workspace


@pytest.fixture(scope="session")
def tiny_workspace_template(tmp_path_factory):
    """The tiny workspace (built once; tests never write into it, they get a copy)."""
    return build_tiny_workspace(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_ws(tiny_workspace_template, tmp_path, monkeypatch):
    """A private copy of the tiny workspace, set as $SYNTHCT_WORKSPACE (SQLite inside it)."""
    from synthct.workspace import Workspace

    shutil.copytree(tiny_workspace_template.root, tmp_path / "ws")
    ws = Workspace.resolve(tmp_path / "ws")
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(ws.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    return ws
