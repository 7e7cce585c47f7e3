"""Repository functions for the `jobs` table (background processes). Session passed in.

Status life cycle: queued -> running -> done | failed | cancelled (queued -> cancelled too), and
running -> cancelling -> cancelled | done while a cancelled job stops at its next safe point (a
training job writes its checkpoint first). Every transition out of `running`/`cancelling` is
conditional on the row's current status, so a late writer (a child finishing just after a
cancel, a reconcile racing a normal exit) never overwrites the first terminal status. A
`cancelling` job still holds its device (it is still running).

`claim_job` is the one place a job starts: a single conditional UPDATE
that also checks the device's capacity, so two schedulers can never start two jobs past the limit
(PostgreSQL: the device's rows are locked first with SELECT … FOR UPDATE; SQLite serialises
writers, so the single statement is already atomic).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from db.models import Job

STATUSES = ("queued", "running", "cancelling", "done", "failed", "cancelled")
TERMINAL = ("done", "failed", "cancelled")
ACTIVE = ("running", "cancelling")  # a process exists (or is starting) and holds its device


def _now() -> datetime:
    return datetime.now(UTC)


def create_job(
    session: Session, kind: str, args: list[str], device: str, log_path: str | None = None
) -> Job:
    """Insert a queued job; its id is available on return (the session is flushed)."""
    job = Job(
        kind=kind,
        args=list(args),
        device=device,
        status="queued",
        progress=0.0,
        message="queued",
        log_path=log_path,
        created_at=_now(),
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(
    session: Session, status: str | Sequence[str] | None = None, limit: int | None = 200
) -> list[Job]:
    """Jobs, newest first, optionally filtered by one status or several."""
    stmt = select(Job).order_by(Job.id.desc())
    if status is not None:
        stmt = stmt.where(Job.status.in_([status] if isinstance(status, str) else list(status)))
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def queued_jobs(session: Session) -> list[Job]:
    """Queued jobs in submission order (the scheduler's FIFO)."""
    return list(session.scalars(select(Job).where(Job.status == "queued").order_by(Job.id)))


def running_jobs(session: Session) -> list[Job]:
    """Jobs whose process runs: `running` and `cancelling` (stopping), oldest first."""
    return list(session.scalars(select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.id)))


def request_cancel(session: Session, job_id: int) -> bool:
    """Move a running job to `cancelling` (its process is being asked to stop); True if moved."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(status="cancelling", message="cancelling: stopping at the next safe point")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_log_path(session: Session, job_id: int, log_path: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(log_path=log_path))


def claim_job(session: Session, job_id: int, device: str, limit: int) -> bool:
    """Atomically move a queued job to `running` if fewer than `limit` jobs run on `device`.

    Returns True when this caller won the job (and may start its process). Commit right after.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Lock the device's live rows so concurrent claimers serialise; the UPDATE below is a new
        # statement and so sees whatever the previous lock holder committed.
        session.execute(
            select(Job.id)
            .where(Job.device == device, Job.status.in_(("queued", *ACTIVE)))
            .order_by(Job.id)
            .with_for_update()
        ).all()
    other = aliased(Job)
    running = (
        select(func.count())
        .select_from(other)
        .where(other.device == device, other.status.in_(ACTIVE))
        .scalar_subquery()
    )
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", running < limit)
        .values(status="running", started_at=_now(), progress=0.0, message="starting")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_pid(session: Session, job_id: int, pid: int) -> bool:
    """Record the process id of a running job; False if the job left `running` meanwhile."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(pid=pid, message="running")
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_progress(session: Session, job_id: int, progress: float, message: str) -> bool:
    """Progress of a running job (a `cancelling` job keeps its "cancelling" message)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(progress=min(1.0, max(0.0, float(progress))), message=message)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_result(session: Session, job_id: int, result: str) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(result=result)
        .execution_options(synchronize_session=False)
    )


def finish_job(
    session: Session,
    job_id: int,
    status: str,
    message: str,
    from_status: Sequence[str] = ("running",),
    progress: float | None = None,
) -> bool:
    """Move a job to a terminal status if it is still in one of `from_status`; True if it moved."""
    if status not in TERMINAL:
        raise ValueError(f"terminal status must be one of {TERMINAL}, got {status!r}")
    values: dict = {"status": status, "message": message, "finished_at": _now()}
    if progress is not None:
        values["progress"] = progress
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(from_status)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
