"""The job rows as every executor sees them: the database of a workspace, one row read back
safely, the request check, and the log stream that masks credentials.

Shared by the local queue (`synthct.jobs`) and the SLURM executor (`synthct.executors.slurm`,
`slurm_task`), below both, so neither imports the other to reach a row.
"""

from __future__ import annotations

import io

from sqlalchemy import Engine

from db import jobs as repo
from db.models import Job
from db.session import database_url, session_scope
from db.session import engine_for as database_engine_for
from synthct.errors import ConfigError, WorkspaceError
from synthct.redact import redact, redact_url
from synthct.workspace import Workspace

ENV_JOB_ID = "SYNTHCT_JOB_ID"  # set in a job's process: progress and result go to its row


def engine_for(ws: Workspace) -> Engine:
    """The workspace database ($SYNTHCT_DATABASE_URL, else WS/synthct.db)."""
    return database_engine_for(ws.database)


def check_job_request(kind: str, args: list[str]) -> None:
    if not kind or len(kind) > 32 or not all(c.isalnum() or c in "-_" for c in kind):
        raise ConfigError(f"job kind {kind!r} is not valid: use up to 32 letters, digits, - or _")
    if not args or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"job arguments must be a non-empty list of strings, got {args!r}")


def _shown(job: Job) -> Job:
    """A detached row made safe to show: credentials in its message and argv masked."""
    job.message = redact(job.message or "")
    job.args = [redact(str(a)) for a in (job.args or [])]
    return job


def get_job(ws: Workspace, job_id: int) -> Job:
    """One job (a detached row, credentials masked); WorkspaceError if it does not exist."""
    with session_scope(engine_for(ws)) as s:
        job = repo.get_job(s, job_id)
        if job is not None:
            s.expunge(job)
    if job is None:
        where = redact_url(database_url(ws.database))
        raise WorkspaceError(f"job {job_id} does not exist in {where}")
    return _shown(job)


class _RedactingStream(io.TextIOBase):
    """The job's stdout/stderr: everything written to its log passes through `redact`."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.raw, "errors", None)
