"""SLURM executor: background jobs submitted to a SLURM cluster with submitit.

submitit (the de-facto Python submitter for SLURM) writes the sbatch script from the executor
settings (partition, account, qos, time, nodes, tasks and GPUs per node, CPUs, memory, the
time-limit signal), pickles the call — a `SlurmTask` holding the job's `synthct` argv — into
WS/jobs/slurm/ and submits it; the job's output goes to WS/jobs/slurm/<id>_<task>_log.out,
which `synthct jobs tail` reads. The workspace (and that folder) must be on a file system the
compute nodes share, and the nodes need the same synthct installation (`settings.python`, or
`settings.setup` lines that activate it).

The jobs table mirrors SLURM: `reconcile` reads `sacct` (falling back to `squeue` without
accounting) for the live SLURM jobs *of this machine's cluster* — the row's `owner` — and maps
SLURM's state onto the row (STATE_MAP): pending, running, done, failed, cancelled, timeout,
node_fail; SLURM's own word stays in `external_state`. The task itself records when it starts,
its progress, its result and how it ended; reconcile fills in what only SLURM knows (a job
killed at its time limit, cancelled with scancel, lost with its node, requeued).

`cancel` is `scancel`: a pending job is cancelled at once; a running one is marked `cancelling`
and gets SLURM's SIGTERM (training writes a checkpoint at its next step boundary, within
SLURM's KillWait), a second cancel sends SIGKILL. A segmentation experiment runs its folds as a
job array and its ensemble and test as a job that depends on the array (`submit_segment`).

Why submitit and not hand-written sbatch handling: it already does the script, arrays,
dependencies, the pickled call, the per-task output files and the SLURM environment inside the
job (ranks, node list). Its own signal handling is replaced inside the task (`slurm_task`),
because a training job must stop at a step boundary, not inside the signal handler.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from db import jobs as repo
from db.models import Job
from db.session import database_url, session_scope
from synthct.errors import ConfigError, SynthctError, WorkspaceError
from synthct.executors.records import check_job_request, engine_for, get_job
from synthct.executors.settings import ExecutorSettings, to_row
from synthct.executors.slurm_commands import SlurmError, _run
from synthct.executors.slurm_task import SlurmTask
from synthct.redact import redact_url
from synthct.segment.recipe import SegConfig, load_seg_config
from synthct.workspace import Workspace

JOB_NAME_PREFIX = "synthct-"
ENV_POLL = "SYNTHCT_SLURM_POLL_S"
SUBMIT_GRACE_S = 120.0  # a row still without a SLURM id after this long was never submitted
# SLURM job states (sacct/squeue) -> jobs-table status
STATE_MAP = {
    "PENDING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending",
    "CONFIGURING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "RESIZING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
    "COMPLETED": "done",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timeout",
    "NODE_FAIL": "node_fail",
    "FAILED": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "PREEMPTED": "failed",
    "REVOKED": "failed",
    "SPECIAL_EXIT": "failed",
}
WHY = {
    "done": "completed",
    "cancelled": "cancelled with scancel",
    "timeout": "killed by SLURM at its time limit",
    "node_fail": "its node failed",
    "failed": "failed",
}


# -- the cluster ----------------------------------------------------------------------------------
def available() -> bool:
    """True when this machine has the SLURM client commands (sbatch, squeue, scancel)."""
    return all(shutil.which(c) for c in ("sbatch", "squeue", "scancel", "srun"))


@functools.cache
def cluster_name() -> str:
    """The name of this machine's SLURM cluster (ClusterName in slurm.conf): a SLURM job's
    owner, so hosts on other clusters sharing the database leave it alone."""
    for line in _run(["scontrol", "show", "config"]).splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    raise SlurmError("`scontrol show config` names no ClusterName")


def _task_database_url(ws: Workspace) -> str | None:
    """The database URL to hand to the job: a password-free one travels in the pickled call;
    one with a password is not written to disk — the job inherits $SYNTHCT_DATABASE_URL from
    the submitting shell (sbatch exports the environment)."""
    url = database_url(ws.database)
    return url if redact_url(url) == url else None


# -- submission -----------------------------------------------------------------------------------
def slurm_folder(ws: Workspace) -> Path:
    """Where submitit keeps the sbatch scripts, pickled calls and per-task output files."""
    return ws.slurm_jobs


def _executor(ws: Workspace, settings: ExecutorSettings, name: str, dependency: str | None):
    """A submitit SlurmExecutor with the settings' resources."""
    try:
        import submitit  # optional dependency
    except ImportError as e:  # pragma: no cover - pinned in requirements.txt
        raise ConfigError(f"the SLURM executor needs submitit ({e})") from None
    if not available():
        raise ConfigError(
            "the SLURM executor needs SLURM's client commands (sbatch, squeue, scancel, srun) on "
            "this machine's PATH; use --executor local here"
        )
    folder = slurm_folder(ws)
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=settings.max_requeues,
                                python=settings.python)  # fmt: skip
    params: dict[str, Any] = {
        "job_name": name,
        "time": settings.time_min,
        "nodes": settings.nodes,
        "ntasks_per_node": settings.ntasks_per_node,
        "cpus_per_task": settings.cpus_per_task,
        "signal_delay_s": settings.signal_delay_s,
        "stderr_to_stdout": True,
        "additional_parameters": {"requeue": True, **settings.sbatch},
    }
    if settings.gpus_per_node:
        params["gpus_per_node"] = settings.gpus_per_node
    if settings.mem_gb is not None:
        mem = settings.mem_gb
        params["mem"] = f"{int(mem)}GB" if float(mem).is_integer() else f"{int(mem * 1024)}MB"
    for key in ("partition", "account", "qos"):
        if getattr(settings, key):
            params[key] = getattr(settings, key)
    if settings.setup:
        params["setup"] = list(settings.setup)
    if dependency:
        params["dependency"] = dependency
    ex.update_parameters(**params)
    return ex


