"""Side-by-side table of every evaluation at one level (2D and 3D models on slice-level metrics).

`compare_models(ws, level)` reads WS/evals/*/metrics.json (what `synthct evaluate` writes) and
returns one row per evaluation at `level`, so a dashboard can show FastGAN/StyleGAN2 next to
HA-GAN on the same slice-level FID/KID/PRDC. Numbers are only comparable between rows with the
same extractor (name + weights hash), real split and slice size: those columns are in the table.
Pure reading; results written before levels existed count as "volume".
"""

from __future__ import annotations

import json
import math

import pandas as pd

from synthct.workspace import Workspace

COLUMNS = [
    "eval", "set", "model_kind", "dims", "level", "real_split", "resolution",
    "fid", "fid_low", "fid_high", "fid_real_vs_real", "kid", "kid_low", "kid_high",
    "precision", "recall", "density", "coverage", "classifier_is",
    "n", "m", "n_cases", "m_cases", "extractor", "extractor_sha256", "created",
]  # fmt: skip


def _value(metrics: dict, key: str) -> float:
    entry = metrics.get(key)
    return float(entry["value"]) if isinstance(entry, dict) and "value" in entry else math.nan


def _row(result: dict) -> dict:
    m = result.get("metrics", {})
    fid = m.get("fid") or {}
    kid = m.get("kid") or {}
    model = result.get("model") or {}
    cis = m.get("classifier_is") or {}
    base = (fid.get("baseline") or {}).get("real_vs_real") or {}
    return {
        "eval": result.get("id"),
        "set": result.get("synthetic", {}).get("set"),
        "model_kind": model.get("kind"),
        "dims": "2D" if model.get("data_view") == "slices" else "3D",
        "level": result.get("level", "volume"),
        "real_split": result.get("real", {}).get("split"),
        "resolution": (result.get("slices") or {}).get("resolution")
        or result.get("data_config", {}).get("size"),
        "fid": _value(m, "fid"),
        "fid_low": (fid.get("ci") or {}).get("low", math.nan),
        "fid_high": (fid.get("ci") or {}).get("high", math.nan),
        "fid_real_vs_real": base.get("mean", math.nan) if isinstance(base, dict) else math.nan,
        "kid": _value(m, "kid"),
        "kid_low": (kid.get("ci") or {}).get("low", math.nan),
        "kid_high": (kid.get("ci") or {}).get("high", math.nan),
        **{k: _value(m, k) for k in ("precision", "recall", "density", "coverage")},
        "classifier_is": (cis.get("synthetic") or {}).get("value", math.nan),
        "n": result.get("real", {}).get("n"),
        "m": result.get("synthetic", {}).get("m"),
        "n_cases": result.get("real", {}).get("n_cases", result.get("real", {}).get("n")),
        "m_cases": result.get("synthetic", {}).get("m_cases", result.get("synthetic", {}).get("m")),
        "extractor": (result.get("extractor") or {}).get("name"),
        "extractor_sha256": (result.get("extractor") or {}).get("weights_sha256"),
        "created": result.get("created"),
    }


def compare_models(ws: Workspace, level: str = "slice") -> pd.DataFrame:
    """One row per evaluation at `level` ("slice" | "volume"), columns `COLUMNS`.

    dims: "2D" for sets of slice models (FastGAN, StyleGAN2), "3D" otherwise; fid_low/high and
    kid_low/high: bootstrap CI; fid_real_vs_real: the real-vs-real FID baseline at the same n;
    classifier_is: of the synthetic slices/volumes (NaN without a classifier extractor); n/m:
    real/synthetic samples (slices at slice level), n_cases/m_cases: cases behind them.
    Sorted by FID (best first). Unreadable metrics.json files are skipped.
    """
    if level not in ("slice", "volume"):
        raise ValueError(f"level must be 'slice' or 'volume', got {level!r}")
    rows = []
    if ws.evals.is_dir():
        for path in sorted(ws.evals.glob("*/metrics.json")):
            try:
                result = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(result, dict) and result.get("level", "volume") == level:
                rows.append(_row(result))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["fid", "eval"], na_position="last").reset_index(drop=True)
