"""What runs on the compute nodes: one SLURM task of a synthct job (`SlurmTask`, pickled by
submitit and called by `python -m submitit.core._submit` under `srun`).

- **Rendezvous.** With several tasks (`--nodes N`, tasks per node), every task exports the
  torch.distributed environment from SLURM's (MASTER_ADDR = the first node, a port derived from
  the job id and attempt, RANK, WORLD_SIZE, LOCAL_RANK), so `synthct train` runs DDP across the
  nodes exactly as under torchrun. Only rank 0 writes to the jobs table.
- **Time limit.** SLURM sends USR2 `signal_delay_s` before the time limit (`--signal`, give or
  take its scheduling resolution), and the task also arms its own timer from the time left
  (squeue %L), whichever comes first. USR2 becomes a stop request (`synthct.stopping`): training
  finishes its step, writes a checkpoint and stops; work without such a safe point stops at
  once. Rank 0 then marks the row `pending` and requeues the job (`scontrol requeue`); the
  next attempt of a `train` job runs with `--resume`, so training continues exactly from the
  checkpoint. After `max_requeues` attempts the job is left `timeout`. A USR2 far earlier than
  the time limit (more than a minute before the signal is due) is ignored: SLURM may send the
  signal again right after a requeued job starts.
- **SIGTERM** (scancel, preemption, a node shutting down, the time limit itself): training
  stops at its next step with a checkpoint. When synthct asked for the cancel the row becomes
  `cancelled`; otherwise SLURM knows why, and `reconcile` records its state (a preempted job
  that SLURM requeues resumes like a timed-out one).

submitit's own handlers (USR2: checkpoint inside the handler and requeue; SIGTERM: ignore) are
replaced here because a training step must not be cut in half.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from datetime import UTC, datetime
from types import FrameType

from db import jobs as repo
from db.session import ENV_DATABASE_URL, database_url, engine_for_url, session_scope
from synthct.errors import ConfigError
from synthct.executors.records import ENV_JOB_ID, _RedactingStream
from synthct.executors.slurm_commands import time_left_s
from synthct.stopping import Terminated, add_stop_listener, request_stop
from synthct.workspace import ENV_WORKSPACE

EARLY_SIGNAL_TOLERANCE_S = 60.0  # SLURM may send --signal up to a minute before it is due


@dataclasses.dataclass
class SlurmTask:
    """One synthct job as a SLURM job: the jobs-table id and `synthct <args>`."""

    job_id: int
    args: list[str]
    workspace: str
    database_url: str | None = None  # None: $SYNTHCT_DATABASE_URL from the submitting shell
    signal_delay_s: int = 120
    max_requeues: int = 20

    def __call__(self) -> int:
        return run_task(self)


def _env_int(name: str, default: int = 0) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.lstrip("-").isdigit() else default


def slurm_job_id() -> str:
    """This job's SLURM id as sacct/scancel name it ("1234", array task "1234_5")."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")


def attempt_args(args: list[str], restarts: int) -> list[str]:
    """The argv of this attempt: a requeued `train` job resumes its run from the checkpoint."""
    if restarts > 0 and args and args[0] == "train" and "--resume" not in args:
        return [*args, "--resume"]
    return list(args)


def export_rendezvous(restarts: int) -> None:
    """torch.distributed's env:// variables from SLURM's, identical on every task."""
    from submitit.helpers import TorchDistributedEnvironment  # deferred: loads submitit

    seed = zlib.crc32(f"{slurm_job_id()}:{restarts}".encode())
    os.environ["MASTER_PORT"] = str(20000 + seed % 40000)
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


