"""Display transforms and figure builders of ui/charts.py, checked against independent code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from ui import charts


def test_ema_smooth_matches_pandas_adjusted_ewm():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200).cumsum()
    for w in (0.0, 0.3, 0.9, 0.99):
        expected = pd.Series(x).ewm(alpha=1 - w, adjust=True).mean().to_numpy() if w else x
        np.testing.assert_allclose(charts.ema_smooth(x, w), expected, rtol=1e-10, atol=1e-12)


def test_ema_smooth_skips_nans_and_rejects_bad_weight():
    out = charts.ema_smooth([np.nan, 2.0, np.nan, 4.0], 0.5)
    assert np.isnan(out[0])
    assert out[1] == pytest.approx(2.0)  # bias correction: starts at the first value
    assert out[2] == pytest.approx(2.0)  # a NaN carries the last smoothed value
    assert out[3] == pytest.approx((0.25 * 2 + 0.5 * 4) / 0.75)
    with pytest.raises(ValueError, match="smoothing weight"):
        charts.ema_smooth([1.0], 1.0)


def test_roc_points_match_sklearn():
    rng = np.random.default_rng(1)
    syn = rng.integers(0, 11, 15)
    real = rng.integers(0, 11, 12)
    fpr, tpr = charts.roc_points(syn, real)
    y = np.r_[np.ones(len(syn)), np.zeros(len(real))]
    s = np.r_[syn, real].astype(float)
    f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2)
    np.testing.assert_allclose(tpr, t2)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, s))


def test_roc_figure_auc_in_legend_uses_first_copies_only():
    rows = pd.DataFrame(
        {
            "rater": ["A"] * 5,
            "truth": ["real", "real", "synthetic", "synthetic", "synthetic"],
            "score": [1, 2, 8, 9, 0],
            "duplicate_of": [None, None, None, None, "p3"],  # the duplicate (score 0) is ignored
        }
    )
    fig = charts.roc_figure(rows)
    names = [t.name for t in fig.data]
    assert "A (AUC 1.00)" in names


def test_difference_rgb_colours():
    a = np.array([[0.0, 500.0, -1000.0]])
    b = np.array([[0.0, 0.0, 0.0]])
    rgb = charts.difference_rgb(a, b, limit=500)
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # equal: white
    assert tuple(rgb[0, 1]) == (255, 0, 0)  # a brighter: red
    assert tuple(rgb[0, 2]) == (0, 0, 255)  # b brighter (saturated): blue


def test_loss_figure_smoothed_trace_is_the_ema():
    losses = pd.DataFrame({"step": [1, 2, 3, 4], "wall_s": 0, "g_loss": [4.0, 2.0, 3.0, 1.0]})
    fig = charts.loss_figure(losses, ["g_loss"], 0.5)
    smooth = next(t for t in fig.data if t.name == "g_loss")
    expected = pd.Series([4.0, 2.0, 3.0, 1.0]).ewm(alpha=0.5, adjust=True).mean()
    np.testing.assert_allclose(smooth.y, expected)


def test_runs_figure_plots_wall_clock_hours_and_the_ema_per_run():
    a = pd.DataFrame({"step": [10, 20, 30], "wall_s": [3600.0, 7200.0, 10800.0],
                      "value": [3.0, 1.0, 2.0]})  # fmt: skip
    fig = charts.runs_figure({"a": a, "empty": a.iloc[:0]}, "g_loss", 0.5, x="wall_s")
    smooth = next(t for t in fig.data if t.name == "a")
    np.testing.assert_allclose(smooth.x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(smooth.y, pd.Series([3.0, 1.0, 2.0]).ewm(alpha=0.5).mean())
    assert {t.name for t in fig.data} == {"a", "a (raw)"}  # an empty run draws nothing
