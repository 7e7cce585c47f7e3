"""`synthct train`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, workspace


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Run config YAML (see configs/)."),
        ] = None,
        ws: WorkspaceOpt = None,
        run: Annotated[
            str | None, typer.Option(help="Run name (default: the config file's name).")
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
        """Train a GAN (single device, or DDP under `torchrun --nproc_per_node=N -m synthct`)."""
        from synthct.config import load_run_config
        from synthct.errors import ConfigError
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
        run_dir = train(cfg, w, run, resume=resume, allow_split=allow_split)
        typer.echo(f"run {run}: {run_dir}")
