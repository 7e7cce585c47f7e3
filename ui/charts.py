"""Plotly figures and small display transforms for the dashboard and the studies page.

No Streamlit here (pages pass the figures to `st.plotly_chart`, which uses the plotly.js that
Streamlit bundles, so nothing is fetched from a CDN). Each builder takes the tables the library
wrote and returns a `plotly.graph_objects.Figure`; the transforms (EMA smoothing, ROC points,
the signed-difference image) are pure numpy so they are tested against independent formulas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

if TYPE_CHECKING:
    from synthct.vtt.stats import RaterSummary

GROUP_COLOURS = {
    "real-train": "#1f77b4",
    "real-test": "#2ca02c",
    "real-val": "#17becf",
    "real-all": "#2ca02c",
    "synthetic": "#d62728",
    "holdout": "#2ca02c",
}
REAL, SYNTHETIC = "#1f77b4", "#d62728"


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 360) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 50, "r": 20, "t": 50, "b": 45},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


# -- transforms -----------------------------------------------------------------------------------
def ema_smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard's smoothing), NaNs skipped.

    s_t = weight * s_{t-1} + (1 - weight) * x_t, divided by (1 - weight^k) after k finite values,
    so the curve starts at the first value instead of at 0. weight 0 returns the input.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=np.float64)
    out = np.full_like(x, np.nan)
    acc, k = 0.0, 0
    for i, v in enumerate(x):
        if np.isfinite(v):
            acc = weight * acc + (1.0 - weight) * v
            k += 1
        if k:
            out[i] = acc / (1.0 - weight**k)
    return out


def roc_points(synthetic: Sequence[float], real: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical ROC of scores with synthetic as the positive class: (fpr, tpr), from (0, 0).

    One point per distinct threshold t (call "synthetic" when score >= t), from the highest
    score down, ending at (1, 1).
    """
    syn = np.asarray(synthetic, dtype=float)
    rea = np.asarray(real, dtype=float)
    if syn.size == 0 or rea.size == 0:
        raise ValueError("ROC needs at least one synthetic and one real score")
    thresholds = np.unique(np.concatenate([syn, rea]))[::-1]
    tpr = [0.0] + [float(np.mean(syn >= t)) for t in thresholds]
    fpr = [0.0] + [float(np.mean(rea >= t)) for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def difference_rgb(a_hu: np.ndarray, b_hu: np.ndarray, limit: float = 500.0) -> np.ndarray:
    """(H, W, 3) uint8 signed difference a - b: white = equal, red = a brighter, blue = b brighter,
    saturating at ±`limit` HU."""
    d = np.clip((np.asarray(a_hu, np.float32) - np.asarray(b_hu, np.float32)) / limit, -1, 1)
    rgb = np.ones(d.shape + (3,), np.float32)
    pos, neg = np.clip(d, 0, 1), np.clip(-d, 0, 1)
    rgb[..., 1] -= pos + neg  # green fades for both signs
    rgb[..., 2] -= pos  # red where a > b
    rgb[..., 0] -= neg  # blue where b > a
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# -- training runs --------------------------------------------------------------------------------
def loss_figure(losses: pd.DataFrame, columns: Sequence[str], weight: float) -> go.Figure:
    """Raw losses (faint) and their EMA-smoothed curves against the step."""
    fig = go.Figure()
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
    for i, col in enumerate(columns):
        c = palette[i % len(palette)]
        y = losses[col].to_numpy(float)
        if weight > 0:
            fig.add_scatter(
                x=losses["step"], y=y, mode="lines", line={"color": c, "width": 1},
                opacity=0.25, name=f"{col} (raw)", showlegend=False,
            )  # fmt: skip
        fig.add_scatter(
            x=losses["step"], y=ema_smooth(y, weight), line={"color": c}, name=col,
            mode="lines" if len(y) > 30 else "lines+markers",  # a short log stays visible
        )  # fmt: skip
    return _layout(fig, "Losses", "step", "loss")


def collapse_figure(collapse: pd.DataFrame, ratio: float) -> go.Figure:
    """Mean pairwise distance among EMA samples vs real cases; alarm level and flags marked."""
    fig = go.Figure()
    fig.add_scatter(
        x=collapse["step"], y=collapse["sample_diversity"], mode="lines+markers",
        name="samples", line={"color": SYNTHETIC},
    )  # fmt: skip
    fig.add_scatter(
        x=collapse["step"], y=collapse["real_diversity"], mode="lines+markers", name="real cases",
        line={"color": REAL, "dash": "dot"},
    )  # fmt: skip
    fig.add_scatter(
        x=collapse["step"], y=collapse["real_diversity"] * ratio, mode="lines+markers",
        name=f"alarm level ({ratio:g} x real)", line={"color": "grey", "dash": "dash"},
    )  # fmt: skip
    flagged = collapse[collapse["flagged"].astype(int) > 0]
    if not flagged.empty:
        fig.add_scatter(
            x=flagged["step"], y=flagged["sample_diversity"], mode="markers", name="flagged",
            marker={"color": "black", "symbol": "x", "size": 11},
        )  # fmt: skip
    return _layout(fig, "Mode-collapse check", "step", "mean pairwise distance (diversity)")


# -- evaluations ----------------------------------------------------------------------------------
def embedding_figure(emb: pd.DataFrame, method: str) -> go.Figure:
    """Joint t-SNE (`method` "tsne") or real-fitted PCA ("pca") scatter, coloured by group."""
    fig = go.Figure()
    for group, sub in emb.groupby("group", sort=True):
        fig.add_scatter(
            x=sub[f"{method}_x"], y=sub[f"{method}_y"], mode="markers", name=str(group),
            text=sub["id"], hovertemplate="%{text}<extra>" + str(group) + "</extra>",
            marker={"color": GROUP_COLOURS.get(str(group)), "size": 8, "opacity": 0.8},
        )  # fmt: skip
    title = "t-SNE (fitted jointly)" if method == "tsne" else "PCA (fitted on real cases)"
    fig = _layout(fig, title, f"{method} 1", f"{method} 2", height=420)
    return fig


def prdc_figure(metrics: dict[str, Any]) -> go.Figure:
    """Precision / recall / density / coverage with bootstrap CIs and real-vs-real baselines."""
    keys = [k for k in ("precision", "recall", "density", "coverage") if k in metrics]
    vals = [metrics[k]["value"] for k in keys]
    lo = [
        metrics[k]["value"] - (metrics[k].get("ci") or {}).get("low", metrics[k]["value"])
        for k in keys
    ]
    hi = [
        (metrics[k].get("ci") or {}).get("high", metrics[k]["value"]) - metrics[k]["value"]
        for k in keys
    ]
    fig = go.Figure()
    fig.add_bar(
        x=keys, y=vals, name="synthetic vs real",
        error_y={"type": "data", "array": hi, "arrayminus": lo}, marker_color=SYNTHETIC,
    )  # fmt: skip
    base = [(metrics[k].get("baseline") or {}).get("real_vs_real") for k in keys]
    if any(b is not None for b in base):
        fig.add_scatter(
            x=keys, y=[b["mean"] if isinstance(b, dict) else b for b in base], mode="markers",
            name="real vs real (baseline)", marker={"color": REAL, "symbol": "diamond", "size": 12},
        )  # fmt: skip
    return _layout(fig, "Precision / recall / density / coverage", "", "value")


def msssim_figure(msssim: dict[str, Any]) -> go.Figure:
    """Mean pairwise MS-SSIM within the real and within the synthetic set (higher = less diverse).

    The title is the metric's name as evaluation recorded it (with its kernel and scales when
    the volume is too small for standard MS-SSIM)."""
    groups = [g for g in ("real", "synthetic") if isinstance(msssim.get(g), dict)]
    fig = go.Figure()
    fig.add_bar(
        x=groups, y=[msssim[g]["mean"] for g in groups],
        error_y={"type": "data", "array": [msssim[g].get("std", 0) for g in groups]},
        marker_color=[REAL if g == "real" else SYNTHETIC for g in groups],
        text=[f"{msssim[g]['pairs']} pairs" for g in groups],
    )  # fmt: skip
    name = msssim.get("name") or "pairwise 3D MS-SSIM"
    return _layout(fig, f"Diversity: {name}", "", "mean MS-SSIM", height=400)


def dcr_figure(privacy: pd.DataFrame, space: str, threshold: float | None) -> go.Figure:
    """Distance to the closest training case: synthetic vs held-out real, with the flag threshold."""
    sub = privacy[privacy["space"] == space]
    fig = go.Figure()
    for group, colour in (("holdout", REAL), ("synthetic", SYNTHETIC)):
        d = sub.loc[sub["group"] == group, "dcr"]
        fig.add_histogram(x=d, name=group, marker_color=colour, opacity=0.6, nbinsx=20)
    fig.update_layout(barmode="overlay")
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text="flag threshold")
    return _layout(
        fig, f"Memorisation: DCR ({space} space)", "distance to closest training case", "cases"
    )


