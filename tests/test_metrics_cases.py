"""Resampling by case: rounds, case bootstrap, case-disjoint baseline, CI tiers, and a simulation
of correlated slices in which perfect 2D- and 3D-style generators must read as real."""

from __future__ import annotations

import numpy as np
import pytest

from synthct.metrics import distances as D
from synthct.metrics import resampling as R
from synthct.metrics.comparison import ci_tiers
from synthct.metrics.evaluation import EvalConfig, distance_metrics
from synthct.slices import case_draw

INFO = {"name": "sim", "version": "1", "weights_sha256": "0" * 64}
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
D_FEAT, SLICES_AVAILABLE, K = 8, 24, 6


# -- the simulation ---------------------------------------------------------------------------
def volumes(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, L, d) slice features of n cases: a case effect (between-case variance) plus a smaller
    slice effect (within-case variance), on dimensions of decreasing scale."""
    scale = np.linspace(1.5, 0.3, D_FEAT)
    case = rng.normal(0, 1, (n, 1, D_FEAT)) * scale
    return case + rng.normal(0, 0.35, (n, SLICES_AVAILABLE, D_FEAT)) * scale


def protocol_draw(vols: np.ndarray, seed: int) -> np.ndarray:
    """k slices per case with the evaluation's own draw -> (n, k, d)."""
    n = len(vols)
    cases = np.repeat(np.arange(n), SLICES_AVAILABLE)
    idx, short = case_draw(cases, np.zeros(len(cases), bool), n, K, None, seed)
    assert not short.any()
    return vols.reshape(-1, D_FEAT)[idx]


@pytest.fixture(scope="module")
def simulation():
    """Real cases, a 3D-style perfect generator (held-out cases, slices cut from volumes) and a
    2D-style perfect generator (independent slices, grouped k to a case), all one distribution."""
    rng = np.random.default_rng(0)
    real = protocol_draw(volumes(40, rng), 1)
    perfect_3d = protocol_draw(volumes(40, rng), 2)
    perfect_2d = volumes(40 * K, rng)[:, 0].reshape(40, K, D_FEAT)  # one slice per fresh case
    opts = EvalConfig("sim", n_boot=60, baseline_repeats=30, kid_subsets=20, seed=0)
    return {
        "real": real,
        "3d": distance_metrics(real, perfect_3d, INFO, opts),
        "2d": distance_metrics(real, perfect_2d, INFO, opts),
        "perfect_3d": perfect_3d,
    }


@pytest.mark.parametrize("kind", ["3d", "2d"])
@pytest.mark.parametrize("key", METRICS)
def test_perfect_generators_read_as_real_at_slice_level(simulation, kind, key):
    m = simulation[kind][key]
    base = m["baseline"]
    rr, sr = base["real_vs_real"], base["synthetic_vs_real"]
    assert base["unit"] == "case" and base["size"] == 20
    assert rr["low"] <= sr["median"] <= rr["high"], (key, rr, sr)
    assert base["synthetic_within_real_vs_real"]
    assert m["n_cases"] == 40 and m["m_cases"] == 40 and m["slices_per_case"] == K
    assert m["n"] == 40 * K and m["ci"]["unit"] == "case"


@pytest.mark.parametrize("key", METRICS)
def test_2d_and_3d_perfect_generators_are_not_ranked_apart(simulation, key):
    a, b = simulation["3d"][key], simulation["2d"][key]
    tiers = ci_tiers([a["ci"]["low"], b["ci"]["low"]], [a["ci"]["high"], b["ci"]["high"]])
    assert tiers[0] == tiers[1] == 1
    assert a["ci"]["low"] <= b["ci"]["high"] and b["ci"]["low"] <= a["ci"]["high"]


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_every_interval_contains_its_own_estimate(simulation, kind):
    for key in METRICS:
        m = simulation[kind][key]
        assert m["ci"]["low"] <= m["value"] <= m["ci"]["high"], key
        for side in ("real_vs_real", "synthetic_vs_real"):
            s = m["baseline"][side]
            assert s["low"] <= s["median"] <= s["high"], (key, side)


def test_pooling_correlated_slices_would_break_prdc(simulation):
    """Control: the simulated slices are correlated enough that treating them as independent
    samples (the naive protocol) gives the perfect 3D generator a poor precision."""
    real, syn = simulation["real"], simulation["perfect_3d"]
    pooled = D.compute_prdc(real.reshape(-1, D_FEAT), syn.reshape(-1, D_FEAT))
    assert pooled["precision"] < 0.6 and pooled["coverage"] < 0.7
    assert simulation["3d"]["precision"]["value"] > 0.75
    assert simulation["3d"]["coverage"]["value"] > 0.85


# -- rounds, case bootstrap, baseline -----------------------------------------------------------
def test_round_mean_is_the_mean_over_rounds_of_one_slice_per_case():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 3, 4)), rng.normal(size=(12, 3, 4)) + 0.5
    want = np.mean([D.compute_fid(x[:, j], y[:, j]) for j in range(3)])
    assert R.round_mean(D.compute_fid, x, y) == pytest.approx(want, rel=1e-12)
    assert R.round_mean(D.compute_fid, x[:, 0], y[:, 0]) == pytest.approx(
        D.compute_fid(x[:, 0], y[:, 0])
    )
    with pytest.raises(ValueError, match="slices per case differ"):
        R.round_mean(D.compute_fid, x, y[:, :2])


