"""The rater flow behind the rating page: invites, a stable per-rater order, answers, progress.

No Streamlit here: the page calls these functions with a fresh session per user action. What a
rater receives is a `PublicCase` (opaque public id + position) and PNG bytes (`case_image`, the
mosaic; `case_slab`, the scrollable slab with its study-wide layout) — never the truth, source
set, case id or a file name. Times are taken on the server. Invite tokens are
`secrets.token_urlsafe(32)`, stored only as their SHA-256, compared with `hmac.compare_digest`.

Per-rater order: a permutation drawn from `numpy.random.default_rng([study seed, rater id])` when
the rater is invited and stored as assignments, so it is stable across reloads and restarts and
reproducible from the seed; a duplicate never directly follows its original.

Writes that can meet a transient lock (SQLite "database is locked", PostgreSQL serialization or
deadlock failures) are retried with exponential backoff inside `submit` and `next_case`.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from synthct.vtt import AlreadyAnsweredError, StudyError
from synthct.workspace import Workspace

TOKEN_BYTES = 32
MAX_RETRIES = 12
T = TypeVar("T")


@dataclass(frozen=True)
class PublicCase:
    """What a rater may know about a case: its opaque id and where it is in their sequence."""

    public_id: str
    position: int  # 1-based
    total: int


@dataclass(frozen=True)
class SlabView:
    """The scrollable slab a rater receives for a case: the padded sprite sheet (one byte length
    for every case of the study) and its layout (one for the whole study, from the manifest)."""

    png: bytes
    layout: dict[str, Any]


@dataclass(frozen=True)
class Invite:
    rater_id: int
    name: str
    token: str  # shown once; only its hash is stored
    link: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored here is UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _transient(err: BaseException) -> bool:
    orig = getattr(err, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in {"40001", "40P01", "55P03"}:  # serialization failure, deadlock, lock not available
        return True
    msg = str(orig or err).lower()
    return (
        "database is locked" in msg
        or "database is busy" in msg
        or "database table is locked" in msg
    )


def with_retry(session: Session, action: Callable[[], T], retries: int = MAX_RETRIES) -> T:
    """Run `action` (which commits) and retry transient lock errors with jittered backoff."""
    delay = 0.005
    for attempt in range(retries + 1):
        try:
            return action()
        except OperationalError as e:
            session.rollback()
            if not _transient(e) or attempt == retries:
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.5)
    raise AssertionError("unreachable")  # pragma: no cover


# -- invites --------------------------------------------------------------------------------------
def rater_order(seed: int, rater_id: int, case_pks: list[int], dup_of: dict[int, int]) -> list[int]:
    """Stable random order of the study's case primary keys for one rater.

    case_pks: in manifest order; dup_of: duplicate pk -> original pk. Reshuffles (same generator)
    until no duplicate sits right after or before its original, when that is possible.
    """
    rng = np.random.default_rng([int(seed), int(rater_id)])
    order = [case_pks[i] for i in rng.permutation(len(case_pks))]
    pairs = {frozenset((d, o)) for d, o in dup_of.items()}
    for _ in range(200):
        if not any(frozenset(p) in pairs for p in zip(order, order[1:], strict=False)):
            break
        order = [case_pks[i] for i in rng.permutation(len(case_pks))]
    return order


def invite(
    session: Session, study_name: str, rater_name: str, base_url: str = "http://localhost:8501"
) -> Invite:
    """Create a rater with a fresh token and their fixed case order; commits. The link is
    BASE/?token=…; the token is returned once and only its SHA-256 is stored."""
    from db.raters import add_assignments, add_rater, rater_by_name
    from db.studies import get_study, study_cases

    rater_name = rater_name.strip()
    if not rater_name or len(rater_name) > 128:
        raise StudyError(f"rater name {rater_name!r} must be 1-128 characters")
    study = get_study(session, study_name)
    if study is None:
        raise StudyError(f"study {study_name!r} does not exist (see `synthct study list`)")
    if rater_by_name(session, study.id, rater_name) is not None:
        raise StudyError(f"study {study_name!r} already has a rater named {rater_name!r}")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    rater = add_rater(
        session,
        study_id=study.id,
        name=rater_name,
        token_hash=hash_token(token),
        created_at=_now(),
    )
    cases = study_cases(session, study.id)
    by_public = {c.public_id: c.id for c in cases}
    dup_of = {c.id: by_public[c.duplicate_of] for c in cases if c.duplicate_of}
    order = rater_order(study.seed, rater.id, [c.id for c in cases], dup_of)
    add_assignments(session, rater.id, order)
    session.commit()
    link = f"{base_url.rstrip('/')}/?token={token}"
    return Invite(rater.id, rater_name, token, link)


def revoke(session: Session, study_name: str, rater_name: str) -> None:
    """Revoke a rater's token (their answers stay); commits."""
    from db.raters import rater_by_name, revoke_rater
    from db.studies import get_study

    study = get_study(session, study_name)
    if study is None:
        raise StudyError(f"study {study_name!r} does not exist")
    rater = rater_by_name(session, study.id, rater_name)
    if rater is None:
        raise StudyError(f"study {study_name!r} has no rater named {rater_name!r}")
    revoke_rater(session, rater, _now())
    session.commit()


