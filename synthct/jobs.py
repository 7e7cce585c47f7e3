"""Background jobs: long work (train, generate, evaluate, segment) as separate processes.

A job is a row in the `jobs` table (db/models.py) plus a process ``python -m synthct.job_runner <id>``
started in its own session (so its process group holds every child it spawns). That wrapper runs
the job's argv through the synthct CLI in-process, with stdout and stderr in WS/jobs/<id>.log, and
records the outcome itself: done, failed (with the error) or, after `cancel`, cancelled.

Cancelling a running job is a request, not a kill: the row becomes `cancelling` and the job's
process gets SIGTERM. Training stops at its next step boundary, writes a checkpoint and records
`cancelled` (resume it with `synthct train --run R --resume`); other commands stop at once and
remove their partial output. A job that has not ended `SYNTHCT_CANCEL_TIMEOUT_S` seconds (default
300) after the request is killed by its own watchdog, and a second cancel kills it at once.

Nothing secret reaches a log, a row or the screen: the wrapper's output, every message and
every database URL shown pass through `synthct.redact`.

Scheduling has no daemon: `pump(ws)` starts queued jobs while capacity allows (one job per GPU,
`SYNTHCT_MAX_CPU_JOBS` CPU jobs, default 1) and is called by the app on each refresh, by
`submit`, by `cancel` and by every job wrapper when it exits, so the queue advances by itself.
The start is a conditional UPDATE (db/jobs.claim_job), so concurrent pumps never over-start.

`reconcile(session)` repairs the table after crashes or restarts, asking the executor that owns
each job: a local `running` job *of this host* whose process is gone, or whose pid now belongs
to someone else, becomes `failed` (with the exit status when this process is the parent; a
`cancelling` one becomes `cancelled`), so nothing stays `running` forever; jobs of other hosts
sharing the database are never touched (their pids mean nothing here). SLURM jobs of this
machine's cluster take SLURM's state (`synthct.executors.slurm`). `pump` then removes the
partial folders such dead processes left in the workspace.

Executors: `submit(..., executor=settings)` with `settings.kind == "slurm"` hands the job to
SLURM (`synthct.executors.slurm`, through submitit) instead of this machine's queue; every other
function here works on both.

Inside a job, commands report progress with one line::

    progress = job_progress_callback()   # a no-op outside a job
    progress(0.4, "step 400/1000")       # throttled writes to the job row

Hand-written because the pieces are small and specific: subprocess + process groups + a table.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from db import jobs as repo
from db.models import Job
from db.session import ENV_DATABASE_URL, database_url, engine_for_url, session_scope
from synthct.errors import (
    ConfigError,
    WorkspaceError,
)
from synthct.executors import slurm
from synthct.executors.records import (
    ENV_JOB_ID,
    _shown,
    check_job_request,
    engine_for,
    get_job,
)
from synthct.redact import redact
from synthct.stopping import Terminated
from synthct.workspace import ENV_WORKSPACE, Workspace

if typing.TYPE_CHECKING:
    from synthct.executors.settings import ExecutorSettings

ENV_MAX_CPU_JOBS = "SYNTHCT_MAX_CPU_JOBS"
ENV_CANCEL_TIMEOUT = "SYNTHCT_CANCEL_TIMEOUT_S"
GPU_JOBS_PER_DEVICE = 1
START_GRACE_S = 60.0  # a claimed job without a pid after this long never started
CANCEL_GRACE_S = 5.0  # how long `cancel` waits for the job to end before it returns
CANCEL_TIMEOUT_S = 300.0  # a cancelled job still alive this long after the request is killed

Progress = Callable[[float, str], None]

_children: dict[int, subprocess.Popen] = {}  # job id -> process this interpreter started


# -- database -------------------------------------------------------------------------------------
def jobs_dir(ws: Workspace) -> Path:
    return ws.jobs


# -- public API -----------------------------------------------------------------------------------
def resolve_job_device(device: str = "auto") -> str:
    """ "auto" -> "cuda:0" when a GPU is visible, else "cpu"; "cuda" -> "cuda:0"."""
    if device == "auto":
        import torch  # deferred: loads torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return "cuda:0"
    if device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ConfigError(f"job device {device!r} is not valid; expected auto, cpu, cuda or cuda:N")


@functools.cache
def host_name() -> str:
    """This machine's name: the owner of the local jobs it submits."""
    return socket.gethostname()


