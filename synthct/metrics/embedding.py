"""2-D views of feature space for the dashboard: a joint t-SNE and a real-fitted PCA.

t-SNE is fitted once on real and synthetic features together (fitting them separately, as the
thesis did, gives two unrelated coordinate systems). Features are first reduced with PCA to at
most 50 dimensions; perplexity is min(30, (n - 1) / 3); the seed is fixed. The PCA view is fitted
on real points only, so synthetic sets from different runs land in the same, comparable axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def compute_embedding(
    features: np.ndarray, ids: Sequence[str], groups: Sequence[str], seed: int = 0
) -> pd.DataFrame:
    """features (N, d), one id and group ("real-train", "real-test", "synthetic", ...) per row.

    Returns a DataFrame with one row per input point, in input order:
    id, group, tsne_x, tsne_y, pca_x, pca_y.
    """
    from sklearn.decomposition import PCA  # deferred: loads sklearn
    from sklearn.manifold import TSNE  # deferred: loads sklearn

    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if x.ndim != 2 or n != len(ids) or n != len(groups):
        raise ValueError(f"features {x.shape}, {len(ids)} ids and {len(groups)} groups must agree")
    if n < 3:
        raise ValueError(f"embedding needs at least 3 points, got {n}")
    groups = list(groups)
    real = np.array([g.startswith("real") for g in groups])
    if real.sum() < 2:
        raise ValueError("PCA view needs at least 2 real points")

    n_pca = min(50, x.shape[1], n - 1)
    reduced = (
        PCA(n_components=n_pca, random_state=seed).fit_transform(x) if x.shape[1] > n_pca else x
    )
    perplexity = min(30.0, (n - 1) / 3.0)
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto"
    ).fit_transform(reduced)

    n_view = min(2, x.shape[1], int(real.sum()))
    pca = PCA(n_components=n_view, random_state=seed).fit(x[real])
    view = pca.transform(x)
    if n_view < 2:
        view = np.column_stack([view, np.zeros(n)])
    return pd.DataFrame(
        {
            "id": list(ids),
            "group": groups,
            "tsne_x": tsne[:, 0],
            "tsne_y": tsne[:, 1],
            "pca_x": view[:, 0],
            "pca_y": view[:, 1],
        }
    )
