"""CLI: `synthct evaluate` and `synthct eval train-encoder`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, echo_json, workspace

eval_app = typer.Typer(help="Evaluation helpers (feature encoders).", no_args_is_help=True)


def evaluate(
    synthetic: Annotated[
        str, typer.Option("--synthetic", help="Synthetic set name under WS/synthetic/.")
    ],
    real: Annotated[
        str, typer.Option("--real", help="Real split to compare with: train|val|test|all.")
    ] = "test",
    extractor: Annotated[
        str, typer.Option(help="Feature space: default (workspace encoder) | medicalnet | random.")
    ] = "default",
    weights: Annotated[
        Path | None,
        typer.Option(help="MedicalNet ResNet-50 weights file (for --extractor medicalnet)."),
    ] = None,
    n: Annotated[
        int | None,
        typer.Option(
            "--n",
            help="At most N synthetic cases (seeded sample); slice level default: as many as "
            "real cases.",
        ),
    ] = None,
    part: Annotated[str, typer.Option(help="image | mask | pair (the packed pair).")] = "pair",
    seed: Annotated[int, typer.Option(help="Seed for subsets, bootstrap and t-SNE.")] = 0,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 100,
    encoder_epochs: Annotated[
        int | None,
        typer.Option(help="Default encoder epochs (unset: reuse a cached one, else train 10)."),
    ] = None,
    level: Annotated[
        str | None,
        typer.Option(
            help="volume (3D sets) | slice (axial slice pairs, 2D features); "
            "default: slice for 2D sets, volume otherwise."
        ),
    ] = None,
    slice_size: Annotated[
        int | None,
        typer.Option(help="Slice level: resize slices to R x R (default: the 2D set's R, or S)."),
    ] = None,
    slices_per_case: Annotated[
        int,
        typer.Option(help="Slice level: k slices drawn from every real and synthetic case."),
    ] = 8,
    tumour_mix: Annotated[
        str,
        typer.Option(
            help="Slice level: auto (the mix the model was trained on) | natural | a "
            "tumour-slice fraction such as 0.5."
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the full metrics.json.")] = False,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Measure a synthetic set against real data: FID/KID/PRDC, classifier-IS, MS-SSIM diversity,
    memorisation (DCR), HU/tumour statistics and a joint t-SNE; writes WS/evals/<id>/.

    --level slice (forced for 2D sets): FID/KID/PRDC, classifier-IS and t-SNE on axial slice
    pairs with a 2D feature extractor, for 2D and 3D sets alike: k slices per case, metrics
    averaged over k rounds of one slice per case, CIs by case (docs/metrics.md)."""
    from synthct.metrics.evaluation import EvalConfig, run_evaluation
    from synthct.metrics.results import summarise

    opts = EvalConfig(
        synthetic=synthetic,
        real=real,
        extractor=extractor,
        weights=str(weights) if weights else None,
        n=n,
        part=part,
        seed=seed,
        n_boot=n_boot,
        encoder_epochs=encoder_epochs,
        level=level,
        slice_size=slice_size,
        slices_per_case=slices_per_case,
        tumour_mix=tumour_mix,
    )
    folder, result = run_evaluation(workspace(workspace_path), opts)
    if as_json:
        echo_json(result)
    else:
        echo_json({"folder": str(folder), **summarise(result)})


def train_encoder(
    size: Annotated[int, typer.Option(help="S of the packed pairs (must be preprocessed).")] = 128,
    synthetic: Annotated[
        str | None,
        typer.Option(help="Take the preprocessing config from this synthetic set's datacard."),
    ] = None,
    part: Annotated[str, typer.Option(help="image | mask | pair.")] = "pair",
    epochs: Annotated[int, typer.Option(help="Training epochs over the train split.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for init and batch order.")] = 0,
    force: Annotated[bool, typer.Option(help="Retrain even if a cached encoder exists.")] = False,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Train (or find cached) the offline default feature encoder on the real train split."""
    from synthct.config import DataConfig
    from synthct.errors import ConfigError
    from synthct.metrics.evaluation import data_config_of, ensure_default_encoder
    from synthct.metrics.features import PARTS, file_sha256

    if part not in PARTS:
        raise ConfigError(f"--part must be one of {PARTS}, got {part!r}")
    ws = workspace(workspace_path)
    cfg = DataConfig(size=size)
    if synthetic:
        from synthct.sets import read_datacard

        set_dir = ws.synthetic_dir(synthetic)
        cfg = data_config_of(read_datacard(set_dir, cases=False), str(set_dir / "datacard.json"))
    path = ensure_default_encoder(ws, cfg, part, epochs, seed, force=force)
    echo_json({"encoder": str(path), "sha256": file_sha256(path), "size": cfg.size, "part": part})


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
    eval_app.command("train-encoder")(train_encoder)
    app.add_typer(eval_app, name="eval")
