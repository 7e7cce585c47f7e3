"""Segmentation scores on the held-out test split, and the side-by-side table of experiments.

Scores on the preprocessed (packed) grid, foreground = any label > 0, i.e. GTVp u GTVn:

- mean per-case Dice, as Auto3DSeg reports it (`DiceHelper(ignore_empty=True)`): a case whose
  ground truth is empty is excluded from the mean, whatever was predicted. Such cases are counted
  (`n_empty_gt`) and, separately, how many of them received a non-empty prediction
  (`n_empty_gt_false_positive`), so a model that paints tumour into tumour-free scans is visible;
- `dsc_agg_union`, "DSCagg (GTVp∪GTVn, preprocessed grid)": 2 sum_i |P_i n G_i| / sum_i
  (|P_i| + |G_i|), intersections and volumes (voxels) summed over all cases (empty ground truths
  included). It has the form of HECKTOR's aggregated Dice but not its meaning: HECKTOR 2022
  scores each class separately on the original CT grid (`original_grid.py`);
- HD95 in mm (MONAI `compute_hausdorff_distance(percentile=95)` with the voxel spacing); it is
  undefined when prediction or ground truth is empty, and those cases are counted
  (`hd95_undefined`) instead of being silently dropped;
- with multiclass masks, the same Dice and DSCagg per class (GTVp = 1, GTVn = 2), still on the
  preprocessed grid.

Every summary carries `labels` (the exact name of each number) and `ci`: 95 % percentile
bootstrap intervals, resampling test *cases* with replacement (the unit of independence), all
statistics from the same resamples.

Dice and DSCagg are a few lines of numpy written here because the per-case bookkeeping (empty
ground truth, false positives) is the point; HD95 uses MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthct.errors import WorkspaceError
from synthct.workspace import Workspace, read_json

RESULTS_FILE = "results.json"


def dice_per_case(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice of boolean masks per case: pred, gt (N, X, Y, Z) -> (N,) float64; NaN for empty gt."""
    p = np.asarray(pred, dtype=bool).reshape(len(pred), -1)
    g = np.asarray(gt, dtype=bool).reshape(len(gt), -1)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    inter = np.logical_and(p, g).sum(1).astype(np.float64)
    vol = p.sum(1).astype(np.float64) + g.sum(1)
    out = np.full(len(p), np.nan)
    has_gt = g.any(1)
    out[has_gt] = 2.0 * inter[has_gt] / vol[has_gt]
    return out


def dsc_agg(pred: np.ndarray, gt: np.ndarray) -> float:
    """HECKTOR aggregated Dice over cases: (N, X, Y, Z) masks -> float (NaN if all empty)."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} != ground truth shape {g.shape}")
    vol = float(p.sum()) + float(g.sum())
    return 2.0 * float(np.logical_and(p, g).sum()) / vol if vol else float("nan")


def hd95_per_case(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """95th-percentile Hausdorff distance in mm per case; NaN where pred or gt is empty.

    pred, gt: (N, X, Y, Z) boolean masks; spacing: (sx, sy, sz) mm.
    """
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance

    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    out = np.full(len(p), np.nan)
    for i in range(len(p)):
        if not p[i].any() or not g[i].any():
            continue
        onehot_p = torch.from_numpy(np.stack([~p[i], p[i]])[None].astype(np.float32))
        onehot_g = torch.from_numpy(np.stack([~g[i], g[i]])[None].astype(np.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = compute_hausdorff_distance(
                onehot_p,
                onehot_g,
                include_background=False,
                percentile=95,
                spacing=[float(s) for s in spacing],
            )
        out[i] = float(d.reshape(-1)[0])
    return out


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


# -- case bootstrap -----------------------------------------------------------------------------
N_BOOT = 2000
CI_LEVEL = 0.95


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) case indices drawn with replacement (seeded): one row per resample."""
    if n < 1:
        return np.zeros((n_boot, 0), dtype=np.int64)
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_interval(
    values: np.ndarray, estimate: float | None, n_boot: int, level: float = CI_LEVEL
) -> dict[str, Any] | None:
    """Percentile interval of bootstrap `values` (NaN resamples, where the statistic is
    undefined, are left out and counted); None when the estimate itself is undefined."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if estimate is None or not len(v):
        return None
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {
        "low": float(lo),
        "high": float(hi),
        "level": level,
        "n_boot": n_boot,
        "n_boot_undefined": int(n_boot - len(v)),
        "unit": "case",
        "method": "percentile bootstrap, test cases resampled with replacement",
    }


def _boot_mean(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of the finite per-case values of each resample (NaN where none is finite)."""
    v = values[idx]
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, v, 0.0).sum(1) / ok.sum(1)


