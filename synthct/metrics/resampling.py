"""Resampling by case: rounds of one slice per case, case-bootstrap intervals, real-vs-real baseline.

The unit of independence is the case (a patient, a synthetic volume, or a fixed-size group of
independently generated 2D slices), never the slice. Feature arrays are therefore either

* (C, k, d): k slices of each of C cases (slice level), or
* (N, d): one sample per case (volume level), treated as (N, 1, d).

**Rounds.** Round j holds slice j of every case: one slice per case, so the rows of a round are
as independent as the cases. A metric of two sets is the mean over the k rounds of the metric of
their round j (`round_mean`). This makes the expected value of every metric the same for slices
cut from volumes (a 3D model) and for independent slices (a 2D model) of one distribution:
within a round both are independent draws of the slice distribution. Pooling correlated slices
instead biases FID by the within-case correlation and shrinks k-NN radii to the distance to
the neighbouring slices of the same patient.

**Case bootstrap** (`bootstrap_ci`): cases are resampled with replacement on both sides (a
resampled case brings all its k slices); metrics that take case labels (PRDC radii, KID's
within-set pairs) receive the original case of every row, so a case drawn twice is never its
own neighbour. Resampling with replacement biases FID upwards (duplicates), so the reported
interval is the percentile interval of the bootstrap values shifted by their median bias
(median - estimate): it has the bootstrap's width and always contains its own estimate.

**Real-vs-real baseline** (`real_baseline`): the real cases are split at random into two
case-disjoint halves A and B of h = min(C_real // 2, C_synthetic) cases; the baseline is the
metric of (B, A) and the matched synthetic value that of (B, F), F a random h-case subset of
the synthetic set, both on the same rounds. Repeated with fresh splits: mean, median, SD and the
central interval of the repeats. For a generator whose cases are exchangeable with real ones,
the matched value falls inside the real-vs-real interval.

Hand-written: this product's case structure (slices of volumes, groups of 2D slices) has no
library equivalent; the metrics themselves are in `distances.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

MetricFn = Callable[..., "float | dict[str, float]"]
CI_METHOD = (
    "case bootstrap (cases of both sets resampled with replacement), percentile interval "
    "shifted by the bootstrap median bias so that it contains the estimate"
)


def as_cases(x: np.ndarray, name: str = "features") -> np.ndarray:
    """(N, d) -> (N, 1, d); (C, k, d) unchanged; anything else is an error."""
    x = np.asarray(x)
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"{name} must be (N, d) or (cases, slices per case, d), got {x.shape}")
    return x


def _mean(vals: list) -> float | dict[str, float]:
    if isinstance(vals[0], dict):
        return {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
    return float(np.mean(vals))


def round_mean(
    fn: MetricFn,
    x: np.ndarray,
    y: np.ndarray,
    x_groups: np.ndarray | None = None,
    y_groups: np.ndarray | None = None,
    grouped: bool = False,
) -> float | dict[str, float]:
    """Mean over rounds j of fn(x[:, j], y[:, j]) for x (C, k, d), y (C', k, d).

    grouped: fn takes case labels, fn(a, b, a_groups, b_groups) (None = all cases distinct).
    """
    x, y = as_cases(x, "features 1"), as_cases(y, "features 2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"slices per case differ: {x.shape[1]} vs {y.shape[1]}")
    vals = [
        fn(x[:, j], y[:, j], x_groups, y_groups) if grouped else fn(x[:, j], y[:, j])
        for j in range(x.shape[1])
    ]
    return _mean(vals)


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval around `estimate` (see the module docstring)."""

    low: float
    high: float
    level: float
    n_boot: int
    estimate: float = float("nan")
    bias: float = 0.0  # median of the bootstrap values - estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_boot": self.n_boot,
            "bootstrap_bias": self.bias,
            "unit": "case",
            "method": CI_METHOD,
        }


