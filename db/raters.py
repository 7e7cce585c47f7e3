"""Repository functions for raters and their fixed case order. Each takes the caller's session.

Tokens never reach this module: callers pass the SHA-256 hex digest of the invite token.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Assignment, Rater


def add_rater(
    session: Session,
    *,
    study_id: int,
    name: str,
    token_hash: str,
    created_at: datetime,
) -> Rater:
    """Insert a rater (flushed, so `rater.id` is set and a duplicate name/token fails here)."""
    rater = Rater(study_id=study_id, name=name, token_hash=token_hash, created_at=created_at)
    session.add(rater)
    session.flush()
    return rater


def add_assignments(session: Session, rater_id: int, order: Sequence[int]) -> None:
    """The rater's fixed order: study case primary keys shown at positions 1..n."""
    for pos, case_pk in enumerate(order, start=1):
        session.add(Assignment(rater_id=rater_id, study_case_id=case_pk, position=pos))
    session.flush()


def rater_by_token_hash(session: Session, token_hash: str) -> Rater | None:
    return session.scalars(select(Rater).where(Rater.token_hash == token_hash)).one_or_none()


def get_rater(session: Session, rater_id: int) -> Rater | None:
    return session.get(Rater, rater_id)


def rater_by_name(session: Session, study_id: int, name: str) -> Rater | None:
    q = select(Rater).where(Rater.study_id == study_id, Rater.name == name)
    return session.scalars(q).one_or_none()


def raters_of_study(session: Session, study_id: int) -> list[Rater]:
    return list(session.scalars(select(Rater).where(Rater.study_id == study_id).order_by(Rater.id)))


def revoke_rater(session: Session, rater: Rater, when: datetime) -> None:
    if rater.revoked_at is None:
        rater.revoked_at = when
        session.flush()
