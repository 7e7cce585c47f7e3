"""Background jobs: long work (train, generate, evaluate, segment) as separate processes.

A job is a row in the `jobs` table (db/models.py) plus a process ``python -m synthct.jobs <id>``
started in its own session (so its process group holds every child it spawns). That wrapper runs
the job's argv through the synthct CLI in-process, with stdout and stderr in WS/jobs/<id>.log, and
records the outcome itself: done, failed (with the error) or, after `cancel`, cancelled.

Scheduling has no daemon: `pump(ws)` starts queued jobs while capacity allows (one job per GPU,
`SYNTHCT_MAX_CPU_JOBS` CPU jobs, default 1) and is called by the app on each refresh, by
`submit`, by `cancel` and by every job wrapper when it exits, so the queue advances by itself.
The start is a conditional UPDATE (db/jobs.claim_job), so concurrent pumps never over-start.

`reconcile(session)` repairs the table after crashes or restarts: a `running` job whose process
is gone, or whose pid now belongs to someone else, becomes `failed` (with the exit status when
this process is the parent), so nothing stays `running` forever.

Inside a job, commands report progress with one line::

    progress = job_progress_callback()   # a no-op outside a job
    progress(0.4, "step 400/1000")       # throttled writes to the job row

Hand-written because the pieces are small and specific: subprocess + process groups + a table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from db import jobs as repo
from db.models import Base, Job
from db.session import ENV_DATABASE_URL, database_url, make_engine, session_scope
from synthct.errors import ConfigError, SynthctError, WorkspaceError
from synthct.workspace import ENV_WORKSPACE, Workspace

ENV_JOB_ID = "SYNTHCT_JOB_ID"
ENV_MAX_CPU_JOBS = "SYNTHCT_MAX_CPU_JOBS"
GPU_JOBS_PER_DEVICE = 1
START_GRACE_S = 60.0  # a claimed job without a pid after this long never started
CANCEL_GRACE_S = 5.0

Progress = Callable[[float, str], None]

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()
_children: dict[int, subprocess.Popen] = {}  # job id -> process this interpreter started


# -- database -------------------------------------------------------------------------------------
def jobs_dir(ws: Workspace) -> Path:
    return ws.root / "jobs"


def engine_for_url(url: str) -> Engine:
    """One engine per URL per process, with the schema created on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = make_engine(url)
            try:
                from db.session import init_db  # type: ignore[attr-defined]
            except ImportError:
                Base.metadata.create_all(engine)
            else:
                init_db(engine)
            _engines[url] = engine
        return engine


def engine_for(ws: Workspace) -> Engine:
    """The workspace database ($SYNTHCT_DATABASE_URL, else WS/synthct.db)."""
    return engine_for_url(database_url(ws.database))


# -- public API -----------------------------------------------------------------------------------
def resolve_job_device(device: str = "auto") -> str:
    """ "auto" -> "cuda:0" when a GPU is visible, else "cpu"; "cuda" -> "cuda:0"."""
    if device == "auto":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ConfigError(f"job device {device!r} is not valid; expected auto, cpu, cuda or cuda:N")


def submit(
    ws: Workspace, kind: str, args: list[str], device: str = "auto", start: bool = True
) -> int:
    """Queue `python -m synthct <args>` as a job of `kind` on `device`; returns the job id.

    With `start` the scheduler runs at once, so the job starts now if its device is free.
    """
    if not kind or len(kind) > 32 or not all(c.isalnum() or c in "-_" for c in kind):
        raise ConfigError(f"job kind {kind!r} is not valid: use up to 32 letters, digits, - or _")
    if not args or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"job arguments must be a non-empty list of strings, got {args!r}")
    dev = resolve_job_device(device)
    jobs_dir(ws).mkdir(parents=True, exist_ok=True)
    with session_scope(engine_for(ws)) as s:
        job = repo.create_job(s, kind, args, dev)
        job_id = job.id
        repo.set_log_path(s, job_id, str(jobs_dir(ws) / f"{job_id}.log"))
    if start:
        pump(ws)
    return job_id


def list_jobs(ws: Workspace, status: str | None = None, limit: int | None = 200) -> list[Job]:
    """Jobs newest first (detached rows: read their attributes freely)."""
    with session_scope(engine_for(ws)) as s:
        return repo.list_jobs(s, status, limit)


def get_job(ws: Workspace, job_id: int) -> Job:
    with session_scope(engine_for(ws)) as s:
        job = repo.get_job(s, job_id)
    if job is None:
        raise WorkspaceError(f"job {job_id} does not exist in {database_url(ws.database)}")
    return job


