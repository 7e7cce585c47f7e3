"""Distribution distances between feature sets: FID, KID, PRDC, classifier-IS, bootstrap CIs.

All functions are pure: feature matrices (N, d) in, numbers out (MONAI's FID style); feature
extraction lives in `synthct.metrics.features`.

Why hand-written: MONAI's `FIDMetric` and most FID code call `scipy.linalg.sqrtm` on the d x d
covariance product, which is slow (complex Schur decomposition, ~minutes at d = 2048) and
numerically wrong when n < d (the covariances are singular, sqrtm returns spurious imaginary
parts that are silently dropped). Here, in float64:

* when min(n, m) <= d: Tr((S1 S2)^1/2) equals the nuclear norm of A B^T / sqrt((n-1)(m-1)),
  A and B the centred feature matrices (the non-zero eigenvalues of S1 S2 are the squared
  singular values of that n x m matrix);
* otherwise: eigenvalues of sqrt(S1) S2 sqrt(S1) (symmetric, `eigh`), whose square roots sum to
  the same trace.

Identical sets give exactly 0. A tiny negative result (round-off) is returned raw with a warning;
callers report the clipped value separately.

KID follows Binkowski et al. 2018 (unbiased MMD^2, cubic polynomial kernel); precision/recall
Kynkaanniemi et al. 2019 (k = 3); density/coverage Naeem et al. 2020 (k = 5). The Inception
Score is only defined from class probabilities, never from pooled features.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

__all__ = [
    "bootstrap_ci",
    "classifier_inception_score",
    "compute_fid",
    "compute_kid",
    "compute_prdc",
    "real_baseline",
    "trace_sqrt_product",
]


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2D feature matrix (N, d), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN/inf features")
    return x


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_features(x, "features 1"), _as_features(y, "features 2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    return x, y


def trace_sqrt_product(x: np.ndarray, y: np.ndarray) -> float:
    """Tr((S_x S_y)^1/2) for the sample covariances of x (n, d) and y (m, d), float64."""
    x, y = _check_pair(x, y)
    return _trace_sqrt_centred(x - x.mean(axis=0), y - y.mean(axis=0))


def _trace_sqrt_centred(a: np.ndarray, b: np.ndarray) -> float:
    """`trace_sqrt_product` on already centred features a (n, d), b (m, d)."""
    n, d = a.shape
    m = b.shape[0]
    if min(n, m) <= d:
        sv = np.linalg.svd(a @ b.T, compute_uv=False)
        return float(sv.sum() / np.sqrt((n - 1) * (m - 1)))
    s1 = a.T @ a / (n - 1)
    s2 = b.T @ b / (m - 1)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ s2 @ root1
    ev = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def compute_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to x (n, d) and y (m, d); raw float64 value.

    |mu_x - mu_y|^2 + Tr S_x + Tr S_y - 2 Tr (S_x S_y)^1/2. Exactly 0.0 for identical sets.
    A negative value (only possible from round-off) is returned as is, with a RuntimeWarning.
    """
    x, y = _check_pair(x, y)
    if x.shape == y.shape and np.array_equal(x, y):
        return 0.0
    n, m = x.shape[0], y.shape[0]
    a = x - x.mean(axis=0)
    b = y - y.mean(axis=0)
    mean_term = float(np.sum((x.mean(axis=0) - y.mean(axis=0)) ** 2))
    tr1 = float(np.sum(a * a) / (n - 1))
    tr2 = float(np.sum(b * b) / (m - 1))
    fid = mean_term + tr1 + tr2 - 2.0 * _trace_sqrt_centred(a, b)
    if fid < 0:
        warnings.warn(
            f"FID is slightly negative ({fid:.3e}) from round-off; report max(FID, 0)",
            RuntimeWarning,
            stacklevel=2,
        )
    return fid


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3."""
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    n, m = x.shape[0], y.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def compute_kid(
    x: np.ndarray,
    y: np.ndarray,
    subset_size: int = 1000,
    n_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over random subsets.

    Each subset draws `min(subset_size, n, m)` rows without replacement from each set.
    """
    x, y = _check_pair(x, y)
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.array(
        [
            mmd2_unbiased(
                x[rng.choice(x.shape[0], size, replace=False)],
                y[rng.choice(y.shape[0], size, replace=False)],
            )
            for _ in range(n_subsets)
        ]
    )
    return float(vals.mean()), float(vals.std())


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row."""
    if x.shape[0] <= k:
        raise ValueError(f"need more than k = {k} samples for k-NN radii, got {x.shape[0]}")
    d = cdist(x, x)
    return np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself (distance 0)


def compute_prdc(
    real: np.ndarray, fake: np.ndarray, k_pr: int = 3, k_dc: int = 5
) -> dict[str, float]:
    """Precision/recall (k-NN manifolds, k = k_pr) and density/coverage (k = k_dc).

    real (n, d), fake (m, d). Returns {"precision", "recall", "density", "coverage"}.
    """
    real, fake = _check_pair(real, fake)
    d_rf = cdist(real, fake)  # (n, m)
    r_real_pr = _kth_radius(real, k_pr)
    r_fake_pr = _kth_radius(fake, k_pr)
    precision = float(np.mean((d_rf <= r_real_pr[:, None]).any(axis=0)))
    recall = float(np.mean((d_rf <= r_fake_pr[None, :]).any(axis=1)))
    r_real_dc = _kth_radius(real, k_dc)
    inside = d_rf <= r_real_dc[:, None]
    density = float(inside.sum() / (k_dc * fake.shape[0]))
    coverage = float(np.mean(d_rf.min(axis=1) <= r_real_dc))
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def classifier_inception_score(probs: np.ndarray, n_splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, C); (mean, std) over splits.

    Only valid on the output of a classifier; never pass pooled features here.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"class probabilities must be (N, C), got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("class probabilities must be non-negative and sum to 1 per row")
    n_splits = max(1, min(n_splits, p.shape[0]))
    scores = []
    for part in np.array_split(p, n_splits):
        py = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval."""

    low: float
    high: float
    level: float
    n_boot: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_boot": self.n_boot,
            "method": "percentile bootstrap, both sets resampled with replacement",
        }


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], float | dict[str, float]],
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Interval | dict[str, Interval]:
    """Percentile CI of fn(x*, y*), x* and y* resampled with replacement (seeded).

    `fn` returning a dict gives one interval per key. Note: resampled sets contain duplicates,
    which bias FID upward and shrink k-NN radii, so at small n the interval of FID/PRDC can sit
    beside the point estimate; read it as the spread, and the real-vs-real baseline as the scale.
    """
    rng = np.random.default_rng(seed)
    vals: list = []
    for _ in range(n_boot):
        xi = x[rng.integers(0, len(x), len(x))]
        yi = y[rng.integers(0, len(y), len(y))]
        vals.append(fn(xi, yi))
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)

    def interval(v: list[float]) -> Interval:
        lo, hi = np.percentile(np.asarray(v, dtype=np.float64), q)
        return Interval(float(lo), float(hi), level, n_boot)

    if isinstance(vals[0], dict):
        return {k: interval([v[k] for v in vals]) for k in vals[0]}
    return interval(vals)