def hu_figure(hist: pd.DataFrame) -> go.Figure:
    """Body-voxel HU histograms, each normalised to a density."""
    centres = (hist["hu_low"] + hist["hu_high"]) / 2
    fig = go.Figure()
    for col, colour in (("real", REAL), ("synthetic", SYNTHETIC)):
        counts = hist[col].to_numpy(float)
        total = counts.sum()
        fig.add_scatter(
            x=centres, y=counts / total if total else counts, mode="lines", name=col,
            line={"color": colour, "shape": "hvh"},
        )  # fmt: skip
    return _layout(fig, "HU histogram (body voxels)", "HU", "fraction of voxels")


def stat_figure(case_stats: pd.DataFrame, column: str, label: str) -> go.Figure:
    """Per-case distribution of one statistic, real split vs synthetic."""
    fig = go.Figure()
    for group, sub in case_stats.groupby("group", sort=True):
        fig.add_box(
            y=sub[column], name=str(group), boxpoints="all", jitter=0.4,
            marker_color=SYNTHETIC if group == "synthetic" else REAL,
        )  # fmt: skip
    return _layout(fig, label, "", label)


# -- segmentation ---------------------------------------------------------------------------------
def fold_curve_figure(curves: pd.DataFrame, value: str) -> go.Figure:
    """Validation Dice (or training loss) per epoch, one line per experiment and fold."""
    fig = go.Figure()
    for (exp, fold), sub in curves.groupby(["experiment", "fold"], sort=True):
        fig.add_scatter(
            x=sub["epoch"], y=sub[value], mode="lines+markers", name=f"{exp} · fold {fold}"
        )
    label = "validation Dice" if value == "val_dice" else "training loss"
    return _layout(fig, f"Per-fold {label}", "epoch", label)


