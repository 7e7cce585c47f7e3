"""Data commands: `synthct phantom` (demo data) and `synthct ingest` (index a case folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, echo_json
from synthct.commands._common import workspace as _workspace


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


def ingest(
    src: Annotated[
        Path, typer.Argument(help="Case folder: imagesTr/+labelsTr/ or images/+masks/.")
    ],
    workspace: WorkspaceOpt = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Share of each centre held out for test.")
    ] = 0.2,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Share of each centre for validation.")
    ] = 0.0,
    gan_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.95,
            help="Share of each centre reserved as the GAN-only split 'gan' (train a GAN on it "
            "with train.split: gan; it never enters segmentation folds, so `synthct segment "
            "--strict` can pass).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Split seed (same seed -> same split).")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a machine-readable report instead of a table.")
    ] = False,
) -> None:
    """Validate every case of SRC, write the case index and the train/val/test split registry.

    Exit status 0 when at least one case is usable (accepted or fixed), 1 otherwise.
    """
    from synthct.datasets import REJECTED, SPLITS, ingest_report

    if test_fraction + val_fraction + gan_fraction >= 1:
        raise typer.BadParameter(
            f"--test-fraction {test_fraction} + --val-fraction {val_fraction} + --gan-fraction "
            f"{gan_fraction} must be below 1 (some cases must stay in train)"
        )
    ws = _workspace(workspace, create=True)
    result = ingest_report(
        src,
        ws,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        gan_fraction=gan_fraction,
        seed=seed,
        progress=True,
    )
    if as_json:
        echo_json([{"case_id": r.case_id, "status": r.status, "problems": r.problems}
                   for r in result.reports])  # fmt: skip
    else:
        width = max([7, *(len(r.case_id) for r in result.reports)])
        typer.echo(f"{'case':<{width}}  {'centre':<7} {'status':<9} problems")
        for r in result.reports:
            colour = "red" if r.status == REJECTED else "yellow" if r.problems else None
            line = f"{r.case_id:<{width}}  {r.centre:<7} {r.status:<9} {'; '.join(r.problems)}"
            typer.secho(line.rstrip(), fg=colour)
        c = result.counts()
        typer.echo(f"{c['accepted']} accepted, {c['fixed']} fixed, {c['rejected']} rejected")
        if result.index_written:
            per = {s: sum(v == s for v in result.splits.values()) for s in SPLITS}
            gan = f" / {per['gan']} gan (GAN-only)" if per["gan"] else ""
            typer.echo(
                f"splits: {per['train']} train / {per['val']} val / {per['test']} test{gan} "
                f"(seed {seed}); index {ws.case_index}"
            )
        else:
            typer.echo("no usable case: the case index was not written", err=True)
    if not result.index_written:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(phantom)
    app.command()(ingest)
