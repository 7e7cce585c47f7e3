"""Hyper-parameter search as Optuna studies that any number of workers share.

A grid file (synthct.hpo) becomes one Optuna study per stage: `<name>` for stage 1,
`<name>-s2` … for the later ones. A grid stage is a GridSampler study whose points are enqueued
once, in the thesis's numbering (first key outermost), when the stage opens; a file with a
`search:` section instead is one TPE study for open search (`n_trials` trials, constant-liar
TPE so concurrent workers spread out). Each trial is an ordinary run (WS/runs/<run>/; grid
points keep their thesis names, `hpo-thesis-17` …) ranked by the metric, FID on the validation
split by default (never test); lower is better.

Storage: the project's database — Optuna's RDBStorage in the schema `optuna` of the same
PostgreSQL database (its own tables, apart from synthct's migrations: Optuna's `studies` table
would collide with the Visual Turing Test's), or, for the default SQLite workspace database,
the file WS/optuna.db beside synthct.db (SQLite has no schemas).

Workers (`run_worker`: the `synthct hpo` process itself, or jobs on any host or SLURM node) pull
trials until none are left. Taking a trial happens under a named lock in the synthct database
(db/locks.py): the check "is there a point left?" and Optuna's `ask` are one step, so every
grid point runs exactly once however many workers ask at the same moment. A worker that is
stopped (a SLURM time limit, a cancel) fails its trial and enqueues the same point again; its
run folder keeps the checkpoint, so whoever takes the point next resumes it. A trial whose
worker died without a word (its job ended, or its process on this host is gone) is failed and
re-enqueued the same way by the next worker that takes a trial. A later stage opens when every
trial of the earlier ones has ended; the worker that finds it so opens it, under the lock.

Pruning (optional, `prune_every` steps): a run is trained in chunks; after each chunk the
metric is reported to Optuna and a MedianPruner may stop the trial (state PRUNED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from db import jobs as repo
from db.locks import named_lock
from db.session import database_url, session_scope
from synthct.errors import Cancelled, ConfigError
from synthct.jobs import _alive, current_job_id, engine_for, host_name
from synthct.stopping import Terminated
from synthct.workspace import Workspace

if TYPE_CHECKING:
    import optuna

SCHEMA = "optuna"
POLL_S = 5.0
Metric = Callable[[Path], float]
Progress = Callable[[float, str], None]


# -- storage ------------------------------------------------------------------------------------
def storage_url(ws: Workspace) -> tuple[str, dict[str, Any]]:
    """(URL, engine kwargs) of the study storage for the workspace's database."""

    url = database_url(ws.database)
    if url.startswith("sqlite"):
        return f"sqlite:///{ws.optuna_db}", {"connect_args": {"timeout": 60}}
    if url.startswith("postgresql"):
        options = {"options": f"-c search_path={SCHEMA}"}
        return url, {"connect_args": options, "pool_pre_ping": True}
    return url, {}


def _lock(ws: Workspace, name: str):
    return named_lock(engine_for(ws), f"synthct-hpo:{name}")


