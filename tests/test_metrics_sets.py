"""MS-SSIM diversity, DCR privacy, image/tumour statistics and the joint embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from synthct.metrics import diversity, embedding, privacy, statistics


@pytest.mark.parametrize(
    "shape,scales", [((16, 16, 8), 2), ((32, 32, 16), 3), ((128, 128, 64), 5), ((256, 256, 128), 5)]
)
def test_msssim_params_fit_volume(shape, scales):
    k, w = diversity.fit_msssim_params(shape)
    assert len(w) == scales and k % 2 == 1 and k >= 3 and sum(w) == pytest.approx(1.0)
    side = min(shape)
    assert side // max(1, (len(w) - 1) ** 2) > k - 1 and side // 2 ** (len(w) - 1) >= k


def test_msssim_identical_is_one_and_different_lower():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (2, 16, 16, 8)).astype(np.float32)
    np.testing.assert_allclose(diversity.msssim(a, a.copy()), 1.0, atol=1e-5)
    b = np.clip(a + rng.normal(0, 0.5, a.shape), -1, 1).astype(np.float32)
    assert (diversity.msssim(a, b) < 0.9).all()


def test_pairwise_msssim_flags_collapse():
    rng = np.random.default_rng(1)
    base = rng.uniform(-1, 1, (16, 16, 8)).astype(np.float32)
    collapsed = np.stack([base + rng.normal(0, 0.01, base.shape) for _ in range(6)])
    diverse = rng.uniform(-1, 1, (6, 16, 16, 8)).astype(np.float32)
    c = diversity.pairwise_msssim(collapsed.astype(np.float32), max_pairs=10)
    d = diversity.pairwise_msssim(diverse, max_pairs=10)
    assert c["pairs"] == 10 and d["n"] == 6
    assert c["mean"] > 0.95 > d["mean"]


def test_dcr_exact_copy_is_zero_and_flagged():
    rng = np.random.default_rng(2)
    train = rng.normal(size=(20, 5))
    holdout = rng.normal(size=(10, 5))
    syn = np.vstack([train[3], rng.normal(size=(4, 5)) + 10.0])  # a copy + far-away cases
    summary, table = privacy.dcr_report(
        syn,
        train,
        holdout,
        [f"s{i}" for i in range(5)],
        [f"t{i}" for i in range(20)],
        [f"h{i}" for i in range(10)],
    )
    s = table[table.group == "synthetic"].set_index("id")
    assert s.loc["s0", "dcr"] == 0.0 and s.loc["s0", "nearest_train_id"] == "t3"
    assert bool(s.loc["s0", "flagged"]) and s["flagged"].sum() == 1
    # independent reference: brute-force nearest distances
    ref = np.sqrt(((holdout[:, None] - train[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(table[table.group == "holdout"]["dcr"], ref)
    assert summary["threshold"] == pytest.approx(np.quantile(ref, 0.05))
    assert summary["flagged"] == 1 and summary["flagged_fraction"] == pytest.approx(0.2)
    g = privacy.gallery(table, k=2)
    assert g[0] == {"synthetic_id": "s0", "nearest_train_id": "t3", "distance": 0.0}


def test_voxel_vectors_give_rms_difference():
    a = np.zeros((2, 1, 64, 64, 32))
    a[1] = 0.5
    v = privacy.voxel_vectors(a)  # block-averaged to 32 x 32 x 32
    assert v.shape == (2, 32 * 32 * 32)
    assert np.linalg.norm(v[0] - v[1]) == pytest.approx(0.5)


def test_tumour_volume_components_and_centroid():
    mask = np.zeros((20, 20, 10), np.uint8)
    mask[2:6, 2:5, 1:3] = 1  # 4 * 3 * 2 = 24 voxels
    mask[15:17, 15:17, 8:9] = 1  # 4 voxels, separate component
    spacing = (1.5, 1.5, 3.0)  # 6.75 mm^3 per voxel
    assert statistics.tumour_volume_ml(mask, spacing) == pytest.approx(28 * 6.75 / 1000)
    assert statistics.count_components(mask) == 2
    diag = np.zeros((5, 5, 5), np.uint8)
    diag[0, 0, 0] = diag[1, 1, 1] = 1  # corner-touching: one component with 26-connectivity
    assert statistics.count_components(diag) == 1
    image = np.full(mask.shape, -1000.0)
    image[:10] = 100.0
    st = statistics.case_statistics(image, mask, spacing)
    expected_x = (24 * 3.5 + 4 * 15.5) / 28 / 19
    assert st["centroid_x"] == pytest.approx(expected_x) and st["body_mean_hu"] == 100.0
    empty = statistics.case_statistics(image, np.zeros_like(mask), spacing)
    assert empty["tumour_ml"] == 0 and np.isnan(empty["centroid_x"])


def test_compare_sets_wasserstein_and_histograms():
    real = pd.DataFrame({c: [1.0, 2.0, 3.0] for c in statistics.STAT_COLUMNS})
    syn = pd.DataFrame({c: [2.0, 3.0, 4.0, np.nan] for c in statistics.STAT_COLUMNS})
    img_a = np.full((4, 4, 4), 0.0)
    img_b = np.full((4, 4, 4), 100.0)
    img_b[0] = -900.0  # air, outside the body
    ha, hb = statistics.hu_histogram([img_a]), statistics.hu_histogram([img_b])
    assert ha.sum() == 64 and hb.sum() == 48
    out = statistics.compare_sets(real, syn, ha, hb)
    assert out["tumour_ml"]["wasserstein"] == pytest.approx(1.0)
    assert out["tumour_ml"]["n_synthetic"] == 3
    assert out["hu_body"]["wasserstein_hu"] == pytest.approx(100.0)
    assert wasserstein_distance([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)


def test_embedding_has_every_point_once_and_pca_fitted_on_real():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(15, 20))
    syn = rng.normal(size=(10, 20)) + 3.0
    feats = np.vstack([real, syn])
    ids = [f"r{i}" for i in range(15)] + [f"s{i}" for i in range(10)]
    groups = ["real-train"] * 8 + ["real-test"] * 7 + ["synthetic"] * 10
    df = embedding.compute_embedding(feats, ids, groups, seed=0)
    assert list(df.columns) == ["id", "group", "tsne_x", "tsne_y", "pca_x", "pca_y"]
    assert list(df["id"]) == ids and df["id"].is_unique and len(df) == 25
    assert np.isfinite(df[["tsne_x", "tsne_y", "pca_x", "pca_y"]].to_numpy()).all()
    # PCA view fitted on real only: real points are centred at the origin
    assert df.loc[:14, ["pca_x", "pca_y"]].mean().abs().max() < 1e-9
    # adding synthetic points does not move the real points in the PCA view
    df2 = embedding.compute_embedding(feats[:18], ids[:18], groups[:18], seed=0)
    np.testing.assert_allclose(df2.loc[:14, ["pca_x", "pca_y"]], df.loc[:14, ["pca_x", "pca_y"]])
    again = embedding.compute_embedding(feats, ids, groups, seed=0)
    pd.testing.assert_frame_equal(df, again)  # fixed seed
