"""HECKTOR 2022 per-class DSCagg on each case's original CT grid, against an independent
computation (MONAI SpatialResample of the packed prediction by its affine + numpy sums)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from synthct.config import DataConfig
from synthct.segment.original_grid import (
    BINARY_REASON,
    SourceCase,
    SourceGrid,
    paste_box,
    summarise,
    to_source_grid,
)

# 3 x 3 x 6 mm voxels: the 192 mm crop box is 64 x 64 x 32 source voxels, an exact multiple of
# the packed 32 x 32 x 16 half, so nearest-neighbour has no ties and both methods must agree
SPACING = (3.0, 3.0, 6.0)
SHAPES = {"CHUM-001": (60, 56, 40), "CHUP-002": (70, 64, 30), "MDA-003": (64, 60, 36)}


def _labels(cid, shape):
    lab = np.zeros(shape, np.uint8)
    cx, cy, cz = (s // 2 for s in shape)
    lab[cx - 6 : cx + 3, cy - 4 : cy + 5, cz - 3 : cz + 2] = 1  # GTVp
    if cid == "CHUM-001":
        lab[cx + 6 : cx + 11, cy - 9 : cy - 5, cz : cz + 3] = 2  # GTVn
    if cid == "MDA-003":  # no GTVn; a second GTVp part that the crop box cuts off in z
        lab[cx : cx + 4, cy : cy + 4, 0:3] = 1
    return lab


@pytest.fixture
def packed_ws(workspace, tmp_path):
    """Hand-built scans (air; the crop falls back to the scan centre) ingested and packed at
    S = 32 with multiclass and with binary masks."""
    from synthct.datasets import ingest
    from synthct.preprocess import preprocess_workspace

    src = tmp_path / "src"
    aff = np.diag([*SPACING, 1.0])
    aff[:3, 3] = (-90.0, -80.0, -100.0)
    for cid, shape in SHAPES.items():
        for sub, arr, name in (
            ("imagesTr", np.full(shape, -1000, np.int16), f"{cid}__CT.nii.gz"),
            ("labelsTr", _labels(cid, shape), f"{cid}.nii.gz"),
        ):
            (src / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(arr, aff), str(src / sub / name))
    ingest(src, workspace, test_fraction=0.0, seed=0, workers=1)
    for mask in ("multiclass", "binary"):
        done = preprocess_workspace(
            workspace, DataConfig(size=32, mask=mask), workers=1, progress=False
        )
        assert not done["failed"]
    return workspace


def _predictions(ws, cfg, ids):
    """Hand-built packed predictions: the packed ground truth, then altered per case."""
    from synthct.preprocess import load_packed_case

    preds = []
    for cid in ids:
        _, mask, _ = load_packed_case(ws, cfg, cid)
        pred = mask.copy()
        if cid == "CHUM-001":
            node = np.argwhere(pred == 2)
            edge = node[:, 0] <= np.median(node[:, 0])
            pred[tuple(node[edge].T)] = 1  # part of the lymph node predicted as primary
            pred[14:16, :, :] = 0  # and a slab of the primary missed
        elif cid == "CHUP-002":
            pred[2:4, 2:4, 2:4] = 2  # false-positive node in a case without GTVn
        preds.append(pred)
    return np.stack(preds)


def _independent(ws, cfg, ids, preds):
    """MONAI SpatialResample (nearest) by the manifest's packed affine onto each CT's affine,
    ground truth read with nibabel, DSCagg = 2 sum TP / sum (|P| + |G|) in mm^3."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    from synthct.preprocess import packed_dir, read_manifest

    manifest = read_manifest(packed_dir(ws, cfg))
    src = ws.root.parent / "src"
    sums = {k: np.zeros(2) for k in ("gtvp", "gtvn", "union")}
    for cid, pred in zip(ids, preds, strict=True):
        ct = nib.load(str(src / "imagesTr" / f"{cid}__CT.nii.gz"))
        gt = np.asarray(nib.load(str(src / "labelsTr" / f"{cid}.nii.gz")).dataobj)
        moving = MetaTensor(
            torch.from_numpy(pred[None].astype(np.float32)),
            affine=torch.tensor(manifest["cases"][cid]["affine"], dtype=torch.float64),
        )
        out = SpatialResample(mode="nearest", padding_mode="zeros")(
            moving, dst_affine=torch.tensor(ct.affine), spatial_size=ct.shape
        )
        p = np.rint(np.asarray(out)[0]).astype(np.uint8)
        vox = float(np.prod(ct.header.get_zooms()[:3]))
        for k, pk, gk in (
            ("gtvp", p == 1, gt == 1),
            ("gtvn", p == 2, gt == 2),
            ("union", p > 0, gt > 0),
        ):
            sums[k] += (np.sum(pk & gk) * vox, (np.sum(pk) + np.sum(gk)) * vox)
    return {k: 2 * tp / vs for k, (tp, vs) in sums.items()}


