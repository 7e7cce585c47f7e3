"""Repository functions for a rater's progress and answers. Each takes the caller's session."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Assignment, Rater, Rating, StudyCase


def next_unanswered(session: Session, rater_id: int) -> tuple[Assignment, StudyCase] | None:
    """The rater's first assignment (by position) without a rating, with its case."""
    answered = select(Rating.study_case_id).where(Rating.rater_id == rater_id)
    q = (
        select(Assignment, StudyCase)
        .join(StudyCase, StudyCase.id == Assignment.study_case_id)
        .where(Assignment.rater_id == rater_id, Assignment.study_case_id.not_in(answered))
        .order_by(Assignment.position)
        .limit(1)
    )
    row = session.execute(q).first()
    return None if row is None else (row[0], row[1])


def mark_shown(session: Session, assignment_id: int, when: datetime) -> None:
    """Set shown_at once: a later call (reload) keeps the first time."""
    session.execute(
        update(Assignment)
        .where(Assignment.id == assignment_id, Assignment.shown_at.is_(None))
        .values(shown_at=when)
    )


def assignment_for(
    session: Session, rater_id: int, public_id: str
) -> tuple[Assignment, StudyCase] | None:
    """The rater's assignment for the case with this public id (None if not assigned)."""
    q = (
        select(Assignment, StudyCase)
        .join(StudyCase, StudyCase.id == Assignment.study_case_id)
        .where(Assignment.rater_id == rater_id, StudyCase.public_id == public_id)
    )
    row = session.execute(q).first()
    return None if row is None else (row[0], row[1])


def rating_for(session: Session, rater_id: int, study_case_id: int) -> Rating | None:
    q = select(Rating).where(Rating.rater_id == rater_id, Rating.study_case_id == study_case_id)
    return session.scalars(q).one_or_none()


def add_rating(
    session: Session,
    *,
    rater_id: int,
    study_case_id: int,
    score: int,
    comment: str,
    shown_at: datetime,
    answered_at: datetime,
    duration_s: float,
) -> Rating:
    rating = Rating(
        rater_id=rater_id,
        study_case_id=study_case_id,
        score=score,
        comment=comment,
        shown_at=shown_at,
        answered_at=answered_at,
        duration_s=duration_s,
    )
    session.add(rating)
    session.flush()
    return rating


def count_assignments(session: Session, rater_id: int) -> int:
    q = select(func.count()).select_from(Assignment).where(Assignment.rater_id == rater_id)
    return int(session.scalar(q) or 0)


def count_ratings(session: Session, rater_id: int) -> int:
    q = select(func.count()).select_from(Rating).where(Rating.rater_id == rater_id)
    return int(session.scalar(q) or 0)


def ratings_of_study(session: Session, study_id: int) -> list[dict[str, Any]]:
    """Every rating of a study joined with its rater and case (server-side only: has truth)."""
    q = (
        select(Rating, Rater, StudyCase, Assignment.position)
        .join(Rater, Rater.id == Rating.rater_id)
        .join(StudyCase, StudyCase.id == Rating.study_case_id)
        .join(
            Assignment,
            (Assignment.rater_id == Rating.rater_id)
            & (Assignment.study_case_id == Rating.study_case_id),
        )
        .where(Rater.study_id == study_id)
        .order_by(Rater.id, Assignment.position)
    )
    rows = []
    for rating, rater, case, position in session.execute(q):
        rows.append(
            {
                "rater_id": rater.id,
                "rater": rater.name,
                "rater_revoked": rater.revoked_at is not None,
                "public_id": case.public_id,
                "rater_position": position,
                "truth": case.truth,
                "source": case.source,
                "case_id": case.case_id,
                "duplicate_of": case.duplicate_of,
                "score": rating.score,
                "comment": rating.comment,
                "shown_at": rating.shown_at,
                "answered_at": rating.answered_at,
                "duration_s": rating.duration_s,
            }
        )
    return rows