def open_storage(ws: Workspace) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage in the project database (tables created on first use, under the
    lock, so workers starting together do not race to create them)."""
    import optuna  # deferred: loads optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, kwargs = storage_url(ws)
    with _lock(ws, "storage"):
        if url.startswith("postgresql"):
            with engine_for(ws).begin() as conn:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


# -- the plan -----------------------------------------------------------------------------------
def stage_study_name(spec: dict, index: int) -> str:
    return spec["name"] if index == 0 else f"{spec['name']}-s{index + 1}"


def is_search(spec: dict) -> bool:
    """A `search:` file (TPE) rather than a grid."""
    return "search" in spec


def n_stages(spec: dict, max_stages: int | None = None) -> int:
    total = 1 if is_search(spec) else len(spec["stages"])
    return total if max_stages is None else max(1, min(max_stages, total))


def _sampler(spec: dict, index: int, seed: int):
    import optuna  # deferred: loads optuna

    if is_search(spec):
        startup = max(1, min(10, int(spec.get("n_trials", 20)) // 3))
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                          n_startup_trials=startup)  # fmt: skip
    grid = spec["stages"][index]["grid"]
    return optuna.samplers.GridSampler({k: list(v) for k, v in grid.items()}, seed=0)


def _pruner(prune_every: int | None):
    import optuna  # deferred: loads optuna

    if not prune_every:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def open_stage(
    storage, ws: Workspace, spec: dict, index: int, best: dict, metric: str, seed: int,
    prune_every: int | None,
) -> optuna.Study:  # fmt: skip
    """The study of stage `index`, created (and its grid enqueued) exactly once."""
    import optuna  # deferred: loads optuna

    from synthct.hpo import expand_stage  # deferred: loads pandas

    name = stage_study_name(spec, index)
    sampler, pruner = _sampler(spec, index, seed), _pruner(prune_every)
    points = [] if is_search(spec) else expand_stage(spec, index, best)
    with _lock(ws, name):
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                                      pruner=pruner)  # fmt: skip
        except KeyError:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                        pruner=pruner, direction="minimize")  # fmt: skip
            study.set_user_attr("grid", spec["name"])
            study.set_user_attr("stage", index + 1)
            study.set_user_attr("metric", metric)
            study.set_user_attr("sampler", "tpe" if is_search(spec) else "grid")
            study.set_user_attr("start", best)
            for run, overrides in points:
                params = {k: overrides[k] for k in spec["stages"][index]["grid"]}
                study.enqueue_trial(params, user_attrs={"run": run})
            study.set_user_attr("points", [run for run, _ in points])
    if study.user_attrs.get("points") != [run for run, _ in points]:
        raise ConfigError(
            f"study {name!r} exists with other grid points than {spec.get('path', 'the grid')} "
            f"now has; give the grid another name (or delete the study)"
        )
    return study


# -- taking a trial -----------------------------------------------------------------------------
def worker_identity() -> dict[str, Any]:
    """Who runs a trial: the job (and its SLURM attempt), else this host and process."""

    return {
        "job": current_job_id(),
        "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "host": host_name(),
        "pid": os.getpid(),
    }


def _worker_gone(ws: Workspace, worker: dict, me: dict) -> bool:
    """Has the worker of a RUNNING trial stopped without telling Optuna?"""

    job = worker.get("job")
    if job is not None:
        if job == me["job"]:
            return worker.get("attempt", 0) < me["attempt"]  # an earlier attempt of this job
        with session_scope(engine_for(ws)) as s:
            row = repo.get_job(s, job)
            return row is None or row.status in repo.TERMINAL
    return worker.get("host") == me["host"] and not _alive(int(worker.get("pid", 0)))


def fail_and_requeue(study: optuna.Study, trial, why: str) -> None:
    """Fail a trial and enqueue its point again (its run folder keeps the checkpoint)."""
    from optuna.trial import TrialState  # deferred: loads optuna

    frozen = study._storage.get_trial(trial._trial_id)
    params = frozen.params or frozen.system_attrs.get("fixed_params") or {}
    if frozen.state == TrialState.RUNNING:
        study._storage.set_trial_user_attr(frozen._trial_id, "failed_because", why[:500])
    study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
    if params:
        attrs = {"run": frozen.user_attrs.get("run"), "retry_of": frozen.number}
        study.enqueue_trial(params, user_attrs={k: v for k, v in attrs.items() if v is not None})


def next_trial(ws: Workspace, study: optuna.Study, spec: dict):
    """Take the next trial of the study (None when none is left), under the study's lock."""
    from optuna.trial import TrialState  # deferred: loads optuna

    me = worker_identity()
    with _lock(ws, study.study_name):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker") or {}
            if worker and _worker_gone(ws, worker, me):
                fail_and_requeue(study, t, f"its worker {worker} stopped")
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if not waiting:
            if not is_search(spec):
                return None
            live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            if sum(t.state in live for t in trials) >= int(spec.get("n_trials", 20)):
                return None
        trial = study.ask()
        trial.set_user_attr("worker", me)
        return trial


def stage_finished(study: optuna.Study) -> bool:
    from optuna.trial import TrialState  # deferred: loads optuna

    return not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))


# -- one trial ----------------------------------------------------------------------------------
def suggest(trial, spec: dict, index: int) -> dict[str, Any]:
    """The trial's parameters: its grid point, or TPE's suggestion from the search space."""
    if not is_search(spec):
        return {k: trial.suggest_categorical(k, list(v))
                for k, v in spec["stages"][index]["grid"].items()}  # fmt: skip
    out: dict[str, Any] = {}
    for key, dist in spec["search"].items():
        if "choices" in dist:
            out[key] = trial.suggest_categorical(key, list(dist["choices"]))
        elif all(isinstance(dist.get(k), int) for k in ("low", "high")) and not dist.get("log"):
            out[key] = trial.suggest_int(key, dist["low"], dist["high"], step=dist.get("step", 1))
        else:
            out[key] = trial.suggest_float(key, float(dist["low"]), float(dist["high"]),
                                           log=bool(dist.get("log", False)))  # fmt: skip
    return out


