"""FID/KID/PRDC/classifier-IS against independent references and hand-built cases."""

from __future__ import annotations

import warnings

import mpmath
import numpy as np
import pytest
import scipy.linalg

from synthct.metrics import distances as D


def _fid_sqrtm(x, y):
    """The textbook recipe with scipy.linalg.sqrtm (only reliable for n >> d)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _fid_mpmath(x, y, dps=50):
    """High-precision reference: eigenvalues of S1 S2 in 50-digit arithmetic."""
    mpmath.mp.dps = dps

    def cov(a):
        a = mpmath.matrix(a.tolist())
        n, d = a.rows, a.cols
        mu = [mpmath.fsum(a[i, j] for i in range(n)) / n for j in range(d)]
        c = mpmath.matrix(d, d)
        for p in range(d):
            for q in range(d):
                c[p, q] = mpmath.fsum((a[i, p] - mu[p]) * (a[i, q] - mu[q]) for i in range(n)) / (
                    n - 1
                )
        return mu, c

    mu1, s1 = cov(x)
    mu2, s2 = cov(y)
    ev = mpmath.eig(s1 * s2, left=False, right=False)
    tr_sqrt = mpmath.fsum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in ev)
    d = len(mu1)
    tr = mpmath.fsum(s1[i, i] + s2[i, i] for i in range(d))
    mean = mpmath.fsum((mu1[i] - mu2[i]) ** 2 for i in range(d))
    return float(mean + tr - 2 * tr_sqrt)


def test_fid_matches_sqrtm_when_n_much_larger_than_d():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 8))
    y = rng.standard_normal((1500, 8)) @ rng.standard_normal((8, 8)) * 0.7 + 0.3
    ref = _fid_sqrtm(x, y)
    assert abs(D.compute_fid(x, y) - ref) / ref < 1e-6


def test_fid_small_n_matches_high_precision_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 7))
    y = rng.standard_normal((5, 7)) * 1.5 + 0.2
    ref = _fid_mpmath(x, y)
    got = D.compute_fid(x, y)
    assert abs(got - ref) / ref < 1e-9
    # and the nuclear-norm path agrees with the eigen path on the same data
    a, b = x - x.mean(0), y - y.mean(0)
    s1, s2 = a.T @ a / 3, b.T @ b / 4
    eig = np.linalg.eigvals(s1 @ s2)
    assert D.trace_sqrt_product(x, y) == pytest.approx(
        np.sqrt(np.clip(eig.real, 0, None)).sum(), rel=1e-6
    )


def test_fid_identical_sets_is_exactly_zero_and_symmetric():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 300))
    assert D.compute_fid(x, x.copy()) == 0.0
    y = rng.standard_normal((60, 300)) + 0.1
    assert D.compute_fid(x, y) == pytest.approx(D.compute_fid(y, x), rel=1e-10)
    assert D.compute_fid(x, y) > 0


def test_fid_negative_roundoff_warns_and_is_returned_raw(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 4))
    y = x + 1e-12
    real_tsp = D.trace_sqrt_product
    monkeypatch.setattr(D, "trace_sqrt_product", lambda a, b: real_tsp(a, b) + 1e-9)
    with pytest.warns(RuntimeWarning, match="negative"):
        v = D.compute_fid(x, y)
    assert v < 0


def _mmd2_loop(x, y):
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_kid_unbiased_estimator_matches_double_loop():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3)) + 0.5
    assert D.mmd2_unbiased(x, y) == pytest.approx(_mmd2_loop(x, y), rel=1e-12)
    # with subset size = full set, every subset is a permutation: KID = the loop value, std 0
    mean, std = D.compute_kid(x[:5], y, subset_size=5, n_subsets=3)
    assert mean == pytest.approx(_mmd2_loop(x[:5], y), rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((400, 16)), rng.standard_normal((400, 16))
    same, same_sd = D.compute_kid(x, y, subset_size=200, n_subsets=50)
    shifted, _ = D.compute_kid(x, y + 1.0, subset_size=200, n_subsets=50)
    assert abs(same) < 3 * same_sd + 1e-3
    assert shifted > 50 * abs(same) and shifted > 0.05


def test_prdc_hand_built_sets():
    # real: 6 points on a line, spacing 1 -> 3-NN radius 3 at the ends ... 2 inside
    real = np.arange(6, dtype=float)[:, None] * np.array([[1.0, 0.0]])
    # identical fake set: perfect precision/recall/coverage, density = 1 by construction
    same = D.compute_prdc(real, real.copy(), k_pr=3, k_dc=3)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    # fake far away: nothing inside any real ball and no real covered
    far = D.compute_prdc(real, real + 100.0, k_pr=3, k_dc=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # half the fakes on the real points, half far away
    mixed = np.vstack([real[:3], real[:3] + 100.0])
    r = D.compute_prdc(real, mixed, k_pr=3, k_dc=3)
    assert r["precision"] == 0.5
    # density: real radii (k=3) are [3,2,2,2,2,3]; fake at 0 lies in the balls of reals 0..2 (3),
    # fake at 1 in balls 0..3 (4), fake at 2 in balls 0..5 (6) -> 13 / (3 * 6)
    assert r["density"] == pytest.approx(13 / 18)
    # coverage: reals whose nearest fake lies within their radius: 0..5 (nearest fake <= 3 away)
    assert r["coverage"] == 1.0


def test_classifier_is_known_values():
    c = 4
    const = np.tile(np.array([[0.1, 0.2, 0.3, 0.4]]), (80, 1))
    assert D.classifier_inception_score(const)[0] == pytest.approx(1.0)
    onehot = np.eye(c)[np.arange(80) % c]  # each of the 10 splits holds 2 of every class
    mean, std = D.classifier_inception_score(onehot, n_splits=10)
    assert mean == pytest.approx(c) and std == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        D.classifier_inception_score(np.ones((10, 3)))  # not probabilities


def test_bootstrap_ci_and_real_baseline():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((80, 4)), rng.standard_normal((80, 4)) + 0.7
    point = D.compute_fid(x, y)
    ci = D.bootstrap_ci(D.compute_fid, x, y, n_boot=60, seed=0)
    assert ci.low < point < ci.high + 1.0 and ci.low > 0
    again = D.bootstrap_ci(D.compute_fid, x, y, n_boot=60, seed=0)
    assert again == ci  # seeded
    cis = D.bootstrap_ci(D.compute_prdc, x, y, n_boot=10)
    assert set(cis) == {"precision", "recall", "density", "coverage"}
    base = D.real_baseline(D.compute_fid, x, y, repeats=3)
    assert base["size"] == 40
    # real halves come from one distribution: their FID is well below the shifted pair's
    assert base["real_vs_real"]["mean"] < base["synthetic_vs_real"]["mean"]


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="dimensions differ"):
        D.compute_fid(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        D.compute_fid(np.full((3, 2), np.nan), np.zeros((3, 2)))
    # the same set in another row order: not bit-identical, so computed, and ~0 up to round-off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert abs(D.compute_fid(np.eye(3), np.eye(3)[::-1])) < 1e-12
