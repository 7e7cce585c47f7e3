"""Shared test setup: torch on one thread (2-core CI machines), tiny workspaces in tmp_path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _torch_one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace in tmp_path, also set as $SYNTHCT_WORKSPACE."""
    from synthct.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "ws").ensure()
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(ws.root))
    return ws