def run_trial(
    ws: Workspace, study: optuna.Study, trial, spec: dict, index: int, best: dict,
    steps: int | None, score_fn: Metric, prune_every: int | None,
    model_factory: Callable | None = None,
) -> float:  # fmt: skip
    """Train (or resume, or reuse) the trial's run and return its score; reports intermediate
    scores and raises optuna.TrialPruned when pruning is on."""
    import optuna  # deferred: loads optuna

    from synthct.hpo import run_config, run_state  # deferred: loads pandas
    from synthct.train import train  # deferred: loads scipy, torch

    params = suggest(trial, spec, index)
    start = dict(best) if (not is_search(spec) and spec["stages"][index].get("from_best")) else {}
    overrides = {**start, **params}
    if steps is not None:
        overrides["train.steps"] = steps
    run = trial.user_attrs.get("run") or f"{spec['name']}-t{trial.number + 1:03d}"
    trial.set_user_attr("run", run)
    trial.set_user_attr("stage", index + 1)
    trial.set_user_attr("overrides", overrides)
    cfg = run_config(spec, overrides)
    run_dir = ws.run_dir(run)
    total = cfg.train.steps
    chunks = list(range(prune_every, total, prune_every)) if prune_every else []
    for target in [*chunks, total]:
        if _steps_done(run_dir) < target:
            part = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=target))
            train(part, ws, run, resume=run_state(run_dir) != "new", model_factory=model_factory)
        if target < total:
            value = float(score_fn(run_dir))
            trial.report(value, target)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{run}: pruned at step {target} ({value:.4g})")
    return float(score_fn(run_dir))


def _steps_done(run_dir: Path) -> int:
    """The step of a finished run (0 unless its status.json says done)."""

    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(status.get("step", 0)) if status.get("state") == "done" else 0


# -- the worker ---------------------------------------------------------------------------------
def run_worker(
    grid_path: str | Path,
    ws: Workspace,
    steps: int | None = None,
    max_stages: int | None = None,
    metric: str | Metric = "fid",
    progress: Progress | None = None,
    model_factory: Callable | None = None,
    prune_every: int | None = None,
    seed: int = 0,
) -> Path:
    """Pull and run trials until every stage is complete; returns the summary CSV path
    (WS/evals/hpo-<name>/summary.csv, rewritten after every trial by whichever worker ran it)."""
    import optuna  # deferred: loads optuna

    from synthct.hpo import METRICS, load_grid  # deferred: loads pandas

    spec = load_grid(grid_path)
    score_fn = metric if callable(metric) else METRICS.get(metric)
    if score_fn is None:
        raise ConfigError(f"unknown ranking metric {metric!r}; available: {sorted(METRICS)}")
    metric_name = getattr(score_fn, "__name__", str(metric))
    storage = open_storage(ws)
    me = worker_identity()
    best: dict[str, Any] = {}
    stages = n_stages(spec, max_stages)
    for index in range(stages):
        worker_seed = seed + (me["job"] or 0) * 7919 + me["attempt"]
        study = open_stage(storage, ws, spec, index, best, metric_name, worker_seed, prune_every)
        while True:
            trial = next_trial(ws, study, spec)
            if trial is None:
                if stage_finished(study):
                    break
                time.sleep(POLL_S)  # others are finishing theirs (or one died: reaped above)
                continue
            try:
                value = run_trial(ws, study, trial, spec, index, best, steps, score_fn,
                                  prune_every, model_factory)  # fmt: skip
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            except BaseException as e:
                with contextlib.suppress(Exception):
                    if _is_stop(e):  # a stop request, not a failure of the point: run it again
                        fail_and_requeue(study, trial, f"stopped: {e}")
                    else:
                        why = f"{type(e).__name__}: {e}"[:500]
                        study._storage.set_trial_user_attr(trial._trial_id, "failed_because", why)
                        study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            else:
                study.tell(trial, value)
            write_study_summary(ws, spec, stages, metric_name, storage)
            if progress:
                done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
                total = max(1, len(study.get_trials(deepcopy=False)))
                progress(min(1.0, done / total),
                         f"stage {index + 1}: {trial.user_attrs.get('run')} done")  # fmt: skip
        best = best_overrides(study)
    return write_study_summary(ws, spec, stages, metric_name, storage)


