"""What researchers read about studies, for the CLI and the app alike (the study read-model).

`synthct study list|stats|export` and the Studies page call these functions with a session of
theirs (one per action) and get typed objects back: `StudyOverview` and `RaterProgress` for the
listing, `StudyRatings` for one study's answers, from which come `StudyStatistics`
(synthct.vtt.stats), the ratings table and the CSV export. Every read of a study's answers
checks its seal first (manifest hash and database rows, `synthct.vtt.design.verify_study`), so a
tampered study raises `TamperedStudyError` instead of producing numbers. The export holds the
truth (researchers only) and is written through `synthct.csvsafe`, so no rater name or comment
can run as a spreadsheet formula.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from db.models import Study
from db.raters import raters_of_study
from db.ratings import count_assignments, count_ratings, ratings_of_study
from db.studies import get_study, list_studies, study_counts
from synthct.csvsafe import to_csv_text
from synthct.vtt import StudyError
from synthct.vtt.design import verify_study
from synthct.vtt.stats import DEFAULT_THRESHOLD, StudyStatistics, ratings_frame, study_stats
from synthct.workspace import Workspace

EXPORT_COLUMNS = [
    "study", "rater", "rater_id", "rater_revoked", "rater_position", "public_id", "truth",
    "source", "case_id", "duplicate_of", "score", "comment", "shown_at", "answered_at",
    "duration_s", "png_sha256", "manifest_sha256", "render",
]  # fmt: skip


@dataclass(frozen=True)
class RaterProgress:
    """One invited rater: answers given of cases assigned, revoked or not, invited when."""

    name: str
    done: int
    total: int
    revoked: bool
    invited: datetime

    @property
    def fraction(self) -> float:
        """Share of the assigned cases answered (0 when none are assigned)."""
        return self.done / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON of `synthct study list --json` (without the invitation time)."""
        return {"name": self.name, "revoked": self.revoked, "done": self.done, "total": self.total}


@dataclass(frozen=True)
class StudyOverview:
    """One study in the listing: its seal, numbers of cases, raters (all / not revoked) and
    ratings; `rater_progress` only when asked for (it costs two queries per rater)."""

    name: str
    created: datetime
    manifest_sha256: str
    cases: int
    raters: int
    active_raters: int
    ratings: int
    rater_progress: tuple[RaterProgress, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON of `synthct study list --json`."""
        out: dict[str, Any] = {
            "name": self.name,
            "created": self.created.isoformat(),
            "manifest_sha256": self.manifest_sha256,
            "cases": self.cases,
            "raters": self.raters,
            "active_raters": self.active_raters,
            "ratings": self.ratings,
        }
        if self.rater_progress is not None:
            out["rater_progress"] = [r.to_dict() for r in self.rater_progress]
        return out


@dataclass(frozen=True)
class StudyRatings:
    """Every answer of one study whose seal was checked, with the sealed manifest.

    rows: one mapping per rating (db.ratings.ratings_of_study: rater, truth, case, score,
    comment, times), ordered by rater, then by the rater's case position.
    """

    study: str
    manifest_sha256: str
    manifest: Mapping[str, Any]
    rows: tuple[Mapping[str, Any], ...]

    def statistics(self, threshold: float = DEFAULT_THRESHOLD) -> StudyStatistics:
        """The study's statistics; scores above `threshold` count as "synthetic" calls."""
        return study_stats(self.rows, threshold=threshold)

    def frame(self) -> pd.DataFrame:
        """The ratings as a DataFrame, one row per rating (for charts)."""
        return ratings_frame(self.rows)

    def export_table(self) -> pd.DataFrame:
        """Ratings joined with the sealed manifest, one row per rating in `EXPORT_COLUMNS`
        order (it holds the truth: researchers only)."""
        render = self.manifest.get("render", {})
        sha = {c["public_id"]: c["png_sha256"] for c in self.manifest.get("cases", [])}
        return pd.DataFrame(
            [
                {
                    **r,
                    "study": self.study,
                    "png_sha256": sha.get(r["public_id"]),
                    "manifest_sha256": self.manifest_sha256,
                    "render": f"{render.get('plane')}/{render.get('slab')}/{render.get('window')}",
                }
                for r in self.rows
            ],
            columns=EXPORT_COLUMNS,
        )

    def export_csv(self) -> str:
        """`export_table` as CSV text in which no cell can run as a spreadsheet formula."""
        return to_csv_text(self.export_table())


def find_study(session: Session, name: str) -> Study:
    """The study called `name`; StudyError when there is none."""
    study = get_study(session, name)
    if study is None:
        raise StudyError(f"study {name!r} does not exist (see `synthct study list`)")
    return study


def study_overviews(session: Session, with_progress: bool = False) -> list[StudyOverview]:
    """Every study, oldest first; with each rater's progress when `with_progress`."""
    out = []
    for study in list_studies(session):
        counts = study_counts(session, study.id)
        out.append(
            StudyOverview(
                name=study.name,
                created=study.created_at,
                manifest_sha256=study.manifest_sha256,
                cases=counts["cases"],
                raters=counts["raters"],
                active_raters=counts["active_raters"],
                ratings=counts["ratings"],
                rater_progress=_progress(session, study) if with_progress else None,
            )
        )
    return out


def rater_progress(session: Session, study_name: str) -> tuple[RaterProgress, ...]:
    """Every rater of a study in invitation order, with their progress."""
    return _progress(session, find_study(session, study_name))


def _progress(session: Session, study: Study) -> tuple[RaterProgress, ...]:
    return tuple(
        RaterProgress(
            name=r.name,
            done=count_ratings(session, r.id),
            total=count_assignments(session, r.id),
            revoked=r.revoked_at is not None,
            invited=r.created_at,
        )
        for r in raters_of_study(session, study.id)
    )


def study_ratings(session: Session, ws: Workspace, study_name: str) -> StudyRatings:
    """A study's answers after checking its seal (manifest hash and database case rows; the
    PNGs are not re-read). Raises StudyError for an unknown study, TamperedStudyError for a
    broken seal."""
    study = find_study(session, study_name)
    manifest = verify_study(session, ws, study, check_pngs=False)
    return StudyRatings(
        study=study.name,
        manifest_sha256=study.manifest_sha256,
        manifest=manifest,
        rows=tuple(ratings_of_study(session, study.id)),
    )
