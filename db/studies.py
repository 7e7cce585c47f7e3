"""Repository functions for studies and their cases. Each takes the caller's session."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Rater, Rating, Study, StudyCase


def add_study(
    session: Session,
    *,
    name: str,
    seed: int,
    manifest_sha256: str,
    params: dict[str, Any],
    cases: Sequence[dict[str, Any]],
    created_at: datetime,
) -> Study:
    """Insert a study and its cases (dicts with public_id, truth, source, case_id, duplicate_of,
    png_sha256; `position` is their index). Flushes, so a duplicate name fails here."""
    study = Study(
        name=name, seed=seed, manifest_sha256=manifest_sha256, params=params, created_at=created_at
    )
    session.add(study)
    session.flush()
    for i, c in enumerate(cases):
        session.add(
            StudyCase(
                study_id=study.id,
                position=i,
                public_id=c["public_id"],
                truth=c["truth"],
                source=c["source"],
                case_id=c["case_id"],
                duplicate_of=c.get("duplicate_of"),
                png_sha256=c["png_sha256"],
            )
        )
    session.flush()
    return study


def get_study(session: Session, name: str) -> Study | None:
    return session.scalars(select(Study).where(Study.name == name)).one_or_none()


def get_study_by_id(session: Session, study_id: int) -> Study | None:
    return session.get(Study, study_id)


def list_studies(session: Session) -> list[Study]:
    return list(session.scalars(select(Study).order_by(Study.created_at, Study.id)))


def study_cases(session: Session, study_id: int) -> list[StudyCase]:
    """All cases of a study in manifest order."""
    q = select(StudyCase).where(StudyCase.study_id == study_id).order_by(StudyCase.position)
    return list(session.scalars(q))


def study_case_by_public_id(session: Session, study_id: int, public_id: str) -> StudyCase | None:
    q = select(StudyCase).where(StudyCase.study_id == study_id, StudyCase.public_id == public_id)
    return session.scalars(q).one_or_none()


def study_counts(session: Session, study_id: int) -> dict[str, int]:
    """Numbers of cases, raters (all / active) and ratings of a study."""
    n_cases = session.scalar(
        select(func.count()).select_from(StudyCase).where(StudyCase.study_id == study_id)
    )
    n_raters = session.scalar(
        select(func.count()).select_from(Rater).where(Rater.study_id == study_id)
    )
    n_active = session.scalar(
        select(func.count())
        .select_from(Rater)
        .where(Rater.study_id == study_id, Rater.revoked_at.is_(None))
    )
    n_ratings = session.scalar(
        select(func.count())
        .select_from(Rating)
        .join(Rater, Rater.id == Rating.rater_id)
        .where(Rater.study_id == study_id)
    )
    return {
        "cases": int(n_cases or 0),
        "raters": int(n_raters or 0),
        "active_raters": int(n_active or 0),
        "ratings": int(n_ratings or 0),
    }
