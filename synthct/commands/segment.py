"""`synthct segment`: cross-validated SegResNet experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main

from synthct.commands._common import WorkspaceOpt, echo_json, workspace
from synthct.config import from_dict, to_dict
from synthct.errors import ConfigError
from synthct.jobs import job_progress_callback
from synthct.segment.recipe import SegConfig, load_seg_config

Opt = typer.Option


def _seg_config(config: Path | None, **overrides):
    """SegConfig from an optional YAML, with the flags the user gave (non-None) on top."""

    base = load_seg_config(config) if config else SegConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    return from_dict(SegConfig, {**to_dict(base), **given}, where="segmentation options")


def segment(
    experiment: Annotated[str, Opt(help="real | synthetic | mixed | pretrain-finetune")] = "real",
    synthetic: Annotated[str | None, Opt(help="Synthetic set name (WS/synthetic/<set>).")] = None,
    n_synthetic: Annotated[
        int | None, Opt(help="Synthetic pairs to use (seeded draw; default all).")
    ] = None,
    folds: Annotated[int | None, Opt(help="Cross-validation folds [5].")] = None,
    epochs: Annotated[int | None, Opt(help="Epochs per fold [300].")] = None,
    pretrain_epochs: Annotated[
        int | None, Opt(help="pretrain-finetune: synthetic pre-training epochs [= --epochs].")
    ] = None,
    size: Annotated[int | None, Opt(help="Packed size S; volumes are S x S x S/2 [128].")] = None,
    init_filters: Annotated[int | None, Opt(help="SegResNetDS width [32].")] = None,
    batch_size: Annotated[int | None, Opt(help="Batch size [2].")] = None,
    mask: Annotated[
        str | None,
        Opt(
            help="binary (GTVp u GTVn) | multiclass [binary]. multiclass (with `synthct "
            "preprocess --mask multiclass`) is needed for HECKTOR's per-class DSCagg."
        ),
    ] = None,
    normalisation: Annotated[
        str | None,
        Opt(
            help="auto3dseg-ct (Auto3DSeg CT recipe: foreground 0.5-99.5 percentile range of "
            "each fold's training cases, then sigmoid) | linear (HU window -> [-1, 1]) "
            "[auto3dseg-ct]."
        ),
    ] = None,
    seed: Annotated[int | None, Opt(help="Seed for folds, init, data order [0].")] = None,
    workers: Annotated[int | None, Opt(help="Data-loading worker processes [0].")] = None,
    config: Annotated[
        Path | None, Opt(help="YAML with SegConfig fields; flags override it.")
    ] = None,
    name: Annotated[str | None, Opt(help="Experiment name (folder under segmentation/).")] = None,
    strict: Annotated[
        bool,
        Opt(
            help="Also refuse a GAN trained on any validation-fold case (passes when the GAN "
            "trained on a GAN-only split: `synthct ingest --gan-fraction F`, train.split: gan)."
        ),
    ] = False,
    allow_leakage: Annotated[
        bool, Opt(help="Run despite leakage; the override is recorded in the results.")
    ] = False,
    device: Annotated[str | None, Opt(help="auto | cuda | cpu (auto: CUDA when present).")] = None,
    fold: Annotated[
        int | None,
        Opt(
            min=-1,
            help="Train only this fold (0-based; -1: only the pre-training of pretrain-finetune) "
            "and stop; a run without --fold then finds the folds done and ensembles them (how a "
            "SLURM job array runs the folds in parallel).",
        ),
    ] = None,
    ws_path: WorkspaceOpt = None,
) -> None:
    """Train a 5-fold SegResNet on real/synthetic/mixed data; evaluate the ensemble on the test split.

    Resumable: rerun the same command to continue an interrupted experiment.
    """
    from synthct.segment.experiments import (  # deferred: loads pandas, scipy
        ExperimentConfig,
        run_experiment,
    )

    seg = _seg_config(
        config,
        folds=folds,
        epochs=epochs,
        size=size,
        init_filters=init_filters,
        batch_size=batch_size,
        mask=mask,
        seed=seed,
        num_workers=workers,
        normalisation=normalisation,
    )
    try:
        cfg = ExperimentConfig(
            experiment=experiment,
            synthetic=synthetic,
            n_synthetic=n_synthetic,
            pretrain_epochs=pretrain_epochs,
            strict=strict,
            allow_leakage=allow_leakage,
            seg=seg,
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ws = workspace(ws_path)
    # inside a background job, progress goes to the job's row (a no-op otherwise)
    results = run_experiment(
        ws, cfg, name, device=device, progress=job_progress_callback(), only_fold=fold
    )
    if fold is not None:
        echo_json(results)
        return
    echo_json(summary_for_cli(results, str(ws.experiment_dir(results["name"]))))


def summary_for_cli(results: dict, path: str) -> dict:
    """What `synthct segment` prints: both grids' scores with their labels and CIs, the
    per-fold normalisation bounds, and why a per-class score is missing when it is."""
    original = results.get("test_original_grid") or {}
    out = {
        "experiment": results["name"],
        "path": path,
        "test_original_grid": original,
        "test": results["test"],
        "normalisation": results.get("normalisation"),
        "folds": [
            {k: f[k] for k in ("fold", "best_epoch", "best_val_dice")} for f in results["folds"]
        ],
        "leakage_override": results["leakage"].get("override", False),
    }
    if not original.get("per_class_available"):
        out["note"] = "HECKTOR 2022 per-class DSCagg not computed: " + (
            original.get("per_class_reason") or original.get("reason") or "unavailable"
        )
    return out


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)


def segment_params(args: list[str]) -> dict[str, Any]:
    """The options of a `segment …` argv, parsed by this command (a SLURM segmentation is split
    into fold jobs by them: `synthct.executors.slurm.submit_segment`)."""
    if not args or args[0] != "segment":
        raise ConfigError(f"expected a `segment …` command line, got {args!r}")
    one = typer.Typer()
    register(one)
    command = typer.main.get_command(one)  # one command: the `segment` command itself
    try:
        return dict(command.make_context("segment", list(args[1:])).params)
    except Exception as e:  # noqa: BLE001 - click's usage errors
        raise ConfigError(f"segment options {args[1:]!r}: {e}") from None
