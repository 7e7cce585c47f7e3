"""The distance block of every evaluation: FID, KID, PRDC and classifier-IS with their
case-bootstrap CIs and real-vs-real baselines, as written to metrics.json.

Inputs are feature arrays (C, k, d) -- k slices of each of C cases, slice level -- or (N, d),
one sample per case (volume level); `resampling.py` turns them into rounds of one slice per
case, case-bootstrap intervals and case-disjoint baselines. Every entry carries n/m (samples),
n_cases/m_cases (the unit of resampling), d and the extractor's identity. docs/metrics.md
defines each number.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from synthct.metrics import distances as dist
from synthct.metrics.features import FeatureExtractor
from synthct.metrics.resampling import as_cases, round_mean

PRDC_K = {"precision": 3, "recall": 3, "density": 5, "coverage": 5}
PRDC_BOUNDS = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, np.inf),
               "coverage": (0.0, 1.0)}  # fmt: skip
# k-NN radii (k = 5) need 6 distinct cases; a case-bootstrap replicate holds ~63 % distinct
# cases, so PRDC is computed from 12 cases a side; its baseline needs two halves of >= 6 cases
MIN_PRDC_CASES = 12
MIN_PRDC_BASELINE_CASES = 12


def _fid_clipped(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return max(dist.compute_fid(a, b), 0.0)


def _prdc_grouped(a, b, ga, gb) -> dict[str, float]:
    return dist.compute_prdc(a, b, real_groups=ga, fake_groups=gb)


def _with_check(base: dict, key: str | None = None) -> dict:
    """A metric's baseline entry, with whether the matched synthetic median lies in the
    real-vs-real interval (what a generator indistinguishable from real data does)."""
    rr = base["real_vs_real"] if key is None else base["real_vs_real"][key]
    sr = base["synthetic_vs_real"] if key is None else base["synthetic_vs_real"][key]
    return {
        **{k: base[k] for k in ("size", "repeats", "level", "unit")},
        "real_vs_real": rr,
        "synthetic_vs_real": sr,
        "synthetic_within_real_vs_real": bool(rr["low"] <= sr["median"] <= rr["high"]),
    }


def distance_metrics(real: np.ndarray, syn: np.ndarray, fx_info: dict, opts) -> dict[str, Any]:
    """FID/KID/PRDC of real vs synthetic features, each with a case-bootstrap CI and baseline.

    real (C, k, d) / syn (C', k, d): k slices per case, metrics averaged over the k rounds of
    one slice per case (`resampling`); (N, d) / (M, d): one sample per case (volume level).
    """
    real, syn = as_cases(real, "real features"), as_cases(syn, "synthetic features")
    n, m, k, d = real.shape[0], syn.shape[0], real.shape[1], real.shape[2]
    ident = {k_: fx_info[k_] for k_ in ("name", "version", "weights_sha256")}
    common = {"n": n * k, "m": m * k, "d": d, "n_cases": n, "m_cases": m, "unit": "case",
              "extractor": ident}  # fmt: skip
    if k > 1:
        common.update(slices_per_case=k, rounds=k)
    seed = opts.seed

    def fid_raw(a, b):
        return dist.compute_fid(a, b)

    def kid_fast(a, b, ga, gb):
        return dist.compute_kid(a, b, opts.kid_subset, max(5, opts.kid_subsets // 10), seed,
                                ga, gb)[0]  # fmt: skip

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        raw = float(round_mean(fid_raw, real, syn))
    value = float(round_mean(_fid_clipped, real, syn))
    out: dict[str, Any] = {
        "fid": {
            "value": value,
            "raw": raw,
            "clipped": value != raw,
            "warnings": sorted({str(w.message) for w in caught}),
            **common,
            "ci": dist.bootstrap_ci(
                _fid_clipped,
                real,
                syn,
                opts.n_boot,
                seed=seed,
                estimate=value,
                bounds=(0.0, np.inf),
            ).to_dict(),  # fmt: skip
            "baseline": _with_check(
                dist.real_baseline(_fid_clipped, real, syn, opts.baseline_repeats, seed)
            ),
        }
    }
    kids = [dist.compute_kid(real[:, j], syn[:, j], opts.kid_subset, opts.kid_subsets, seed)
            for j in range(k)]  # fmt: skip
    kid_mean = float(np.mean([v[0] for v in kids]))
    out["kid"] = {
        "value": kid_mean,
        "subset_std": float(np.mean([v[1] for v in kids])),
        "subset_size": min(opts.kid_subset, n, m),
        "n_subsets": opts.kid_subsets,
        "kernel": "(x.y/d + 1)^3",
        **common,
        "ci": dist.bootstrap_ci(
            kid_fast, real, syn, opts.n_boot, seed=seed, grouped=True, estimate=kid_mean
        ).to_dict(),  # fmt: skip
        "baseline": _with_check(
            dist.real_baseline(kid_fast, real, syn, opts.baseline_repeats, seed, grouped=True)
        ),
    }
    if min(n, m) >= MIN_PRDC_CASES:
        prdc = round_mean(_prdc_grouped, real, syn, grouped=True)
        cis = dist.bootstrap_ci(_prdc_grouped, real, syn, opts.n_boot, seed=seed, grouped=True,
                                estimate=prdc, bounds=PRDC_BOUNDS)  # fmt: skip
        base = None
        if n >= MIN_PRDC_BASELINE_CASES:
            base = dist.real_baseline(_prdc_grouped, real, syn, opts.baseline_repeats, seed,
                                      grouped=True)  # fmt: skip
        for key, val in prdc.items():
            out[key] = {
                "value": val,
                "k": PRDC_K[key],
                "neighbourhood": "strict < k-th nearest neighbour of another case",
                **common,
                "ci": cis[key].to_dict(),
                "baseline": None if base is None else _with_check(base, key),
            }
    return out


def _classifier_is(
    fx: FeatureExtractor,
    inputs: dict[str, np.ndarray],
    progress: bool = False,
    seed: int = 0,
    per_case: int = 1,
    n_splits: int = 10,
) -> dict | None:
    """Classifier-IS of every set at one matched size (`distances.classifier_is_matched`).

    inputs: {label: (C * per_case, ...) network inputs, case-major}; with per_case = k > 1 the
    score is the mean over the k rounds of one slice per case.
    """
    if not fx.has_classifier:
        return None
    c = len(fx.class_names)
    probs = {label: fx.class_probs(v) for label, v in inputs.items()}
    probs = {label: p.reshape(-1, per_case, p.shape[-1]) for label, p in probs.items()}
    rounds = [
        dist.classifier_is_matched({lb: p[:, j] for lb, p in probs.items()}, n_splits, seed + j)
        for j in range(per_case)
    ]
    out: dict[str, Any] = {
        "name": f"classifier-IS ({fx.name} centre classifier, {c} classes)",
        "n_splits": n_splits,
        "rounds": per_case,
        "matched": "every set scored on the same n cases (seeded subsample of the larger sets)",
    }
    for label in probs:
        per = [r[label] for r in rounds]
        out[label] = {
            "value": float(np.mean([p["value"] for p in per])),
            "std": float(np.mean([p["std"] for p in per])),
            "n": per[0]["n"],
            "n_total": per[0]["n_total"],
        }
    out["n"] = rounds[0][next(iter(probs))]["n"]
    return out
