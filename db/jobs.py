"""Repository functions for the `jobs` table (background work). Session passed in.

Status life cycle of a local job (this machine's queue): queued -> running -> done | failed |
cancelled (queued -> cancelled too), and running -> cancelling -> cancelled | done while a
cancelled job stops at its next safe point (a training job writes its checkpoint first).

A SLURM job mirrors SLURM's state: pending (in SLURM's queue, also after a requeue) -> running
-> done (COMPLETED) | failed (FAILED, OUT_OF_MEMORY, PREEMPTED without requeue …) | cancelled
(CANCELLED) | timeout (TIMEOUT) | node_fail (NODE_FAIL); running -> pending when it is requeued.

Every transition out of an active status is conditional on the row's current status, so a late
writer (a child finishing just after a cancel, a reconcile racing a normal exit) never
overwrites the first terminal status. A `cancelling` job still holds its device.

`owner` says who may start, watch and reconcile a job: a local job belongs to the host that
submitted it (its pid means nothing elsewhere), a SLURM job to its cluster. Rows written before
owners existed (owner NULL) are treated as every host's.

`claim_job` is the one place a local job starts: a single conditional UPDATE that also checks
the device's capacity on that host, so two schedulers can never start two jobs past the limit
(PostgreSQL: the device's rows are locked first with SELECT … FOR UPDATE; SQLite serialises
writers, so the single statement is already atomic).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from db.models import Job

STATUSES = (
    "queued", "pending", "running", "cancelling",
    "done", "failed", "cancelled", "timeout", "node_fail",
)  # fmt: skip
TERMINAL = ("done", "failed", "cancelled", "timeout", "node_fail")
ACTIVE = ("running", "cancelling")  # a process exists (or is starting) and holds its device
WAITING = ("queued", "pending")  # not started: in synthct's queue (local) or SLURM's (pending)
LIVE = (*WAITING, *ACTIVE)
SCHEDULER_LIVE_STATES = ("PENDING", "REQUEUED", "RUNNING", "COMPLETING", "CONFIGURING")


def _now() -> datetime:
    return datetime.now(UTC)


def create_job(
    session: Session,
    kind: str,
    args: list[str],
    device: str,
    log_path: str | None = None,
    *,
    executor: str = "local",
    owner: str | None = None,
    resources: dict | None = None,
) -> Job:
    """Insert a job waiting to start (local: `queued`; SLURM: `pending`); its id is available on
    return (the session is flushed)."""
    status = "queued" if executor == "local" else "pending"
    job = Job(
        kind=kind,
        args=list(args),
        device=device,
        status=status,
        progress=0.0,
        message=status if executor == "local" else "submitting",
        log_path=log_path,
        created_at=_now(),
        executor=executor,
        owner=owner,
        resources=resources,
        requeues=0,
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


def _owned(stmt, executor: str | None, owner: str | None):
    if executor is not None:
        stmt = stmt.where(Job.executor == executor)
    if owner is not None:  # rows from before owners existed belong to everyone
        stmt = stmt.where(or_(Job.owner == owner, Job.owner.is_(None)))
    return stmt


def queued_jobs(session: Session, owner: str | None = None) -> list[Job]:
    """Local jobs waiting in synthct's queue (of host `owner`), in submission order (FIFO)."""
    stmt = select(Job).where(Job.status == "queued").order_by(Job.id)
    return list(session.scalars(_owned(stmt, "local", owner)))


def running_jobs(
    session: Session, executor: str | None = None, owner: str | None = None
) -> list[Job]:
    """Jobs whose process runs: `running` and `cancelling` (stopping), oldest first; optionally
    only one executor's, and only those of `owner` (plus ownerless legacy rows)."""
    stmt = select(Job).where(Job.status.in_(ACTIVE)).order_by(Job.id)
    return list(session.scalars(_owned(stmt, executor, owner)))


def live_jobs(session: Session, executor: str, owner: str | None = None) -> list[Job]:
    """Jobs of `executor` (and `owner`) that have not ended: waiting or active, oldest first."""
    stmt = select(Job).where(Job.status.in_(LIVE)).order_by(Job.id)
    return list(session.scalars(_owned(stmt, executor, owner)))


