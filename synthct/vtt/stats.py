"""Visual Turing Test statistics (researchers only).

Scores run from 0 (certainly real) to 10 (certainly synthetic); "synthetic" is the positive class.

- Per rater: mean score on real and on synthetic cases (the thesis's Tables 5.17/5.18), ROC AUC
  with a DeLong confidence interval (DeLong et al. 1988; normal approximation, clipped to [0, 1];
  with a handful of cases it is rough, and it collapses to a point at AUC 0 or 1), the
  Mann–Whitney U test (scipy.stats.mannwhitneyu, two-sided; AUC = U / (n_syn · n_real)), and
  calls at a threshold: score > threshold means "synthetic", so with the default 5 a score of
  exactly 5 ("cannot tell") counts as a *real* call — a synthetic case rated 5 has fooled the
  rater. Accuracy, sensitivity (synthetic called synthetic), specificity, and a one-sided binomial
  test of the number of correct calls against chance (scipy.stats.binomtest, p = 0.5).
- Across raters: Fleiss' κ on the dichotomised calls (raters who rated every case) and
  Krippendorff's α (interval metric) on the scores, missing ratings allowed. Both are written here
  because neither SciPy nor scikit-learn has them; tests check them on the textbook worked
  examples (Fleiss 1971 as in Wikipedia's table, κ = 0.210; Krippendorff 2011, α_nominal = 0.743,
  α_interval = 0.849).
- Per case: mean, SD, and which raters each synthetic case fooled; intra-rater agreement on
  duplicate cases; time per case; a plain-language warning when the study is too small to detect
  a moderately good rater.

Duplicates (cases shown twice) enter only the intra-rater agreement; every other statistic uses
the first copy, so a repeated case does not count twice.

The results are frozen dataclasses (`StudyStatistics` and its parts) with `to_dict`/`from_dict`:
the CLI prints them as text or JSON and the app draws them, from the same objects.
`StudyStatistics.to_dict()` is the JSON `synthct study stats --json` prints, and `from_dict`
reads such a file back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

DEFAULT_THRESHOLD = 5
POWER_AUC = 0.75  # "a moderately good rater" for the power warning
AUC_CI_METHOD = "DeLong (normal approximation, clipped to [0, 1])"
NO_RATINGS = "No ratings yet."
TRUTHS = ("real", "synthetic")

ScoreTable = dict[str, dict[str, float | None]]
"""{case id: {rater: score or None}}, the cases sorted, then a last row "mean" (rater means)."""


# -- core statistics ----------------------------------------------------------------------------
def auc_delong(
    pos: Sequence[float], neg: Sequence[float], level: float = 0.95
) -> tuple[float, float, float, float]:
    """ROC AUC of scores `pos` (positives) vs `neg` with DeLong's variance.

    Returns (auc, ci_low, ci_high, se); ties count one half. se and the CI are NaN when either
    class has fewer than two scores.
    """
    x = np.asarray(pos, np.float64)[:, None]
    y = np.asarray(neg, np.float64)[None, :]
    if x.size == 0 or y.size == 0:
        raise ValueError("AUC needs at least one positive and one negative score")
    psi = (x > y) + 0.5 * (x == y)  # (m, n)
    auc = float(psi.mean())
    m, n = psi.shape
    if m < 2 or n < 2:
        return auc, math.nan, math.nan, math.nan
    v10 = psi.mean(axis=1)  # structural components of the positives
    v01 = psi.mean(axis=0)
    se = math.sqrt(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    z = stats.norm.ppf(0.5 + level / 2)
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se), se


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' κ from an (items, categories) matrix of how many raters chose each category.

    Every row must sum to the same number of raters n >= 2.
    """
    counts = np.asarray(counts, np.float64)
    n_items = counts.shape[0]
    n = counts.sum(axis=1)
    if n_items == 0 or not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters for every item")
    n = n[0]
    p_item = (np.sum(counts**2, axis=1) - n) / (n * (n - 1))
    p_bar = p_item.mean()
    p_cat = counts.sum(axis=0) / (n_items * n)
    p_e = float(np.sum(p_cat**2))
    if math.isclose(p_e, 1.0):
        return math.nan  # every rater chose one category for every item: κ undefined
    return float((p_bar - p_e) / (1.0 - p_e))


