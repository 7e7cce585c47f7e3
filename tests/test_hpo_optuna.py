"""HPO as shared Optuna studies: exactly-once grid points under concurrent workers (threads,
processes on PostgreSQL, SLURM jobs), a dead worker's trial run again, open search with TPE,
the storage kept apart from synthct's tables, and what the app shows of a study."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["conftest_pg", "conftest_slurm"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(workspace, monkeypatch):
    monkeypatch.delenv("SYNTHCT_DATABASE_URL", raising=False)
    monkeypatch.delenv("SYNTHCT_JOB_ID", raising=False)
    return workspace


def write_grid(folder: Path, name: str, grid: dict, steps: int = 2) -> Path:
    from synthct.config import load_run_config, save_yaml, to_dict

    cfg = to_dict(load_run_config(REPO / "configs" / "hagan-tiny.yaml"))
    cfg["train"].update(steps=steps, log_every=1, checkpoint_every=1000, snapshot_every=0,
                        collapse_every=0)  # fmt: skip
    save_yaml(cfg, folder / "base.yaml")
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": "base.yaml", "stages": [{"grid": grid}]},
                                   sort_keys=False))  # fmt: skip
    return path


def tiny_factory(run_cfg):
    from test_train import TinyGAN

    return TinyGAN(run_cfg.data.size, run_cfg.model.latent_dim, lr=run_cfg.model.lr_g)


def lr_score(run_dir: Path) -> float:  # a stand-in metric: prefers the larger learning rate
    return -yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["lr_g"]


def load(ws, name):
    import optuna

    from synthct.hpo_study import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(ws))


def test_concurrent_workers_take_every_grid_point_exactly_once(ws, tmp_path):
    """Eight threads ask a four-point grid for trials at once: four trials, all different."""
    from synthct.hpo import load_grid
    from synthct.hpo_study import next_trial, open_stage, open_storage

    spec = load_grid(write_grid(tmp_path, "g", {"model.lr_g": [1e-3, 2e-3, 3e-3, 4e-3]}))
    study = open_stage(open_storage(ws), ws, spec, 0, {}, "m", 0, None)
    barrier, got = threading.Barrier(8), []

    def take():
        barrier.wait()
        got.append(next_trial(ws, study, spec))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = [t for t in got if t is not None]
    assert len(trials) == 4 and len(study.trials) == 4
    runs = sorted(study._storage.get_trial(t._trial_id).user_attrs["run"] for t in trials)
    assert runs == ["g-01", "g-02", "g-03", "g-04"]


def test_a_dead_workers_trial_is_run_again_and_the_grid_completes(ws, tmp_path, monkeypatch):
    """A trial whose worker (a process of this host) died is failed and its point enqueued
    again; the next worker runs it, so every point ends with one completed trial."""
    from test_train import install_packed

    from synthct.hpo import load_grid
    from synthct.hpo_study import next_trial, open_stage, open_storage, run_hpo

    install_packed(monkeypatch, 32)
    grid = write_grid(tmp_path, "d", {"model.lr_g": [1e-3, 3e-3]})
    spec = load_grid(grid)
    study = open_stage(open_storage(ws), ws, spec, 0, {}, "lr_score", 0, None)
    taken = next_trial(ws, study, spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    taken.set_user_attr("worker", {"job": None, "attempt": 0, "host": os.uname().nodename,
                                   "pid": dead.pid})  # fmt: skip
    run_hpo(grid, ws, metric=lr_score, model_factory=tiny_factory)
    trials = load(ws, "d").trials
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL"]
    failed = next(t for t in trials if t.state.name == "FAIL")
    assert "stopped" in failed.user_attrs["failed_because"]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params["model.lr_g"] for t in done) == [1e-3, 3e-3]
    retry = next(t for t in done if t.user_attrs.get("retry_of") == failed.number)
    assert retry.user_attrs["run"] == failed.user_attrs["run"] == "d-01"


def test_open_search_runs_its_trial_budget_with_tpe(ws, tmp_path, monkeypatch):
    from test_train import install_packed

    from synthct.hpo import read_summary
    from synthct.hpo_study import run_hpo

    install_packed(monkeypatch, 32)
    write_grid(tmp_path, "unused", {"model.lr_g": [1e-3]})
    spec = {"name": "s", "base": "base.yaml", "n_trials": 3,
            "search": {"model.lr_g": {"low": 1e-4, "high": 1e-2, "log": True}}}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    summary = run_hpo(tmp_path / "s.yaml", ws, metric=lr_score, model_factory=tiny_factory)
    study = load(ws, "s")
    assert study.user_attrs["sampler"] == "tpe" and len(study.trials) == 3
    lrs = [t.params["model.lr_g"] for t in study.trials]
    assert all(1e-4 <= v <= 1e-2 for v in lrs) and len(set(lrs)) == 3
    assert [t.user_attrs["run"] for t in study.trials] == ["s-t001", "s-t002", "s-t003"]
    rows = read_summary(summary)
    assert len(rows) == 3  # rank 1 = lowest score (6 significant digits in the CSV)
    assert float(rows[0]["lr_score"]) == pytest.approx(-max(lrs), rel=1e-5)
    run_hpo(tmp_path / "s.yaml", ws, metric=lr_score, model_factory=tiny_factory)
    assert len(load(ws, "s").trials) == 3  # the budget is spent: nothing new


def lr_cost(run_dir: Path) -> float:  # a stand-in metric: prefers the smaller learning rate
    return -lr_score(run_dir)


def test_pruning_stops_runs_that_score_worse_than_the_median_at_a_check(ws, tmp_path, monkeypatch):
    """--prune-every 2 on 4-step runs: after 3 complete trials, a point whose score at step 2 is
    worse than the median of theirs is pruned there (its run stops at step 2)."""
    from test_train import install_packed

    from synthct.hpo import read_summary
    from synthct.hpo_study import run_hpo

    install_packed(monkeypatch, 32)
    grid = write_grid(tmp_path, "p", {"model.lr_g": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]}, steps=4)
    summary = run_hpo(grid, ws, metric=lr_cost, model_factory=tiny_factory, prune_every=2)
    trials = load(ws, "p").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 + ["PRUNED"] * 2
    assert all(t.intermediate_values == {2: pytest.approx(t.params["model.lr_g"])} for t in trials)
    steps = [json.loads((ws.run_dir(f"p-0{i}") / "status.json").read_text())["step"] for i in
             range(1, 6)]  # fmt: skip
    assert steps == [4, 4, 4, 2, 2]
    assert [r["run"] for r in read_summary(summary)] == ["p-01", "p-02", "p-03"]


def test_the_app_shows_trials_best_so_far_and_parallel_coordinates(ws, tmp_path, monkeypatch):
    from test_train import install_packed

    from synthct.hpo_study import list_studies, parallel_coordinates, run_hpo, trials_table

    install_packed(monkeypatch, 32)
    grid = write_grid(tmp_path, "v", {"model.lr_g": [1e-3, 3e-3, 2e-3]})
    assert list_studies(ws) == []
    run_hpo(grid, ws, metric=lr_score, model_factory=tiny_factory)
    assert list_studies(ws) == ["v"]
    rows = trials_table(ws, "v")
    assert [r["value"] for r in rows] == [-1e-3, -3e-3, -2e-3]
    assert [r["best so far"] for r in rows] == [-1e-3, -3e-3, -3e-3]
    fig = parallel_coordinates(ws, "v")  # one line per completed trial across the axes
    assert tuple(fig.layout.xaxis.ticktext) == ("Objective Value", "model.lr_g")
    assert sum(t.mode == "lines" for t in fig.data) == 3


def _two_workers(grid: Path, env: dict) -> list[subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "synthct", "hpo", str(grid), "--metric", "hu_w1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    return [(p.communicate(timeout=900), p.returncode) for p in procs]


def _check_grid_once(ws, name: str, points: int, steps: int) -> set:
    from test_train import read_losses

    study = load(ws, name)
    trials = study.trials
    assert len(trials) == points and {t.state.name for t in trials} == {"COMPLETE"}
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == points  # every grid point once
    for t in trials:  # each run trained once: `steps` logged steps, no second pass
        assert [int(r["step"]) for r in read_losses(ws.run_dir(t.user_attrs["run"]))] == list(
            range(1, steps + 1)
        )
    return {(t.user_attrs["worker"]["job"], t.user_attrs["worker"]["pid"]) for t in trials}


@pytest.mark.postgres
def test_two_worker_processes_share_one_postgresql_study(postgres_url, tmp_path_factory, tmp_path):
    from slurm_helpers import build_packed_workspace
    from sqlalchemy import create_engine, inspect

    ws = build_packed_workspace(tmp_path_factory.mktemp("hpo-pg"))
    grid = write_grid(tmp_path, "pg", {"model.lr_g": [1e-4, 2e-4, 3e-4],
                                       "model.lr_d": [2e-4, 4e-4]}, steps=3)  # fmt: skip
    env = {**os.environ, "SYNTHCT_DATABASE_URL": postgres_url, "SYNTHCT_WORKSPACE": str(ws.root),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    env.pop("SYNTHCT_JOB_ID", None)
    for (_out, err), rc in _two_workers(grid, env):
        assert rc == 0, err[-2000:]
    os.environ["SYNTHCT_DATABASE_URL"] = postgres_url
    try:
        workers = _check_grid_once(ws, "pg", 6, 3)
        assert len(workers) == 2  # both processes ran trials
        assert not (ws.root / "optuna.db").exists()
        ins = inspect(create_engine(postgres_url))
        assert "studies" in ins.get_table_names(schema="optuna")  # Optuna's, in its schema
        assert "manifest_sha256" in {c["name"] for c in ins.get_columns("studies")}  # synthct's
    finally:
        del os.environ["SYNTHCT_DATABASE_URL"]


@pytest.mark.slurm
@pytest.mark.postgres
def test_two_slurm_workers_share_one_postgresql_study(
    postgres_url, slurm_ws, tmp_path, monkeypatch
):  # postgres_url first: its database must outlive slurm_ws's clean-up (which reads the jobs)
    """`synthct hpo --executor slurm --workers 2`: two SLURM jobs pull the grid's trials
    concurrently from one PostgreSQL storage; every point runs exactly once."""
    from slurm_helpers import cli

    from synthct import jobs

    monkeypatch.setenv("SYNTHCT_DATABASE_URL", postgres_url)
    grid = write_grid(tmp_path, "sl", {"model.lr_g": [1e-4, 2e-4, 3e-4],
                                       "model.lr_d": [2e-4, 4e-4]}, steps=3)  # fmt: skip
    res = cli("hpo", str(grid), "--metric", "hu_w1", "--executor", "slurm", "--workers", "2",
              "--cpus-per-task", "1", "--time", "15")  # fmt: skip
    assert res.returncode == 0, res.stderr
    ids = [j.id for j in jobs.list_jobs(slurm_ws, limit=2)]
    done = [jobs.wait(slurm_ws, i, timeout=900, poll_s=2.0) for i in ids]
    assert [j.status for j in done] == ["done", "done"], [jobs.tail_log(j, 40) for j in done]
    workers = _check_grid_once(slurm_ws, "sl", 6, 3)
    assert {job for job, _ in workers} == set(ids)  # both SLURM jobs ran trials
    a, b = sorted(done, key=lambda j: j.id)
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # at the same time
    summary = cli("hpo", str(grid), "--metric", "hu_w1", "--show")
    assert summary.returncode == 0 and len(summary.stdout.strip().splitlines()) == 1 + 6