def tail_log(job: Job, n: int = 50) -> str:
    """The last `n` lines of the job's log ("" before it has written anything)."""
    if not job.log_path:
        return ""
    path = Path(job.log_path)
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= n:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:]) if n > 0 else ""


def cancel(ws: Workspace, job_id: int, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Cancel a queued job, or end a running job's whole process group (SIGTERM, then SIGKILL)."""
    engine = engine_for(ws)
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise WorkspaceError(f"job {job_id} does not exist")
        if job.status not in ("queued", "running"):
            raise WorkspaceError(f"job {job_id} is already {job.status}; nothing to cancel")
        moved = repo.finish_job(
            s, job_id, "cancelled", "cancelled by user", from_status=("queued", "running")
        )
        pid = job.pid
    if moved and pid:
        _terminate_group(job_id, pid, grace_s)
    pump(ws)
    return get_job(ws, job_id)


def reconcile(session: Session) -> list[int]:
    """Fail `running` jobs whose process is gone or not ours; returns the ids changed."""
    changed = []
    now = datetime.now(UTC)
    exited: dict[int, tuple[int, int]] = {}
    for job_id, proc in list(_children.items()):  # reap our children; keep their exit status
        rc = proc.poll()
        if rc is not None:
            exited[job_id] = (proc.pid, rc)
            _children.pop(job_id, None)
    for job in repo.running_jobs(session):
        if job.id in exited:
            pid, rc = exited[job.id]
            why = f"killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
            msg = f"process {pid} {why} without reporting a result"
        elif job.id in _children:
            continue
        elif job.pid is None:
            started = job.started_at or job.created_at
            if started.tzinfo is None:
                started = started.replace(tzinfo=UTC)
            if (now - started).total_seconds() < START_GRACE_S:
                continue
            msg = "process never started"
        elif _alive(job.pid) and _is_job_process(job.pid, job.id):
            continue
        else:
            msg = f"process {job.pid} is no longer running (found by reconcile)"
        if repo.finish_job(session, job.id, "failed", msg):
            changed.append(job.id)
            if job.pid and not _alive(job.pid):
                _kill_group(job.pid, signal.SIGKILL)  # orphans left in the dead leader's group
    return changed


def pump(ws: Workspace, max_cpu_jobs: int | None = None) -> list[int]:
    """Reconcile, then start queued jobs (FIFO) while their device has capacity; returns started ids."""
    if max_cpu_jobs is None:
        raw = os.environ.get(ENV_MAX_CPU_JOBS, "1")
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"${ENV_MAX_CPU_JOBS}={raw!r}: expected a positive integer")
        max_cpu_jobs = int(raw)
    engine = engine_for(ws)
    with session_scope(engine) as s:
        reconcile(s)
    with session_scope(engine) as s:
        queued = [(j.id, j.device) for j in repo.queued_jobs(s)]
    started = []
    full: set[str] = set()
    for job_id, device in queued:
        if device in full:
            continue
        limit = GPU_JOBS_PER_DEVICE if device.startswith("cuda") else max_cpu_jobs
        if _claim(engine, job_id, device, limit):
            _spawn(ws, engine, job_id)
            started.append(job_id)
        else:
            full.add(device)  # keep FIFO per device: later jobs wait behind this one
    return started


def _claim(engine: Engine, job_id: int, device: str, limit: int) -> bool:
    for attempt in range(5):
        try:
            with session_scope(engine) as s:
                return repo.claim_job(s, job_id, device, limit)
        except OperationalError:  # SQLite busy/snapshot conflict: another pump won the race
            time.sleep(0.05 * (attempt + 1))
    return False


def _child_env(ws: Workspace, job_id: int, device: str) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_JOB_ID] = str(job_id)
    env[ENV_DATABASE_URL] = database_url(ws.database)
    env[ENV_WORKSPACE] = str(ws.root)
    env["PYTHONUNBUFFERED"] = "1"
    if device.startswith("cuda:"):
        index = int(device[5:])
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job must not take GPU memory
    return env


def _spawn(ws: Workspace, engine: Engine, job_id: int) -> None:
    log = jobs_dir(ws) / f"{job_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with session_scope(engine) as s:
        device = repo.get_job(s, job_id).device
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "synthct.jobs", str(job_id)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_child_env(ws, job_id, device),
            )
    except OSError as e:
        with session_scope(engine) as s:
            repo.finish_job(s, job_id, "failed", f"could not start the process: {e}")
        return
    _children[job_id] = proc
    with session_scope(engine) as s:
        ok = repo.set_pid(s, job_id, proc.pid)
        status = repo.get_job(s, job_id).status
    if not ok and status == "cancelled":  # cancelled between claim and start
        _terminate_group(job_id, proc.pid, CANCEL_GRACE_S)


