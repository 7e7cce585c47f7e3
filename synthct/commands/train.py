"""`synthct train` and `synthct hpo` (here, or as background jobs on an executor)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.commands.jobs import (
    AccountOpt,
    CpusOpt,
    ExecutorConfigOpt,
    ExecutorOpt,
    GpusOpt,
    MemOpt,
    NodesOpt,
    PartitionOpt,
    QosOpt,
    SignalOpt,
    TasksOpt,
    TimeOpt,
    submit_and_report,
)
from synthct.config import load_run_config, save_yaml, to_dict
from synthct.errors import ConfigError
from synthct.jobs import job_progress_callback
from synthct.runtime import short_hash
from synthct.workspace import check_name


def train_job_args(ws, cfg, run: str, resume: bool, allow_split: bool) -> list[str]:
    """argv of a background training job. The config (with its overrides) is frozen into
    WS/jobs/configs/, so the job — and every requeued attempt — trains exactly what was
    submitted, on whichever node it lands."""

    check_name(run, "run name")
    data = to_dict(cfg)
    path = save_yaml(data, ws.job_config_file(f"{run}-{short_hash(data)}.yaml"))
    args = ["train", "--config", str(path), "--run-name", run]
    return args + (["--resume"] if resume else []) + (["--allow-split"] if allow_split else [])


def train_cmd(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Run config YAML (see configs/)."),
    ] = None,
    ws: WorkspaceOpt = None,
    run: Annotated[
        str | None,
        typer.Option(
            "--run",
            "--run-name",
            help="Run name (default: the config file's name). Under torchrun write "
            "--run-name (torchrun mistakes --run for its own --run-path).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run from its latest checkpoint.")
    ] = False,
    steps: Annotated[int | None, typer.Option(help="Override train.steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override train.seed.")] = None,
    allow_split: Annotated[
        bool,
        typer.Option(help="Allow train.split other than 'train' (recorded in the run)."),
    ] = False,
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
    wait: Annotated[
        bool, typer.Option("--wait", help="With --executor: wait until the job has ended.")
    ] = False,
) -> None:
    """Train a GAN on the packed train split (one device, or DDP under torchrun).

    3D systems read packed volumes; the 2D systems (fastgan, stylegan2) read image + mask
    slice pairs of the same split.

    Multi-GPU: `torchrun --nproc_per_node=N -m synthct train --config F --run-name R`;
    train.batch_size is per process (global batch = N x batch_size).

    As a background job: `--executor local` (this machine's queue) or `--executor slurm`
    with SLURM resources; `--nodes N --gpus-per-node G` runs DDP over N x G processes
    (one per GPU). Near its time limit a SLURM training job checkpoints, requeues itself
    and resumes exactly.
    """
    from synthct.train import train  # deferred: loads scipy, torch

    w = workspace(ws)
    if run is None:
        if config is None:
            raise ConfigError("give --config FILE (and/or --run NAME to resume a run)")
        run = config.stem
    if config is None:
        config = w.run_dir(run) / "config.yaml"
        if not resume or not config.exists():
            raise ConfigError(f"no --config given and run {run!r} has no {config}")
    cfg = load_run_config(config)
    overrides = {k: v for k, v in (("steps", steps), ("seed", seed)) if v is not None}
    if overrides:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **overrides))
    flags = dict(
        partition=partition, account=account, qos=qos, time=time_min, nodes=nodes,
        gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node,
        cpus_per_task=cpus_per_task, mem_gb=mem_gb, signal_delay=signal_delay,
    )  # fmt: skip
    if executor is not None or executor_config is not None:
        args = train_job_args(w, cfg, run, resume, allow_split)
        submit_and_report(w, "train", args, executor, executor_config, wait, **flags)
        return
    if any(v is not None for v in flags.values()) or wait:
        raise ConfigError("SLURM resources and --wait need --executor slurm (or local)")

    run_dir = train(
        cfg, w, run, resume=resume, allow_split=allow_split, progress=job_progress_callback()
    )
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"run {run}: {run_dir}")


def hpo_cmd(
    grid: Annotated[
        Path, typer.Argument(help="Grid or search YAML (see configs/hpo-thesis.yaml).")
    ],
    ws: WorkspaceOpt = None,
    steps: Annotated[int | None, typer.Option(help="Override train.steps of every run.")] = None,
    stages: Annotated[
        int | None, typer.Option(help="Run only the first N stages of the grid.")
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Ranking metric, lower is better: fid | hu_w1 (a cheap proxy).")
    ] = "fid",
    prune_every: Annotated[
        int | None,
        typer.Option(
            min=1, help="Score every N steps and let Optuna's median pruner stop poor runs."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="With --executor: worker jobs that pull trials.")
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs of stage 1 and exit.")
    ] = False,
    show: Annotated[
        bool, typer.Option("--show", help="Print the summary so far and exit.")
    ] = False,
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
) -> None:
    """Hyper-parameter search as Optuna studies in the project database: a grid (the thesis's,
    as GridSampler studies) or an open search (`search:` + `n_trials`, TPE).

    Without --executor this process works through the trials and prints the ranked summary.
    With --executor local|slurm it submits --workers jobs that pull trials concurrently (every
    grid point runs once); start more workers on other hosts with the same command, and read
    the summary with --show or in the app."""
    from synthct import hpo, hpo_study  # deferred: loads torch, optuna

    if dry_run:  # lists the grid only: no workspace needed
        spec = hpo.load_grid(grid)
        if "search" in spec:
            typer.echo(f"{spec['n_trials']} TPE trials over {spec['search']}")
            return
        for name, over in hpo.expand_stage(spec, 0, {}):
            typer.echo(f"{name}: {over}")
        return
    w = workspace(ws)
    if show:
        spec = hpo.load_grid(grid)
        summary = hpo_study.write_study_summary(
            w, spec, hpo_study.n_stages(spec, stages), metric, hpo_study.open_storage(w)
        )
        typer.echo(hpo.format_table(hpo.read_summary(summary)))
        return
    if executor is not None or executor_config is not None:
        args = ["hpo", str(grid.resolve()), "--metric", metric]
        for flag, value in (("--steps", steps), ("--stages", stages),
                            ("--prune-every", prune_every)):  # fmt: skip
            if value is not None:
                args += [flag, str(value)]
        flags = dict(
            partition=partition, account=account, qos=qos, time=time_min, nodes=nodes,
            gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node,
            cpus_per_task=cpus_per_task, mem_gb=mem_gb, signal_delay=signal_delay,
        )  # fmt: skip
        hpo.load_grid(grid)  # a bad file fails here, not in every worker
        for _ in range(workers):
            submit_and_report(w, "hpo", args, executor, executor_config, **flags)
        typer.echo(f"summary so far: synthct hpo {grid} --show")
        return

    summary = hpo_study.run_hpo(grid, w, steps=steps, max_stages=stages, metric=metric,
                          prune_every=prune_every, progress=job_progress_callback())  # fmt: skip
    typer.echo(hpo.format_table(hpo.read_summary(summary)))
    typer.echo(f"summary: {summary}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("hpo")(hpo_cmd)
