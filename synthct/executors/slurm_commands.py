"""SLURM's client commands as synthct runs them: one subprocess wrapper with a clear error,
SLURM's duration format, and a job's time left. Used where jobs are submitted
(`synthct.executors.slurm`) and inside the task on a node (`slurm_task`).
"""

from __future__ import annotations

import subprocess

from synthct.errors import SynthctError


class SlurmError(SynthctError):
    """SLURM refused or could not answer a request (sbatch, scancel, sacct)."""


def _run(cmd: list[str], timeout: float = 60.0) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SlurmError(f"`{' '.join(cmd[:2])}` could not run: {e}") from None
    if res.returncode != 0:
        reason = (res.stderr or res.stdout).strip().splitlines()
        raise SlurmError(
            f"`{' '.join(cmd[:2])}` failed: {reason[-1] if reason else res.returncode}"
        )
    return res.stdout


def parse_duration(text: str) -> float | None:
    """SLURM's [days-]hours:minutes:seconds (or minutes:seconds) in seconds; None for
    UNLIMITED, NOT_SET, INVALID or anything else that is not a duration."""
    text = text.strip()
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = rest.split(":")
    if not days.isdigit() or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    nums = [0] * (3 - len(parts)) + [int(p) for p in parts]
    return float(int(days) * 86400 + nums[0] * 3600 + nums[1] * 60 + nums[2])


def time_left_s(external_id: str) -> float | None:
    """Seconds until the job's time limit (squeue %L), None when unknown or unlimited."""
    try:
        out = _run(["squeue", "-h", "-j", external_id, "-o", "%L"], timeout=20).strip()
    except SlurmError:
        return None
    return parse_duration(out.splitlines()[0]) if out else None
