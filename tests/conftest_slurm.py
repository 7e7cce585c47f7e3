"""SLURM for the tests marked `slurm`: the one-node cluster that scripts/ci/slurm-up.sh starts.

Loaded by test modules with `pytest_plugins = ["conftest_slurm"]`; `slurm_cluster` itself is in
tests/conftest.py (the app tests use it too). `slurm_ws` is a real workspace with 6 phantom
cases preprocessed at S=32 (module scope, shared by the tests of a module), set as
$SYNTHCT_WORKSPACE; jobs still live when a test ends are scancelled.
"""

from __future__ import annotations

import pytest
from slurm_helpers import build_packed_workspace, scancel_live


@pytest.fixture(scope="module")
def packed_slurm_ws(tmp_path_factory, slurm_cluster):
    return build_packed_workspace(tmp_path_factory.mktemp("slurm"))


@pytest.fixture
def slurm_ws(packed_slurm_ws, monkeypatch):
    """The module's packed workspace as $SYNTHCT_WORKSPACE (SQLite database), one CPU thread
    per job; SLURM jobs of the test still live at its end are cancelled."""
    monkeypatch.setenv("SYNTHCT_WORKSPACE", str(packed_slurm_ws.root))
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_JOB_ID", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield packed_slurm_ws
    scancel_live(packed_slurm_ws)
