"""Memorisation check: distance to closest training record (DCR), synthetic vs held-out real.

For each synthetic case we find its nearest *training* case; for each held-out real case (never
seen by the GAN) likewise. If the generator copies training cases, synthetic DCRs are shifted
towards 0 relative to the held-out DCRs. A synthetic case is flagged as a near-copy when its DCR
is below the 5th percentile of the held-out DCRs (`quantile`); about 5 % of an honest set is
flagged by chance, far more signals memorisation.

Distances are Euclidean, computed in whatever space the caller passes: `synthct evaluate` uses
both the extractor's feature space and voxel space (volumes in [-1, 1], block-averaged to at
most 32 voxels a side, RMS difference per voxel), and the gallery uses voxel space so that the
page can render synthetic / nearest / difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.spatial.distance import cdist


def nearest(
    query: np.ndarray, reference: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of query (n, d): (distance to, index of) its nearest row in reference (m, d)."""
    q = np.asarray(query, dtype=np.float64).reshape(len(query), -1)
    r = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    if len(r) == 0:
        raise ValueError("reference set is empty")
    dist, idx = np.empty(len(q)), np.empty(len(q), dtype=np.int64)
    for s in range(0, len(q), chunk):
        d = cdist(q[s : s + chunk], r)
        idx[s : s + chunk] = d.argmin(axis=1)
        dist[s : s + chunk] = d[np.arange(len(d)), idx[s : s + chunk]]
    return dist, idx


def voxel_vectors(volumes: np.ndarray, max_side: int = 32) -> np.ndarray:
    """(N, [1,] X, Y, Z) -> (N, V) block-averaged voxels scaled so Euclidean = RMS difference."""
    v = np.asarray(volumes, dtype=np.float64)
    if v.ndim == 5:
        v = v[:, 0]
    f = [max(1, int(np.ceil(s / max_side))) for s in v.shape[1:]]
    crop = [s - s % k for s, k in zip(v.shape[1:], f, strict=True)]
    v = v[:, : crop[0], : crop[1], : crop[2]]
    n = len(v)
    v = v.reshape(n, crop[0] // f[0], f[0], crop[1] // f[1], f[1], crop[2] // f[2], f[2]).mean(
        axis=(2, 4, 6)
    )
    flat = v.reshape(n, -1)
    return flat / np.sqrt(flat.shape[1])


def dcr_report(
    synthetic: np.ndarray,
    train: np.ndarray,
    holdout: np.ndarray,
    synthetic_ids: Sequence[str],
    train_ids: Sequence[str],
    holdout_ids: Sequence[str],
    quantile: float = 0.05,
) -> tuple[dict, pd.DataFrame]:
    """DCR of synthetic -> train and holdout -> train in one space (vectors (N, d)).

    Returns (summary, table). table: one row per synthetic and holdout case with columns
    id, group ("synthetic"/"holdout"), nearest_train_id, dcr, flagged (synthetic DCR below the
    `quantile` of holdout DCRs). summary: threshold, medians, counts and flagged fraction.
    """
    if len(holdout) < 1:
        raise ValueError("DCR comparison needs at least one held-out real case")
    d_syn, i_syn = nearest(synthetic, train)
    d_hold, i_hold = nearest(holdout, train)
    threshold = float(np.quantile(d_hold, quantile))
    flagged = d_syn < threshold
    # an exact copy (DCR 0) is always flagged, even if a holdout case also sits at distance 0
    flagged |= d_syn == 0
    tid = np.asarray(list(train_ids), dtype=object)
    table = pd.DataFrame(
        {
            "id": list(synthetic_ids) + list(holdout_ids),
            "group": ["synthetic"] * len(d_syn) + ["holdout"] * len(d_hold),
            "nearest_train_id": list(tid[i_syn]) + list(tid[i_hold]),
            "dcr": np.concatenate([d_syn, d_hold]),
            "flagged": np.concatenate([flagged, np.zeros(len(d_hold), dtype=bool)]),
        }
    )
    summary = {
        "n_synthetic": len(d_syn),
        "n_holdout": len(d_hold),
        "n_train": len(train),
        "threshold_quantile": quantile,
        "threshold": threshold,
        "synthetic_median_dcr": float(np.median(d_syn)),
        "holdout_median_dcr": float(np.median(d_hold)),
        "flagged": int(flagged.sum()),
        "flagged_fraction": float(flagged.mean()),
        "expected_fraction_if_no_memorisation": quantile,
    }
    return summary, table


def gallery(table: pd.DataFrame, k: int = 12) -> list[dict]:
    """The k synthetic cases closest to a training case: [{synthetic_id, nearest_train_id, distance}]."""
    syn = table[table["group"] == "synthetic"].sort_values("dcr").head(k)
    return [
        {"synthetic_id": r.id, "nearest_train_id": r.nearest_train_id, "distance": float(r.dcr)}
        for r in syn.itertuples()
    ]
