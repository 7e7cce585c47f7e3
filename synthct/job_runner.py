"""The job wrapper: runs a queued command line in this process and records how it ended.

``python -m synthct.job_runner <id>`` is what `synthct.jobs` starts for every local job, and
`run_argv` is what a SLURM task runs (`synthct.executors.slurm_task` finds it by name). It belongs to the command-line shell: it imports `synthct.cli`, which the library
never does.
"""

from __future__ import annotations

import signal
import sys
import traceback
from datetime import UTC, datetime

import click
import typer

from db import jobs as repo
from db.session import database_url, engine_for_url, session_scope
from synthct.cli import app
from synthct.errors import Cancelled, SynthctError, environment_error_message
from synthct.executors.records import _RedactingStream
from synthct.jobs import _Terminated, _Watchdog, pump
from synthct.redact import redact
from synthct.stopping import add_stop_listener
from synthct.workspace import Workspace


def _outcome(e: BaseException) -> tuple[str, str, int]:
    """(status, message, exit code) of a command that raised `e` (SystemExit included)."""
    if isinstance(e, Cancelled):
        print(f"cancelled: {e}", file=sys.stderr)
        return "cancelled", f"cancelled: {e}", 130
    if isinstance(e, _Terminated):
        return "failed", "terminated by SIGTERM", 143
    if isinstance(e, SynthctError):
        print(f"error: {e}", file=sys.stderr)
        return "failed", f"error: {e}", 2
    if isinstance(e, SystemExit):
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return ("failed", f"exited with status {code}", code) if code else ("done", "done", 0)
    if isinstance(e, KeyboardInterrupt):
        return "failed", "interrupted", 130
    if isinstance(e, typer.Exit | click.exceptions.Exit):
        code = e.exit_code
        return ("done", "done", 0) if code == 0 else ("failed", f"exited with {code}", code)
    if isinstance(e, typer.TyperException | click.ClickException):  # usage errors in the argv
        e.show()
        return "failed", f"usage error: {e.format_message()}", 2
    message = environment_error_message(e)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return "failed", f"error: {message}", 2
    print(redact("".join(traceback.format_exception(e))), file=sys.stderr, end="")
    return "failed", f"{type(e).__name__}: {e}"[:500], 1


def run_argv(args: list[str]) -> tuple[str, str, int]:
    """Run `synthct <args>` in this process: (status done | failed | cancelled, message, exit
    code). Nothing it raises escapes: every outcome is a row status and a line in the log."""
    try:
        rc = app(args=list(args), prog_name="synthct", standalone_mode=False)
        if isinstance(rc, int) and rc != 0:  # `raise typer.Exit(n)` (or Ctrl-C) comes back as n
            return "failed", f"exited with status {rc}", rc
    except BaseException as e:  # noqa: BLE001 - any crash must end up in the row and the log
        return _outcome(e)
    return "done", "done", 0


def run_job(job_id: int) -> int:
    """The job wrapper (``python -m synthct.job_runner <id>``): run the argv, record the outcome, pump."""
    sys.stdout, sys.stderr = _RedactingStream(sys.stdout), _RedactingStream(sys.stderr)
    ws = Workspace.resolve()
    engine = engine_for_url(database_url(ws.database))
    watchdog = _Watchdog(engine, job_id)

    def on_sigterm(signum, _frame) -> None:
        watchdog.arm(signum)
        raise _Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)
    add_stop_listener(watchdog.arm)  # training handles SIGTERM itself: stop at the next step
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
    status, message, code = run_argv(job.args)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    message = redact(message)
    with session_scope(engine) as s:
        moved = repo.finish_job(
            s, job_id, status, message, ("running",), progress=1.0 if status == "done" else None
        )
        if not moved:  # cancel was requested: whatever stopped the work, it ends as cancelled
            if status not in ("done", "cancelled"):
                status, message = "cancelled", "cancelled by user"
            progress = 1.0 if status == "done" else None
            repo.finish_job(s, job_id, status, message, ("cancelling",), progress=progress)
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
        print("usage: python -m synthct.job_runner <job id>", file=sys.stderr)
        sys.exit(2)
    sys.exit(run_job(int(sys.argv[1])))
