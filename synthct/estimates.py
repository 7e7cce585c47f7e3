"""Training-time estimates for the app's forms, from measured benchmarks only.

`synthct/assets/train_estimates.yaml` lists, for the shipped run configs that were benchmarked,
the CPU seconds per training step (per stage for two-stage models) with the machine and date
they were measured on (docs/benchmarks.md). A config without a measurement gets no estimate:
the form then names the command that measures it instead of guessing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from synthct.config import load_run_config, load_yaml

TABLE = Path(__file__).parent / "assets" / "train_estimates.yaml"


@dataclass(frozen=True)
class Estimate:
    seconds: float
    steps: int
    basis: str  # what the figure was measured on


@functools.cache
def _table() -> dict:
    """The measured table, read once per process (it ships with the package)."""
    return load_yaml(TABLE)


def _segments_seconds(segments: list, steps: int) -> float:
    """Seconds for steps [0, steps) over [[until, s/step], …, [None, s/step]] segments."""
    total, start = 0.0, 0
    for until, per_step in segments:
        end = steps if until is None else min(int(until), steps)
        if end > start:
            total += (end - start) * float(per_step)
            start = end
    return total


def train_estimate(config: str | Path, steps: int | None = None) -> Estimate | None:
    """Estimated CPU time of training `config` for `steps` (default: the config's own), or None
    when that config was never benchmarked."""
    table = _table()
    segments = table["configs"].get(Path(config).name)
    if segments is None:
        return None
    n = int(steps) if steps else load_run_config(config).train.steps
    basis = f"{table['machine']}, {table['measured']} (docs/benchmarks.md)"
    return Estimate(_segments_seconds(segments, n), n, basis)


def bench_command(config: str | Path) -> str:
    """The command that measures a config's seconds per step on this machine."""
    return f"synthct bench train --config {config} --steps 5"


def human(seconds: float) -> str:
    """1.2 h, 14 min, 40 s."""
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