def test_case_bootstrap_has_the_width_of_case_level_sampling():
    """Slices identical within a case carry one case's information: the CI of a mean difference
    must have the case-level width sigma * sqrt(1/C + 1/C'), not sqrt(k) times narrower."""
    rng = np.random.default_rng(2)
    c, k = 60, 8
    x = np.repeat(rng.normal(size=(c, 1, 1)), k, axis=1)
    y = np.repeat(rng.normal(size=(c, 1, 1)), k, axis=1)

    def diff(a, b):
        return float(a.mean() - b.mean())

    ci = R.bootstrap_ci(diff, x, y, n_boot=400, seed=0)
    expected = 2 * 1.96 * np.sqrt(x[:, 0, 0].var() / c + y[:, 0, 0].var() / c)
    assert (ci.high - ci.low) == pytest.approx(expected, rel=0.2)
    assert ci.low <= diff(x, y) <= ci.high
    sliced = R.bootstrap_ci(diff, x.reshape(-1, 1, 1), y.reshape(-1, 1, 1), n_boot=400, seed=0)
    assert (sliced.high - sliced.low) < 0.5 * (ci.high - ci.low)  # what slice resampling did


def test_bootstrap_interval_contains_estimate_even_when_resampling_biases_the_metric():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 4, 16)), rng.normal(size=(12, 4, 16))
    est = R.round_mean(D.compute_fid, x, y)
    ci = R.bootstrap_ci(D.compute_fid, x, y, n_boot=50, seed=0)
    assert ci.bias > 0  # duplicated cases inflate FID ...
    assert ci.low <= est <= ci.high  # ... and the interval is shifted back onto the estimate
    assert ci.to_dict()["unit"] == "case"


def test_grouped_bootstrap_passes_each_rows_original_case():
    seen = []

    def fn(a, b, ga, gb):
        if ga is not None:  # None: the estimate on the data as they are (all cases distinct)
            seen.extend([(a[:, 0].copy(), ga.copy()), (b[:, 0].copy(), gb.copy())])
        return 0.0

    x = np.arange(8, dtype=float).reshape(8, 1, 1) * np.ones((1, 2, 3))
    R.bootstrap_ci(fn, x, x, n_boot=5, grouped=True)
    assert len(seen) == 2 * 5 * 2  # 5 replicates x 2 rounds, each passing x and y with labels
    for feats, groups in seen:
        np.testing.assert_array_equal(feats, groups)  # row r came from case feats[r] == r


def test_real_baseline_splits_real_cases_into_disjoint_halves():
    def fn(a, b):
        assert not set(a[:, 0]) & set(b[:, 0])  # no case on both sides
        return float(len(set(a[:, 0])))

    real = np.repeat(np.arange(10.0)[:, None, None], 3, axis=1) * np.ones((1, 1, 2))
    base = R.real_baseline(fn, real, real + 100, repeats=7, seed=0)
    assert base["size"] == 5 and base["unit"] == "case" and base["repeats"] == 7
    assert base["real_vs_real"]["median"] == 5.0
    with pytest.raises(ValueError, match="4 real cases"):
        R.real_baseline(fn, real[:3], real, repeats=2)


def test_case_draw_is_seeded_and_honours_the_tumour_mix():
    n, per = 30, 20
    cases = np.repeat(np.arange(n), per)
    tumour = np.tile(np.arange(per) < 4, n)  # 4 of 20 slices of every case show tumour
    idx, short = case_draw(cases, tumour, n, 6, None, seed=5)
    again, _ = case_draw(cases, tumour, n, 6, None, seed=5)
    assert np.array_equal(idx, again) and not short.any()
    assert all(len(set(row)) == 6 and set(cases[row]) == {c} for c, row in enumerate(idx))
    natural = tumour[idx].mean()
    assert abs(natural - 0.2) < 0.08
    half, _ = case_draw(cases, tumour, n, 1, 0.5, seed=5)
    assert abs(tumour[half].mean() - 0.5) < 0.2
    few, short = case_draw(np.array([0, 0, 1, 1, 1]), np.zeros(5, bool), 2, 3, None, seed=0)
    assert short.tolist() == [True, False] and set(few[0]) <= {0, 1}
    body = np.array([False, True, True, False, False])  # case 1 has no body slice: all its items
    idx, _ = case_draw(np.array([0, 0, 0, 1, 1]), np.zeros(5, bool), 2, 2, None, 0, body)
    assert set(idx[0]) == {1, 2} and set(idx[1]) <= {3, 4}


def test_ci_tiers_merge_overlapping_intervals():
    low = [1.0, 2.5, 4.0, 7.0, np.nan, 0.0]
    high = [3.0, 5.0, 6.0, 8.0, 1.0, 0.5]
    tiers = ci_tiers(low, high)
    assert tiers[[5, 0, 1, 2, 3]].tolist() == [1, 2, 2, 2, 3] and np.isnan(tiers[4])
