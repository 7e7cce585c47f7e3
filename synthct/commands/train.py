"""`synthct train` and `synthct hpo`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.errors import ConfigError


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
) -> None:
    """Train a GAN on the packed train split (one device, or DDP under torchrun).

    3D systems read packed volumes; the 2D systems (fastgan, stylegan2) read image + mask
    slice pairs of the same split.

    Multi-GPU: `torchrun --nproc_per_node=N -m synthct train --config F --run-name R`;
    train.batch_size is per process (global batch = N x batch_size).
    """
    from synthct.config import load_run_config
    from synthct.train import train

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
    from synthct.jobs import job_progress_callback

    run_dir = train(
        cfg, w, run, resume=resume, allow_split=allow_split, progress=job_progress_callback()
    )
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"run {run}: {run_dir}")


def hpo_cmd(
    grid: Annotated[Path, typer.Argument(help="Grid YAML (see configs/hpo-thesis.yaml).")],
    ws: WorkspaceOpt = None,
    steps: Annotated[int | None, typer.Option(help="Override train.steps of every run.")] = None,
    stages: Annotated[
        int | None, typer.Option(help="Run only the first N stages of the grid.")
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Ranking metric, lower is better: fid | hu_w1 (a cheap proxy).")
    ] = "fid",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the runs of stage 1 and exit.")
    ] = False,
) -> None:
    """Run a hyper-parameter grid as separate runs and write a ranked summary table."""
    from synthct import hpo

    if dry_run:  # lists the grid only: no workspace needed
        spec = hpo.load_grid(grid)
        for name, over in hpo.expand_stage(spec, 0, {}):
            typer.echo(f"{name}: {over}")
        return
    w = workspace(ws)
    summary = hpo.run_hpo(grid, w, steps=steps, max_stages=stages, metric=metric)
    typer.echo(hpo.format_table(hpo.read_summary(summary)))
    typer.echo(f"summary: {summary}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("hpo")(hpo_cmd)