class StopSignals:
    """USR2 (time limit) and SIGTERM handlers, the own deadline timer, and the first stop
    signal seen (`signum`), whether it arrived here or inside training's `StopRequest`."""

    def __init__(self, signal_delay_s: int, time_left_s: float | None) -> None:
        self.signum: int | None = None
        self.delay = signal_delay_s
        self.deadline = None if time_left_s is None else time.monotonic() + time_left_s
        self.timer: threading.Timer | None = None
        add_stop_listener(self.note)
        signal.signal(signal.SIGUSR2, self.on_usr2)
        signal.signal(signal.SIGTERM, self.on_term)
        if time_left_s is not None:
            self.timer = threading.Timer(max(0.0, time_left_s - signal_delay_s), self.fire)
            self.timer.daemon = True
            self.timer.start()

    def fire(self) -> None:
        print(f"{self.delay} s before the time limit: stopping", flush=True)
        os.kill(os.getpid(), signal.SIGUSR2)

    def note(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum

    def on_usr2(self, signum: int, _frame: FrameType | None) -> None:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left > self.delay + EARLY_SIGNAL_TOLERANCE_S:
                print(f"ignoring SIGUSR2: {left:.0f} s left before the time limit", flush=True)
                return
        self.note(signum)
        if not request_stop(signum):  # no safe point to reach: stop now
            raise Terminated()

    def on_term(self, signum: int, _frame: FrameType | None) -> None:
        self.note(signum)
        raise Terminated()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a requeue or scancel may follow at once


def _stamp() -> str:
    return f"[{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC]"


def _runner():
    """The shell's `synthct.job_runner.run_argv`, found by name: the task runs the
    command line exactly as a local job does, and the library never imports the CLI."""
    module, name = "synthct.job_runner", "run_argv"
    return getattr(importlib.import_module(module), name)


def run_task(task: SlurmTask) -> int:
    """Run the job's argv in this task; rank 0 records the outcome and requeues on a time limit."""

    rank, world = _env_int("SLURM_PROCID"), _env_int("SLURM_NTASKS", 1)
    restarts = _env_int("SLURM_RESTART_COUNT")
    external = slurm_job_id()
    os.environ[ENV_WORKSPACE] = task.workspace
    if task.database_url:
        os.environ[ENV_DATABASE_URL] = task.database_url
    elif not os.environ.get(ENV_DATABASE_URL):
        raise ConfigError(
            f"job {task.job_id}: no database: ${ENV_DATABASE_URL} is not set in the job's "
            "environment (sbatch exports the submitting shell's; check --export)"
        )
    if world > 1:
        export_rendezvous(restarts)
    lead = rank == 0
    if lead:
        os.environ[ENV_JOB_ID] = str(task.job_id)  # progress and result go to the row
    else:
        os.environ.pop(ENV_JOB_ID, None)
    sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)
    engine = engine_for_url(database_url())
    stops = StopSignals(task.signal_delay_s, time_left_s(external))
    attempt = f", attempt {restarts + 1}" if restarts else ""
    if lead and not _mark_running(engine, task.job_id, external, world, attempt):
        return 0
    if not lead and _ended(engine, task.job_id):  # rank 0 will not run it: neither do we
        return 0
    args = attempt_args(task.args, restarts)
    print(f"{_stamp()} job {task.job_id} (SLURM {external}{attempt}, rank {rank}/{world}): "
          f"synthct {' '.join(args)}", flush=True)  # fmt: skip
    status, message, code = _runner()(args)
    stops.disarm()
    if lead:
        status, message = _record(engine, task, stops.signum, status, message, restarts, external)
        print(f"{_stamp()} job {task.job_id}: {status} ({message})", flush=True)
    if code not in (0, 130, 143) or (lead and status == "failed"):
        raise SystemExit(code or 1)  # SLURM records FAILED, as the row does
    return 0


def _mark_running(engine, job_id: int, external: str, world: int, attempt: str) -> bool:
    """pending -> running; False (do not run) when the row has already ended."""
    nodes = os.environ.get("SLURM_JOB_NODELIST", "?")
    message = f"running on {nodes} ({world} task{'s' if world > 1 else ''}{attempt})"
    with session_scope(engine) as s:
        moved = repo.set_state(s, job_id, "running", message, ("pending",), "RUNNING")
        job = repo.get_job(s, job_id)
        status = job.status if job else "missing"
    if not moved and status not in repo.ACTIVE:
        print(f"job {job_id} is {status} in the jobs table; not running it", flush=True)
        return False
    return True


def _ended(engine, job_id: int) -> bool:
    """Has the row ended (or gone)? Then rank 0 does not run the work and the other tasks of
    the job must not wait for it in the rendezvous."""
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
        return job is None or job.status in repo.TERMINAL


def _record(engine, task, signum, status, message, restarts, external) -> tuple[str, str]:
    """Write the attempt's outcome; requeue after a time-limit stop. Returns (status, message)."""
    job_id = task.job_id
    with session_scope(engine) as s:
        row = repo.get_job(s, job_id)
        cancel_requested = row is not None and row.status == "cancelling"
    if status == "done" or (signum is None and status in ("failed", "cancelled")):
        _finish(engine, job_id, status, message)
        return status, message
    if cancel_requested:
        _finish(engine, job_id, "cancelled", f"cancelled by user; {message}")
        return "cancelled", message
    if signum == signal.SIGUSR2:
        if restarts >= task.max_requeues:
            why = f"time limit reached after {restarts} requeues (max_requeues); {message}"
            _finish(engine, job_id, "timeout", why)
            return "timeout", why
        why = f"requeued before its time limit (SIGUSR2): {message}"
        with session_scope(engine) as s:
            repo.set_state(s, job_id, "pending", why[:1000], repo.ACTIVE, "REQUEUED",
                           requeued=True)  # fmt: skip
        try:
            subprocess.run(["scontrol", "requeue", external], check=True, timeout=60,
                           capture_output=True, text=True)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as e:
            err = getattr(e, "stderr", "") or str(e)
            _finish(engine, job_id, "failed", f"could not requeue: {err.strip()}", ("pending",))
            return "failed", err
        return "pending", why
    # SIGTERM that synthct did not send: scancel, preemption or the time limit; SLURM's state
    # (reconcile) says which, so the row keeps its status and says what the work kept.
    with session_scope(engine) as s:
        repo.set_message(s, job_id, f"stopped by SLURM (SIGTERM): {message}"[:1000])
    return "stopped", message


def _finish(engine, job_id: int, status: str, message: str, from_status=repo.ACTIVE) -> None:
    with session_scope(engine) as s:
        repo.finish_job(s, job_id, status, message[:1000], from_status,
                        progress=1.0 if status == "done" else None)  # fmt: skip
