"""Segmentation scores against hand-computed values, and the experiment comparison table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from synthct.segment.scores import (
    compare_experiments,
    dice_per_case,
    dsc_agg,
    evaluate_cases,
    hd95_per_case,
)
from synthct.workspace import atomic_write_json

SHAPE = (8, 8, 8)


def _masks(*voxel_lists):
    out = np.zeros((len(voxel_lists), *SHAPE), dtype=bool)
    for i, voxels in enumerate(voxel_lists):
        for v in voxels:
            out[(i, *v)] = True
    return out


@pytest.fixture
def four_cases():
    """A: 2 of 4 gt voxels hit + 2 false; B: perfect; C: empty gt, 3 false; D: both empty."""
    gt = _masks(
        [(1, 1, 1), (1, 1, 2), (1, 1, 3), (1, 1, 4)],
        [(4, 4, 4), (4, 4, 5)],
        [],
        [],
    )
    pred = _masks(
        [(1, 1, 1), (1, 1, 2), (6, 6, 6), (6, 6, 5)],
        [(4, 4, 4), (4, 4, 5)],
        [(2, 2, 2), (2, 2, 3), (2, 2, 4)],
        [],
    )
    return pred, gt


def test_dice_per_case_excludes_empty_ground_truth(four_cases):
    pred, gt = four_cases
    d = dice_per_case(pred, gt)
    assert d[0] == pytest.approx(2 * 2 / (4 + 4))
    assert d[1] == pytest.approx(1.0)
    assert math.isnan(d[2]) and math.isnan(d[3])


def test_dsc_agg_sums_over_cases_and_differs_from_mean_dice(four_cases):
    pred, gt = four_cases
    # intersections 2 + 2; volumes (4 + 4) + (2 + 2) + (3 + 0) + 0
    assert dsc_agg(pred, gt) == pytest.approx(8 / 15)
    assert np.nanmean(dice_per_case(pred, gt)) == pytest.approx(0.75)
    assert math.isnan(dsc_agg(pred[3:], gt[3:]))


def test_hd95_known_distances_and_undefined_cases():
    # single voxels 3 apart along x at 2 mm -> 6 mm
    pred = _masks([(2, 2, 2)], [(1, 1, 1)], [], [(3, 3, 3)])
    gt = _masks([(5, 2, 2)], [(1, 1, 1), (1, 1, 5)], [(1, 1, 1)], [])
    hd = hd95_per_case(pred, gt, spacing=(2.0, 1.0, 1.0))
    assert hd[0] == pytest.approx(6.0)
    # gt -> pred distances {0, 4 mm}; pred -> gt {0}: 95th percentile by linear interpolation
    assert hd[1] == pytest.approx(np.percentile([0.0, 4.0], 95))
    assert math.isnan(hd[2]) and math.isnan(hd[3])


def test_evaluate_cases_summary_and_table(four_cases):
    pred, gt = four_cases
    ids = ["A", "B", "C", "D"]
    summary, table = evaluate_cases(ids, pred.astype(np.uint8), gt.astype(np.uint8), (1, 1, 1))
    assert summary["n_cases"] == 4
    assert summary["mean_dice"] == pytest.approx(0.75)
    assert summary["dsc_agg_union"] == pytest.approx(8 / 15)
    assert summary["n_empty_gt"] == 2
    assert summary["n_empty_gt_false_positive"] == 1  # case C
    assert summary["hd95_undefined"] == 2  # C and D
    assert summary["hd95_mm"] == pytest.approx(np.nanmean(table["hd95_mm"]))
    assert list(table["case_id"]) == ids
    assert table.loc[2, "pred_volume_ml"] == pytest.approx(3 / 1000)
    assert table.loc[0, "gt_volume_ml"] == pytest.approx(4 / 1000)


def test_evaluate_multiclass_per_class_scores():
    gt = np.zeros((1, *SHAPE), np.uint8)
    pred = np.zeros_like(gt)
    gt[0, 1, 1, 1:3] = 1  # GTVp 2 voxels
    gt[0, 5, 5, 5] = 2  # GTVn 1 voxel
    pred[0, 1, 1, 1:3] = 1
    pred[0, 5, 5, 5] = 1  # node predicted as primary: foreground right, class wrong
    summary, _ = evaluate_cases(["X"], pred, gt, (1, 1, 1), n_classes=3)
    assert summary["mean_dice"] == pytest.approx(1.0)
    assert summary["mean_dice_gtvp"] == pytest.approx(2 * 2 / (3 + 2))
    assert summary["mean_dice_gtvn"] == pytest.approx(0.0)


def test_evaluate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected one id per case"):
        evaluate_cases(["A"], np.zeros((1, 4, 4, 4)), np.zeros((1, 4, 4, 5)), (1, 1, 1))


def test_compare_experiments_table(workspace):
    def write(name, kind, dice, override, syn=None):
        atomic_write_json(
            workspace.segmentation / name / "results.json",
            {
                "experiment": kind,
                "n_train_val": 419,
                "config": {"seg": {"folds": 5, "epochs": 300}},
                "synthetic": syn,
                "leakage": {"override": override},
                "test": {"n_cases": 105, "mean_dice": dice, "dsc_agg": dice + 0.1},
            },
        )

    write("real", "real", 0.487, False)
    write("mixed-gan", "mixed", 0.522, True, {"set": "gan", "n": 524})
    (workspace.segmentation / "unfinished").mkdir()
    assert workspace.list_experiments() == ["mixed-gan", "real"]
    df = compare_experiments(workspace)
    assert list(df["experiment"]) == ["mixed-gan", "real"]
    row = df.set_index("experiment").loc["mixed-gan"]
    assert row["synthetic_set"] == "gan" and row["n_synthetic"] == 524
    assert bool(row["leakage_override"]) is True
    assert row["mean_dice"] == pytest.approx(0.522) and row["n_test"] == 105
    real = df.set_index("experiment").loc["real"]
    assert real["n_synthetic"] == 0 and bool(real["leakage_override"]) is False
    # results written before the union score was renamed: same number, new name
    assert real["dsc_agg_union"] == pytest.approx(0.587)
    assert real["normalisation"] == "linear" and pd.isna(real["hecktor_dsc_agg_mean"])


def test_compare_experiments_reads_original_grid_scores_and_intervals(workspace):
    atomic_write_json(
        workspace.segmentation / "mc" / "results.json",
        {
            "experiment": "real",
            "config": {"seg": {"folds": 5, "epochs": 300, "mask": "multiclass",
                               "normalisation": "auto3dseg-ct"}},
            "leakage": {"override": False},
            "test": {"n_cases": 9, "mean_dice": 0.5, "dsc_agg_union": 0.6,
                     "ci": {"mean_dice": {"low": 0.4, "high": 0.58}}},
            "test_original_grid": {"dsc_agg_mean": 0.55, "dsc_agg_gtvp": 0.6,
                                   "dsc_agg_gtvn": 0.5,
                                   "ci": {"dsc_agg_mean": {"low": 0.45, "high": 0.63}}},
        },
    )  # fmt: skip
    row = compare_experiments(workspace).set_index("experiment").loc["mc"]
    assert row["hecktor_dsc_agg_mean"] == 0.55 and row["hecktor_dsc_agg_gtvn"] == 0.5
    assert (row["hecktor_dsc_agg_mean_ci_low"], row["hecktor_dsc_agg_mean_ci_high"]) == (0.45, 0.63)
    assert (row["mean_dice_ci_low"], row["mean_dice_ci_high"]) == (0.4, 0.58)
    assert row["normalisation"] == "auto3dseg-ct" and row["mask"] == "multiclass"


def test_case_bootstrap_intervals_known_values(four_cases):
    """Two cases: the resamples are {AA, AB, BB}, so the 2.5/97.5 % points are the one-case
    values; the interval resamples cases, never voxels."""
    pred, gt = four_cases
    summary, _ = evaluate_cases(
        ["A", "B"], pred[:2].astype(np.uint8), gt[:2].astype(np.uint8), (1, 1, 1), n_boot=2000
    )
    ci = summary["ci"]
    assert ci["mean_dice"]["low"] == pytest.approx(0.5) and ci["mean_dice"]["high"] == 1.0
    assert ci["dsc_agg_union"]["low"] == pytest.approx(0.5)
    assert ci["dsc_agg_union"]["high"] == pytest.approx(1.0)
    assert ci["mean_dice"]["unit"] == "case" and ci["mean_dice"]["n_boot"] == 2000
    assert summary["labels"]["dsc_agg_union"] == "DSCagg (GTVp∪GTVn, preprocessed grid)"


def test_case_bootstrap_matches_the_normal_approximation():
    from synthct.segment.scores import _boot_mean, bootstrap_indices, percentile_interval

    rng = np.random.default_rng(4)
    dice = rng.beta(4, 3, size=400)
    dice[::10] = np.nan  # empty ground truth: left out, as in the estimate
    est = float(np.nanmean(dice))
    ci = percentile_interval(_boot_mean(dice, bootstrap_indices(400, 4000, 0)), est, 4000)
    finite = dice[np.isfinite(dice)]
    half = 1.96 * finite.std(ddof=1) / np.sqrt(len(finite))
    assert ci["low"] < est < ci["high"]
    assert ci["high"] - ci["low"] == pytest.approx(2 * half, rel=0.1)
    assert (ci["low"] + ci["high"]) / 2 == pytest.approx(est, abs=0.1 * half)


def test_evaluate_multiclass_intervals_contain_estimates():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 3, size=(12, 6, 6, 6)).astype(np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.8, gt, rng.integers(0, 3, gt.shape)).astype(np.uint8)
    summary, _ = evaluate_cases([f"C{i}" for i in range(12)], pred, gt, (1, 1, 1), n_classes=3)
    keys = ["mean_dice", "dsc_agg_union"] + [
        f"{m}_{c}" for m in ("mean_dice", "dsc_agg") for c in ("gtvp", "gtvn")
    ]
    assert set(summary["ci"]) == set(keys)
    for k in keys:
        assert summary["ci"][k]["low"] <= summary[k] <= summary["ci"][k]["high"], k
        assert "preprocessed grid" in summary["labels"][k]