def test_per_class_dsc_agg_on_original_grid_matches_independent_computation(packed_ws):
    cfg = DataConfig(size=32, mask="multiclass")
    ids = sorted(SHAPES)
    preds = _predictions(packed_ws, cfg, ids)
    summary, table = SourceGrid.from_workspace(packed_ws, cfg, ids).score(ids, preds, n_boot=200)
    ref = _independent(packed_ws, cfg, ids, preds)
    assert summary["available"] and summary["per_class_available"]
    assert summary["dsc_agg_gtvp"] == pytest.approx(ref["gtvp"], rel=1e-12)
    assert summary["dsc_agg_gtvn"] == pytest.approx(ref["gtvn"], rel=1e-12)
    assert summary["dsc_agg_mean"] == pytest.approx((ref["gtvp"] + ref["gtvn"]) / 2, rel=1e-12)
    assert summary["dsc_agg_union"] == pytest.approx(ref["union"], rel=1e-12)
    # the hand-built errors show: confused node, a missed slab, a false node, a cut-off part
    assert 0.1 < summary["dsc_agg_gtvn"] < 0.9 and 0.5 < summary["dsc_agg_gtvp"] < 1.0
    assert summary["n_cases_without_gtvn"] == 2  # CHUP-002 (false positive) and MDA-003
    row = table.set_index("case_id")
    assert row.loc["CHUP-002", "gt_ml_gtvn"] == 0 and row.loc["CHUP-002", "vol_sum_ml_gtvn"] > 0
    assert (
        row.loc["MDA-003", "gt_ml_outside_crop"] > 0 and summary["n_cases_tumour_outside_crop"] == 1
    )
    for key in ("dsc_agg_gtvp", "dsc_agg_gtvn", "dsc_agg_mean", "dsc_agg_union"):
        ci = summary["ci"][key]
        assert ci["unit"] == "case" and ci["low"] <= summary[key] <= ci["high"]
    assert "HECKTOR 2022" in summary["labels"]["dsc_agg_mean"]
    assert summary["labels"]["dsc_agg_union"] == "DSCagg (GTVp∪GTVn, original CT grid)"


def test_binary_masks_give_only_the_union_score(packed_ws):
    cfg = DataConfig(size=32, mask="binary")
    ids = sorted(SHAPES)
    mc = _predictions(packed_ws, DataConfig(size=32, mask="multiclass"), ids)
    preds = (mc > 0).astype(np.uint8)
    summary, _ = SourceGrid.from_workspace(packed_ws, cfg, ids).score(ids, preds, n_boot=50)
    assert summary["per_class_available"] is False
    assert summary["per_class_reason"] == BINARY_REASON and "--mask multiclass" in BINARY_REASON
    assert summary["dsc_agg_gtvp"] is None and summary["dsc_agg_mean"] is None
    ref = _independent(packed_ws, cfg, ids, preds)
    assert summary["dsc_agg_union"] == pytest.approx(ref["union"], rel=1e-12)