def _device(settings: ExecutorSettings) -> str:
    return "cuda" if settings.gpus_per_node else "cpu"


def submit(
    ws: Workspace,
    kind: str,
    argvs: list[str] | Sequence[list[str]],
    settings: ExecutorSettings,
    dependency: str | None = None,
) -> list[int]:
    """Submit `synthct <argv>` as a SLURM job — or, given several argvs, as one job array —
    and return the new jobs-table ids (one per argv). `dependency` is an sbatch dependency
    such as "afterok:1234"."""
    many = bool(argvs) and isinstance(argvs[0], list)
    batch: list[list[str]] = [list(a) for a in argvs] if many else [list(argvs)]  # type: ignore[arg-type]
    for args in batch:
        check_job_request(kind, args)
    engine = engine_for(ws)
    with session_scope(engine) as s:
        ids = [
            repo.create_job(s, kind, args, _device(settings), executor="slurm",
                            resources=to_row(settings)).id
            for args in batch
        ]  # fmt: skip
    url = _task_database_url(ws)
    tasks = [
        SlurmTask(job_id=i, args=args, workspace=str(ws.root), database_url=url,
                  signal_delay_s=settings.signal_delay_s, max_requeues=settings.max_requeues)
        for i, args in zip(ids, batch, strict=True)
    ]  # fmt: skip
    try:
        ex = _executor(ws, settings, f"{JOB_NAME_PREFIX}{kind}-{ids[0]}", dependency)
        jobs = ex.submit_array(tasks) if many else [ex.submit(tasks[0])]
        owner = cluster_name()
    except Exception as e:  # noqa: BLE001 - sbatch's refusal must end in the rows, then surface
        reason = str(e).strip().splitlines()
        message = f"sbatch refused the job: {reason[-1] if reason else type(e).__name__}"
        with session_scope(engine) as s:
            for i in ids:
                repo.finish_job(s, i, "failed", message[:500], ("pending",))
        if isinstance(e, SynthctError):
            raise
        raise SlurmError(message) from None
    with session_scope(engine) as s:
        for i, job in zip(ids, jobs, strict=True):
            repo.set_submitted(s, i, str(job.job_id), str(job.paths.stdout), owner)
    return ids