def _is_stop(e: BaseException) -> bool:
    """Cancelled (a stop request honoured at a step), SIGTERM or Ctrl-C."""

    return isinstance(e, Cancelled | Terminated | KeyboardInterrupt)


def best_overrides(study: optuna.Study) -> dict[str, Any]:
    """The winning point's overrides (without train.steps), {} when nothing completed."""
    from optuna.trial import TrialState  # deferred: loads optuna

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return {}
    winner = min(done, key=lambda t: t.value)
    return {k: v for k, v in winner.user_attrs.get("overrides", {}).items() if k != "train.steps"}


# -- reading studies (summary, app) -------------------------------------------------------------
def summary_rows(ws: Workspace, spec: dict, stages: int, storage) -> list[dict]:
    """Rows of synthct.hpo.write_summary from the completed trials of every stage study."""
    import optuna  # deferred: loads optuna

    from synthct.hpo import final_losses, run_config  # deferred: loads pandas

    rows = []
    for index in range(stages):
        try:
            study = optuna.load_study(study_name=stage_study_name(spec, index), storage=storage)
        except KeyError:
            break
        for t in study.get_trials(deepcopy=False):
            if t.state != optuna.trial.TrialState.COMPLETE:
                continue
            overrides = t.user_attrs.get("overrides", {})
            run = t.user_attrs.get("run", f"trial-{t.number}")
            rows.append({
                "run": run, "stage": index + 1, "overrides": overrides, "score": float(t.value),
                "losses": final_losses(ws.run_dir(run)),
                "steps": run_config(spec, overrides).train.steps, "trial": t.number,
            })  # fmt: skip
    return rows


def write_study_summary(ws: Workspace, spec: dict, stages: int, metric: str, storage) -> Path:
    from synthct.hpo import write_summary  # deferred: loads pandas

    return write_summary(ws, spec["name"], summary_rows(ws, spec, stages, storage), metric)


def list_studies(ws: Workspace) -> list[str]:
    """Names of the workspace's studies (none before the first `synthct hpo`)."""
    import optuna  # deferred: loads optuna

    url, _ = storage_url(ws)
    if url.startswith("sqlite") and not ws.optuna_db.exists():
        return []
    return sorted(optuna.get_all_study_names(open_storage(ws)))


def trials_table(ws: Workspace, name: str) -> list[dict[str, Any]]:
    """One row per trial: number, state, run, value, best so far, parameters, worker."""
    import optuna  # deferred: loads optuna

    study = optuna.load_study(study_name=name, storage=open_storage(ws))
    rows, best = [], float("inf")
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None:
            best = min(best, t.value)
        worker = t.user_attrs.get("worker") or {}
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "run": t.user_attrs.get("run"),
            "value": t.value, "best so far": best if best < float("inf") else None,
            **{k: v for k, v in t.params.items()},
            "worker": f"job {worker['job']}" if worker.get("job") else worker.get("host"),
        })  # fmt: skip
    return rows


def parallel_coordinates(ws: Workspace, name: str):
    """Optuna's parallel-coordinate plot (plotly) of a study's completed trials."""
    import optuna  # deferred: loads optuna

    study = optuna.load_study(study_name=name, storage=open_storage(ws))
    return optuna.visualization.plot_parallel_coordinate(study)


def run_hpo(
    grid_path: str | Path,
    ws: Workspace,
    steps: int | None = None,
    max_stages: int | None = None,
    metric: str | Metric = "fid",
    progress: Callable[[float, str], None] | None = None,
    model_factory: Callable | None = None,
    prune_every: int | None = None,
) -> Path:
    """Run the grid (or open search) as Optuna studies with this process as a worker: train
    every point that no other worker has taken (skipping done runs, resuming half-finished
    ones), score them, and write the ranked summary.

    Returns WS/evals/hpo-<name>/summary.csv (also summary.json). `metric` is a METRICS name or a
    function `run_dir -> score`; lower is better.
    """
    return run_worker(grid_path, ws, steps=steps, max_stages=max_stages, metric=metric,
                      progress=progress, model_factory=model_factory, prune_every=prune_every)  # fmt: skip