def submit(
    ws: Workspace,
    kind: str,
    args: list[str],
    device: str = "auto",
    start: bool = True,
    executor: ExecutorSettings | None = None,
) -> int:
    """Queue `python -m synthct <args>` as a job of `kind`; returns the job id.

    Local (default): on `device` of this machine; with `start` the scheduler runs at once, so
    the job starts now if its device is free. SLURM (`executor.kind == "slurm"`): submitted to
    the cluster with the executor's resources (`device` is then "cuda" when it asks for GPUs).
    """
    check_job_request(kind, args)
    if executor is not None and executor.kind == "slurm":
        return slurm.submit(ws, kind, args, executor)[0]
    dev = resolve_job_device(device)
    jobs_dir(ws).mkdir(parents=True, exist_ok=True)
    with session_scope(engine_for(ws)) as s:
        job = repo.create_job(s, kind, args, dev, owner=host_name())
        job_id = job.id
        repo.set_log_path(s, job_id, str(ws.job_log(job_id)))
    if start:
        pump(ws)
    return job_id


def wait(ws: Workspace, job_id: int, timeout: float | None = None, poll_s: float = 2.0) -> Job:
    """Wait until a job has ended (reconciling the table meanwhile); returns its row.

    Raises TimeoutError after `timeout` seconds with the job still waiting or running."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pump(ws)
        job = get_job(ws, job_id)
        if job.status in repo.TERMINAL:
            return job
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} is still {job.status} after {timeout:g} s")
        time.sleep(poll_s)


def list_jobs(ws: Workspace, status: str | None = None, limit: int | None = 200) -> list[Job]:
    """Jobs newest first (detached rows, credentials masked: read their attributes freely)."""
    with session_scope(engine_for(ws)) as s:
        rows = repo.list_jobs(s, status, limit)
        s.expunge_all()
    return [_shown(j) for j in rows]


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
    return redact("\n".join(lines[-n:])) if n > 0 else ""


def cancel(ws: Workspace, job_id: int, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Cancel a job; returns its row after waiting up to `grace_s` seconds for it to end.

    queued: cancelled at once (it never starts). running: becomes `cancelling` and its process
    gets SIGTERM — training writes a checkpoint at its next step boundary, other commands stop
    at once — and it records `cancelled` itself; if it has not ended after
    $SYNTHCT_CANCEL_TIMEOUT_S (default 300 s) its watchdog kills it. cancelling (a second
    cancel): its whole process group is killed now and the job recorded as cancelled.
    """
    engine = engine_for(ws)
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
        executor = job.executor if job is not None else None
    if executor == "slurm":
        return slurm.cancel(ws, job_id, grace_s=grace_s)
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise WorkspaceError(f"job {job_id} does not exist")
        if job.owner not in (None, host_name()) and job.status not in repo.TERMINAL:
            raise WorkspaceError(
                f"job {job_id} runs on host {job.owner}, not on {host_name()}: cancel it there"
            )
        status, pid = job.status, job.pid
        if status == "queued" or (status == "running" and pid is None):
            # not started (or claimed but not yet spawned: _spawn ends it when it sees this)
            repo.finish_job(s, job_id, "cancelled", "cancelled by user", ("queued", "running"))
            status = "done-now"
        elif status == "running":
            repo.request_cancel(s, job_id)
        elif status != "cancelling":
            raise WorkspaceError(f"job {job_id} is already {status}; nothing to cancel")
    if status == "running":
        if _alive(pid) and _is_job_process(pid, job_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)  # the wrapper; it stops its own children
        _wait_for_exit(job_id, pid, grace_s)
    elif status == "cancelling":
        if pid:
            _kill_group(pid, signal.SIGKILL)
            _wait_for_exit(job_id, pid, 2.0)
        with session_scope(engine) as s:
            repo.finish_job(s, job_id, "cancelled", "cancelled by user (killed)", ("cancelling",))
    pump(ws)
    return get_job(ws, job_id)


