"""Display tables for the Studies page, built from the study read-model (synthct.vtt.results).

No Streamlit here. The page reads studies, progress and statistics through
`synthct.vtt.results` (the same functions as `synthct study list|stats|export`); these
functions only turn those typed objects into the rows and frames the page shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from synthct.vtt.results import RaterProgress, StudyOverview
from synthct.vtt.stats import StudyStatistics


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
