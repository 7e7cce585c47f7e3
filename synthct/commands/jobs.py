"""CLI: the `synthct jobs …` sub-app (background jobs: list, show, cancel, tail, submit, wait,
the SLURM queue) and the executor options that `train`, `hpo` and `jobs submit` share."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from synthct import jobs
from synthct.commands._common import WorkspaceOpt, echo_json, workspace
from synthct.commands.segment import segment_params
from synthct.errors import Cancelled, SynthctError
from synthct.executors import slurm
from synthct.executors.settings import resolve_settings
from synthct.executors.slurm import submit_segment
from synthct.jobs import job_progress_callback
from synthct.stopping import StopRequest

if TYPE_CHECKING:
    from synthct.executors.settings import ExecutorSettings
    from synthct.workspace import Workspace

jobs_app = typer.Typer(
    help="Background jobs: list, show, cancel, tail logs, wait, the SLURM queue, run the local "
    "queue.",
    no_args_is_help=True,
)

_EXEC = "Executor (where the job runs)"
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="local (this machine's job queue) | slurm (a SLURM job). Default: the kind in "
        "WS/executor.yaml or --executor-config.",
        rich_help_panel=_EXEC,
    ),
]
ExecutorConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--executor-config", help="YAML with an `executor:` section.", rich_help_panel=_EXEC
    ),
]
PartitionOpt = Annotated[str | None, typer.Option(help="SLURM partition.", rich_help_panel=_EXEC)]
AccountOpt = Annotated[str | None, typer.Option(help="SLURM account.", rich_help_panel=_EXEC)]
QosOpt = Annotated[str | None, typer.Option(help="SLURM QOS.", rich_help_panel=_EXEC)]
TimeOpt = Annotated[
    int | None,
    typer.Option("--time", min=1, help="SLURM time limit in minutes.", rich_help_panel=_EXEC),
]
NodesOpt = Annotated[
    int | None, typer.Option(min=1, help="SLURM nodes (DDP across them).", rich_help_panel=_EXEC)
]
GpusOpt = Annotated[int | None, typer.Option(min=0, help="GPUs per node.", rich_help_panel=_EXEC)]
TasksOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Processes per node (DDP ranks; default one per GPU).", rich_help_panel=_EXEC
    ),
]
CpusOpt = Annotated[int | None, typer.Option(min=1, help="CPUs per task.", rich_help_panel=_EXEC)]
MemOpt = Annotated[float | None, typer.Option(help="Memory per node, GB.", rich_help_panel=_EXEC)]
SignalOpt = Annotated[
    int | None,
    typer.Option(
        "--signal-delay",
        min=0,
        help="Seconds before the time limit at which the job checkpoints and requeues itself.",
        rich_help_panel=_EXEC,
    ),
]


def executor_settings(
    ws: Workspace,
    executor: str | None = None,
    executor_config: Path | None = None,
    **flags,
) -> ExecutorSettings:
    """The executor settings of a command: WS/executor.yaml, then --executor-config, then the
    flags given (None = not given)."""

    renamed = {
        "time_min": flags.pop("time", None),
        "signal_delay_s": flags.pop("signal_delay", None),
    }
    return resolve_settings(ws, executor_config, kind=executor, **renamed, **flags)


def submit_and_report(
    ws: Workspace,
    kind: str,
    args: list[str],
    executor: str | None,
    executor_config: Path | None,
    wait: bool = False,
    **flags,
) -> list[int]:
    """Submit `synthct <args>` as a job with the executor settings of a command's flags, print
    where it runs and (with `wait`) wait for it: exit status 1 unless it ends done."""

    settings = executor_settings(ws, executor, executor_config, **flags)
    job_id = jobs.submit(ws, kind, args, executor=settings)
    job = jobs.get_job(ws, job_id)
    if job.executor == "slurm":
        shape = f"{settings.nodes} node(s) x {settings.ntasks_per_node} task(s)"
        where = f"SLURM job {job.external_id}, {shape}"
    else:
        where = f"{job.device} on {job.owner}"
    typer.echo(f"job {job_id}: {job.status} ({where}); follow it with `synthct jobs tail {job_id}`")
    if wait:
        job = jobs.wait(ws, job_id)
        typer.echo(f"job {job_id}: {job.status} ({job.message})")
        if job.status != "done":
            raise typer.Exit(1)
    return [job_id]


def _row(job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "executor": job.executor,
        "owner": job.owner,
        "slurm_id": job.external_id,
        "slurm_state": job.external_state,
        "requeues": job.requeues,
        "device": job.device,
        "progress": round(job.progress or 0.0, 3),
        "message": job.message,
        "pid": job.pid,
        "created": job.created_at,
        "started": job.started_at,
        "finished": job.finished_at,
        "result": job.result,
        "log": job.log_path,
        "resources": job.resources,
        "args": job.args,
    }


def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """List jobs, newest first (reconciles the table first)."""

    ws = workspace(workspace_path)
    jobs.pump(ws)
    rows = jobs.list_jobs(ws, status, limit)
    if as_json:
        echo_json([_row(j) for j in rows])
        return
    for j in rows:
        where = f"slurm {j.external_id}" if j.executor == "slurm" else j.device
        typer.echo(
            f"{j.id:>5}  {j.status:<10} {j.kind:<12} {where:<13} "
            f"{100 * (j.progress or 0):5.1f}%  {j.message or ''}"
        )


def jobs_show(job_id: int, workspace_path: WorkspaceOpt = None) -> None:
    """Show one job as JSON."""

    echo_json(_row(jobs.get_job(workspace(workspace_path), job_id)))


def jobs_cancel(
    job_id: int,
    wait: Annotated[
        float,
        typer.Option(
            "--wait", "--grace", min=0, help="Seconds to wait for the job to stop before returning."
        ),
    ] = 10.0,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Cancel a job. A queued job never starts; a running one stops at its next safe point
    (training: after writing a checkpoint, recorded as cancelled; resume it with
    `synthct train --run R --resume`). Cancelling a job that is still stopping kills it."""

    job = jobs.cancel(workspace(workspace_path), job_id, grace_s=wait)
    typer.echo(f"job {job.id}: {job.status} ({job.message})")
    if job.status == "cancelling":
        typer.echo(
            f"it is still stopping; `synthct jobs cancel {job.id}` again kills it now", err=True
        )


