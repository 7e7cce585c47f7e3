"""Shared test setup: torch on one thread (2-core CI machines), tiny workspaces in tmp_path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


SLURM_UP = Path(__file__).resolve().parents[1] / "scripts" / "ci" / "slurm-up.sh"
ENV_REQUIRE_SLURM = "SYNTHCT_REQUIRE_SLURM"  # .ci/run sets it: no cluster fails, never skips


def _no_slurm(why: str) -> None:
    if os.environ.get(ENV_REQUIRE_SLURM) == "1":
        pytest.fail(f"{why} (${ENV_REQUIRE_SLURM}=1: the SLURM tests must run)", pytrace=False)
    pytest.skip(why)


def _slurm_answers() -> bool:
    try:
        ok = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return ok.returncode == 0 and acct.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The name of a working SLURM cluster for the tests marked `slurm`. If sinfo or sacct do
    not answer, scripts/ci/slurm-up.sh runs once (root only: it installs Debian's slurm-wlm,
    munge, slurmdbd and mariadb-server when missing). When that cannot bring a cluster up the
    test is skipped, or fails with $SYNTHCT_REQUIRE_SLURM=1 (CI sets it)."""
    if not _slurm_answers():
        if os.geteuid() != 0:
            _no_slurm("no SLURM cluster answers, and starting one needs root")
        res = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0 or not _slurm_answers():
            _no_slurm(f"scripts/ci/slurm-up.sh could not start SLURM: {res.stderr[-500:]}")
    from synthct.executors.slurm import cluster_name

    return cluster_name()
