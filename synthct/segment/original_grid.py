"""HECKTOR 2022 scoring on each case's original CT grid.

HECKTOR 2022 (task 1) ranks by the aggregated Dice of each class on the original CT grid:
for class c (GTVp = 1, GTVn = 2), DSCagg_c = 2 sum_i |P_i,c n G_i,c| / sum_i (|P_i,c| + |G_i,c|)
with volumes in mm^3 summed over all test cases (a case without that class in the ground truth
still adds its predicted volume to the denominator), and the final score is the mean of
DSCagg_GTVp and DSCagg_GTVn. The organisers' evaluation resamples each prediction onto the
ground truth's grid with nearest-neighbour interpolation and counts volumes there.

synthct predicts on the packed grid (the head-and-neck crop box resized to S x S x S/2), so each
ensemble prediction is mapped back first:

- the crop box of every case is recorded by preprocessing (manifest.json: `crop.start/stop` on
  the RAS+ source voxel grid, `source_shape`); a packed voxel j covers source voxels
  start + [j, j + 1) x box / half, so the inverse is a nearest-exact resize of the prediction
  from (S, S, S/2) to the box size (MONAI `Resize`, the same interpolation as the forward mask
  resize) pasted into the box;
- voxels outside the box are background: tumour the crop cut off counts as missed (recorded as
  `gt_ml_outside_crop`);
- the ground truth is the case's label file as ingested (a fixed copy where ingest repaired
  it), aligned onto the CT grid exactly as preprocessing does (`preprocess.align_mask`); voxel
  volumes come from the CT header.

Reorientation to RAS+ only permutes and flips voxels, so counts equal those on the file's own
axes. Binary masks (GTVp u GTVn) cannot be split into classes: for them only the union DSCagg is
computed on the original grid and the per-class score is reported as unavailable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from synthct.errors import WorkspaceError

CLASSES = (("gtvp", 1), ("gtvn", 2))
BINARY_REASON = (
    "binary masks (GTVp u GTVn): the per-class HECKTOR score needs multiclass labels end to "
    "end (`synthct preprocess --mask multiclass`, `synthct segment --mask multiclass`); only the "
    "union DSCagg is computed"
)


@dataclasses.dataclass(frozen=True)
class SourceCase:
    """Where a packed case came from: CT and label files, the crop box on the CT's RAS+ voxel
    grid ([start, stop) per axis, may leave the scan) and the CT's shape."""

    case_id: str
    image: str
    mask: str
    crop_start: tuple[int, int, int]
    crop_stop: tuple[int, int, int]
    source_shape: tuple[int, int, int]

    @property
    def box_size(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.crop_start, self.crop_stop, strict=True))  # type: ignore[return-value]


def source_cases(ws, data_cfg, case_ids: Sequence[str]) -> dict[str, SourceCase]:
    """The source geometry of `case_ids` from the packed folder's manifest and the case index.

    Raises WorkspaceError naming the first problem: a case not packed, a source file missing or
    changed since preprocessing (its size/mtime differ from the manifest's record).
    """
    from synthct.datasets import load_cases
    from synthct.preprocess import packed_dir, read_manifest

    folder = packed_dir(ws, data_cfg)
    manifest = read_manifest(folder)
    records = {r.case_id: r for r in load_cases(ws)}
    out = {}
    for cid in case_ids:
        entry = manifest.get("cases", {}).get(cid)
        rec = records.get(cid)
        if entry is None or rec is None:
            raise WorkspaceError(f"case {cid} is not in {folder / 'manifest.json'} / the index")
        for kind, path in (("image", rec.image), ("mask", rec.mask)):
            try:
                st = os.stat(path)
            except OSError:
                raise WorkspaceError(f"case {cid}: source {kind} {path} is missing") from None
            then = (entry.get("source") or {}).get(kind) or {}
            if then != {"size": st.st_size, "mtime_ns": st.st_mtime_ns}:
                raise WorkspaceError(
                    f"case {cid}: source {kind} {path} changed since preprocessing (manifest "
                    f"{then}); rerun `synthct preprocess --force`"
                )
        crop = entry["crop"]
        out[cid] = SourceCase(
            cid,
            rec.image,
            rec.mask,
            tuple(int(v) for v in crop["start"]),  # type: ignore[arg-type]
            tuple(int(v) for v in crop["stop"]),  # type: ignore[arg-type]
            tuple(int(v) for v in entry["source_shape"]),  # type: ignore[arg-type]
        )
    return out


