"""Jobs on a real SLURM cluster (scripts/ci/slurm-up.sh): training watched to completion and
used by generate, scancel recorded as cancelled, a time-limit requeue that resumes exactly, DDP
over two SLURM tasks, and the segmentation folds as a job array. One CPU per SLURM task."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from slurm_helpers import cli, have_torchrun, sacct_states, wait_until

from synthct import jobs
from synthct.config import load_run_config, save_yaml, to_dict
from synthct.executors.settings import ExecutorSettings

pytest_plugins = ["conftest_slurm"]
pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
ONE_CPU = ExecutorSettings(kind="slurm", cpus_per_task=1, time_min=10)


def tiny_config(path: Path, **train) -> Path:
    """configs/hagan-tiny.yaml with `train` overrides, at `path`."""
    cfg = to_dict(load_run_config(REPO / "configs" / "hagan-tiny.yaml"))
    cfg["train"].update(snapshot_every=0, collapse_every=0, **train)
    save_yaml(cfg, path)
    return path


def read_losses(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


def last_job(ws):
    return jobs.list_jobs(ws, limit=1)[0]


ENDED_IN_SLURM = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def settled(ws, job_id: int, timeout: float = 120):
    """The row once it has ended and SLURM's final state is recorded beside it."""

    def check():
        jobs.pump(ws)  # reconcile: SLURM's word reaches the row
        job = jobs.get_job(ws, job_id)
        return (
            job.status in ("done", "failed", "cancelled", "timeout", "node_fail")
            and (job.external_state in ENDED_IN_SLURM)
            and job
        )

    return wait_until(check, timeout, f"job {job_id} to settle", 1.0)


def test_training_job_runs_on_slurm_and_generate_uses_its_checkpoint(slurm_ws, tmp_path):
    config = tiny_config(tmp_path / "tiny.yaml", steps=6, checkpoint_every=3, log_every=1)
    res = cli("train", "--config", str(config), "--run", "on-slurm", "--executor", "slurm",
              "--cpus-per-task", "1", "--time", "10", "--wait")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    job = settled(slurm_ws, last_job(slurm_ws).id)
    assert (job.kind, job.executor, job.status, job.owner) == ("train", "slurm", "done", "synthct")
    assert job.external_state == "COMPLETED" and sacct_states(job.external_id) == ["COMPLETED"]
    assert job.progress == 1.0 and job.requeues == 0
    log = jobs.tail_log(job, 200)
    assert "synthct train --config" in log and f"job {job.id}: done" in log
    run_dir = slurm_ws.run_dir("on-slurm")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    assert len(read_losses(run_dir)) == 6

    gen = jobs.submit(slurm_ws, "generate", ["generate", "--run", "on-slurm", "--n", "2",
                      "--out", "from-slurm", "--device", "cpu"], executor=ONE_CPU)  # fmt: skip
    job = jobs.wait(slurm_ws, gen, timeout=300, poll_s=1.0)
    assert job.status == "done", jobs.tail_log(job, 50)
    card = json.loads((slurm_ws.synthetic_dir("from-slurm") / "datacard.json").read_text())
    assert card["run"] == "on-slurm" and card["checkpoint"]["step"] == 6
    assert card["counts"]["written"] == 2
    assert job.result == str(slurm_ws.synthetic_dir("from-slurm"))


def test_cancel_is_scancel_and_is_recorded_as_cancelled(slurm_ws):
    # synthct's cancel: scancel; the job stops at its safe point and records `cancelled`
    args = ["jobs", "sleep", "120", "--stop-delay", "0.2"]
    first = jobs.submit(slurm_ws, "test", args, executor=ONE_CPU)
    wait_until(lambda: jobs.get_job(slurm_ws, first).message.startswith("slept"), 120, "running")
    job = jobs.cancel(slurm_ws, first, grace_s=30)
    assert job.status == "cancelled", job.message
    assert job.message.startswith("cancelled by user; cancelled: stopped after")
    assert settled(slurm_ws, first).external_state == "CANCELLED"
    assert sacct_states(job.external_id) == ["CANCELLED"]

    # scancel typed by hand: SLURM's state reaches the row through reconcile
    second = jobs.submit(slurm_ws, "test", ["jobs", "sleep", "120"], executor=ONE_CPU)
    wait_until(lambda: jobs.get_job(slurm_ws, second).message.startswith("slept"), 120, "running")
    subprocess.run(["scancel", jobs.get_job(slurm_ws, second).external_id], check=True)
    job = settled(slurm_ws, second)
    assert (job.status, job.external_state) == ("cancelled", "CANCELLED"), job.message
    with pytest.raises(Exception, match="already cancelled"):
        jobs.cancel(slurm_ws, second)