def jobs_tail(
    job_id: int,
    n: Annotated[int, typer.Option("-n", help="Number of lines.")] = 40,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Print the last lines of a job's log."""

    typer.echo(jobs.tail_log(jobs.get_job(workspace(workspace_path), job_id), n))


def jobs_submit(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N (local).")] = "auto",
    kind: Annotated[str | None, typer.Option(help="Job kind (default: the command name).")] = None,
    executor: ExecutorOpt = None,
    executor_config: ExecutorConfigOpt = None,
    partition: PartitionOpt = None,
    account: AccountOpt = None,
    qos: QosOpt = None,
    time_min: TimeOpt = None,
    nodes: NodesOpt = None,
    gpus_per_node: GpusOpt = None,
    tasks_per_node: TasksOpt = None,
    cpus_per_task: CpusOpt = None,
    mem_gb: MemOpt = None,
    signal_delay: SignalOpt = None,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Queue a synthct command as a background job: `synthct jobs submit -- generate --run r …`.

    With `--executor slurm` it becomes a SLURM job with the given resources; a `segment`
    command then runs its folds as a job array and its ensemble as a job depending on it."""

    args = [a for a in ctx.args if a != "--"]
    if not args:
        raise typer.BadParameter("give the command to run after --, e.g. -- generate --run r1 …")
    ws = workspace(workspace_path)
    settings = executor_settings(
        ws, executor, executor_config, partition=partition, account=account, qos=qos,
        time=time_min, nodes=nodes, gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node,
        cpus_per_task=cpus_per_task, mem_gb=mem_gb, signal_delay=signal_delay,
    )  # fmt: skip
    if settings.kind == "slurm" and args[0] == "segment" and kind is None:
        ids = submit_segment(ws, args, segment_params(args), settings)
    else:
        ids = [jobs.submit(ws, kind or args[0], args, device=device, executor=settings)]
    for job_id in ids:
        job = jobs.get_job(ws, job_id)
        where = f"SLURM job {job.external_id}" if job.executor == "slurm" else job.device
        typer.echo(f"job {job_id}: {job.status} ({job.kind}, {where}); log {job.log_path}")


def jobs_wait(
    job_id: int,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit status 1).")
    ] = None,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Wait until a job has ended; exit status 0 when it is done, 1 otherwise."""

    try:
        job = jobs.wait(workspace(workspace_path), job_id, timeout=timeout)
    except TimeoutError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"job {job.id}: {job.status} ({job.message})")
    if job.status != "done":
        raise typer.Exit(1)


def jobs_queue(
    all_users: Annotated[bool, typer.Option("--all-users", help="Not only yours.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """The SLURM queue (squeue) for synthct's jobs."""

    if not slurm.available():
        typer.echo("no SLURM on this machine (sbatch/squeue not found)", err=True)
        raise typer.Exit(1)
    rows = slurm.queue(all_users=all_users)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['job_id']:>10}  {r['state']:<10} {r['name']:<28} {r['time']:>10}/"
            f"{r['time_limit']:<10} {r['nodes']:>3} nodes  {r['reason']}"
        )


def jobs_run_queue(workspace_path: WorkspaceOpt = None) -> None:
    """Reconcile the jobs table and start whatever queued jobs fit."""

    started = jobs.pump(workspace(workspace_path))
    typer.echo(f"started {len(started)} job(s): {started}")


def jobs_sleep(
    seconds: float,
    children: Annotated[int, typer.Option(help="Also start this many sleeping subprocesses.")] = 0,
    fail: Annotated[bool, typer.Option(help="Exit with an error at the end.")] = False,
    stop_delay: Annotated[
        float | None,
        typer.Option(help="Honour a stop request (SIGTERM/SIGINT) this many seconds later."),
    ] = None,
) -> None:
    """Test helper: sleep (reporting progress), optionally with child processes; with
    --stop-delay it stops like training does (a safe point some time after the request)."""

    procs = [
        subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds + 60})"])
        for _ in range(children)
    ]
    for p in procs:
        typer.echo(f"child pid {p.pid}")
    progress = job_progress_callback(min_interval=0.1)
    start = time.monotonic()
    with StopRequest() if stop_delay is not None else contextlib.nullcontext() as stop:
        asked = None
        while (elapsed := time.monotonic() - start) < seconds:
            progress(elapsed / seconds, f"slept {elapsed:.1f}/{seconds} s")
            time.sleep(min(0.05, seconds))
            if stop is not None and stop.requested is not None:
                asked = asked or time.monotonic()
                if time.monotonic() - asked >= stop_delay:
                    for p in procs:
                        p.kill()
                    raise Cancelled(f"stopped after {elapsed:.1f} s of sleep")
    for p in procs:
        p.kill()
        p.wait()
    if fail:
        raise SynthctError("sleep finished with the requested failure")
    progress(1.0, "slept")


def register(app: typer.Typer) -> None:
    jobs_app.command("list")(jobs_list)
    jobs_app.command("show")(jobs_show)
    jobs_app.command("cancel")(jobs_cancel)
    jobs_app.command("tail")(jobs_tail)
    jobs_app.command(
        "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(jobs_submit)
    jobs_app.command("run-queue")(jobs_run_queue)
    jobs_app.command("wait")(jobs_wait)
    jobs_app.command("queue")(jobs_queue)
    jobs_app.command("sleep", hidden=True)(jobs_sleep)
    app.add_typer(jobs_app, name="jobs")
