"""Data commands: `synthct phantom` (demo data) and `synthct ingest` (index a case folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def phantom(
    out: Annotated[Path, typer.Option("--out", help="Folder to create (HECKTOR layout).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of cases.")] = 40,
    seed: Annotated[int, typer.Option(help="Random seed (same seed -> identical files).")] = 0,
    scale: Annotated[
        float,
        typer.Option(min=0.02, max=1.0, help="1.0 = 512x512 full size; 0.25 -> 128x128."),
    ] = 1.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder.")] = False,
) -> None:
    """Write procedural head-and-neck CT + tumour-mask phantoms (imagesTr/, labelsTr/)."""
    from synthct.phantom import write_phantom_set

    paths = write_phantom_set(out, n=n, seed=seed, scale=scale, progress=True, overwrite=overwrite)
    typer.echo(f"wrote {len(paths)} cases to {Path(out).resolve()}")


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command()(phantom)
