"""What a training run writes while it runs: losses.csv, collapse.csv, samples/, status.json.

Only rank 0 writes (other ranks get an inactive log). CSV rows are flushed as they are written;
a resumed run first drops rows a killed run wrote after its last checkpoint (`truncate_csv`), so
the logs of a resumed run equal those of an uninterrupted one. With `train.tensorboard: true`
the losses and the collapse checks' diversity ratio are also written as TensorBoard scalars
(WS/runs/<run>/tensorboard/); that needs the optional `tensorboard` package
(`pip install -r requirements-tensorboard.txt`), and a run that asks for it without the package
stops at once with a message saying so.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from synthct.errors import ConfigError
from synthct.io import save_png
from synthct.workspace import atomic_write_json, atomic_write_text

COLLAPSE_RATIO = 0.25  # the alarm: sample diversity < this fraction of real (synthct.collapse)
COLLAPSE_CHECKS = 2  # ... at this many consecutive collapse checks


TENSORBOARD_HINT = "pip install -r requirements-tensorboard.txt"


def check_tensorboard(wanted: bool) -> None:
    """ConfigError when a run asks for TensorBoard scalars and the package is not installed."""
    if not wanted:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - optional dependency, probed
    except ImportError as e:
        raise ConfigError(
            f"train.tensorboard is true but TensorBoard cannot be imported ({e}); install the "
            f"optional extra (`{TENSORBOARD_HINT}`) or set train.tensorboard: false"
        ) from e


class RunLog:
    """losses.csv, collapse.csv, samples/*.png, status.json (rank 0 only; others no-ops)."""

    def __init__(
        self, run_dir: Path, active: bool, start: int, steps: int, tensorboard: bool = False
    ) -> None:
        self.dir, self.active, self.last_step, self.steps = run_dir, active, start, steps
        self.warnings: list[str] = []
        self._files: dict[str, tuple] = {}
        self.tb = None
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("losses.csv", "collapse.csv"):
            truncate_csv(run_dir / name, start)  # drop rows a killed run wrote after its checkpoint
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if start > 0:
                self.warnings = list(json.loads((run_dir / "status.json").read_text())["warnings"])
        if tensorboard:  # the optional extra (check_tensorboard has made sure it is there)
            check_tensorboard(True)
            from torch.utils.tensorboard import SummaryWriter  # optional dependency

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.status("running", start, "resumed" if start else "started")

    def _append(self, name: str, row: dict) -> None:
        if name not in self._files:
            path = self.dir / name
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (kept open)
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            self._files[name] = (f, w)
        f, w = self._files[name]
        w.writerow(row)
        f.flush()

    def losses(self, step: int, wall: float, losses: dict) -> None:
        self.last_step = step
        self._append("losses.csv", {"step": step, "wall_s": f"{wall:.3f}", **losses})
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f"loss/{k}", v, step)

    def snapshot(self, step: int, picture: np.ndarray) -> None:
        save_png(picture, self.dir / "samples" / f"step-{step:08d}.png")

    def collapse(self, step: int, result: tuple[float, float, bool]) -> None:
        fake_div, real_div, flagged = result
        self._append(
            "collapse.csv",
            {
                "step": step,
                "sample_diversity": f"{fake_div:.6f}",
                "real_diversity": f"{real_div:.6f}",
                "flagged": int(flagged),
            },
        )
        if self.tb is not None and real_div > 0:
            self.tb.add_scalar("collapse/diversity_ratio", fake_div / real_div, step)
        if flagged:
            self.warnings.append(
                f"possible mode collapse at step {step}: samples' mean pairwise distance "
                f"{fake_div:.3f} vs {real_div:.3f} among real cases "
                f"(alarm below {COLLAPSE_RATIO:g} x real at {COLLAPSE_CHECKS} consecutive checks)"
            )
            self.status("running", step)

    def status(self, state: str, step: int, message: str = "") -> None:
        if not self.active:
            return
        self.last_step = max(self.last_step, step)
        atomic_write_json(
            self.dir / "status.json",
            {
                "state": state,
                "step": step,
                "steps": self.steps,
                "message": message,
                "warnings": self.warnings,
                "pid": os.getpid(),
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files.clear()
        if self.tb is not None:
            self.tb.close()


def truncate_csv(path: Path, last_step: int) -> None:
    """Keep the header and rows with step <= last_step (atomic rewrite); drop a torn last line."""
    if not path.exists():
        return
    if last_step == 0:
        path.unlink()
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = lines[:1] + [
        ln
        for ln in lines[1:]
        if ln.endswith("\n")
        and ln.split(",", 1)[0].isdigit()
        and int(ln.split(",", 1)[0]) <= last_step
    ]
    atomic_write_text(path, "".join(keep))
