"""`synthct segment` (cross-validated SegResNet experiments) and `synthct bench segment`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, bench_header, echo_json, workspace
from synthct.errors import ConfigError

Opt = typer.Option


def _seg_config(config: Path | None, **overrides):
    """SegConfig from an optional YAML, with the flags the user gave (non-None) on top."""
    from synthct.config import from_dict, to_dict
    from synthct.segment.recipe import SegConfig, load_seg_config

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
    from synthct.jobs import job_progress_callback
    from synthct.segment.experiments import ExperimentConfig, run_experiment

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
    echo_json(summary_for_cli(results, str(ws.segmentation / results["name"])))


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


def benchmark_epoch(
    size: int,
    cases: int,
    init_filters: int,
    batch_size: int,
    steps: int | None,
    augment: bool,
    device: str | None,
    workers: int = 0,
) -> dict:
    """Time training steps and one validation inference on random in-memory cases.

    Seconds per epoch = measured seconds per step x ceil(cases / batch) (extrapolated when
    `steps` is smaller than an epoch) + inference seconds x validation cases (cases / 5).
    """
    import itertools
    import math

    import numpy as np
    import torch
    from monai.data import DataLoader

    from synthct.segment import recipe
    from synthct.segment.data import SegCase, SegDataset
    from synthct.segment.normalise import Normalisation
    from synthct.segment.train import train_step

    cfg = recipe.SegConfig(
        size=size,
        init_filters=init_filters,
        batch_size=batch_size,
        augment=augment,
        num_workers=workers,
    )
    dev = recipe.select_device(device)
    precision = recipe.resolve_precision(cfg, dev)
    rng = np.random.default_rng(0)
    shape = cfg.volume_shape
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(s // 3, s // 2) for s in shape)] = 1  # one box "tumour" shared by all
    data = [
        SegCase(
            f"B-{i:04d}",
            rng.normal(40.0, 300.0, shape).astype(np.float32),  # HU
            label,
            "real",
            "B",
            (1.5,) * 3,
        )
        for i in range(cases)
    ]
    norm = Normalisation("auto3dseg-ct", -100.0, 300.0)  # the recipe's transform, fixed bounds
    torch.manual_seed(0)
    model = recipe.build_network(cfg).to(dev)
    opt = recipe.build_optimizer(model, cfg)
    scaler = recipe.make_scaler(precision, dev)
    loss_fn = recipe.build_loss(cfg)
    loader = DataLoader(
        SegDataset(data, recipe.build_train_transforms(cfg, norm)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
    )
    per_epoch = math.ceil(cases / batch_size)
    steps = min(steps or per_epoch, per_epoch)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    times = []
    model.train()
    for i in range(steps + 1):  # step 0 is a warm-up (allocation, cuDNN autotuning), not timed
        image, lab = next(batches)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(model, image.to(dev), lab.to(dev), loss_fn, opt, scaler, precision)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t)
    step_s = float(np.mean(times)) if times else float("nan")
    from synthct.segment.normalise import apply

    image = apply(norm, data[0].image_hu[None, None]).to(dev)
    recipe.predict_probs(model, image, cfg, precision)
    t = time.perf_counter()
    recipe.predict_probs(model, image, cfg, precision)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    infer_s = time.perf_counter() - t
    epoch_s = step_s * per_epoch + infer_s * math.ceil(cases / 5)
    return {
        "config": {
            k: getattr(cfg, k)
            for k in (
                "size",
                "init_filters",
                "blocks_down",
                "dsdepth",
                "batch_size",
                "augment",
                "num_workers",
            )
        },
        "volume": list(cfg.volume_shape),
        "device": str(dev),
        "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cases": cases,
        "steps_timed": len(times),
        "seconds_per_step": round(step_s, 4),
        "seconds_inference_per_case": round(infer_s, 4),
        "seconds_per_epoch": round(epoch_s, 2),
        "hours_5_folds_300_epochs": round(epoch_s * 300 * 5 / 3600, 2),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if dev.type == "cuda"
        else None,
    }


def bench_segment(
    size: Annotated[int, Opt(help="Packed size S (volumes S x S x S/2); 128 = thesis.")] = 32,
    cases: Annotated[int, Opt(help="Training cases held in memory; 419 = thesis.")] = 8,
    init_filters: Annotated[int, Opt(help="SegResNetDS width; 32 = recipe.")] = 8,
    batch_size: Annotated[int, Opt(help="Batch size.")] = 2,
    steps: Annotated[
        int | None, Opt(help="Timed steps (default one epoch); the epoch is extrapolated.")
    ] = None,
    augment: Annotated[bool, Opt(help="Include the CPU augmentation in the step time.")] = True,
    workers: Annotated[int, Opt(help="Data-loading worker processes.")] = 0,
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    device: Annotated[str | None, Opt(help="cuda | cpu (default: CUDA when present).")] = None,
) -> None:
    """Seconds per training epoch of the SegResNet recipe (random in-memory cases).

    Tiny CPU config: defaults. Thesis GPU config: --size 128 --cases 419 --init-filters 32
    --steps 30 --workers 8.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    typer.echo(bench_header("bench segment"))
    echo_json(
        benchmark_epoch(size, cases, init_filters, batch_size, steps, augment, device, workers)
    )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("segment")(segment)
    bench_app.command("segment")(bench_segment)