def submit_segment(
    ws: Workspace, args: list[str], params: dict[str, Any], settings: ExecutorSettings
) -> list[int]:
    """A `synthct segment …` job on SLURM: its folds as a job array (each `--fold k`), then the
    ensemble and test as a job that starts when every fold succeeded (afterok). The
    pretrain-finetune experiment first pre-trains once (`--fold -1`), before the array.
    `params`: the options of `args` as the command parses them
    (`synthct.commands.segment.segment_params`)."""
    if params.get("fold") is not None:  # one fold was asked for: an ordinary job
        return submit(ws, "segment", args, settings)
    folds, experiment = segment_folds(params), params.get("experiment")
    ids: list[int] = []
    after: str | None = None
    if experiment == "pretrain-finetune":
        ids += submit(ws, "segment-pretrain", [*args, "--fold", "-1"], settings)
        after = f"afterok:{_external_id(ws, ids[-1])}"
    fold_ids = submit(ws, "segment-fold", [[*args, "--fold", str(k)] for k in range(folds)],
                      settings, dependency=after)  # fmt: skip
    ids += fold_ids
    array = _external_id(ws, fold_ids[0]).split("_")[0]
    ids += submit(ws, "segment", args, settings, dependency=f"afterok:{array}")
    return ids


def segment_folds(params: dict[str, Any]) -> int:
    """The number of cross-validation folds a `segment` command would run."""

    if params.get("folds"):
        return int(params["folds"])
    return (load_seg_config(params["config"]) if params.get("config") else SegConfig()).folds


def _external_id(ws: Workspace, job_id: int) -> str:
    job = get_job(ws, job_id)
    if not job.external_id:
        raise SlurmError(f"job {job_id} has no SLURM id: {job.message}")
    return job.external_id