def rater_for_token(session: Session, token: str | None) -> Any | None:
    """The active `db.models.Rater` for an invite token; None for unknown or revoked tokens."""
    from db.raters import rater_by_token_hash

    if not token or not isinstance(token, str) or len(token) > 256:
        return None
    digest = hash_token(token)
    rater = rater_by_token_hash(session, digest)
    if rater is None or not hmac.compare_digest(rater.token_hash, digest):
        return None
    return None if rater.revoked_at is not None else rater


def _active(session: Session, rater: Any) -> Any:
    from db.raters import get_rater

    row = get_rater(session, rater.id)
    if row is None or row.revoked_at is not None:
        raise StudyError("this invitation is no longer valid")
    return row


# -- the rating sequence ----------------------------------------------------------------------
def progress(session: Session, rater: Any) -> tuple[int, int]:
    """(answered, total) for the rater."""
    from db.ratings import count_assignments, count_ratings

    return count_ratings(session, rater.id), count_assignments(session, rater.id)


def is_complete(session: Session, rater: Any) -> bool:
    done, total = progress(session, rater)
    return total > 0 and done >= total


def next_case(session: Session, rater: Any) -> PublicCase | None:
    """The rater's next unanswered case (None when finished); records shown_at the first time.

    Commits. Reloading returns the same case with its original shown_at.
    """
    from db.ratings import count_assignments, mark_shown, next_unanswered

    _active(session, rater)

    def action() -> PublicCase | None:
        found = next_unanswered(session, rater.id)
        if found is None:
            session.commit()
            return None
        assignment, case = found
        if assignment.shown_at is None:
            mark_shown(session, assignment.id, _now())
        pc = PublicCase(case.public_id, assignment.position, count_assignments(session, rater.id))
        session.commit()
        return pc

    return with_retry(session, action)


def case_image(session: Session, ws: Workspace, rater: Any, public_id: str) -> bytes:
    """The PNG bytes a rater receives for a case assigned to them.

    The sealed case PNG (checked against its sealed hash) padded to the study's one byte length,
    with a nonce for this (rater, case slot): see synthct.vtt.blinding. Every image of a study
    has the same length and each slot its own bytes, so neither the size nor Streamlit's
    content-hash URL says anything about the case.
    """
    from db.ratings import assignment_for
    from db.studies import get_study_by_id, study_cases
    from synthct.vtt.blinding import nonce, pad_png
    from synthct.vtt.design import load_manifest, padded_length, read_case_png

    row = _active(session, rater)
    found = assignment_for(session, row.id, str(public_id))
    if found is None:
        raise StudyError(f"case {public_id!r} is not part of this rater's study")
    study = get_study_by_id(session, row.study_id)
    load_manifest(ws, study)  # refuses a tampered manifest
    case = found[1]
    png = read_case_png(ws, study.name, case.public_id, case.png_sha256)
    ids = tuple(sorted(c.public_id for c in study_cases(session, study.id)))
    length = padded_length(ws, study.name, study.manifest_sha256, ids)
    return pad_png(png, length, nonce(row.token_hash.encode("ascii"), case.public_id))


