"""Executors without a cluster: settings, SLURM's states mirrored onto rows, the requeue argv,
hosts that share one database leaving each other's jobs alone, stop requests from a handler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from db import jobs as repo
from db.session import session_scope
from synthct import jobs
from synthct.errors import ConfigError, WorkspaceError


@pytest.fixture
def ws(workspace, monkeypatch):
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_JOB_ID", raising=False)
    return workspace


def test_slurm_durations_parse_like_squeue_prints_them():
    from synthct.executors.slurm_commands import parse_duration

    assert parse_duration("0:59") == 59
    assert parse_duration("1:00:00") == 3600
    assert parse_duration("2-03:04:05") == 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert parse_duration("UNLIMITED") is None and parse_duration("INVALID") is None


def test_settings_come_from_the_workspace_file_then_a_config_then_flags(ws, tmp_path):
    from synthct.executors.settings import resolve_settings

    ws.executor_file.write_text(
        "executor: {kind: slurm, partition: gpu, time_min: 120, gpus_per_node: 4}\n"
    )
    (tmp_path / "big.yaml").write_text("executor: {nodes: 2, account: thesis}\n")
    s = resolve_settings(ws, tmp_path / "big.yaml", time_min=30, partition=None)
    assert (s.kind, s.partition, s.time_min, s.nodes, s.account) == (
        "slurm",
        "gpu",
        30,
        2,
        "thesis",
    )
    assert s.ntasks_per_node == 4 and s.world_size == 8  # one process per GPU by default


@pytest.mark.parametrize(
    "text,match",
    [
        ("executor: {kind: slurm, time_min: 1, signal_delay_s: 90}", "signal_delay_s"),
        ("executor: {kind: pbs}", "pbs"),
        ("executor: {gpus_per_node: -1}", "gpus_per_node"),
        ("executor: {partition: 'gpu; rm -rf /'}", "partition"),
        ("executor: {partiton: gpu}", "partiton"),
    ],
)
def test_bad_settings_name_the_file_and_the_value(tmp_path, text, match):
    from synthct.executors.settings import resolve_settings

    path = tmp_path / "ex.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match) as e:
        resolve_settings(None, path)
    assert str(path) in str(e.value)


def test_a_requeued_training_attempt_resumes_its_run():
    from synthct.executors.slurm_task import attempt_args

    args = ["train", "--config", "c.yaml", "--run-name", "r"]
    assert attempt_args(args, 0) == args
    assert attempt_args(args, 2) == [*args, "--resume"]
    assert attempt_args([*args, "--resume"], 1) == [*args, "--resume"]
    assert attempt_args(["generate", "--run", "r"], 1) == ["generate", "--run", "r"]


def _slurm_row(ws, status: str, external_id: str = "4242") -> int:
    with session_scope(jobs.engine_for(ws)) as s:
        job = repo.create_job(s, "train", ["train"], "cpu", executor="slurm", resources={})
        repo.set_submitted(s, job.id, external_id, "/dev/null", "synthct")
        if status != "pending":
            repo.set_state(s, job.id, "running", "running", ("pending",))
        if status == "cancelling":
            repo.request_cancel(s, job.id)
        return job.id


@pytest.mark.parametrize(
    "row,state,status,requeues",
    [
        ("running", "TIMEOUT", "timeout", 0),
        ("running", "NODE_FAIL", "node_fail", 0),
        ("running", "CANCELLED", "cancelled", 0),
        ("running", "OUT_OF_MEMORY", "failed", 0),
        ("pending", "COMPLETED", "done", 0),
        ("running", "PENDING", "pending", 1),  # SLURM requeued it (preemption, node failure)
        ("cancelling", "CANCELLED", "cancelled", 0),
        ("running", "RUNNING", "running", 0),
        ("pending", "RUNNING", "pending", 0),  # the task marks itself running when it starts
    ],
)
def test_slurm_states_are_mirrored_onto_the_row(ws, row, state, status, requeues):
    from synthct.executors.slurm import _apply

    job_id = _slurm_row(ws, row)
    with session_scope(jobs.engine_for(ws)) as s:
        _apply(s, repo.get_job(s, job_id), state)
    job = jobs.get_job(ws, job_id)
    assert (job.status, job.external_state, job.requeues) == (status, state, requeues)
    if row == "cancelling":
        assert job.message == "cancelled by user"
    elif status in repo.TERMINAL:
        assert job.finished_at is not None and state in job.message


def test_a_job_that_starts_before_its_submission_is_recorded_keeps_running(ws):
    """sbatch may start the task before the submitter writes the SLURM id: the running row keeps
    its status and message; a row still waiting says `pending` instead of `submitting`."""
    engine = jobs.engine_for(ws)
    with session_scope(engine) as s:
        early = repo.create_job(s, "train", ["train"], "cpu", executor="slurm", resources={}).id
        waiting = repo.create_job(s, "train", ["train"], "cpu", executor="slurm", resources={}).id
        assert repo.set_state(s, early, "running", "running on n1 (1 task)", ("pending",))
    with session_scope(engine) as s:
        for job_id, external in ((early, "11"), (waiting, "12")):
            repo.set_submitted(s, job_id, external, f"/logs/{external}.out", "synthct")
    first, second = jobs.get_job(ws, early), jobs.get_job(ws, waiting)
    assert (first.status, first.message, first.external_id) == (
        "running", "running on n1 (1 task)", "11",
    )  # fmt: skip
    assert (second.status, second.message, second.log_path) == (
        "pending",
        "pending",
        "/logs/12.out",
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_hosts_sharing_a_database_never_touch_each_others_local_jobs(ws):
    """A local job's pid means something only on its own host: reconcile, the scheduler and
    cancel leave another host's jobs alone (one of this host with the same dead pid fails)."""
    engine = jobs.engine_for(ws)
    pid = _dead_pid()
    with session_scope(engine) as s:
        ids = {}
        for owner in ("other-host", jobs.host_name()):
            job = repo.create_job(s, "test", ["x"], "cpu", owner=owner)
            assert repo.claim_job(s, job.id, "cpu", limit=5, owner=owner)
            repo.set_pid(s, job.id, pid)
            ids[owner] = job.id
        queued = repo.create_job(s, "test", ["jobs", "sleep", "0.1"], "cpu", owner="other-host").id
    with session_scope(engine) as s:
        assert jobs.reconcile(s) == [ids[jobs.host_name()]]
    assert jobs.get_job(ws, ids["other-host"]).status == "running"
    assert jobs.get_job(ws, ids[jobs.host_name()]).status == "failed"
    assert jobs.pump(ws) == [] and jobs.get_job(ws, queued).status == "queued"
    with pytest.raises(WorkspaceError, match="runs on host other-host"):
        jobs.cancel(ws, ids["other-host"])
    # the capacity of a device is counted per host: other-host's running job does not block ours
    with session_scope(engine) as s:
        mine = repo.create_job(s, "test", ["x"], "cpu", owner=jobs.host_name()).id
        assert repo.claim_job(s, mine, "cpu", limit=1, owner=jobs.host_name())


def test_slurm_without_its_commands_is_a_clear_error_and_a_failed_row(ws, monkeypatch, tmp_path):
    from synthct.executors.settings import ExecutorSettings

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, squeue, scancel, srun here
    with pytest.raises(ConfigError, match="sbatch, squeue, scancel, srun"):
        jobs.submit(ws, "test", ["jobs", "sleep", "1"], executor=ExecutorSettings(kind="slurm"))
    job = jobs.list_jobs(ws)[0]
    assert (job.executor, job.status) == ("slurm", "failed") and "sbatch" in job.message


def test_stop_requests_from_another_handler_reach_the_active_block():
    from synthct.stopping import StopRequest, add_stop_listener, request_stop

    heard = []
    add_stop_listener(heard.append)
    assert request_stop(signal.SIGUSR2) is False  # no safe point to reach
    with StopRequest() as stop:
        assert request_stop(signal.SIGUSR2) is True
        assert stop.requested == signal.SIGUSR2 and stop.describe() == "SIGUSR2"
    assert heard[-1] == signal.SIGUSR2
    assert request_stop(signal.SIGUSR2) is False  # the block has ended
    assert os.getpid() > 0