# -- processes ------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) from /proc, or None if the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def _alive(pid: int) -> bool:
    """True for a live (non-zombie) process."""
    if Path("/proc").is_dir():
        st = _proc_stat(pid)
        return st is not None and st[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_job_process(pid: int, job_id: int) -> bool:
    """The pid still runs *this* job (not a reused pid): its environment names the job."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc or not readable: trust the pid
        return _alive(pid)
    return f"{ENV_JOB_ID}={job_id}".encode() in env.split(b"\0")


def _group_alive(pgid: int) -> bool:
    """Any live (non-zombie) member of process group `pgid`?"""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                return True
    return False


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _terminate_group(job_id: int, pgid: int, grace_s: float) -> None:
    """SIGTERM the job's process group, SIGKILL whatever is left after `grace_s` seconds."""
    _kill_group(pgid, signal.SIGTERM)
    proc = _children.get(job_id)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()  # reap our child so it does not linger as a zombie
        if not _group_alive(pgid):
            break
        time.sleep(0.05)
    else:
        _kill_group(pgid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2)
        _children.pop(job_id, None)


# -- inside a job ---------------------------------------------------------------------------------
def current_job_id() -> int | None:
    raw = os.environ.get(ENV_JOB_ID, "")
    return int(raw) if raw.isdigit() else None


def job_progress_callback(min_interval: float = 0.5) -> Progress:
    """A `progress(fraction, message)` that writes into this job's row (no-op outside a job).

    Writes are throttled to one per `min_interval` seconds (the final 1.0 always goes through);
    a database error only warns, it never stops the work.
    """
    job_id = current_job_id()
    if job_id is None:
        return lambda fraction, message="": None
    engine = engine_for_url(database_url())
    last = [float("-inf")]

    def progress(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - last[0] < min_interval:
            return
        last[0] = now
        try:
            with session_scope(engine) as s:
                repo.set_progress(s, job_id, fraction, message[:500])
        except SQLAlchemyError as e:
            warnings.warn(f"job {job_id}: could not record progress ({e})", stacklevel=2)

    return progress


def set_job_result(location: str | os.PathLike) -> None:
    """Record where this job's result lives (no-op outside a job)."""
    job_id = current_job_id()
    if job_id is None:
        return
    with session_scope(engine_for_url(database_url())) as s:
        repo.set_result(s, job_id, str(location))


class _Terminated(BaseException):
    """Raised in the job wrapper by SIGTERM, so `finally`/atomic_dir clean-ups run."""


def _on_sigterm(_signum, _frame) -> None:
    raise _Terminated()


def run_job(job_id: int) -> int:
    """The job wrapper (``python -m synthct.jobs <id>``): run the argv, record the outcome, pump."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    ws = Workspace.resolve()
    engine = engine_for_url(database_url(ws.database))
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
    if job is None or job.status != "running":
        print(f"job {job_id}: not running ({job.status if job else 'missing'}); exiting")
        return 1
    print(
        f"[{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC] job {job_id} ({job.kind}, {job.device}): "
        f"synthct {' '.join(job.args)}",
        flush=True,
    )
    status, message, code = "done", "done", 0
    try:
        from synthct.cli import app

        app(args=list(job.args), prog_name="synthct", standalone_mode=False)
    except _Terminated:
        status, message, code = "failed", "terminated by SIGTERM", 143
    except SynthctError as e:
        print(f"error: {e}", file=sys.stderr)
        status, message, code = "failed", f"error: {e}", 2
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            status, message = "failed", f"exited with status {code}"
    except KeyboardInterrupt:
        status, message, code = "failed", "interrupted", 130
    except BaseException as e:  # noqa: BLE001 - any crash must end up in the row and the log
        import click

        if isinstance(e, click.exceptions.Exit):
            code = e.exit_code
            status, message = ("done", "done") if code == 0 else ("failed", f"exited with {code}")
        elif isinstance(e, click.ClickException):
            e.show()
            status, message, code = "failed", f"usage error: {e.format_message()}", 2
        else:
            traceback.print_exc()
            status, message, code = "failed", f"{type(e).__name__}: {e}"[:500], 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with session_scope(engine) as s:
        repo.finish_job(s, job_id, status, message, progress=1.0 if status == "done" else None)
    print(
        f"[{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC] job {job_id}: {status} ({message})",
        flush=True,
    )
    try:
        pump(ws)
    except Exception as e:  # noqa: BLE001 - the job's own result is already recorded
        print(f"could not start queued jobs: {e}", file=sys.stderr)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: python -m synthct.jobs <job id>", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_job(int(sys.argv[1])))
