"""CLI: the `synthct jobs …` sub-app (background jobs: list, show, cancel, tail, submit, queue)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, echo_json, workspace


def _row(job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "device": job.device,
        "progress": round(job.progress or 0.0, 3),
        "message": job.message,
        "pid": job.pid,
        "created": job.created_at,
        "started": job.started_at,
        "finished": job.finished_at,
        "result": job.result,
        "log": job.log_path,
        "args": job.args,
    }


def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """List jobs, newest first (reconciles the table first)."""
    from synthct import jobs

    ws = workspace(workspace_path)
    jobs.pump(ws)
    rows = jobs.list_jobs(ws, status, limit)
    if as_json:
        echo_json([_row(j) for j in rows])
        return
    for j in rows:
        typer.echo(
            f"{j.id:>5}  {j.status:<9} {j.kind:<10} {j.device:<7} {100 * (j.progress or 0):5.1f}%  "
            f"{j.message or ''}"
        )


def jobs_show(job_id: int, workspace_path: WorkspaceOpt = None) -> None:
    """Show one job as JSON."""
    from synthct import jobs

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
    from synthct import jobs

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
    from synthct import jobs

    typer.echo(jobs.tail_log(jobs.get_job(workspace(workspace_path), job_id), n))


def jobs_submit(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    kind: Annotated[str | None, typer.Option(help="Job kind (default: the command name).")] = None,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Queue a synthct command as a background job: `synthct jobs submit -- generate --run r …`."""
    from synthct import jobs

    args = [a for a in ctx.args if a != "--"]
    if not args:
        raise typer.BadParameter("give the command to run after --, e.g. -- generate --run r1 …")
    ws = workspace(workspace_path)
    job_id = jobs.submit(ws, kind or args[0], args, device=device)
    job = jobs.get_job(ws, job_id)
    typer.echo(f"job {job_id}: {job.status} on {job.device}; log {job.log_path}")


def jobs_run_queue(workspace_path: WorkspaceOpt = None) -> None:
    """Reconcile the jobs table and start whatever queued jobs fit."""
    from synthct import jobs

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
    import contextlib
    import subprocess
    import sys

    from synthct.errors import Cancelled, SynthctError
    from synthct.jobs import job_progress_callback
    from synthct.stopping import StopRequest

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


def register(app: typer.Typer, bench_app: typer.Typer | None = None) -> None:
    jobs_app = typer.Typer(
        help="Background jobs: list, show, cancel, tail logs, run the queue.", no_args_is_help=True
    )
    jobs_app.command("list")(jobs_list)
    jobs_app.command("show")(jobs_show)
    jobs_app.command("cancel")(jobs_cancel)
    jobs_app.command("tail")(jobs_tail)
    jobs_app.command(
        "submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(jobs_submit)
    jobs_app.command("run-queue")(jobs_run_queue)
    jobs_app.command("sleep", hidden=True)(jobs_sleep)
    app.add_typer(jobs_app, name="jobs")
