"""Segmentation scores against hand-computed values, and the experiment comparison table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from synthct.segment.evaluate import (
    compare_experiments,
    dice_per_case,
    dsc_agg,
    evaluate_cases,
    hd95_per_case,
    list_experiments,
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
    assert summary["dsc_agg"] == pytest.approx(8 / 15)
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
    assert list_experiments(workspace) == ["mixed-gan", "real"]
    df = compare_experiments(workspace)
    assert list(df["experiment"]) == ["mixed-gan", "real"]
    row = df.set_index("experiment").loc["mixed-gan"]
    assert row["synthetic_set"] == "gan" and row["n_synthetic"] == 524
    assert bool(row["leakage_override"]) is True
    assert row["mean_dice"] == pytest.approx(0.522) and row["n_test"] == 105
    real = df.set_index("experiment").loc["real"]
    assert real["n_synthetic"] == 0 and bool(real["leakage_override"]) is False
