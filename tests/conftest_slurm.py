"""SLURM for the tests marked `slurm`: the one-node cluster that scripts/ci/slurm-up.sh starts.

Loaded by test modules with `pytest_plugins = ["conftest_slurm"]`. `slurm_cluster` (session
scope) checks that sinfo and sacct answer; if not, it runs scripts/ci/slurm-up.sh once (root
only: it installs Debian's slurm-wlm, munge, slurmdbd and mariadb-server when missing) and
skips only when that cannot bring a cluster up. `slurm_ws` is a real workspace with 6 phantom
cases preprocessed at S=32 (module scope, shared by the tests of a module), set as
$SYNTHCT_WORKSPACE; jobs still live when a test ends are scancelled.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from slurm_helpers import build_packed_workspace, scancel_live

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / "scripts" / "ci" / "slurm-up.sh"


def _answers() -> bool:
    try:
        ok = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ok.returncode == 0 and acct.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of a working SLURM cluster (started by scripts/ci/slurm-up.sh if need be)."""
    if not _answers():
        if os.geteuid() != 0:
            pytest.skip("no SLURM cluster answers, and starting one needs root")
        res = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0 or not _answers():
            pytest.skip(f"scripts/ci/slurm-up.sh could not start SLURM: {res.stderr[-500:]}")
    from synthct.executors.slurm import cluster_name

    return cluster_name()


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