def paste_box(array: np.ndarray, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """`array` (the box's voxels) placed at `start` in zeros of `shape`; parts of the box outside
    the volume are dropped (the inverse of `preprocess.extract_box`)."""
    out = np.zeros(tuple(shape), dtype=array.dtype)
    src, dst = [], []
    for a, n, m in zip(start, array.shape, shape, strict=True):
        lo, hi = max(a, 0), min(a + n, m)
        if hi <= lo:
            return out
        src.append(slice(lo - a, hi - a))
        dst.append(slice(lo, hi))
    out[tuple(dst)] = array[tuple(src)]
    return out


def to_source_grid(pred: np.ndarray, case: SourceCase) -> np.ndarray:
    """A packed-grid label map (S, S, S/2) -> the case's CT grid (source_shape), uint8.

    Nearest-exact resize onto the crop box (MONAI `Resize`), background outside the box.
    """
    from synthct.preprocess import resize

    box = resize(np.asarray(pred, dtype=np.float32), case.box_size, "mask")
    return paste_box(np.rint(box).astype(np.uint8), case.crop_start, case.source_shape)


def load_source_label(case: SourceCase) -> tuple[np.ndarray, float]:
    """The case's ground truth on its CT grid (uint8 labels) and the CT voxel volume in mL."""
    from synthct.io import Volume, load_header, load_volume
    from synthct.preprocess import align_mask

    shape, affine = load_header(case.image)
    if tuple(shape) != case.source_shape:
        raise WorkspaceError(
            f"case {case.case_id}: CT {case.image} has shape {shape}, preprocessing recorded "
            f"{case.source_shape}; rerun `synthct preprocess --force`"
        )
    ct_grid = Volume(np.broadcast_to(np.zeros((), np.uint8), shape), affine)  # geometry only
    mask = load_volume(case.mask, dtype=np.uint8)
    labels = np.asarray(align_mask(mask, ct_grid, f"case {case.case_id} ({case.mask})"))
    voxel_ml = float(np.prod(ct_grid.spacing)) / 1000.0
    return np.rint(labels).astype(np.uint8), voxel_ml


def case_volumes(
    pred: np.ndarray, gt: np.ndarray, voxel_ml: float, multiclass: bool
) -> dict[str, float]:
    """Intersection (tp) and volume sum (|P| + |G|) in mL per class and for the union."""
    out = {}
    pairs = [("union", pred > 0, gt > 0)]
    if multiclass:
        pairs += [(name, pred == c, gt == c) for name, c in CLASSES]
    for name, p, g in pairs:
        out[f"tp_ml_{name}"] = float(np.count_nonzero(p & g)) * voxel_ml
        out[f"vol_sum_ml_{name}"] = float(np.count_nonzero(p) + np.count_nonzero(g)) * voxel_ml
        out[f"gt_ml_{name}"] = float(np.count_nonzero(g)) * voxel_ml
    return out


def score_cases(
    cases: dict[str, SourceCase], case_ids: Sequence[str], preds: np.ndarray, multiclass: bool
) -> pd.DataFrame:
    """Per-case volumes on the original grid for packed predictions `preds` (N, S, S, S/2).

    Columns: case_id, tp_ml_<k>, vol_sum_ml_<k>, gt_ml_<k> for k in union (+ gtvp, gtvn when
    multiclass), gt_ml_outside_crop (labelled ground truth the crop box cut off).
    """
    rows = []
    for cid, pred in zip(case_ids, preds, strict=True):
        case = cases[cid]
        gt, voxel_ml = load_source_label(case)
        row: dict[str, Any] = {"case_id": cid}
        row.update(case_volumes(to_source_grid(pred, case), gt, voxel_ml, multiclass))
        inside = paste_box(np.ones(case.box_size, dtype=bool), case.crop_start, case.source_shape)
        row["gt_ml_outside_crop"] = float(np.count_nonzero((gt > 0) & ~inside)) * voxel_ml
        rows.append(row)
    return pd.DataFrame(rows)


def dsc_agg_from_volumes(tp: np.ndarray, vol_sum: np.ndarray) -> float:
    """2 sum(tp) / sum(|P| + |G|) (NaN when the class is absent from every case and prediction)."""
    den = float(np.sum(vol_sum))
    return 2.0 * float(np.sum(tp)) / den if den > 0 else float("nan")


def summarise(
    table: pd.DataFrame, multiclass: bool, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The original-grid scores of a `score_cases` table, with case-bootstrap CIs."""
    from synthct.segment.scores import bootstrap_indices, percentile_interval

    def agg(k: str, idx=None) -> np.ndarray | float:
        tp, vs = table[f"tp_ml_{k}"].to_numpy(), table[f"vol_sum_ml_{k}"].to_numpy()
        if idx is None:
            return dsc_agg_from_volumes(tp, vs)
        den = vs[idx].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, 2.0 * tp[idx].sum(1) / den, np.nan)

    n = len(table)
    idx = bootstrap_indices(n, n_boot, seed)
    out: dict[str, Any] = {
        "available": True,
        "grid": "each case's original CT grid (prediction resampled nearest-exact from the "
        "packed grid; background outside the crop box)",
        "n_cases": n,
        "dsc_agg_union": _num(agg("union")),
        "gt_ml_outside_crop": float(table["gt_ml_outside_crop"].sum()),
        "n_cases_tumour_outside_crop": int((table["gt_ml_outside_crop"] > 0).sum()),
        "labels": {
            "dsc_agg_union": "DSCagg (GTVp∪GTVn, original CT grid)",
            "gt_ml_outside_crop": "ground-truth tumour (mL) outside the crop box, never predicted",
        },
    }
    boots = {"dsc_agg_union": agg("union", idx)}
    if multiclass:
        out["per_class_available"] = True
        for name, _ in CLASSES:
            out[f"dsc_agg_{name}"] = _num(agg(name))
            out[f"n_cases_without_{name}"] = int((table[f"gt_ml_{name}"] == 0).sum())
            boots[f"dsc_agg_{name}"] = agg(name, idx)
        out["dsc_agg_mean"] = _num(np.mean([agg("gtvp"), agg("gtvn")]))
        boots["dsc_agg_mean"] = (boots["dsc_agg_gtvp"] + boots["dsc_agg_gtvn"]) / 2.0
        out["labels"].update(
            {
                "dsc_agg_mean": "HECKTOR 2022 score: mean of DSCagg GTVp and DSCagg GTVn "
                "(original CT grid)",
                "dsc_agg_gtvp": "DSCagg GTVp (HECKTOR 2022 definition, original CT grid)",
                "dsc_agg_gtvn": "DSCagg GTVn (HECKTOR 2022 definition, original CT grid)",
            }
        )
    else:
        out.update(
            per_class_available=False,
            per_class_reason=BINARY_REASON,
            dsc_agg_gtvp=None,
            dsc_agg_gtvn=None,
            dsc_agg_mean=None,
        )
    out["ci"] = {k: percentile_interval(v, out[k], n_boot=n_boot) for k, v in boots.items()}
    return out


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def unavailable(reason: str) -> dict[str, Any]:
    """The original-grid record when it cannot be computed (in-memory cases, missing sources)."""
    return {"available": False, "reason": reason, "per_class_available": False}


class SourceGrid:
    """Scores test predictions on the original CT grids of a workspace's cases."""

    def __init__(self, cases: dict[str, SourceCase], multiclass: bool) -> None:
        self.cases = cases
        self.multiclass = multiclass

    @classmethod
    def from_workspace(cls, ws, data_cfg, case_ids: Sequence[str]) -> SourceGrid:
        return cls(source_cases(ws, data_cfg, case_ids), data_cfg.mask == "multiclass")

    def score(
        self, case_ids: Sequence[str], preds: np.ndarray, n_boot: int = 2000, seed: int = 0
    ) -> tuple[dict[str, Any], pd.DataFrame]:
        table = score_cases(self.cases, case_ids, preds, self.multiclass)
        return summarise(table, self.multiclass, n_boot, seed), table
