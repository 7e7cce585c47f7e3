"""CLI: `synthct generate` (its jobs: synthct/commands/jobs.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from tqdm import tqdm

from synthct.commands._common import WorkspaceOpt, echo_json, workspace
from synthct.jobs import job_progress_callback, set_job_result


class _BarProgress:
    """`progress(fraction, message)` driving a tqdm bar (opened on first use, so an early error
    prints no empty bar) and the job row's progress."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.bar = total, desc, None
        self.to_job = job_progress_callback()

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.desc, unit="pair")
        self.bar.update(max(0, round(fraction * self.total) - self.bar.n))
        self.bar.set_postfix_str(message, refresh=False)
        self.to_job(fraction, message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate(
    run: Annotated[str, typer.Option("--run", help="Run folder name under WS/runs/.")],
    n: Annotated[int, typer.Option("--n", help="Number of pairs.")],
    out: Annotated[str, typer.Option("--out", help="Set name under WS/synthetic/.")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint step or 'latest'.")] = "latest",
    seed: Annotated[int, typer.Option(help="Base seed; case i uses its own derived seed.")] = 0,
    batch: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 4,
    device: Annotated[str, typer.Option(help="auto | cuda | cuda:N | cpu.")] = "auto",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA generator.")] = True,
    mask_postprocess: Annotated[
        str, typer.Option(help="binary | largest | min-size:K (connected components).")
    ] = "binary",
    empty_masks: Annotated[str, typer.Option(help="keep | drop | resample.")] = "keep",
    max_redraws: Annotated[
        int, typer.Option(help="Redraws per case with --empty-masks resample.")
    ] = 10,
    centre: Annotated[
        str | None, typer.Option(help="Centre label for a conditional model.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing set of this name.")] = False,
    sampling_steps: Annotated[
        int | None,
        typer.Option(help="Sampling steps of a diffusion model (default: its config's)."),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="nifti | png (2D models: also imagesPng/ + labelsPng/ PNGs beside the NIfTI).",
        ),
    ] = "nifti",
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Sample a synthetic set (HECKTOR layout + datacard.json) from a trained run.

    3D models write (S, S, S/2) pairs; 2D slice models (fastgan, stylegan2) write one-slice
    (R, R, 1) pairs with the in-plane spacing scaled to the same field of view."""
    from synthct.generate import GenerateConfig, sample_from_run  # deferred: loads scipy, torch

    ws = workspace(workspace_path)
    step: str | int = int(checkpoint) if checkpoint.isdigit() else checkpoint
    options = GenerateConfig(
        n=n,
        seed=seed,
        batch_size=batch,
        mask_postprocess=mask_postprocess,
        empty_masks=empty_masks,
        max_redraws=max_redraws,
        centre=centre,
        format=format,
        sampling_steps=sampling_steps,
    )
    progress = _BarProgress(n, f"generate {out}")
    try:
        out_dir, card = sample_from_run(
            ws, run, out, options, step, ema=ema, device=device, overwrite=overwrite,
            progress=progress,
        )  # fmt: skip
    finally:
        progress.close()
    set_job_result(out_dir)
    echo_json({"set": str(out_dir), "counts": card.counts})


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
