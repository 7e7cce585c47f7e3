"""Background jobs: real subprocesses running the hidden `synthct jobs sleep` command (seconds)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import OperationalError

from db import jobs as repo
from db.session import session_scope
from synthct import jobs
from synthct.errors import ConfigError, WorkspaceError

pytest_plugins = ["conftest_pg"]


@pytest.fixture
def ws(workspace, monkeypatch):
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_JOB_ID", raising=False)
    monkeypatch.delenv("SYNTHCT_MAX_CPU_JOBS", raising=False)
    yield workspace
    # never leave a test job running: end every job's process group still alive
    for job in jobs.list_jobs(workspace, limit=None):
        if job.pid and job.status in ("running", "cancelled", "failed"):
            jobs._kill_group(job.pid, signal.SIGKILL)
    for proc in list(jobs._children.values()):
        proc.kill()
        proc.wait()
    jobs._children.clear()


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status(ws, job_id):
    return jobs.get_job(ws, job_id).status


def test_job_runs_reports_progress_and_finishes(ws):
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "1.2"], device="cpu")
    seen = wait_for(
        lambda: (j := jobs.get_job(ws, job_id)).status == "running" and 0 < j.progress < 1 and j,
        what="progress between 0 and 1",
    )
    assert seen.pid and seen.message.startswith("slept")
    wait_for(lambda: status(ws, job_id) == "done", what="done")
    job = jobs.get_job(ws, job_id)
    assert job.progress == 1.0 and job.finished_at >= job.started_at
    log = jobs.tail_log(job, 50)
    assert "synthct jobs sleep 1.2" in log and "done" in log.splitlines()[-1]


def test_failing_job_is_marked_failed_with_its_error(ws):
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "0.1", "--fail"], device="cpu")
    wait_for(lambda: status(ws, job_id) == "failed", what="failed")
    job = jobs.get_job(ws, job_id)
    assert "requested failure" in job.message
    assert "error: sleep finished with the requested failure" in jobs.tail_log(job)


def test_unknown_command_fails_cleanly(ws):
    job_id = jobs.submit(ws, "test", ["no-such-command"], device="cpu")
    wait_for(lambda: status(ws, job_id) == "failed", what="failed")
    assert "no-such-command" in jobs.get_job(ws, job_id).message


@pytest.mark.parametrize("forget_parent", [False, True], ids=["parent", "after-restart"])
def test_killed_job_is_reconciled_to_failed(ws, forget_parent):
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "30"], device="cpu")
    pid = wait_for(lambda: jobs.get_job(ws, job_id).pid, what="pid")
    if forget_parent:  # as after an app restart: this process no longer holds the Popen
        proc = jobs._children.pop(job_id)
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not jobs._alive(pid) or (forget_parent and proc.poll() is not None), what="death"
    )
    assert status(ws, job_id) == "running"  # nobody has noticed yet
    with session_scope(jobs.engine_for(ws)) as s:
        assert jobs.reconcile(s) == [job_id]
    job = jobs.get_job(ws, job_id)
    assert job.status == "failed" and job.finished_at is not None
    if forget_parent:
        assert "no longer running" in job.message
        proc.wait(timeout=10)  # reap it here, as init would after a real restart
    else:
        assert "killed by signal 9" in job.message


def test_reconcile_fails_foreign_pids_and_stale_starts_but_not_fresh_ones(ws):
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        engine = jobs.engine_for(ws)
        with session_scope(engine) as s:
            ids = [repo.create_job(s, "test", ["x"], "cpu").id for _ in range(3)]
            for job_id in ids:
                assert repo.claim_job(s, job_id, "cpu", limit=10)
            repo.set_pid(s, ids[0], foreign.pid)  # alive, but not running this job
            old = datetime.now(UTC) - timedelta(seconds=jobs.START_GRACE_S + 5)
            repo.get_job(s, ids[1]).started_at = old  # claimed long ago, never got a pid
        with session_scope(engine) as s:
            assert sorted(jobs.reconcile(s)) == ids[:2]
        assert status(ws, ids[0]) == status(ws, ids[1]) == "failed"
        assert status(ws, ids[2]) == "running"  # just claimed: its process may be starting
        assert foreign.poll() is None  # reconcile never kills a process that is not ours
    finally:
        foreign.kill()
        foreign.wait()


def test_cancel_stops_the_process_and_its_children(ws):
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "30", "--children", "2"], device="cpu")
    job = jobs.get_job(ws, job_id)
    log = wait_for(
        lambda: len(re.findall(r"child pid (\d+)", jobs.tail_log(job))) == 2 and jobs.tail_log(job),
        what="children started",
    )
    kids = [int(p) for p in re.findall(r"child pid (\d+)", log)]
    pid = jobs.get_job(ws, job_id).pid
    assert all(jobs._alive(p) for p in [pid, *kids])
    t0 = time.monotonic()
    cancelled = jobs.cancel(ws, job_id, grace_s=5)
    assert cancelled.status == "cancelled" and cancelled.message == "cancelled by user"
    assert time.monotonic() - t0 < 5 + 3  # SIGKILL after the 5 s grace at the latest
    wait_for(lambda: not any(jobs._alive(p) for p in [pid, *kids]), timeout=10, what="all dead")
    assert status(ws, job_id) == "cancelled"  # the dying wrapper did not overwrite it
    with pytest.raises(WorkspaceError, match="already cancelled"):
        jobs.cancel(ws, job_id)


def test_cancel_asks_the_job_to_stop_at_its_safe_point(ws):
    """A job that stops like training (a safe point after the request) is `cancelling` until
    it gets there, then records `cancelled` itself with what it kept — not `failed`."""
    args = ["jobs", "sleep", "30", "--stop-delay", "1.0"]
    job_id = jobs.submit(ws, "test", args, device="cpu")
    pid = wait_for(lambda: jobs.get_job(ws, job_id).pid, what="pid")
    wait_for(lambda: jobs.get_job(ws, job_id).message.startswith("slept"), what="its loop")
    job = jobs.cancel(ws, job_id, grace_s=0.2)
    assert job.status == "cancelling" and jobs._alive(pid)  # still on its way to the safe point
    wait_for(lambda: status(ws, job_id) == "cancelled", what="cancelled", timeout=30)
    job = jobs.get_job(ws, job_id)
    assert job.message.startswith("cancelled: stopped after") and job.finished_at is not None
    assert "Traceback" not in jobs.tail_log(job, 100)


def test_a_second_cancel_kills_a_job_that_is_still_stopping(ws):
    args = ["jobs", "sleep", "60", "--stop-delay", "50", "--children", "1"]
    job_id = jobs.submit(ws, "test", args, device="cpu")
    job = jobs.get_job(ws, job_id)
    kid = int(wait_for(lambda: re.search(r"child pid (\d+)", jobs.tail_log(job)), what="child")[1])
    wait_for(lambda: jobs.get_job(ws, job_id).message.startswith("slept"), what="its loop")
    pid = jobs.get_job(ws, job_id).pid
    assert jobs.cancel(ws, job_id, grace_s=0.5).status == "cancelling"
    t0 = time.monotonic()
    job = jobs.cancel(ws, job_id)
    assert job.status == "cancelled" and "killed" in job.message
    assert time.monotonic() - t0 < 5
    wait_for(lambda: not jobs._alive(pid) and not jobs._alive(kid), timeout=10, what="all dead")
    with pytest.raises(WorkspaceError, match="already cancelled"):
        jobs.cancel(ws, job_id)


def test_a_job_that_does_not_stop_in_time_is_killed_by_its_watchdog(ws, monkeypatch):
    monkeypatch.setenv("SYNTHCT_CANCEL_TIMEOUT_S", "1.5")  # inherited by the job
    args = ["jobs", "sleep", "60", "--stop-delay", "50"]
    job_id = jobs.submit(ws, "test", args, device="cpu")
    pid = wait_for(lambda: jobs.get_job(ws, job_id).pid, what="pid")
    wait_for(lambda: jobs.get_job(ws, job_id).message.startswith("slept"), what="its loop")
    assert jobs.cancel(ws, job_id, grace_s=0.1).status == "cancelling"
    wait_for(lambda: not jobs._alive(pid), timeout=15, what="killed by the watchdog")
    jobs.pump(ws)
    job = jobs.get_job(ws, job_id)
    assert job.status == "cancelled" and "killed" in job.message, job.message


def test_cancel_queued_job_never_starts_it(ws):
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "5"], device="cuda:3", start=False)
    assert jobs.cancel(ws, job_id).status == "cancelled"
    assert jobs.pump(ws) == [] and jobs.get_job(ws, job_id).pid is None


def test_two_gpu_jobs_never_run_at_once_and_the_queue_advances_itself(ws):
    first = jobs.submit(ws, "test", ["jobs", "sleep", "1.5"], device="cuda:0")
    second = jobs.submit(ws, "test", ["jobs", "sleep", "0.2"], device="cuda:0")
    other = jobs.submit(ws, "test", ["jobs", "sleep", "0.2"], device="cuda:1")
    assert status(ws, first) == "running" and status(ws, second) == "queued"
    assert status(ws, other) == "running"  # another GPU is another queue
    assert jobs.pump(ws) == [] and status(ws, second) == "queued"
    # nobody calls pump from here on: the first job's wrapper starts the second when it exits
    wait_for(lambda: status(ws, second) == "done", what="second job done")
    a, b = jobs.get_job(ws, first), jobs.get_job(ws, second)
    assert a.status == "done" and b.started_at >= a.finished_at


def test_concurrent_pumps_start_only_one_gpu_job(ws):
    ids = [
        jobs.submit(ws, "test", ["jobs", "sleep", "20"], device="cuda:0", start=False)
        for _ in range(4)
    ]
    barrier = threading.Barrier(4)
    started: list[list[int]] = []

    def go():
        barrier.wait()
        started.append(jobs.pump(ws))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sum(started, [])) == [ids[0]]
    assert [status(ws, i) for i in ids] == ["running", "queued", "queued", "queued"]
    for i in reversed(ids):
        jobs.cancel(ws, i, grace_s=2)
    assert {status(ws, i) for i in ids} == {"cancelled"}


def test_cpu_job_limit_is_configurable(ws, monkeypatch):
    monkeypatch.setenv("SYNTHCT_MAX_CPU_JOBS", "2")
    ids = [jobs.submit(ws, "test", ["jobs", "sleep", "20"], device="cpu") for _ in range(3)]
    assert [status(ws, i) for i in ids] == ["running", "running", "queued"]
    for i in reversed(ids):
        jobs.cancel(ws, i, grace_s=2)


def test_progress_callback_is_throttled_and_a_no_op_outside_jobs(ws, monkeypatch):
    jobs.job_progress_callback()(0.5, "outside a job: nothing happens")
    engine = jobs.engine_for(ws)
    with session_scope(engine) as s:
        job_id = repo.create_job(s, "test", ["x"], "cpu").id
        repo.claim_job(s, job_id, "cpu", limit=10)
    monkeypatch.setenv("SYNTHCT_JOB_ID", str(job_id))
    monkeypatch.setenv("SYNTHCT_DATABASE_URL", f"sqlite:///{ws.database}")
    progress = jobs.job_progress_callback(min_interval=60)
    progress(0.25, "first")
    progress(0.5, "throttled")
    assert (jobs.get_job(ws, job_id).progress, jobs.get_job(ws, job_id).message) == (0.25, "first")
    progress(1.0, "final always written")
    assert jobs.get_job(ws, job_id).progress == 1.0
    jobs.set_job_result(ws.synthetic / "set1")
    assert jobs.get_job(ws, job_id).result == str(ws.synthetic / "set1")


def test_tail_log_returns_the_last_lines(tmp_path):
    log = tmp_path / "1.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    job = type("J", (), {"log_path": str(log)})()
    assert jobs.tail_log(job, 3) == "line 4997\nline 4998\nline 4999"
    assert jobs.tail_log(type("J", (), {"log_path": str(tmp_path / "none")})(), 3) == ""


@pytest.mark.parametrize(
    "kind,args,device",
    [("bad kind", ["x"], "cpu"), ("test", [], "cpu"), ("test", ["x"], "gpu0")],
)
def test_submit_validates_its_inputs(ws, kind, args, device):
    with pytest.raises(ConfigError):
        jobs.submit(ws, kind, args, device=device)


def test_claims_are_atomic_under_concurrency(db_engine):
    """Many sessions claim different queued jobs of one device at once: exactly one wins
    (SQLite and PostgreSQL; on PostgreSQL this needs the row lock taken by claim_job)."""
    n = 6

    def claim(job_id, barrier, won):
        barrier.wait()
        for attempt in range(20):
            try:
                with session_scope(db_engine) as s:
                    if repo.claim_job(s, job_id, "cuda:0", limit=1):
                        won.append(job_id)
                return
            except OperationalError:  # SQLite: lost a write race, retry like pump does
                time.sleep(0.01 * attempt)

    for _round in range(3):
        with session_scope(db_engine) as s:
            ids = [repo.create_job(s, "test", ["x"], "cuda:0").id for _ in range(n)]
        barrier = threading.Barrier(n)
        won: list[int] = []
        threads = [threading.Thread(target=claim, args=(i, barrier, won)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1
        with session_scope(db_engine) as s:
            assert len(repo.running_jobs(s)) == 1
            repo.finish_job(s, won[0], "done", "done")
            for i in ids:
                repo.finish_job(s, i, "cancelled", "cleanup", from_status=("queued",))


@pytest.mark.postgres
def test_job_runs_against_postgresql(postgres_url, ws, monkeypatch):
    # postgres_url first: its database must outlive the ws fixture's clean-up
    monkeypatch.setenv("SYNTHCT_DATABASE_URL", postgres_url)
    job_id = jobs.submit(ws, "test", ["jobs", "sleep", "0.3"], device="cpu")
    wait_for(lambda: status(ws, job_id) == "done", what="done on PostgreSQL")
    assert jobs.get_job(ws, job_id).progress == 1.0
    assert not ws.database.exists()  # nothing went to the SQLite file