def test_a_pending_job_is_cancelled_before_it_starts(slurm_ws):
    blocker = jobs.submit(slurm_ws, "test", ["jobs", "sleep", "120"],
                          executor=ExecutorSettings(kind="slurm", cpus_per_task=2, time_min=5))  # fmt: skip
    waiting = jobs.submit(slurm_ws, "test", ["jobs", "sleep", "1"],
                          executor=ExecutorSettings(kind="slurm", cpus_per_task=2, time_min=5))  # fmt: skip
    wait_until(lambda: jobs.get_job(slurm_ws, blocker).status == "running", 120, "blocker")
    assert jobs.get_job(slurm_ws, waiting).status == "pending"  # no CPU left for it
    job = jobs.cancel(slurm_ws, waiting)
    assert (job.status, job.started_at) == ("cancelled", None)
    jobs.cancel(slurm_ws, blocker, grace_s=30)
    assert settled(slurm_ws, waiting).external_state == "CANCELLED"


@pytest.mark.slow
def test_time_limit_requeues_and_resumes_to_the_same_losses(slurm_ws, tmp_path):
    """`--time 1 --signal-delay 20`: 20 s before the limit the job checkpoints at a step
    boundary, marks itself pending and requeues; the next attempt resumes with --resume. Its
    losses equal an uninterrupted run's (run at the same time, outside SLURM)."""
    steps = 800  # > 40 s of training even on an idle machine: the first attempt cannot finish
    config = tiny_config(tmp_path / "long.yaml", steps=steps, checkpoint_every=10_000,
                         log_every=10)  # fmt: skip
    straight = subprocess.Popen([sys.executable, "-m", "synthct", "train", "--config",
                                 str(config), "--run", "straight"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    res = cli("train", "--config", str(config), "--run", "limited", "--executor", "slurm",
              "--cpus-per-task", "1", "--time", "1", "--signal-delay", "20")  # fmt: skip
    assert res.returncode == 0, res.stderr
    job_id = last_job(slurm_ws).id
    job = wait_until(lambda: (j := jobs.get_job(slurm_ws, job_id)).requeues >= 1 and j, 180,
                     "the time-limit requeue")  # fmt: skip
    assert job.status == "pending" and "requeued before its time limit (SIGUSR2)" in job.message
    status = json.loads((slurm_ws.run_dir("limited") / "status.json").read_text())
    stopped_at = status["step"]
    assert status["state"] == "cancelled" and 0 < stopped_at < steps, status
    assert f"step-{stopped_at:08d}.pt" in job.message
    # SLURM holds a requeued job for two minutes and its limit is still one minute: shorten the
    # hold and lift the limit, so the second attempt starts now and can finish (test only)
    wait_until(lambda: sacct_states(job.external_id)[-1:] == ["PENDING"] or _squeue_pending(
        job.external_id), 60, "SLURM to hold the requeued job")  # fmt: skip
    subprocess.run(["scontrol", "update", f"JobId={job.external_id}", "TimeLimit=10",
                    "StartTime=now"], check=True)  # fmt: skip
    job = jobs.wait(slurm_ws, job_id, timeout=600, poll_s=1.0)
    assert job.status == "done", jobs.tail_log(job, 80)
    assert straight.wait(timeout=900) == 0
    assert read_losses(slurm_ws.run_dir("limited")) == read_losses(slurm_ws.run_dir("straight"))
    assert len(read_losses(slurm_ws.run_dir("straight"))) == steps // 10
    log = Path(job.log_path).read_text()  # both attempts append to the job's output file
    assert "(SLURM" in log and "attempt 2, rank 0/1): synthct train" in log
    assert "--run-name limited --resume" in log and "requeued before its time limit" in log
    assert "REQUEUED" in sacct_states(job.external_id, duplicates=True)


def _squeue_pending(external_id: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", external_id, "-o", "%T"], capture_output=True,
                         text=True).stdout.strip()  # fmt: skip
    return out == "PENDING"


@pytest.mark.skipif(not have_torchrun(), reason="torchrun not installed beside python")
def test_two_task_ddp_through_slurm_matches_torchrun(slurm_ws, tmp_path):
    """Two SLURM tasks (gloo on CPU) train the same DDP run as `torchrun --nproc_per_node=2`:
    identical losses and weights, both ranks' RNG in the checkpoint, one log."""
    from synthct.checkpoint import list_checkpoints, load_checkpoint

    config = tiny_config(tmp_path / "ddp.yaml", steps=4, checkpoint_every=2, log_every=1)
    res = cli("train", "--config", str(config), "--run", "ddp-slurm", "--executor", "slurm",
              "--tasks-per-node", "2", "--cpus-per-task", "1", "--time", "10", "--wait")  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    job = last_job(slurm_ws)
    assert "2 tasks" in jobs.tail_log(job, 400) or job.resources["tasks_per_node"] == 2
    torchrun = Path(sys.executable).parent / "torchrun"
    ref = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "synthct",
                          "train", "--config", str(config), "--run-name", "ddp-torchrun"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-2000:]
    a, b = slurm_ws.run_dir("ddp-slurm"), slurm_ws.run_dir("ddp-torchrun")
    assert read_losses(a) == read_losses(b) and len(read_losses(a)) == 4
    sa, sb = (load_checkpoint(list_checkpoints(d)[-1][1]) for d in (a, b))
    assert sa["step"] == sb["step"] == 4 and len(sa["rng"]) == 2
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_segmentation_folds_run_as_an_array_then_the_ensemble(slurm_ws):
    """`jobs submit --executor slurm -- segment …`: one array task per fold (in parallel), then
    the ensemble and test as a job that depends on the whole array. Its results equal those of
    the same experiment run in one process."""
    common = ["--experiment", "real", "--folds", "2", "--epochs", "1", "--size", "32",
              "--init-filters", "4"]  # fmt: skip
    res = cli("jobs", "submit", "--executor", "slurm", "--cpus-per-task", "1", "--time", "10",
              "--", "segment", *common, "--name", "seg-array")  # fmt: skip
    assert res.returncode == 0, res.stderr
    ids = [int(line.split()[1].rstrip(":")) for line in res.stdout.splitlines()]
    rows = [jobs.get_job(slurm_ws, i) for i in ids]
    assert [r.kind for r in rows] == ["segment-fold", "segment-fold", "segment"]
    array = rows[0].external_id.split("_")[0]
    assert [r.external_id for r in rows[:2]] == [f"{array}_0", f"{array}_1"]
    assert [r.args[-2:] for r in rows[:2]] == [["--fold", "0"], ["--fold", "1"]]
    shown = subprocess.run(["scontrol", "show", "job", rows[2].external_id], capture_output=True,
                           text=True).stdout  # fmt: skip
    assert f"afterok:{array}" in shown
    done = [jobs.wait(slurm_ws, i, timeout=600, poll_s=1.0) for i in ids]
    assert [j.status for j in done] == ["done"] * 3, [jobs.tail_log(j, 30) for j in done]
    assert done[2].started_at >= max(done[0].finished_at, done[1].finished_at)

    local = cli("segment", *common, "--name", "seg-local")
    assert local.returncode == 0, local.stderr[-2000:]
    a, b = (json.loads((slurm_ws.segmentation / n / "results.json").read_text())
            for n in ("seg-array", "seg-local"))  # fmt: skip
    assert a["test"] == b["test"] and a["per_case"] == b["per_case"]
    assert [f["best_val_dice"] for f in a["folds"]] == [f["best_val_dice"] for f in b["folds"]]