def _wait_for_exit(job_id: int, pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for the job's leader to exit (reaping it when it is our child);
    then kill any process it left in its group. True when it exited."""
    proc = _children.get(job_id)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if proc is not None:
            proc.poll()
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    if _group_alive(pid):
        _kill_group(pid, signal.SIGKILL)  # its orphans (e.g. children it did not stop)
    return True


def reconcile(session: Session) -> list[int]:
    """Ask each job's executor what became of it; returns the ids changed.

    Local jobs of this host whose process is gone or not ours: `running` ones become failed,
    `cancelling` ones cancelled. SLURM jobs of this machine's cluster: SLURM's state."""
    changed = reconcile_local(session)
    if repo.needs_scheduler(session, "slurm"):
        changed += slurm.reconcile(session)
    return changed


def reconcile_local(session: Session) -> list[int]:
    """End this host's local jobs whose process is gone or not ours (see `reconcile`)."""
    changed = []
    now = datetime.now(UTC)
    exited: dict[int, tuple[int, int]] = {}
    for job_id, proc in list(_children.items()):  # reap our children; keep their exit status
        rc = proc.poll()
        if rc is not None:
            exited[job_id] = (proc.pid, rc)
            _children.pop(job_id, None)
    for job in repo.running_jobs(session, executor="local", owner=host_name()):
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
        if job.status == "cancelling":
            moved = repo.finish_job(
                session, job.id, "cancelled", f"cancelled by user; {msg}", ("cancelling",)
            )
        else:
            moved = repo.finish_job(session, job.id, "failed", msg)
        if moved:
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
    ws.remove_stale_partials()  # what killed writers left behind (live writers' work is kept)
    with session_scope(engine) as s:
        queued = [(j.id, j.device) for j in repo.queued_jobs(s, owner=host_name())]
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
                return repo.claim_job(s, job_id, device, limit, owner=host_name())
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
    log = ws.job_log(job_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with session_scope(engine) as s:
        device = repo.get_job(s, job_id).device
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "synthct.job_runner", str(job_id)],
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
    if not ok and status in ("cancelled", "cancelling"):  # cancelled between claim and start
        _terminate_group(job_id, proc.pid, CANCEL_GRACE_S)
        with session_scope(engine) as s:
            repo.finish_job(s, job_id, "cancelled", "cancelled by user", ("cancelling",))


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
                repo.set_progress(s, job_id, fraction, redact(message)[:500])
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


_Terminated = Terminated  # raised in the job wrapper by SIGTERM, so clean-ups run


def cancel_timeout_s() -> float:
    raw = os.environ.get(ENV_CANCEL_TIMEOUT, "")
    try:
        value = float(raw) if raw else CANCEL_TIMEOUT_S
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${ENV_CANCEL_TIMEOUT}={raw!r}: expected a positive number of seconds")
    return value


class _Watchdog:
    """Kills the job's whole process group if it has not ended `timeout` s after the first
    stop request (a step or a clean-up that hangs must not hold the device forever)."""

    def __init__(self, engine: Engine, job_id: int) -> None:
        self.engine, self.job_id, self.timer = engine, job_id, None
        try:
            self.timeout = cancel_timeout_s()
        except ConfigError as e:
            print(f"warning: {e}; using {CANCEL_TIMEOUT_S:g} s", file=sys.stderr)
            self.timeout = CANCEL_TIMEOUT_S

    def arm(self, _signum: int = signal.SIGTERM) -> None:
        if self.timer is None:
            self.timer = threading.Timer(self.timeout, self._kill)
            self.timer.daemon = True
            self.timer.start()

    def _kill(self) -> None:
        why = f"killed: still running {self.timeout:g} s after it was asked to stop"
        with contextlib.suppress(Exception):
            with session_scope(self.engine) as s:
                if not repo.finish_job(
                    s, self.job_id, "cancelled", f"cancelled by user; {why}", ("cancelling",)
                ):
                    repo.finish_job(s, self.job_id, "failed", f"terminated by SIGTERM; {why}")
            print(f"job {self.job_id}: {why}", flush=True)
        os.killpg(os.getpgrp(), signal.SIGKILL)
