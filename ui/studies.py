"""Study management data for the Studies page: overview, per-rater progress, results, export.

No Streamlit here. Each function takes a SQLAlchemy session (one per user action) and returns
plain rows; statistics come from synthct.vtt.stats and the export table from
`synthct.vtt.stats.export_frame`, so the page only draws.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from synthct.vtt import StudyError
from synthct.workspace import Workspace


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


def study_overview(session: Session) -> list[dict[str, Any]]:
    """One row per study: name, created, cases, raters (active/all), ratings, manifest hash."""
    from db.studies import list_studies, study_counts

    rows = []
    for st in list_studies(session):
        c = study_counts(session, st.id)
        rows.append(
            {
                "study": st.name,
                "created": st.created_at,
                "cases": c["cases"],
                "raters": f"{c['active_raters']}/{c['raters']} active",
                "ratings": c["ratings"],
                "sealed (manifest SHA-256)": st.manifest_sha256[:16],
            }
        )
    return rows


def rater_progress(session: Session, study_name: str) -> list[dict[str, Any]]:
    """Per rater of a study: name, answered, total, fraction done, revoked, invited."""
    from db.raters import raters_of_study
    from db.ratings import count_assignments, count_ratings
    from db.studies import get_study

    study = get_study(session, study_name)
    if study is None:
        raise StudyError(f"study {study_name!r} does not exist")
    rows = []
    for r in raters_of_study(session, study.id):
        done, total = count_ratings(session, r.id), count_assignments(session, r.id)
        rows.append(
            {
                "rater": r.name,
                "answered": done,
                "total": total,
                "progress": done / total if total else 0.0,
                "revoked": r.revoked_at is not None,
                "invited": r.created_at,
            }
        )
    return rows


def study_results(
    session: Session, ws: Workspace, study_name: str, threshold: int = 5
) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """(synthct.vtt.stats.study_stats result, raw rating rows, export DataFrame) of a study.

    The sealed manifest is verified first (hash and database rows), so a tampered study
    raises `TamperedStudyError` instead of producing numbers.
    """
    from db.ratings import ratings_of_study
    from db.studies import get_study
    from synthct.vtt.design import verify_study
    from synthct.vtt.stats import export_frame, study_stats

    study = get_study(session, study_name)
    if study is None:
        raise StudyError(f"study {study_name!r} does not exist")
    manifest = verify_study(session, ws, study, check_pngs=False)
    rows = ratings_of_study(session, study.id)
    export = export_frame(rows, manifest, study.name, study.manifest_sha256)
    return study_stats(rows, threshold=threshold), rows, export


def rater_table(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-rater statistics as display rows (CI as "lo–hi")."""
    out = []
    for r in stats.get("raters", []):
        ci = r.get("auc_ci95")
        out.append(
            {
                "rater": r["rater"],
                "n real": r["n_real"],
                "n synthetic": r["n_synthetic"],
                "mean real": r.get("mean_real"),
                "mean synthetic": r.get("mean_synthetic"),
                "AUC": r.get("auc"),
                "AUC 95% CI": "—" if not ci else f"{ci[0]:.2f}–{ci[1]:.2f}",
                "accuracy": r.get("accuracy"),
                "sensitivity": r.get("sensitivity"),
                "specificity": r.get("specificity"),
                "Mann–Whitney p": r.get("mann_whitney_p"),
                "binomial p": r.get("binomial_p"),
                "median s/case": r.get("median_seconds_per_case"),
            }
        )
    return out