# -- state ----------------------------------------------------------------------------------------
def read_states(external_ids: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """(SLURM state per job id — "1234", array task "1234_5" —, ids that have left SLURM
    without a known state).

    squeue first: slurmctld's own, immediate view of live and recently ended jobs; sacct for
    the jobs squeue no longer knows (its accounting lags a running job by seconds, so it is
    never asked about one squeue still has). Without accounting an id missing from squeue has
    simply left SLURM."""
    from submitit.slurm.slurm import SlurmInfoWatcher  # deferred: loads submitit

    def parse(out: str) -> dict:
        return SlurmInfoWatcher().read_info("JobID|State\n" + out)

    def base(ids) -> str:
        return ",".join(sorted({e.split("_")[0] for e in ids}))

    if not external_ids:
        return {}, set()
    try:
        info = parse(_run(["squeue", "-h", "-t", "all", "-j", base(external_ids), "-o", "%i|%T"]))
    except SlurmError:  # every id unknown to slurmctld (or it does not answer: raise below)
        _run(["squeue", "-h", "-o", "%i"], timeout=20)  # is slurmctld there at all?
        info = {}
    missing = [e for e in external_ids if e not in info]
    gone: set[str] = set()
    if missing:
        try:
            out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", base(missing)])
            info.update({k: v for k, v in parse(out).items() if k in missing})
        except SlurmError:
            gone = set(missing)
    states = {e: info[e]["State"].split()[0] for e in external_ids if e in info}
    return states, gone


_last_poll = [float("-inf")]


def poll_interval_s() -> float:
    """Seconds between two squeue/sacct polls of one process ($SYNTHCT_SLURM_POLL_S, 3)."""
    raw = os.environ.get(ENV_POLL, "")
    try:
        return max(0.0, float(raw)) if raw else 3.0
    except ValueError:
        raise ConfigError(f"${ENV_POLL}={raw!r}: expected a number of seconds") from None


def reconcile(session, force: bool = False) -> list[int]:
    """Bring the live SLURM rows of this machine's cluster in line with SLURM; returns the ids
    that changed status. Rows of other clusters are never touched. SLURM is asked at most once
    per `poll_interval_s()` per process (the app refreshes every 2 s) unless `force`."""
    if not available():
        return []
    tick = time.monotonic()
    if not force and tick - _last_poll[0] < poll_interval_s():
        return []
    _last_poll[0] = tick
    try:
        owner = cluster_name()
    except SlurmError:
        return []
    rows = repo.live_jobs(session, "slurm", owner)
    ended = repo.unsettled_jobs(session, "slurm", owner)
    changed = []
    now = time.time()
    never = "never reached SLURM (submission did not complete)"
    for job in (j for j in rows if not j.external_id and j.owner is None):
        created = job.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        late = now - created.timestamp() > SUBMIT_GRACE_S
        if late and repo.finish_job(session, job.id, "failed", never, repo.LIVE):
            changed.append(job.id)
    rows = [j for j in rows if j.external_id]
    if not rows and not ended:
        return changed
    try:
        states, gone = read_states([j.external_id for j in [*rows, *ended]])
    except SlurmError:
        return changed  # SLURM does not answer now: try again at the next pump
    for job in ended:  # the task recorded its end first: keep SLURM's final word beside it
        if states.get(job.external_id, job.external_state) != job.external_state:
            repo.set_external_state(session, job.id, states[job.external_id])
    for job in rows:
        state = states.get(job.external_id)
        if state is None:
            why = "ended without reporting a result (SLURM keeps no accounting here)"
            if job.external_id in gone and repo.finish_job(
                session, job.id, "failed", why, repo.LIVE
            ):
                changed.append(job.id)
            continue
        if _apply(session, job, state):
            changed.append(job.id)
    return changed


def _apply(session, job: Job, state: str) -> bool:
    """Move one row to what SLURM says; True if its status changed."""
    status = STATE_MAP.get(state, "running" if job.status in repo.ACTIVE else job.status)
    if state != job.external_state:
        repo.set_external_state(session, job.id, state)
    if status == job.status or (status == "running" and job.status == "cancelling"):
        return False
    if status == "pending":  # squeue's word: SLURM put it back in the queue (preemption …)
        message = f"requeued by SLURM ({state.lower()}); it resumes when it starts again"
        return repo.set_state(session, job.id, "pending", message, repo.ACTIVE, requeued=True)
    if status == "running":  # the task marks itself running once it has started
        return False
    if job.status == "cancelling" and status == "cancelled":
        message = "cancelled by user"
    else:
        message = f"{WHY[status]} (SLURM {state})"
        if status == "done" and job.status == "pending":
            message = "completed (SLURM COMPLETED)"
    return repo.finish_job(session, job.id, status, message, repo.LIVE,
                           progress=1.0 if status == "done" else None, external_state=state)  # fmt: skip


# -- cancel ---------------------------------------------------------------------------------------
def cancel(ws: Workspace, job_id: int, grace_s: float = 5.0) -> Job:
    """scancel a SLURM job (see the module docstring); returns its row after up to `grace_s` s."""
    engine = engine_for(ws)
    with session_scope(engine) as s:
        job = repo.get_job(s, job_id)
        if job is None:
            raise WorkspaceError(f"job {job_id} does not exist")
        status, external, owner = job.status, job.external_id, job.owner
    if status in repo.TERMINAL:
        raise WorkspaceError(f"job {job_id} is already {status}; nothing to cancel")
    if owner is not None and available() and owner != cluster_name():
        raise WorkspaceError(
            f"job {job_id} belongs to SLURM cluster {owner!r}; cancel it from a machine of that "
            "cluster"
        )
    if status == "pending":
        if external:
            _run(["scancel", external])
        with session_scope(engine) as s:
            repo.finish_job(s, job_id, "cancelled", "cancelled by user before it started",
                            ("pending",))  # fmt: skip
        return get_job(ws, job_id)
    if external is None:
        raise WorkspaceError(f"job {job_id} has no SLURM id yet; try again in a moment")
    if status == "running":
        with session_scope(engine) as s:
            repo.request_cancel(s, job_id)
        _run(["scancel", external])  # SIGTERM now, SIGKILL after SLURM's KillWait
    else:  # cancelling: the second cancel kills it now
        _run(["scancel", "--signal=KILL", "--full", external])
        _run(["scancel", external])
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if get_job(ws, job_id).status in repo.TERMINAL:
            break
        time.sleep(0.2)
    with session_scope(engine) as s:
        reconcile(s, force=True)
    return get_job(ws, job_id)


# -- the queue ------------------------------------------------------------------------------------
QUEUE_FIELDS = ("job_id", "name", "state", "time", "time_limit", "nodes", "cpus", "gres",
                "reason", "user", "partition")  # fmt: skip


def queue(all_users: bool = False) -> list[dict[str, str]]:
    """The cluster's queue (squeue) for synthct's jobs (names starting "synthct-")."""
    fmt = "%i|%j|%T|%M|%l|%D|%C|%b|%R|%u|%P"
    cmd = ["squeue", "-h", "-o", fmt] + ([] if all_users else ["--me"])
    rows = []
    for line in _run(cmd, timeout=20).splitlines():
        values = line.split("|")
        if len(values) == len(QUEUE_FIELDS) and values[1].startswith(JOB_NAME_PREFIX):
            rows.append(dict(zip(QUEUE_FIELDS, values, strict=True)))
    return rows