def unsettled_jobs(session: Session, executor: str, owner: str, limit: int = 100) -> list[Job]:
    """Ended jobs of `executor` and `owner` whose scheduler state was last seen as live (their
    process recorded the end before the scheduler did), newest first."""
    stmt = (
        select(Job)
        .where(
            Job.executor == executor,
            Job.owner == owner,
            Job.status.in_(TERMINAL),
            Job.external_id.is_not(None),
            or_(Job.external_state.is_(None), Job.external_state.in_(SCHEDULER_LIVE_STATES)),
        )
        .order_by(Job.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def needs_scheduler(session: Session, executor: str) -> bool:
    """Any job of `executor` not ended, or ended while its scheduler state was last seen live?"""
    unsettled = (
        Job.status.in_(TERMINAL)
        & Job.external_id.is_not(None)
        & or_(Job.external_state.is_(None), Job.external_state.in_(SCHEDULER_LIVE_STATES))
    )
    stmt = select(Job.id).where(Job.executor == executor, Job.status.in_(LIVE) | unsettled)
    return session.execute(stmt.limit(1)).first() is not None


def set_submitted(
    session: Session, job_id: int, external_id: str, log_path: str, owner: str | None
) -> None:
    """Record the SLURM job id, output file and cluster of a submitted job (the job may have
    started already: a `running` row keeps its message)."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(external_id=external_id, log_path=log_path, owner=owner)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "pending", Job.message == "submitting")
        .values(message="pending")
        .execution_options(synchronize_session=False)
    )


def set_state(
    session: Session,
    job_id: int,
    status: str,
    message: str | None = None,
    from_status: Sequence[str] = LIVE,
    external_state: str | None = None,
    requeued: bool = False,
) -> bool:
    """Move a job between non-terminal statuses (pending <-> running) if it is in `from_status`;
    `running` stamps started_at, `requeued` counts one more requeue. True if it moved."""
    if status in TERMINAL:
        raise ValueError(f"use finish_job for the terminal status {status!r}")
    values: dict = {"status": status}
    if message is not None:
        values["message"] = message
    if external_state is not None:
        values["external_state"] = external_state
    if status == "running":
        values["started_at"] = _now()
        values["finished_at"] = None
    if requeued:
        values["requeues"] = Job.requeues + 1
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(from_status)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_message(
    session: Session, job_id: int, message: str, from_status: Sequence[str] = LIVE
) -> bool:
    """Replace the message of a job that has not ended (its status stays)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(from_status)))
        .values(message=message)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_external_state(session: Session, job_id: int, state: str) -> None:
    """The scheduler's own word for a job's state (e.g. SLURM's COMPLETING), shown as is."""
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(external_state=state[:32])
        .execution_options(synchronize_session=False)
    )


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


def claim_job(
    session: Session, job_id: int, device: str, limit: int, owner: str | None = None
) -> bool:
    """Atomically move a queued local job to `running` if fewer than `limit` local jobs run on
    `device` of host `owner` (all hosts when None).

    Returns True when this caller won the job (and may start its process). Commit right after.
    """
    if session.get_bind().dialect.name == "postgresql":
        # Lock the device's live rows so concurrent claimers serialise; the UPDATE below is a new
        # statement and so sees whatever the previous lock holder committed.
        lock = select(Job.id).where(Job.device == device, Job.status.in_(("queued", *ACTIVE)))
        session.execute(_owned(lock, "local", owner).order_by(Job.id).with_for_update()).all()
    other = aliased(Job)
    running = (
        select(func.count())
        .select_from(other)
        .where(other.device == device, other.status.in_(ACTIVE), other.executor == "local")
    )
    if owner is not None:
        running = running.where(or_(other.owner == owner, other.owner.is_(None)))
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued", running.scalar_subquery() < limit)
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
    external_state: str | None = None,
) -> bool:
    """Move a job to a terminal status if it is still in one of `from_status`; True if it moved."""
    if status not in TERMINAL:
        raise ValueError(f"terminal status must be one of {TERMINAL}, got {status!r}")
    values: dict = {"status": status, "message": message, "finished_at": _now()}
    if progress is not None:
        values["progress"] = progress
    if external_state is not None:
        values["external_state"] = external_state[:32]
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(list(from_status)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1