def case_slab(session: Session, ws: Workspace, rater: Any, public_id: str) -> SlabView | None:
    """The scrollable slab a rater receives for a case assigned to them (None for a study
    sealed without slabs: the page then shows the mosaic of `case_image`).

    Like `case_image`: the sealed slab PNG (checked against the `slab_sha256` of the sealed
    manifest) padded to the study's one slab length with a nonce for this (rater, case slot), so
    its length says nothing and each slot, duplicates included, has its own bytes. The layout is
    the manifest's, the same for every case of the study.
    """
    from db.ratings import assignment_for
    from db.studies import get_study_by_id
    from synthct.vtt.blinding import nonce, pad_png
    from synthct.vtt.design import SLABS_DIR, load_manifest, padded_length, read_case_png

    row = _active(session, rater)
    found = assignment_for(session, row.id, str(public_id))
    if found is None:
        raise StudyError(f"case {public_id!r} is not part of this rater's study")
    study = get_study_by_id(session, row.study_id)
    manifest = load_manifest(ws, study)  # refuses a tampered manifest
    if "slab" not in manifest:
        return None
    sealed = {c["public_id"]: c.get("slab_sha256") for c in manifest["cases"]}
    pid = found[1].public_id
    if not sealed.get(pid):
        raise StudyError(f"study {study.name!r}: case {pid} has no sealed slab")
    png = read_case_png(ws, study.name, pid, sealed[pid], SLABS_DIR)
    ids = tuple(sorted(sealed))
    length = padded_length(ws, study.name, study.manifest_sha256, ids, SLABS_DIR)
    padded = pad_png(png, length, nonce(row.token_hash.encode("ascii"), f"slab/{pid}"))
    return SlabView(padded, dict(manifest["slab"]))


def validate_score(score: Any) -> int:
    """An integer 0..10 (bools and non-integral floats refused)."""
    if isinstance(score, bool) or not isinstance(score, (int, np.integer, float, str)):
        raise StudyError(f"score {score!r} is not valid: expected an integer from 0 to 10")
    try:
        value = float(score)
    except ValueError:
        raise StudyError(
            f"score {score!r} is not valid: expected an integer from 0 to 10"
        ) from None
    if not value.is_integer() or not 0 <= value <= 10:
        raise StudyError(f"score {score!r} is not valid: expected an integer from 0 to 10")
    return int(value)


def submit(session: Session, rater: Any, public_id: str, score: Any, comment: str = "") -> None:
    """Record the rater's answer to a case they were shown (ask `next_case` for the next one).

    Commits. Refuses a score outside 0..10, a case not shown to (or not assigned to) the rater,
    and a second answer to the same case (AlreadyAnsweredError). Times come from the server:
    duration = answered_at - shown_at.
    """
    from db.ratings import add_rating, assignment_for, rating_for

    value = validate_score(score)
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise StudyError(f"comment is {len(comment)} characters; the limit is 2000")
    _active(session, rater)
    already = AlreadyAnsweredError(
        f"case {public_id!r} was already answered; answers are locked after submit"
    )

    def action() -> None:
        found = assignment_for(session, rater.id, str(public_id))
        if found is None:
            raise StudyError(f"case {public_id!r} is not part of this rater's study")
        assignment, case = found
        if assignment.shown_at is None:
            raise StudyError(f"case {public_id!r} has not been shown to this rater yet")
        if rating_for(session, rater.id, case.id) is not None:
            raise already
        answered = _now()
        shown = _aware(assignment.shown_at)
        try:
            add_rating(
                session,
                rater_id=rater.id,
                study_case_id=case.id,
                score=value,
                comment=comment,
                shown_at=shown,
                answered_at=answered,
                duration_s=max(0.0, (answered - shown).total_seconds()),
            )
            session.commit()
        except IntegrityError:
            session.rollback()
            if rating_for(session, rater.id, case.id) is not None:
                raise already from None
            raise

    with_retry(session, action)
