"""Display tables for the Studies page, built from the study read-model (synthct.vtt.results).

No Streamlit here. The page reads studies, progress and statistics through
`synthct.vtt.results` (the same functions as `synthct study list|stats|export`); these
functions only turn those typed objects into the rows and frames the page shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from synthct.vtt.results import RaterProgress, StudyOverview
from synthct.vtt.stats import POWER_AUC, StudyStatistics, detectable_auc


def default_base_url(page_url: str | None, base_path: str = "") -> str:
    """The app's root address for invite links, from the address the researcher is using.

    `page_url` is the browser's URL of the current page (st.context.url); `base_path` the
    server.baseUrlPath option. Falls back to http://localhost:8501 when unknown.
    """
    if not page_url:
        return "http://localhost:8501"
    parts = urlsplit(page_url)
    if not parts.scheme or not parts.netloc:
        return "http://localhost:8501"
    path = "/" + base_path.strip("/") if base_path.strip("/") else ""
    return f"{parts.scheme}://{parts.netloc}{path}"


def power_plan(n_real: int, n_synthetic: int, raters: int = 1) -> tuple[str, bool]:
    """What a planned study can detect, before any rating: (text, adequate).

    Each rater is tested on their own (Mann–Whitney, two-sided, alpha 0.05, 80 % power;
    `synthct.vtt.stats.detectable_auc`), so the detectable AUC depends on the cases one rater
    sees; with several raters it is also given at a Bonferroni-corrected alpha (0.05 / raters),
    for the claim "some rater tells them apart". Duplicates add no independent cases.
    `adequate`: a moderately good rater (AUC 0.75) is detectable.
    """
    if n_real < 1 or n_synthetic < 1:
        return "A study needs real and synthetic cases for any comparison.", False
    auc = detectable_auc(n_synthetic, n_real)
    per = f"{n_real} real and {n_synthetic} synthetic cases per rater"
    if auc is None:
        text = (
            f"With {per}, no rater, however good, has an 80 % chance of p < 0.05: a "
            f"non-significant result could not show that the synthetic cases pass as real."
        )
    else:
        text = (
            f"With {per}, a rater needs an AUC of at least {auc:.2f} (0.5 = chance, 1 = always "
            f"right) to be detected (p < 0.05 with 80 % power)"
        )
        if raters > 1:
            corrected = detectable_auc(n_synthetic, n_real, alpha=0.05 / raters)
            text += f"; testing each of {raters} raters at 0.05/{raters}: from " + (
                "no AUC ≤ 1" if corrected is None else f"{corrected:.2f}"
            )
        text += "."
    adequate = auc is not None and auc <= POWER_AUC
    if not adequate:
        need = next(
            n
            for n in range(2, 10_000)
            if (a := detectable_auc(n, n)) is not None and a <= POWER_AUC
        )
        text += (
            f" About {need} real and {need} synthetic cases per rater detect a moderately good "
            f"rater (AUC {POWER_AUC})."
        )
    return text, adequate


def sealed_case_counts(manifest: Mapping[str, Any]) -> tuple[int, int]:
    """(real, synthetic) cases of a sealed study's manifest, duplicates not counted."""
    cases = [c for c in manifest.get("cases", []) if c.get("duplicate_of") is None]
    return (
        sum(c.get("truth") == "real" for c in cases),
        sum(c.get("truth") == "synthetic" for c in cases),
    )


def overview_rows(studies: Sequence[StudyOverview]) -> list[dict[str, Any]]:
    """One row per study: name, created, cases, raters (active/all), ratings, manifest hash."""
    return [
        {
            "study": st.name,
            "created": st.created,
            "cases": st.cases,
            "raters": f"{st.active_raters}/{st.raters} active",
            "ratings": st.ratings,
            "sealed (manifest SHA-256)": st.manifest_sha256[:16],
        }
        for st in studies
    ]


def progress_rows(progress: Sequence[RaterProgress]) -> list[dict[str, Any]]:
    """Per rater: name, answered, total, fraction done, revoked, invited."""
    return [
        {
            "rater": r.name,
            "answered": r.done,
            "total": r.total,
            "progress": r.fraction,
            "revoked": r.revoked,
            "invited": r.invited,
        }
        for r in progress
    ]


def rater_table(stats: StudyStatistics) -> list[dict[str, Any]]:
    """The per-rater statistics as display rows (CI as "lo–hi"; blank where a rater has not
    rated both classes)."""
    out = []
    for r in stats.raters:
        d = r.discrimination
        ci = None if d is None else d.auc_ci95
        out.append(
            {
                "rater": r.rater,
                "n real": r.n_real,
                "n synthetic": r.n_synthetic,
                "mean real": r.mean_real,
                "mean synthetic": r.mean_synthetic,
                "AUC": None if d is None else d.auc,
                "AUC 95% CI": "—" if not ci else f"{ci[0]:.2f}–{ci[1]:.2f}",
                "accuracy": None if d is None else d.accuracy,
                "sensitivity": None if d is None else d.sensitivity,
                "specificity": None if d is None else d.specificity,
                "Mann–Whitney p": None if d is None else d.mann_whitney_p,
                "binomial p": None if d is None else d.binomial_p,
                "median s/case": r.median_seconds_per_case,
            }
        )
    return out


def score_frame(stats: StudyStatistics, truth: str) -> pd.DataFrame:
    """The thesis-style score table of one truth ("real" or "synthetic"): rows = cases, then
    "mean"; columns = raters."""
    return pd.DataFrame(stats.tables[truth]).T


def per_case_frame(stats: StudyStatistics) -> pd.DataFrame:
    """One row per case (mean, SD, time); `fooled` lists the raters a synthetic case fooled."""
    frame = pd.DataFrame([c.to_dict() for c in stats.per_case])
    if "fooled" in frame:
        frame["fooled"] = frame["fooled"].map(lambda v: ", ".join(v) if isinstance(v, list) else "")
    return frame


def intra_rater_rows(stats: StudyStatistics) -> list[dict[str, Any]]:
    """Per rater, agreement between duplicates and their originals."""
    return [r.to_dict() for r in stats.intra_rater]