def krippendorff_alpha(data: np.ndarray, level: str = "interval") -> float:
    """Krippendorff's α for a (coders, units) matrix with NaN for missing values.

    level: "interval" (δ² = (c − k)²) or "nominal" (δ = [c ≠ k]). Units with fewer than two
    values are not pairable and are dropped. Computed from the coincidence matrix.
    """
    data = np.asarray(data, np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected a (coders, units) matrix, got shape {data.shape}")
    values = np.unique(data[~np.isnan(data)])
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((values.size, values.size))
    for u in range(data.shape[1]):
        col = data[:, u]
        col = col[~np.isnan(col)]
        m_u = col.size
        if m_u < 2:
            continue
        idx = np.array([index[v] for v in col])
        pair = np.zeros_like(o)
        np.add.at(pair, (idx[:, None], idx[None, :]), 1.0)
        pair[np.diag_indices_from(pair)] -= np.bincount(idx, minlength=values.size)
        o += pair / (m_u - 1)
    n_c = o.sum(axis=1)
    n_tot = n_c.sum()
    if n_tot < 2:
        return math.nan
    if level == "interval":
        delta = (values[:, None] - values[None, :]) ** 2
    elif level == "nominal":
        delta = (values[:, None] != values[None, :]).astype(np.float64)
    else:
        raise ValueError(f"level must be 'interval' or 'nominal', got {level!r}")
    d_o = np.sum(o * delta) / n_tot
    d_e = np.sum(np.outer(n_c, n_c) * delta) / (n_tot * (n_tot - 1))
    return math.nan if d_e == 0 else float(1.0 - d_o / d_e)


def mw_power(n_pos: int, n_neg: int, auc: float = POWER_AUC, alpha: float = 0.05) -> float:
    """Approximate power of a two-sided Mann–Whitney test (normal approximation with the null
    variance of the AUC, Hanley & McNeil 1982) to detect a rater of true AUC `auc`."""
    se0 = math.sqrt((n_pos + n_neg + 1) / (12.0 * n_pos * n_neg))
    z = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.cdf(abs(auc - 0.5) / se0 - z))


def cases_for_power(auc: float = POWER_AUC, power: float = 0.8, alpha: float = 0.05) -> int:
    """Smallest balanced n (per class) with `mw_power(n, n, auc) >= power`."""
    n = 2
    while mw_power(n, n, auc, alpha) < power and n < 10_000:
        n += 1
    return n


def power_warning(n_real: int, n_synthetic: int) -> str | None:
    """A plain-language warning for studies too small to detect a moderately good rater."""
    if n_real < 1 or n_synthetic < 1:
        return "The study needs both real and synthetic cases for any comparison."
    p = mw_power(n_synthetic, n_real)
    if p >= 0.8:
        return None
    need = cases_for_power()
    return (
        f"Small study: with {n_real} real and {n_synthetic} synthetic cases, a rater who can "
        f"actually tell them apart moderately well (AUC {POWER_AUC}) would reach p < 0.05 only "
        f"about {round(100 * p)}% of the time. A non-significant result therefore does not show "
        f"that the synthetic cases are indistinguishable from real ones; about {need} real and "
        f"{need} synthetic cases per rater give 80% power."
    )