def seg_scores_figure(table: pd.DataFrame) -> go.Figure:
    """Test-set scores side by side per experiment (mean Dice and union DSCagg on the
    preprocessed grid), with their case-bootstrap 95 % intervals as error bars when present."""
    fig = go.Figure()
    for col, colour in (("mean_dice", REAL), ("dsc_agg_union", SYNTHETIC)):
        err = None
        if f"{col}_ci_low" in table and f"{col}_ci_high" in table:
            y, lo, hi = (
                pd.to_numeric(table[c], errors="coerce")
                for c in (col, f"{col}_ci_low", f"{col}_ci_high")
            )
            err = {
                "type": "data",
                "symmetric": False,
                "array": (hi - y).tolist(),
                "arrayminus": (y - lo).tolist(),
            }
        fig.add_bar(x=table["experiment"], y=table[col], name=col, marker_color=colour, error_y=err)
    fig.update_layout(barmode="group")
    return _layout(fig, "Test-set scores (fold ensemble)", "experiment", "Dice")


# -- Visual Turing Test ---------------------------------------------------------------------------
def rater_means_figure(raters: Sequence[RaterSummary]) -> go.Figure:
    """Per-rater mean score for real vs synthetic cases (thesis Tables 5.17/5.18)."""
    names = [r.rater for r in raters]
    fig = go.Figure()
    fig.add_bar(x=names, y=[r.mean_real for r in raters], name="real", marker_color=REAL)
    fig.add_bar(
        x=names, y=[r.mean_synthetic for r in raters], name="synthetic",
        marker_color=SYNTHETIC,
    )  # fmt: skip
    fig.update_layout(barmode="group", yaxis_range=[0, 10])
    return _layout(
        fig,
        "Mean score per rater (0 = certainly real, 10 = certainly synthetic)",
        "rater",
        "mean score",
    )


def roc_figure(ratings: pd.DataFrame) -> go.Figure:
    """ROC curve per rater (synthetic = positive) from a ratings frame (rater, truth, score),
    duplicates excluded; the AUC is in the legend."""
    fig = go.Figure()
    fig.add_scatter(
        x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance"
    )
    orig = ratings[ratings["duplicate_of"].isna()] if "duplicate_of" in ratings else ratings
    for rater, sub in orig.groupby("rater", sort=False):
        syn = sub.loc[sub["truth"] == "synthetic", "score"]
        real = sub.loc[sub["truth"] == "real", "score"]
        if syn.empty or real.empty:
            continue
        fpr, tpr = roc_points(syn, real)
        auc = float(np.trapezoid(tpr, fpr))
        fig.add_scatter(x=fpr, y=tpr, mode="lines+markers", name=f"{rater} (AUC {auc:.2f})")
    fig.update_layout(xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return _layout(
        fig, "ROC per rater (synthetic = positive)", "1 − specificity", "sensitivity", height=420
    )
