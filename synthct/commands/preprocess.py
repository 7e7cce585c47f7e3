"""`synthct preprocess`: real cases -> packed pairs."""

from __future__ import annotations

from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.config import HU_WINDOW
from synthct.errors import ConfigError

SPLITS = ("all", "train", "val", "test")


def _data_config(size, spacing, hu_window, packing, mask, crop):
    from synthct.config import DataConfig

    try:
        return DataConfig(
            size=size,
            spacing=spacing,
            hu_window=(float(hu_window[0]), float(hu_window[1])),
            packing=packing,
            mask=mask,
            crop=crop,
        )
    except ValueError as e:
        raise ConfigError(f"preprocess options: {e}") from None


def preprocess_cmd(
    size: Annotated[int, typer.Option("--size", help="S: packed pair is S^3.")],
    spacing: Annotated[
        float, typer.Option(help="mm; the crop is a cube of 128 x spacing mm.")
    ] = 1.5,
    hu_window: Annotated[
        tuple[float, float], typer.Option("--hu-window", help="HU low high -> [-1, 1].")
    ] = HU_WINDOW,
    packing: Annotated[str, typer.Option(help="z | interleave")] = "z",
    mask: Annotated[str, typer.Option(help="binary | multiclass")] = "binary",
    split: Annotated[
        str, typer.Option(help="all | train | val | test: only these cases (default all).")
    ] = "all",
    no_crop: Annotated[bool, typer.Option("--no-crop", help="Keep the whole scan.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    force: Annotated[bool, typer.Option(help="Redo cases already packed.")] = False,
    ws: WorkspaceOpt = None,
) -> None:
    """Crop, resample, window and pack the workspace's cases into WS/data/packed/."""
    from synthct.preprocess import preprocess_workspace

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is not valid: expected one of {list(SPLITS)}")
    cfg = _data_config(size, spacing, hu_window, packing, mask, not no_crop)
    result = preprocess_workspace(workspace(ws), cfg, split=split, workers=workers, force=force)
    typer.echo(
        f"{result['folder']}: {len(result['done'])} packed, {len(result['skipped'])} "
        f"already done, {len(result['failed'])} failed; mean spacing {result['mean_spacing']} mm"
    )
    for case_id, message in result["failed"].items():
        typer.echo(f"failed {case_id}: {message}", err=True)
    if result["failed"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("preprocess")(preprocess_cmd)