def _interval(
    vals: list[float], estimate: float, level: float, bounds: tuple[float, float] | None
) -> Interval:
    v = np.asarray(vals, dtype=np.float64)
    lo, med, hi = np.percentile(v, (100 * (1 - level) / 2, 50, 100 * (1 + level) / 2))
    shift = float(med - estimate)
    low, high = float(lo - shift), float(hi - shift)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(low, high, level, len(v), float(estimate), shift)


def bootstrap_ci(
    fn: MetricFn,
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    grouped: bool = False,
    estimate: float | dict[str, float] | None = None,
    bounds: dict[str, tuple[float, float]] | tuple[float, float] | None = None,
) -> Interval | dict[str, Interval]:
    """Case-bootstrap interval of `round_mean(fn, x, y)` for x (C, k, d) or (N, d), y likewise.

    `fn` returning a dict gives one interval per key. grouped: fn takes case labels (see
    `round_mean`) and gets each row's original case. A replicate on which fn raises ValueError
    (too few distinct cases for k-NN radii) is left out; `n_boot` of the interval counts the
    replicates used. bounds: the metric's range (per key for dict metrics), applied to the
    interval. `estimate` defaults to `round_mean(fn, x, y)`.
    """
    x, y = as_cases(x, "features 1"), as_cases(y, "features 2")
    est = round_mean(fn, x, y, grouped=grouped) if estimate is None else estimate
    rng = np.random.default_rng(seed)
    vals: list = []
    for _ in range(n_boot):
        ix = rng.integers(0, len(x), len(x))
        iy = rng.integers(0, len(y), len(y))
        try:
            vals.append(round_mean(fn, x[ix], y[iy], ix, iy, grouped))
        except ValueError:
            continue
    if not vals:
        raise ValueError("no bootstrap replicate could be computed (too few distinct cases)")
    if isinstance(est, dict):
        return {
            k: _interval(
                [v[k] for v in vals],
                est[k],
                level,
                bounds.get(k) if isinstance(bounds, dict) else bounds,
            )
            for k in est
        }
    return _interval(vals, est, level, bounds if not isinstance(bounds, dict) else None)


def real_baseline(
    fn: MetricFn,
    real: np.ndarray,
    fake: np.ndarray,
    repeats: int = 5,
    seed: int = 0,
    level: float = 0.95,
    grouped: bool = False,
) -> dict:
    """Real-vs-real reference at a matched number of cases (see the module docstring).

    real (C, k, d) or (N, d), fake likewise. Returns {"size" (cases per half), "repeats",
    "unit": "case", "real_vs_real", "synthetic_vs_real"}, each of the last two
    {"mean", "median", "std", "low", "high"} over the repeats (per key for dict metrics).
    """
    real, fake = as_cases(real, "real features"), as_cases(fake, "synthetic features")
    n, m = len(real), len(fake)
    h = min(n // 2, m)
    if h < 2:
        raise ValueError(f"real-vs-real baseline needs >= 4 real cases, got {n}")
    rng = np.random.default_rng(seed)
    base, matched = [], []
    for _ in range(repeats):
        perm = rng.permutation(n)
        a, b = real[perm[:h]], real[perm[h : 2 * h]]
        f = fake[rng.choice(m, h, replace=False)]
        base.append(round_mean(fn, b, a, grouped=grouped))  # reference first, as fn(real, fake)
        matched.append(round_mean(fn, b, f, grouped=grouped))
    q = (100 * (1 - level) / 2, 50, 100 * (1 + level) / 2)

    def summary(v: list) -> dict:
        if isinstance(v[0], dict):
            return {k: summary([x[k] for x in v]) for k in v[0]}
        arr = np.asarray(v, dtype=np.float64)
        lo, med, hi = np.percentile(arr, q)
        return {
            "mean": float(arr.mean()),
            "median": float(med),
            "std": float(arr.std()),
            "low": float(lo),
            "high": float(hi),
        }

    return {
        "size": h,
        "repeats": repeats,
        "level": level,
        "unit": "case",
        "real_vs_real": summary(base),
        "synthetic_vs_real": summary(matched),
    }