# -- typed results ------------------------------------------------------------------------------
def _field_values(obj: Any) -> dict[str, Any]:
    """A flat dataclass's fields in declaration order (the JSON key order)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class RaterDiscrimination:
    """How well one rater told synthetic (positive) from real cases; needs ratings of both.

    auc_ci95 / auc_se are None when a class has fewer than two cases (DeLong undefined);
    accuracy, sensitivity, specificity and `correct` count calls at the study's threshold.
    """

    auc: float
    auc_ci95: tuple[float, float] | None
    auc_se: float | None
    mann_whitney_u: float
    mann_whitney_p: float
    accuracy: float
    sensitivity: float
    specificity: float
    correct: int
    binomial_p: float

    def to_dict(self) -> dict[str, Any]:
        ci = self.auc_ci95
        return {**_field_values(self), "auc_ci95": None if ci is None else list(ci)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RaterDiscrimination:
        values = {k: d[k] for k in _field_names(cls)}
        ci = values["auc_ci95"]
        return cls(**{**values, "auc_ci95": None if ci is None else (ci[0], ci[1])})


@dataclass(frozen=True)
class RaterSummary:
    """One rater's results (the thesis's Tables 5.17/5.18 means, then AUC, tests and calls).

    Means are None for a class the rater has not rated; `discrimination` is None unless the
    rater rated both classes. In JSON its fields sit flat beside the others.
    """

    rater: str
    n_real: int
    n_synthetic: int
    mean_real: float | None
    mean_synthetic: float | None
    median_seconds_per_case: float | None
    discrimination: RaterDiscrimination | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _field_values(self)
        discrimination = out.pop("discrimination")
        if discrimination is not None:
            out.update(discrimination.to_dict())
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RaterSummary:
        return cls(
            **{k: d[k] for k in _field_names(cls) if k != "discrimination"},
            discrimination=RaterDiscrimination.from_dict(d) if "auc" in d else None,
        )


@dataclass(frozen=True)
class Agreement:
    """Agreement across raters: Krippendorff's α (interval, all raters, missing allowed) over
    `raters` x `cases`, and Fleiss' κ on the calls of the `fleiss_raters` raters who rated
    every case. None where undefined (fewer than two raters, or no variation)."""

    raters: int
    cases: int
    krippendorff_alpha_interval: float | None
    fleiss_kappa_calls: float | None
    fleiss_raters: int

    def to_dict(self) -> dict[str, Any]:
        return _field_values(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Agreement:
        return cls(**{k: d[k] for k in _field_names(cls)})


@dataclass(frozen=True)
class CaseSummary:
    """One case's scores over raters (first copies only). `fooled` (raters who scored it at or
    below the threshold, sorted) exists only for synthetic cases; sd needs two scores."""

    public_id: str
    truth: str
    case_id: str
    n: int
    mean: float
    sd: float | None
    mean_seconds: float | None
    fooled: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _field_values(self)
        fooled = out.pop("fooled")
        if fooled is not None:
            out["fooled"] = list(fooled)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CaseSummary:
        fooled = d.get("fooled")  # absent for real cases
        return cls(
            **{k: d[k] for k in _field_names(cls) if k != "fooled"},
            fooled=None if fooled is None else tuple(fooled),
        )


@dataclass(frozen=True)
class IntraRaterAgreement:
    """One rater's consistency over the duplicate pairs they answered both copies of."""

    rater: str
    pairs: int
    mean_abs_difference: float
    exact_agreement: float
    same_call: float

    def to_dict(self) -> dict[str, Any]:
        return _field_values(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntraRaterAgreement:
        return cls(**{k: d[k] for k in _field_names(cls)})


@dataclass(frozen=True)
class StudyStatistics:
    """Everything a researcher reads about a study's ratings, for the CLI and the app alike.

    `ratings` counts every answer (duplicates included); `n_real`/`n_synthetic` the distinct
    cases rated; `tables` maps "real"/"synthetic" to a `ScoreTable`. A study without ratings
    has only `ratings` = 0, `threshold` and `warning` ("No ratings yet."); its other fields keep
    their empty defaults and its JSON holds just those three keys.
    """

    ratings: int
    threshold: float
    warning: str | None
    threshold_rule: str = ""
    n_real: int = 0
    n_synthetic: int = 0
    raters: tuple[RaterSummary, ...] = ()
    tables: dict[str, ScoreTable] = field(default_factory=dict)
    agreement: Agreement | None = None
    per_case: tuple[CaseSummary, ...] = ()
    intra_rater: tuple[IntraRaterAgreement, ...] = ()
    median_seconds_per_case: float | None = None
    mean_seconds_per_case: float | None = None
    auc_ci_method: str = AUC_CI_METHOD

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the layout of `synthct study stats --json`."""
        if not self.ratings:
            return {"ratings": 0, "threshold": self.threshold, "warning": self.warning}
        return {
            "ratings": self.ratings,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "cases": {"real": self.n_real, "synthetic": self.n_synthetic},
            "raters": [r.to_dict() for r in self.raters],
            "tables": self.tables,
            "agreement": None if self.agreement is None else self.agreement.to_dict(),
            "per_case": [c.to_dict() for c in self.per_case],
            "intra_rater": [r.to_dict() for r in self.intra_rater],
            "seconds_per_case": {
                "median": self.median_seconds_per_case,
                "mean": self.mean_seconds_per_case,
            },
            "warning": self.warning,
            "auc_ci_method": self.auc_ci_method,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyStatistics:
        """Read `to_dict`'s JSON back (also files saved from `synthct study stats --json`)."""
        if not d["ratings"]:
            return cls(ratings=0, threshold=d["threshold"], warning=d.get("warning"))
        agreement = d["agreement"]
        return cls(
            ratings=d["ratings"],
            threshold=d["threshold"],
            warning=d["warning"],
            threshold_rule=d["threshold_rule"],
            n_real=d["cases"]["real"],
            n_synthetic=d["cases"]["synthetic"],
            raters=tuple(RaterSummary.from_dict(r) for r in d["raters"]),
            tables={t: {c: dict(row) for c, row in tab.items()} for t, tab in d["tables"].items()},
            agreement=None if agreement is None else Agreement.from_dict(agreement),
            per_case=tuple(CaseSummary.from_dict(c) for c in d["per_case"]),
            intra_rater=tuple(IntraRaterAgreement.from_dict(r) for r in d["intra_rater"]),
            median_seconds_per_case=d["seconds_per_case"]["median"],
            mean_seconds_per_case=d["seconds_per_case"]["mean"],
            auc_ci_method=d["auc_ci_method"],
        )


# -- study-level summaries ------------------------------------------------------------------------
def ratings_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Ratings as a DataFrame (rows as returned by db.ratings.ratings_of_study)."""
    cols = ["rater", "public_id", "truth", "case_id", "duplicate_of", "score", "duration_s"]
    df = pd.DataFrame(list(rows))
    if df.empty:
        return pd.DataFrame(columns=cols)
    return df


def _originals(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["duplicate_of"].isna()] if "duplicate_of" in df else df


def score_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"real": table, "synthetic": table}: rows = cases, columns = raters, last row "mean".

    The layout of the thesis's Tables 5.17 (real) and 5.18 (generated)."""
    out = {}
    orig = _originals(df)
    for truth in TRUTHS:
        sub = orig[orig["truth"] == truth]
        table = sub.pivot_table(
            index="case_id", columns="rater", values="score", aggfunc="first", sort=False
        )
        table = table.sort_index().astype(float)
        table.loc["mean"] = table.mean(axis=0)
        out[truth] = table
    return out


def rater_summary(df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> list[RaterSummary]:
    """Per-rater means, AUC (DeLong CI), calls at `threshold`, Mann–Whitney, binomial, timing."""
    out = []
    orig = _originals(df)
    for rater, sub in orig.groupby("rater", sort=False):
        syn = sub.loc[sub["truth"] == "synthetic", "score"].to_numpy(float)
        real = sub.loc[sub["truth"] == "real", "score"].to_numpy(float)
        discrimination = None
        if syn.size and real.size:
            auc, lo, hi, se = auc_delong(syn, real)
            mw = stats.mannwhitneyu(syn, real, alternative="two-sided")
            tp = int(np.sum(syn > threshold))
            tn = int(np.sum(real <= threshold))
            n = syn.size + real.size
            discrimination = RaterDiscrimination(
                auc=auc,
                auc_ci95=None if math.isnan(se) else (lo, hi),
                auc_se=None if math.isnan(se) else se,
                mann_whitney_u=float(mw.statistic),
                mann_whitney_p=float(mw.pvalue),
                accuracy=(tp + tn) / n,
                sensitivity=tp / syn.size,
                specificity=tn / real.size,
                correct=tp + tn,
                binomial_p=float(stats.binomtest(tp + tn, n, 0.5, alternative="greater").pvalue),
            )
        out.append(
            RaterSummary(
                rater=rater,
                n_real=int(real.size),
                n_synthetic=int(syn.size),
                mean_real=float(real.mean()) if real.size else None,
                mean_synthetic=float(syn.mean()) if syn.size else None,
                median_seconds_per_case=float(sub["duration_s"].median())
                if "duration_s" in sub and len(sub)
                else None,
                discrimination=discrimination,
            )
        )
    return out


def agreement(df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> Agreement:
    """Fleiss' κ (calls; raters with every case) and Krippendorff's α (interval; all scores)."""
    orig = _originals(df)
    wide = orig.pivot_table(index="rater", columns="public_id", values="score", aggfunc="first")
    alpha = krippendorff_alpha(wide.to_numpy(float)) if wide.shape[0] >= 2 else math.nan
    complete = wide.dropna(axis=0, how="any")
    kappa = math.nan
    if complete.shape[0] >= 2 and complete.shape[1] >= 1:
        calls = complete.to_numpy(float) > threshold  # (raters, cases)
        counts = np.stack([(~calls).sum(axis=0), calls.sum(axis=0)], axis=1)
        kappa = fleiss_kappa(counts)
    return Agreement(
        raters=int(wide.shape[0]),
        cases=int(wide.shape[1]),
        krippendorff_alpha_interval=None if math.isnan(alpha) else alpha,
        fleiss_kappa_calls=None if math.isnan(kappa) else kappa,
        fleiss_raters=int(complete.shape[0]),
    )


def per_case(df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD) -> list[CaseSummary]:
    """Mean/SD of each case's scores; for synthetic cases the raters it fooled (score <= threshold)."""
    out = []
    orig = _originals(df)
    for (pid, truth, case_id), sub in orig.groupby(["public_id", "truth", "case_id"], sort=True):
        scores = sub["score"].to_numpy(float)
        fooled = None
        if truth == "synthetic":
            fooled = tuple(sorted(sub.loc[sub["score"] <= threshold, "rater"].tolist()))
        out.append(
            CaseSummary(
                public_id=pid,
                truth=truth,
                case_id=case_id,
                n=int(scores.size),
                mean=float(scores.mean()),
                sd=float(scores.std(ddof=1)) if scores.size > 1 else None,
                mean_seconds=float(sub["duration_s"].mean()) if "duration_s" in sub else None,
                fooled=fooled,
            )
        )
    return out


def intra_rater(
    df: pd.DataFrame, threshold: float = DEFAULT_THRESHOLD
) -> list[IntraRaterAgreement]:
    """Per rater, agreement between each duplicate and its original: mean |difference|, exact
    agreement and same-call fractions over the pairs both were answered."""
    if "duplicate_of" not in df or df["duplicate_of"].isna().all():
        return []
    out = []
    for rater, sub in df.groupby("rater", sort=False):
        first = sub.set_index("public_id")["score"]
        dups = sub[sub["duplicate_of"].notna()]
        pairs = [
            (float(first[d.duplicate_of]), float(d.score))
            for d in dups.itertuples()
            if d.duplicate_of in first.index
        ]
        if not pairs:
            continue
        a, b = np.array(pairs).T
        out.append(
            IntraRaterAgreement(
                rater=rater,
                pairs=len(pairs),
                mean_abs_difference=float(np.mean(np.abs(a - b))),
                exact_agreement=float(np.mean(a == b)),
                same_call=float(np.mean((a > threshold) == (b > threshold))),
            )
        )
    return out


def study_stats(
    rows: Iterable[Mapping[str, Any]], threshold: float = DEFAULT_THRESHOLD
) -> StudyStatistics:
    """Everything above for one study's ratings (db.ratings.ratings_of_study rows)."""
    df = ratings_frame(rows)
    if df.empty:
        return StudyStatistics(ratings=0, threshold=threshold, warning=NO_RATINGS)
    orig = _originals(df)
    n_real = int(orig.loc[orig["truth"] == "real", "public_id"].nunique())
    n_syn = int(orig.loc[orig["truth"] == "synthetic", "public_id"].nunique())
    tables = score_tables(df)
    return StudyStatistics(
        ratings=int(len(df)),
        threshold=threshold,
        threshold_rule=f"score > {threshold} = synthetic call; a score of exactly "
        f"{threshold} counts as a real call",
        n_real=n_real,
        n_synthetic=n_syn,
        raters=tuple(rater_summary(df, threshold)),
        tables={
            t: {str(k): {str(r): _num(v) for r, v in row.items()} for k, row in tab.iterrows()}
            for t, tab in tables.items()
        },
        agreement=agreement(df, threshold),
        per_case=tuple(per_case(df, threshold)),
        intra_rater=tuple(intra_rater(df, threshold)),
        median_seconds_per_case=float(df["duration_s"].median()),
        mean_seconds_per_case=float(df["duration_s"].mean()),
        warning=power_warning(n_real, n_syn),
    )


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
