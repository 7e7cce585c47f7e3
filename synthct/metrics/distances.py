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
Kynkaanniemi et al. 2019 (k = 3); density/coverage Naeem et al. 2020 (k = 5), with the strict
`<` of the reference `prdc` package (tested equal to it). KID and PRDC take optional case labels
so that rows of one case (a case drawn twice by a case bootstrap) are never neighbours or
within-set pairs. The Inception Score is only defined from class probabilities, never from
pooled features, and compares sets only at one sample size (`classifier_is_matched`).

Resampling (case bootstrap, real-vs-real baseline, rounds of one slice per case) lives in
`resampling.py` and is re-exported here. docs/metrics.md defines every reported number.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.distance import cdist

__all__ = [
    "bootstrap_ci",
    "classifier_inception_score",
    "compute_fid",
    "compute_kid",
    "classifier_is_matched",
    "Interval",
    "compute_prdc",
    "kth_radius",
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


def _other_case(groups: np.ndarray | None, n: int) -> np.ndarray:
    """(n, n) bool: True where rows i and j belong to different cases (i != j without groups)."""
    if groups is None:
        return ~np.eye(n, dtype=bool)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"case labels must be ({n},), got shape {g.shape}")
    return g[:, None] != g[None, :]


def mmd2_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    x_groups: np.ndarray | None = None,
    y_groups: np.ndarray | None = None,
) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3.

    The within-set means run over pairs of distinct rows (Binkowski et al. 2018); with case
    labels, over pairs of rows of distinct cases, so a case drawn twice by a case bootstrap does
    not pair with itself (without labels, every row is its own case: the standard estimator).
    """
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    ox, oy = _other_case(x_groups, len(x)), _other_case(y_groups, len(y))
    if not ox.any() or not oy.any():
        raise ValueError("MMD^2 needs rows of at least 2 distinct cases on each side")
    return float(kxx[ox].mean() + kyy[oy].mean() - 2.0 * kxy.mean())


def compute_kid(
    x: np.ndarray,
    y: np.ndarray,
    subset_size: int = 1000,
    n_subsets: int = 100,
    seed: int = 0,
    x_groups: np.ndarray | None = None,
    y_groups: np.ndarray | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of unbiased MMD^2 over random subsets.

    Each subset draws `min(subset_size, n, m)` rows without replacement from each set; case
    labels (optional) are passed on to `mmd2_unbiased`.
    """
    x, y = _check_pair(x, y)
    size = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        ix = rng.choice(x.shape[0], size, replace=False)
        iy = rng.choice(y.shape[0], size, replace=False)
        gx = None if x_groups is None else np.asarray(x_groups)[ix]
        gy = None if y_groups is None else np.asarray(y_groups)[iy]
        vals.append(mmd2_unbiased(x[ix], y[iy], gx, gy))
    v = np.asarray(vals)
    return float(v.mean()), float(v.std())


def kth_radius(x: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Distance from each row of x to its k-th nearest row of another case.

    Without `groups` every row is its own case: the k-th nearest other row, i.e. the (k+1)-th
    smallest distance counting the row itself, as the reference `prdc` package computes it
    (exact copies of a row count as neighbours at distance 0). With `groups`, rows of the same
    case (a case drawn twice by a case bootstrap) are never neighbours.
    """
    n = x.shape[0]
    d = cdist(x, x)
    d[~_other_case(groups, n)] = np.inf
    if groups is None:
        if n <= k:
            raise ValueError(f"need more than k = {k} samples for k-NN radii, got {n}")
    elif int(np.isfinite(d).sum(axis=1).min()) < k:
        raise ValueError(f"need rows of more than k = {k} distinct cases for k-NN radii")
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def compute_prdc(
    real: np.ndarray,
    fake: np.ndarray,
    k_pr: int = 3,
    k_dc: int = 5,
    real_groups: np.ndarray | None = None,
    fake_groups: np.ndarray | None = None,
) -> dict[str, float]:
    """Precision/recall (k-NN manifolds, k = k_pr) and density/coverage (k = k_dc).

    real (n, d), fake (m, d). Returns {"precision", "recall", "density", "coverage"}. As in the
    reference implementation (Naeem et al. 2020, PyPI `prdc`): a point lies in a k-NN ball when
    its distance is strictly smaller than the radius. `real_groups`/`fake_groups`: optional case
    labels (n,)/(m,); radii then ignore rows of the same case (see `kth_radius`).
    """
    real, fake = _check_pair(real, fake)
    d_rf = cdist(real, fake)  # (n, m)
    r_real_pr = kth_radius(real, k_pr, real_groups)
    r_fake_pr = kth_radius(fake, k_pr, fake_groups)
    precision = float(np.mean((d_rf < r_real_pr[:, None]).any(axis=0)))
    recall = float(np.mean((d_rf < r_fake_pr[None, :]).any(axis=1)))
    r_real_dc = kth_radius(real, k_dc, real_groups)
    inside = d_rf < r_real_dc[:, None]
    density = float(inside.sum() / (k_dc * fake.shape[0]))
    coverage = float(np.mean(d_rf.min(axis=1) < r_real_dc))
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def _check_probs(probs: np.ndarray, name: str = "class probabilities") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"{name} must be (N, C), got shape {p.shape}")
    if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError(f"{name} must be non-negative and sum to 1 per row")
    return p


def classifier_inception_score(probs: np.ndarray, n_splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class probabilities (N, C); (mean, std) over splits.

    Only valid on the output of a classifier; never pass pooled features here. The value depends
    on the split size N / n_splits (p(y) is estimated per split): compare two sets only at the
    same N and n_splits (`classifier_is_matched`).
    """
    p = _check_probs(probs)
    n_splits = max(1, min(n_splits, p.shape[0]))
    scores = []
    for part in np.array_split(p, n_splits):
        py = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def classifier_is_matched(
    sets: dict[str, np.ndarray], n_splits: int = 10, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Classifier-IS of several sets of class probabilities {label: (N_i, C)} at one sample size.

    Every set is scored on n = min_i N_i rows (a seeded subsample without replacement of the
    larger sets) in the same `n_splits` splits, so two samples of one distribution give the same
    expected score whatever their sizes. Returns {label: {"value", "std", "n", "n_total"}}.
    """
    probs = {k: _check_probs(v, f"class probabilities of {k}") for k, v in sets.items()}
    n = min(len(v) for v in probs.values())
    rng = np.random.default_rng(seed)
    out = {}
    for label, p in probs.items():
        rows = p if len(p) == n else p[np.sort(rng.choice(len(p), n, replace=False))]
        mean, std = classifier_inception_score(rows, n_splits)
        out[label] = {"value": mean, "std": std, "n": n, "n_total": len(p)}
    return out


# resampling by case lives in resampling.py; re-exported here for callers of the metrics
from synthct.metrics.resampling import Interval, bootstrap_ci, real_baseline  # noqa: E402
