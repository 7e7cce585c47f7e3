"""Side-by-side table of every evaluation at one level (2D and 3D models on slice-level metrics).

`compare_models(ws, level)` reads WS/evals/*/metrics.json (what `synthct evaluate` writes) and
returns one row per evaluation at `level`, so a dashboard can show FastGAN/StyleGAN2 next to
HA-GAN on the same slice-level FID/KID/PRDC.

Numbers are comparable only between evaluations run under the same **protocol**: the same
extractor (weights hash) and part, the same real cases, resolution, slices per case and tumour
mix (slice level), and the same numbers of real and synthetic cases (FID and KID's sampling
spread, and FID's bias, depend on them). Each row carries a `protocol` id (a hash of those
settings); rows are grouped by it.

Within a protocol rows are not ranked by FID's point estimate. They are put into **tiers**: the
FID intervals (case bootstrap, 95 %) are merged wherever they overlap, and each merged run is a
tier; every model of tier t has its whole interval below every model of tier t + 1. Inside a
tier the models are tied and listed by set name. Slice-level results written before the case
protocol (slices pooled as independent samples; their intervals are too narrow) form the
protocol "legacy" and get no tier. Pure reading; results written before levels existed count
as "volume".
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd

from synthct.errors import WorkspaceError
from synthct.metrics.results import Baseline, EvalResult, load_result
from synthct.workspace import Workspace

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
LEGACY = "legacy"
COLUMNS = [
    "protocol", "tier", "set", "model_kind", "dims", "eval", "level", "real_split",
    "resolution", "slices_per_case", "tumour_mix",
    *[c for k in METRICS for c in (k, f"{k}_low", f"{k}_high")],
    "fid_real_vs_real", "fid_real_vs_real_low", "fid_real_vs_real_high",
    "fid_synthetic_at_baseline", "fid_within_real_vs_real",
    "classifier_is", "classifier_is_real", "classifier_is_n",
    "n", "m", "n_cases", "m_cases", "extractor", "extractor_sha256", "created",
]  # fmt: skip


def protocol_of(result: EvalResult) -> str:
    """The protocol id of one result: "legacy" for pooled-slice results, else a short hash."""
    slices = result.slices or {}
    if result.level == "slice" and result.slices_per_case is None:
        return LEGACY
    real, syn = result.real, result.synthetic
    key = {
        "level": result.level,
        "part": result.options.get("part"),
        "extractor": result.extractor.get("weights_sha256"),
        "real_split": real.get("split"),
        "real_ids": real.get("ids_sha256"),
        "n_cases": real.get("n_cases", real.get("n")),
        "m_cases": syn.get("m_cases", syn.get("m")),
        "resolution": slices.get("resolution") or result.data_config.get("size"),
        "slices_per_case": result.slices_per_case,
        "tumour_mix": (result.tumour_mix or {}).get("value"),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def _row(result: EvalResult) -> dict:
    from synthct.views import view_class  # heavy (torch): the table itself needs only pandas

    fid = result.distance("fid")
    base = (fid.baseline if fid else None) or Baseline()
    rr, sr = base.real_vs_real or {}, base.synthetic_vs_real or {}
    cis = result.metrics.get("classifier_is") or {}
    real, syn = result.real, result.synthetic
    row = {
        "protocol": protocol_of(result),
        "tier": math.nan,
        "set": syn.get("set"),
        "model_kind": result.model.get("kind"),
        "dims": view_class(result.data_view).dims,
        "eval": result.id,
        "level": result.level,
        "real_split": real.get("split"),
        "resolution": (result.slices or {}).get("resolution") or result.data_config.get("size"),
        "slices_per_case": result.slices_per_case,
        "tumour_mix": (result.tumour_mix or {}).get("value"),
        "fid_real_vs_real": rr.get("median", rr.get("mean", math.nan)),
        "fid_real_vs_real_low": rr.get("low", math.nan),
        "fid_real_vs_real_high": rr.get("high", math.nan),
        "fid_synthetic_at_baseline": sr.get("median", sr.get("mean", math.nan)),
        "fid_within_real_vs_real": base.synthetic_within_real_vs_real,
        "classifier_is": (cis.get("synthetic") or {}).get("value", math.nan),
        "classifier_is_real": (cis.get("real") or {}).get("value", math.nan),
        "classifier_is_n": (cis.get("synthetic") or {}).get("n"),
        "n": real.get("n"),
        "m": syn.get("m"),
        "n_cases": real.get("n_cases", real.get("n")),
        "m_cases": syn.get("m_cases", syn.get("m")),
        "extractor": result.extractor.get("name"),
        "extractor_sha256": result.extractor.get("weights_sha256"),
        "created": result.created,
    }
    for key in METRICS:
        e = result.distance(key)
        row.update({key: e.value if e else math.nan, f"{key}_low": e.ci_low if e else math.nan,
                    f"{key}_high": e.ci_high if e else math.nan})  # fmt: skip
    return row


def ci_tiers(low, high) -> np.ndarray:
    """Tier (1, 2, ...) of each interval [low_i, high_i]: overlapping intervals are merged
    (transitively) into one tier, tiers numbered from the lowest; NaN where an end is NaN."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    tiers = np.full(len(low), np.nan)
    ok = np.flatnonzero(np.isfinite(low) & np.isfinite(high))
    tier, reach = 0, -np.inf
    for i in ok[np.argsort(low[ok], kind="stable")]:
        if low[i] > reach:  # a gap: no earlier interval reaches this one
            tier += 1
        reach = max(reach, high[i])
        tiers[i] = tier
    return tiers


def compare_models(ws: Workspace, level: str = "slice") -> pd.DataFrame:
    """One row per evaluation at `level` ("slice" | "volume"), columns `COLUMNS`.

    protocol: comparable rows share it; tier: FID tier within the protocol (module docstring);
    dims: "2D" for sets of slice models (FastGAN, StyleGAN2), "3D" otherwise; <metric>_low /
    _high: case-bootstrap CI; fid_real_vs_real(_low/_high): median (interval) of FID between
    case-disjoint real halves, fid_synthetic_at_baseline the synthetic set's FID at that size,
    fid_within_real_vs_real whether it lies in that interval; classifier_is(_real): of the
    synthetic and real sets at the same n (classifier_is_n cases); n/m: slices (slice level) or
    cases, n_cases/m_cases: cases. Sorted by protocol, tier, set name; unreadable metrics.json
    files are skipped.
    """
    if level not in ("slice", "volume"):
        raise ValueError(f"level must be 'slice' or 'volume', got {level!r}")
    rows = []
    for eval_id in sorted(ws.list_evals()):
        try:
            result = load_result(ws, eval_id)
        except (OSError, ValueError, WorkspaceError):
            continue
        if result.level == level:
            rows.append(_row(result))
    df = pd.DataFrame(rows, columns=COLUMNS)
    for proto, idx in df.groupby("protocol").groups.items():
        if proto != LEGACY:
            sub = df.loc[idx]
            df.loc[idx, "tier"] = ci_tiers(sub["fid_low"], sub["fid_high"])
    df["legacy"] = df["protocol"] == LEGACY
    df = df.sort_values(["legacy", "protocol", "tier", "set", "eval"], na_position="last")
    return df.drop(columns="legacy").reset_index(drop=True)