def _boot_agg(inter: np.ndarray, vol: np.ndarray, idx: np.ndarray) -> np.ndarray:
    den = vol[idx].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * inter[idx].sum(1) / den, np.nan)


def _counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-case intersection and |P| + |G| (voxels) of boolean masks (N, X, Y, Z)."""
    p = pred.reshape(len(pred), -1)
    g = gt.reshape(len(gt), -1)
    inter = np.logical_and(p, g).sum(1).astype(np.float64)
    return inter, p.sum(1).astype(np.float64) + g.sum(1)


def evaluate_cases(
    case_ids: Sequence[str],
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    n_classes: int = 2,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Summary scores and the per-case table for label maps pred, gt (N, X, Y, Z) ints on the
    preprocessed grid.

    Foreground scores use label > 0. With `n_classes` 3 (GTVp = 1, GTVn = 2) the summary also has
    per-class mean Dice and DSCagg. `ci` holds case-bootstrap intervals (`n_boot` resamples,
    seeded) of every Dice and DSCagg; `labels` names each number exactly.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if len(case_ids) != len(pred) or pred.shape != gt.shape:
        raise ValueError(
            f"{len(case_ids)} case ids, prediction {pred.shape}, ground truth {gt.shape}: "
            "expected one id per case and equal shapes"
        )
    pf, gf = pred > 0, gt > 0
    dice = dice_per_case(pf, gf)
    hd = hd95_per_case(pf, gf, spacing)
    vox = float(np.prod(spacing)) / 1000.0  # mL per voxel
    table = pd.DataFrame(
        {
            "case_id": list(case_ids),
            "dice": dice,
            "hd95_mm": hd,
            "gt_volume_ml": gf.reshape(len(gf), -1).sum(1) * vox,
            "pred_volume_ml": pf.reshape(len(pf), -1).sum(1) * vox,
        }
    )
    empty_gt = ~gf.reshape(len(gf), -1).any(1)
    empty_pred = ~pf.reshape(len(pf), -1).any(1)
    summary: dict[str, Any] = {
        "grid": "preprocessed (packed) grid",
        "n_cases": len(case_ids),
        "mean_dice": _mean(dice),
        "dsc_agg_union": dsc_agg(pf, gf),
        "hd95_mm": _mean(hd),
        "hd95_undefined": int(np.count_nonzero(~np.isfinite(hd))),
        "n_empty_gt": int(empty_gt.sum()),
        "n_empty_gt_false_positive": int((empty_gt & ~empty_pred).sum()),
        "empty_gt_rule": "cases with empty ground truth are excluded from mean_dice",
        "labels": {
            "mean_dice": "mean Dice (GTVp∪GTVn, per case, empty ground truth excluded; "
            "preprocessed grid)",
            "dsc_agg_union": "DSCagg (GTVp∪GTVn, preprocessed grid)",
            "hd95_mm": "HD95 mm (GTVp∪GTVn, preprocessed grid; mean over cases where defined)",
        },
    }
    if not np.isfinite(summary["dsc_agg_union"]):
        summary["dsc_agg_union"] = None
    idx = bootstrap_indices(len(case_ids), n_boot, seed)
    boots = {"mean_dice": _boot_mean(dice, idx), "dsc_agg_union": _boot_agg(*_counts(pf, gf), idx)}
    if n_classes > 2:
        for c, name in ((1, "gtvp"), (2, "gtvn")):
            d = dice_per_case(pred == c, gt == c)
            table[f"dice_{name}"] = d
            summary[f"mean_dice_{name}"] = _mean(d)
            agg = dsc_agg(pred == c, gt == c)
            summary[f"dsc_agg_{name}"] = agg if np.isfinite(agg) else None
            label = "GTVp" if c == 1 else "GTVn"
            summary["labels"][f"mean_dice_{name}"] = f"mean Dice {label} (preprocessed grid)"
            summary["labels"][f"dsc_agg_{name}"] = f"DSCagg {label} (preprocessed grid)"
            boots[f"mean_dice_{name}"] = _boot_mean(d, idx)
            boots[f"dsc_agg_{name}"] = _boot_agg(*_counts(pred == c, gt == c), idx)
    summary["ci"] = {k: percentile_interval(v, summary[k], n_boot) for k, v in boots.items()}
    return summary, table


# -- results on disk ----------------------------------------------------------------------------


def load_results(ws: Workspace, name: str) -> dict[str, Any]:
    """results.json of experiment `name` (raises WorkspaceError if it has not finished)."""
    path = ws.experiment_dir(name) / RESULTS_FILE
    if not path.is_file():
        raise WorkspaceError(f"{path} not found: run `synthct segment --name {name}` first")
    return read_json(path)


COMPARE_COLUMNS = [
    "experiment",
    "kind",
    "synthetic_set",
    "n_synthetic",
    "n_train_val",
    "n_test",
    "folds",
    "epochs",
    "mask",
    "normalisation",
    "hecktor_dsc_agg_mean",
    "hecktor_dsc_agg_mean_ci_low",
    "hecktor_dsc_agg_mean_ci_high",
    "hecktor_dsc_agg_gtvp",
    "hecktor_dsc_agg_gtvn",
    "mean_dice",
    "mean_dice_ci_low",
    "mean_dice_ci_high",
    "dsc_agg_union",
    "dsc_agg_union_ci_low",
    "dsc_agg_union_ci_high",
    "hd95_mm",
    "hd95_undefined",
    "leakage_override",
]
# the exact meaning of each score column (shown by the dashboard)
COMPARE_LABELS = {
    "hecktor_dsc_agg_mean": "HECKTOR 2022 DSCagg, mean of GTVp and GTVn (original CT grid)",
    "hecktor_dsc_agg_gtvp": "DSCagg GTVp (original CT grid)",
    "hecktor_dsc_agg_gtvn": "DSCagg GTVn (original CT grid)",
    "mean_dice": "mean Dice (GTVp∪GTVn, preprocessed grid)",
    "dsc_agg_union": "DSCagg (GTVp∪GTVn, preprocessed grid)",
    "hd95_mm": "HD95 mm (GTVp∪GTVn, preprocessed grid)",
}


def compare_experiments(ws: Workspace, names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per finished experiment (the thesis's Table 5.25 layout), sorted by name.

    Columns: `COMPARE_COLUMNS`; `*_ci_low`/`*_ci_high` are the 95 % case-bootstrap interval.
    The hecktor_* columns are empty for binary-mask experiments (no per-class score) and for
    results written before original-grid scoring existed; `dsc_agg_union` falls back to the
    old `dsc_agg` key, which held the same union score.
    """
    rows = []
    for name in names if names is not None else ws.list_experiments():
        r = load_results(ws, name)
        syn = r.get("synthetic") or {}
        test = r.get("test", {})
        orig = r.get("test_original_grid") or {}
        cfg = r.get("config", {}).get("seg", {})
        ci = test.get("ci") or {}
        oci = orig.get("ci") or {}

        def bound(c: dict, key: str, side: str):
            return (c.get(key) or {}).get(side)

        rows.append(
            {
                "experiment": name,
                "kind": r.get("experiment"),
                "synthetic_set": syn.get("set"),
                "n_synthetic": syn.get("n", 0),
                "n_train_val": r.get("n_train_val"),
                "n_test": test.get("n_cases"),
                "folds": cfg.get("folds"),
                "epochs": cfg.get("epochs"),
                "mask": cfg.get("mask"),
                "normalisation": cfg.get("normalisation", "linear"),
                "hecktor_dsc_agg_mean": orig.get("dsc_agg_mean"),
                "hecktor_dsc_agg_mean_ci_low": bound(oci, "dsc_agg_mean", "low"),
                "hecktor_dsc_agg_mean_ci_high": bound(oci, "dsc_agg_mean", "high"),
                "hecktor_dsc_agg_gtvp": orig.get("dsc_agg_gtvp"),
                "hecktor_dsc_agg_gtvn": orig.get("dsc_agg_gtvn"),
                "mean_dice": test.get("mean_dice"),
                "mean_dice_ci_low": bound(ci, "mean_dice", "low"),
                "mean_dice_ci_high": bound(ci, "mean_dice", "high"),
                "dsc_agg_union": test.get("dsc_agg_union", test.get("dsc_agg")),
                "dsc_agg_union_ci_low": bound(ci, "dsc_agg_union", "low"),
                "dsc_agg_union_ci_high": bound(ci, "dsc_agg_union", "high"),
                "hd95_mm": test.get("hd95_mm"),
                "hd95_undefined": test.get("hd95_undefined"),
                "leakage_override": bool(r.get("leakage", {}).get("override", False)),
            }
        )
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def results_path(exp_dir: Path) -> Path:
    return Path(exp_dir) / RESULTS_FILE
