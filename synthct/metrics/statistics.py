"""Image and tumour statistics, real vs synthetic, with 1-D Wasserstein distances.

Per case: HU histogram inside the body (body = HU > -500), tumour volume in mL (voxel count x
voxel volume from the spacing), number of connected tumour components (scipy.ndimage.label,
26-connectivity) and the tumour centroid as a fraction of the volume extent along x, y, z
(comparable across sizes; NaN without tumour). Sets are compared with
`scipy.stats.wasserstein_distance` per quantity; the HU distance is computed on the pooled,
10-HU-binned body voxels (bin centres weighted by counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import wasserstein_distance

BODY_HU = -500.0
HU_BINS = np.arange(-500.0, 1610.0, 10.0)  # body voxels: -500 .. 1600 HU in 10-HU bins
STAT_COLUMNS = (
    "tumour_ml",
    "n_components",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "body_mean_hu",
)


def tumour_volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Tumour volume in mL of a binary mask (X, Y, Z) with voxel spacing (sx, sy, sz) in mm."""
    return float(np.count_nonzero(mask) * float(np.prod(spacing)) / 1000.0)


def count_components(mask: np.ndarray) -> int:
    """Number of 26-connected foreground components of a mask (X, Y, Z)."""
    _, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), dtype=bool))
    return int(n)


def case_statistics(image_hu: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> dict:
    """One case: image (X, Y, Z) in HU, mask (X, Y, Z) {0, 1}, spacing mm -> dict of STAT_COLUMNS."""
    m = np.asarray(mask) > 0
    body = image_hu > BODY_HU
    if m.any():
        com = ndimage.center_of_mass(m)
        cen = [c / max(s - 1, 1) for c, s in zip(com, m.shape, strict=True)]
    else:
        cen = [np.nan] * 3
    return {
        "tumour_ml": tumour_volume_ml(m, spacing),
        "n_components": count_components(m),
        "centroid_x": cen[0],
        "centroid_y": cen[1],
        "centroid_z": cen[2],
        "body_mean_hu": float(image_hu[body].mean()) if body.any() else np.nan,
    }


def hu_histogram(images_hu: Iterable[np.ndarray]) -> np.ndarray:
    """Pooled counts of body voxels (HU > -500) of all images in `HU_BINS` (len(HU_BINS) - 1,)."""
    counts = np.zeros(len(HU_BINS) - 1)
    for img in images_hu:
        vals = img[img > BODY_HU]
        counts += np.histogram(np.clip(vals, HU_BINS[0], HU_BINS[-1] - 1e-3), bins=HU_BINS)[0]
    return counts


def compare_sets(
    real: pd.DataFrame, synthetic: pd.DataFrame, real_hist: np.ndarray, syn_hist: np.ndarray
) -> dict:
    """Wasserstein-1 distance and means per quantity (NaN rows dropped), plus the HU histograms.

    real/synthetic: per-case tables with `STAT_COLUMNS`; *_hist: `hu_histogram` outputs.
    """
    out: dict = {}
    for col in STAT_COLUMNS:
        a = real[col].dropna().to_numpy(float)
        b = synthetic[col].dropna().to_numpy(float)
        entry = {"n_real": len(a), "n_synthetic": len(b)}
        if len(a) and len(b):
            entry.update(
                wasserstein=float(wasserstein_distance(a, b)),
                real_mean=float(a.mean()),
                synthetic_mean=float(b.mean()),
            )
        out[col] = entry
    centres = (HU_BINS[:-1] + HU_BINS[1:]) / 2
    hu = {
        "bins": HU_BINS.tolist(),
        "real_counts": real_hist.tolist(),
        "synthetic_counts": syn_hist.tolist(),
    }
    if real_hist.sum() > 0 and syn_hist.sum() > 0:
        hu["wasserstein_hu"] = float(wasserstein_distance(centres, centres, real_hist, syn_hist))
    out["hu_body"] = hu
    out["empty_masks"] = {
        "real": int((real["tumour_ml"] == 0).sum()),
        "synthetic": int((synthetic["tumour_ml"] == 0).sum()),
    }
    return out
