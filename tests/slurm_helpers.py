"""Helpers for the SLURM tests (the fixtures are in conftest_slurm.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path


def build_packed_workspace(root: Path):
    """6 phantom cases ingested (30 % test) and preprocessed at S=32, as in test_train."""
    from synthct.config import DataConfig
    from synthct.datasets import ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.workspace import Workspace

    src = write_phantom_set(root / "cases", n=6, seed=4, scale=0.125)[0].parent.parent
    ws = Workspace.resolve(root / "ws").ensure()
    ingest(src, ws, test_fraction=0.3, seed=0, workers=1)
    preprocess_workspace(ws, DataConfig(size=32), workers=1, progress=False)
    return ws


def scancel_live(ws) -> None:
    from db import jobs as repo
    from synthct import jobs

    for job in jobs.list_jobs(ws, limit=None):
        if job.executor == "slurm" and job.external_id and job.status not in repo.TERMINAL:
            subprocess.run(["scancel", job.external_id], capture_output=True, timeout=30)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m synthct <args>` in a fresh process (the environment of the test)."""
    return subprocess.run([sys.executable, "-m", "synthct", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def sacct_states(external_id: str, duplicates: bool = False) -> list[str]:
    """SLURM's accounting, asked directly: the state of each run of a job (oldest first with
    `duplicates`, i.e. earlier attempts of a requeued job too)."""
    cmd = ["sacct", "-X", "-n", "-P", "-o", "State", "-j", external_id]
    out = subprocess.run(cmd + (["-D"] if duplicates else []), capture_output=True, text=True,
                         timeout=30).stdout  # fmt: skip
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def have_torchrun() -> bool:
    return shutil.which("torchrun", path=str(Path(sys.executable).parent)) is not None