def real_baseline(
    fn: Callable[[np.ndarray, np.ndarray], float | dict[str, float]],
    real: np.ndarray,
    fake: np.ndarray,
    repeats: int = 5,
    seed: int = 0,
) -> dict:
    """Real-vs-real reference at a matched sample size.

    The real set (n, d) is split at random into two disjoint halves A and B of size
    h = min(n // 2, m). The baseline is fn(B, A); the matched synthetic value is fn(B, F) with F a
    random size-h subset of `fake` (m, d), so both numbers share sample sizes (h, h) and the
    reference half B. Repeated `repeats` times with different splits: mean and std of each.
    """
    n, m = len(real), len(fake)
    h = min(n // 2, m)
    if h < 2:
        raise ValueError(f"real-vs-real baseline needs >= 4 real samples, got {n}")
    rng = np.random.default_rng(seed)
    base, matched = [], []
    for _ in range(repeats):
        perm = rng.permutation(n)
        a, b = real[perm[:h]], real[perm[h : 2 * h]]
        f = fake[rng.choice(m, h, replace=False)]
        base.append(fn(b, a))  # reference first, as in fn(real, fake)
        matched.append(fn(b, f))

    def summary(v: list) -> dict:
        if isinstance(v[0], dict):
            return {k: summary([x[k] for x in v]) for k in v[0]}
        arr = np.asarray(v, dtype=np.float64)
        return {"mean": float(arr.mean()), "std": float(arr.std())}

    return {
        "size": h,
        "repeats": repeats,
        "real_vs_real": summary(base),
        "synthetic_vs_real": summary(matched),
    }
