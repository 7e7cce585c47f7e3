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
    # density: real radii (k=3) are [3,2,2,2,2,3]; a fake counts in a ball when strictly closer
    # than its radius (the reference `prdc`): fake at 0 lies in the balls of reals 0, 1 (2),
    # fake at 1 in balls 0..2 (3), fake at 2 in balls 0..3 (4) -> 9 / (3 * 6)
    assert r["density"] == pytest.approx(9 / 18)
    # coverage: reals whose nearest fake is strictly inside their radius: 0..3 (real 4: nearest
    # fake 2 away, radius 2; real 5: 3 away, radius 3)
    assert r["coverage"] == pytest.approx(4 / 6)


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


# -- against the reference `prdc` package (Naeem et al. 2020) ---------------------------------
def _reference_prdc(real, fake, k):
    prdc = pytest.importorskip("prdc")
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        return {key: float(v) for key, v in prdc.compute_prdc(real, fake, nearest_k=k).items()}


def _prdc_cases():
    rng = np.random.default_rng(11)
    real = rng.normal(size=(60, 5))
    fake = np.vstack([real[:15], rng.normal(0.3, 1.2, size=(45, 5))])  # 15 exact copies
    yield "continuous", real, fake
    # quantised features: many exactly tied distances, duplicated real points, copies in fake
    q_real = rng.integers(0, 3, size=(50, 3)).astype(float)
    q_fake = np.vstack([q_real[:10], rng.integers(0, 4, size=(40, 3)).astype(float)])
    yield "quantised", q_real, q_fake
    half = np.round(rng.normal(size=(40, 4)) * 2) / 2  # on a 0.5 grid
    yield "half-grid", half, np.vstack([half[::2], half[:20] + 0.5])


@pytest.mark.parametrize("k", [3, 5])
def test_prdc_equals_the_reference_package(k):
    for name, real, fake in _prdc_cases():
        ours = D.compute_prdc(real, fake, k_pr=k, k_dc=k)
        ref = _reference_prdc(real, fake, k)
        for key in ("precision", "recall", "density", "coverage"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), (name, key)


def test_prdc_case_labels_exclude_same_case_neighbours():
    """Against a brute-force loop: the k-NN radius of a row ignores rows of its own case."""
    rng = np.random.default_rng(12)
    real = rng.normal(size=(24, 3))
    fake = rng.normal(size=(18, 3))
    gr, gf = np.repeat(np.arange(8), 3), np.repeat(np.arange(6), 3)

    def radii(x, g, k):
        return np.array(
            [np.sort([np.linalg.norm(x[i] - x[j]) for j in range(len(x)) if g[j] != g[i]])[k - 1]
             for i in range(len(x))]
        )  # fmt: skip

    d = np.linalg.norm(real[:, None] - fake[None], axis=2)
    r3, r5, f3 = radii(real, gr, 3), radii(real, gr, 5), radii(fake, gf, 3)
    want = {
        "precision": np.mean((d < r3[:, None]).any(0)),
        "recall": np.mean((d < f3[None]).any(1)),
        "density": (d < r5[:, None]).sum() / (5 * len(fake)),
        "coverage": np.mean(d.min(1) < r5),
    }
    got = D.compute_prdc(real, fake, real_groups=gr, fake_groups=gf)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key
    # a case drawn twice (same label) is not its own neighbour: its radius does not change
    dup = np.vstack([real, real[:1]])
    r_dup = D.kth_radius(dup, 3, np.concatenate([gr, gr[:1]]))
    assert r_dup[0] == r_dup[-1] == pytest.approx(r3[0]) and r_dup[0] > 0
    assert D.kth_radius(dup, 3)[0] < r3[0] or r3[0] == 0  # without labels the copy is a neighbour
    with pytest.raises(ValueError, match="distinct cases"):
        D.compute_prdc(real[:6], fake, real_groups=gr[:6], fake_groups=gf)


def test_kid_case_labels_drop_same_case_pairs():
    rng = np.random.default_rng(13)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.5
    gx, gy = np.array([0, 0, 1, 2, 2, 3]), np.array([0, 1, 1, 2, 3])
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    sxx = np.mean([k(x[i], x[j]) for i in range(6) for j in range(6) if gx[i] != gx[j]])
    syy = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if gy[i] != gy[j]])
    sxy = np.mean([k(x[i], y[j]) for i in range(6) for j in range(5)])
    assert D.mmd2_unbiased(x, y, gx, gy) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)


def _probs(n, rng, c=7):
    z = rng.normal(0, 1.5, (n, c))
    z[:, 0] += 1.0
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_classifier_is_is_equal_for_one_distribution_at_different_sizes():
    """Real n = 105, synthetic m = 524 from one distribution: scored separately the larger set
    gets a higher IS (p(y) is estimated per split); scored at the same n they agree."""
    rng = np.random.default_rng(14)
    separate, matched = [], []
    for r in range(40):
        real, syn = _probs(105, rng), _probs(524, rng)
        separate.append(
            D.classifier_inception_score(syn)[0] - D.classifier_inception_score(real)[0]
        )
        out = D.classifier_is_matched({"real": real, "synthetic": syn}, n_splits=10, seed=r)
        assert out["real"]["n"] == out["synthetic"]["n"] == 105
        assert out["synthetic"]["n_total"] == 524
        matched.append(out["synthetic"]["value"] - out["real"]["value"])
    sep, mat = np.asarray(separate), np.asarray(matched)
    se = mat.std() / np.sqrt(len(mat))
    assert abs(mat.mean()) < 3 * se
    assert sep.mean() > 4 * sep.std() / np.sqrt(len(sep))  # the bias the matching removes
    # the smaller set is scored on all its rows: its value is the plain IS
    a, b = _probs(30, rng), _probs(90, rng)
    out = D.classifier_is_matched({"real": a, "synthetic": b}, n_splits=10)
    assert out["real"]["value"] == pytest.approx(D.classifier_inception_score(a, 10)[0])