def test_to_source_grid_is_the_inverse_nearest_mapping_of_the_crop_box():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(4, 6, 2)).astype(np.uint8)
    case = SourceCase("X-1", "ct", "lab", (-2, 1, 3), (10, 19, 10), (9, 20, 8))  # box 12x18x7
    out = to_source_grid(pred, case)
    assert out.shape == (9, 20, 8) and out.dtype == np.uint8
    # independent: source voxel i lies in packed voxel floor((i - start + 0.5) * half / box)
    expected = np.zeros((9, 20, 8), np.uint8)
    for i in np.ndindex(*expected.shape):
        u = [i[a] - case.crop_start[a] for a in range(3)]
        if all(0 <= u[a] < case.box_size[a] for a in range(3)):
            j = tuple(int((u[a] + 0.5) * pred.shape[a] // case.box_size[a]) for a in range(3))
            expected[i] = pred[j]
    np.testing.assert_array_equal(out, expected)
    assert paste_box(np.ones((2, 2, 2), np.uint8), (-5, 0, 0), (3, 3, 3)).sum() == 0


def test_dsc_agg_by_hand_with_a_case_without_gtvn():
    """Two cases, volumes in mL: A (GTVp tp 2 of 3+3, GTVn tp 1 of 2+2), B (no GTVn in truth,
    1 mL of false node)."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "case_id": ["A", "B"],
            "tp_ml_gtvp": [2.0, 4.0],
            "vol_sum_ml_gtvp": [6.0, 8.0],
            "gt_ml_gtvp": [3.0, 4.0],
            "tp_ml_gtvn": [1.0, 0.0],
            "vol_sum_ml_gtvn": [4.0, 1.0],
            "gt_ml_gtvn": [2.0, 0.0],
            "tp_ml_union": [3.5, 4.0],
            "vol_sum_ml_union": [10.0, 9.0],
            "gt_ml_union": [5.0, 4.0],
            "gt_ml_outside_crop": [0.0, 0.0],
        }
    )
    s = summarise(table, multiclass=True, n_boot=2000, seed=0)
    assert s["dsc_agg_gtvp"] == pytest.approx(2 * 6 / 14)
    assert s["dsc_agg_gtvn"] == pytest.approx(2 * 1 / 5)  # B's false node counts
    assert s["dsc_agg_mean"] == pytest.approx((12 / 14 + 2 / 5) / 2)
    # resampling whole cases: the 2.5/97.5 % points of {AA, AB, BB} are B-only and A-only
    assert s["ci"]["dsc_agg_gtvp"]["low"] == pytest.approx(2 * 2 / 6)
    assert s["ci"]["dsc_agg_gtvp"]["high"] == pytest.approx(2 * 4 / 8)
    assert s["ci"]["dsc_agg_gtvn"]["low"] == pytest.approx(0.0)
    assert s["ci"]["dsc_agg_gtvn"]["high"] == pytest.approx(2 * 1 / 4)


def test_workspace_experiment_writes_original_grid_scores(packed_ws, monkeypatch):
    """The real path (packed arrays, folds, ensemble) ends in the original-grid block and
    per-case orig_* volumes that reproduce it."""
    from synthct.segment.experiments import ExperimentConfig, run_experiment
    from synthct.segment.recipe import SegConfig
    from synthct.workspace import atomic_write_json

    # two cases for the folds, one for test
    splits = {"CHUM-001": "train", "MDA-003": "train", "CHUP-002": "test"}
    atomic_write_json(packed_ws.splits, {"cases": splits})
    seg = SegConfig(
        size=32, mask="multiclass", init_filters=4, blocks_down=(1, 2, 2), epochs=1, folds=2
    )
    res = run_experiment(packed_ws, ExperimentConfig(seg=seg), name="mc", device="cpu")
    orig = res["test_original_grid"]
    assert orig["available"] and orig["per_class_available"] and orig["n_cases"] == 1
    per_case = res["per_case"][0]
    tp, vs = per_case["orig_tp_ml_gtvp"], per_case["orig_vol_sum_ml_gtvp"]
    assert orig["dsc_agg_gtvp"] == pytest.approx(2 * tp / vs)
    saved = json.loads((packed_ws.segmentation / "mc" / "results.json").read_text())
    assert saved["test_original_grid"] == orig
    assert set(saved["test"]["ci"]) >= {"mean_dice", "dsc_agg_union", "dsc_agg_gtvp"}
