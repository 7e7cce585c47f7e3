"""Typed ORM models (SQLAlchemy 2.0 `DeclarativeBase` + `Mapped[]`). No logic lives here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Job(Base):
    """A long piece of work run as a separate process (`python -m synthct …`), on this machine
    (executor "local") or as a SLURM job (executor "slurm")."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_executor_owner", "executor", "owner"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # train | generate | evaluate | segment | …
    args: Mapped[list] = mapped_column(JSON)  # argv after `python -m synthct`
    device: Mapped[str] = mapped_column(String(32), default="cpu")  # "cuda:0" jobs queue per device
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    executor: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    # who may start, watch and reconcile it: the host name (local) or the SLURM cluster name
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # SLURM job id
    external_state: Mapped[str | None] = mapped_column(String(32), nullable=True)  # SLURM state
    resources: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # executor settings
    requeues: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    log_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)  # result location
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- Visual Turing Test ----------------------------------------------------------------------------
# Truth, source set and case id live only in `study_cases` (and the sealed manifest on disk);
# nothing a rater receives is read from those columns except `public_id`.


class Study(Base):
    """A sealed list of cases. `manifest_sha256` is the SHA-256 of WS/studies/<name>/manifest.json."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    seed: Mapped[int] = mapped_column(Integer)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON)  # design + render parameters
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StudyCase(Base):
    """One image shown to raters. `public_id` is opaque (secrets.token_hex(8))."""

    __tablename__ = "study_cases"
    __table_args__ = (
        UniqueConstraint("study_id", "position", name="uq_study_cases_position"),
        CheckConstraint("truth IN ('real', 'synthetic')", name="ck_study_cases_truth"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the manifest (not the rater order)
    truth: Mapped[str] = mapped_column(String(16))  # real | synthetic
    source: Mapped[str] = mapped_column(Text)  # e.g. "test split" or the synthetic set name
    case_id: Mapped[str] = mapped_column(Text)
    duplicate_of: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a public_id
    png_sha256: Mapped[str] = mapped_column(String(64))


class Rater(Base):
    """A person invited to one study. Only the SHA-256 of the invite token is stored."""

    __tablename__ = "raters"
    __table_args__ = (UniqueConstraint("study_id", "name", name="uq_raters_study_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Assignment(Base):
    """A rater's fixed random order: case `study_case_id` is shown at `position` (1-based)."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("rater_id", "position", name="uq_assignments_position"),
        UniqueConstraint("rater_id", "study_case_id", name="uq_assignments_case"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"), index=True)
    study_case_id: Mapped[int] = mapped_column(ForeignKey("study_cases.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    shown_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Rating(Base):
    """One answer: score 0 (certainly real) … 10 (certainly synthetic); one per (rater, case)."""

    __tablename__ = "ratings"
    __table_args__ = (
        UniqueConstraint("rater_id", "study_case_id", name="uq_ratings_rater_case"),
        CheckConstraint("score >= 0 AND score <= 10", name="ck_ratings_score"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id", ondelete="CASCADE"), index=True)
    study_case_id: Mapped[int] = mapped_column(ForeignKey("study_cases.id", ondelete="CASCADE"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    shown_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)


# -- researcher sign-in back-off ------------------------------------------------------------------
class SignInThrottle(Base):
    """Failed researcher sign-ins per scope ("global", or one browser session's random key).

    Kept in the database, not in a session, so that every server process sharing the database
    sees the same counts and a reload (a new session) does not reset the global back-off.
    """

    __tablename__ = "sign_in_throttle"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)  # consecutive failures within the window
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
