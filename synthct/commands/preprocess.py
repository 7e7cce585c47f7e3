"""`synthct preprocess` (real cases -> packed pairs) and `synthct bench preprocess`."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, bench_header, echo_json, workspace
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


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("preprocess")
    def preprocess_cmd(
        size: Annotated[int, typer.Option("--size", help="S: packed pair is S^3.")],
        spacing: Annotated[
            float, typer.Option(help="mm; the crop is a cube of 128 x spacing mm.")
        ] = 1.5,
        hu_window: Annotated[
            tuple[float, float], typer.Option("--hu-window", help="HU low high -> [-1, 1].")
        ] = (-1024.0, 600.0),
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

    @bench_app.command("preprocess")
    def bench_preprocess_cmd(
        size: Annotated[int, typer.Option(help="S of the packed pair.")] = 128,
        repeats: Annotated[int, typer.Option(help="Timed runs of synthct's pipeline.")] = 3,
        thesis: Annotated[bool, typer.Option(help="Also time the thesis's method.")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Time one 512x512x200 CT + mask .nii.gz -> packed S^3 pair, vs the thesis's method."""
        result = bench_preprocess(size=size, repeats=repeats, thesis=thesis)
        if as_json:
            echo_json(result)
            return
        typer.echo(result["header"])
        typer.echo(f"case: {result['case']}; load average {result['load_average']}")
        typer.echo(f"read image + mask:          {result['read_s']:.2f} s")
        typer.echo(f"synthct pipeline (no read): {result['pipeline_s']:.2f} s")
        typer.echo(f"synthct end to end:         {result['end_to_end_s']:.2f} s")
        if thesis:
            typer.echo(f"thesis method (no read):    {result['thesis_s']:.2f} s")
            typer.echo(f"thesis end to end:          {result['thesis_end_to_end_s']:.2f} s")
            typer.echo(
                f"speed-up end to end {result['speedup_end_to_end']:.1f}x, "
                f"processing only {result['speedup_processing']:.1f}x; outputs differ by "
                f"{result['image_mae_hu']:.1f} HU mean, mask Dice {result['mask_dice']:.3f}"
            )


def _bench_case(folder: Path):
    """The benchmark case: a full-size whole-body phantom cut to 512 x 512 x 200, as .nii.gz."""
    import numpy as np

    from synthct.io import Volume, save_volume
    from synthct.phantom import make_case

    image, label = make_case("MDA-000", seed=0, scale=1.0)
    z0 = max(0, image.shape[2] - 200)  # keep the top 200 slices (head, neck, shoulders)
    aff = image.affine.copy()
    aff[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, z0]) + aff[:3, 3]
    lab = label.array[: image.shape[0], : image.shape[1], z0:]
    img_path, lab_path = folder / "BENCH-001__CT.nii.gz", folder / "BENCH-001.nii.gz"
    save_volume(Volume(image.array[:, :, z0:], aff), img_path, dtype=np.int16)
    save_volume(Volume(np.ascontiguousarray(lab), aff), lab_path, dtype=np.uint8)
    return img_path, lab_path


def thesis_method(image, mask, cfg, box):
    """The thesis's pipeline on the same box: scikit-image resize order 3 of the whole scan to
    `spacing` mm, the crop, a second resize to S x S x S/2 (order 1; mask order 0), window, pack.
    Returns the packed (S, S, S) float32 array."""
    import numpy as np
    from skimage.transform import resize as sk_resize

    from synthct.preprocess import extract_box, hu_to_unit, mask_to_unit, pack

    sp = np.array(image.spacing)
    grid = np.maximum(1, np.round(np.array(image.shape) * sp / cfg.spacing)).astype(int)
    img = sk_resize(image.array, grid, order=3, preserve_range=True).astype(np.float32)
    lab = sk_resize(mask.array, grid, order=0, preserve_range=True, anti_aliasing=False)
    scale = np.array(image.shape) / grid
    start = np.round(np.array(box.start) / scale).astype(int)
    stop = np.round(np.array(box.stop) / scale).astype(int)
    b = type(box)(tuple(start), tuple(stop), box.method)
    img, lab = extract_box(img, b, -1024.0), extract_box(lab, b, 0)
    half = (cfg.size, cfg.size, cfg.size // 2)
    img = sk_resize(img, half, order=1, preserve_range=True)
    lab = sk_resize(lab, half, order=0, preserve_range=True, anti_aliasing=False)
    return pack(hu_to_unit(img, cfg.hu_window), mask_to_unit(lab, cfg.mask), cfg.packing)


def bench_preprocess(size: int = 128, repeats: int = 3, thesis: bool = True) -> dict:
    """Run the preprocessing benchmark; returns the timings (seconds) and agreement figures."""
    import numpy as np
    import torch

    from synthct.config import DataConfig
    from synthct.io import load_volume
    from synthct.preprocess import preprocess_pair, unpack

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = DataConfig(size=size)
    with tempfile.TemporaryDirectory(prefix="synthct-bench-") as tmp:
        img_path, lab_path = _bench_case(Path(tmp))
        reads, pipes = [], []
        for i in range(repeats + 1):  # the first run warms up imports and caches
            t0 = time.perf_counter()
            image, mask = load_volume(img_path), load_volume(lab_path, dtype=np.uint8)
            t1 = time.perf_counter()
            pair = preprocess_pair(image, mask, cfg, "bench")
            t2 = time.perf_counter()
            if i:
                reads.append(t1 - t0)
                pipes.append(t2 - t1)
        result = {
            "header": bench_header("bench preprocess"),
            "case": f"{image.shape} at {tuple(round(s, 3) for s in image.spacing)} mm -> "
            f"packed {size}^3, crop {pair.crop.method}, tumour kept {pair.tumour_kept:.3f}",
            "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
            "read_s": statistics.median(reads),
            "pipeline_s": statistics.median(pipes),
            "end_to_end_s": statistics.median(r + p for r, p in zip(reads, pipes, strict=True)),
        }
        if thesis:
            t0 = time.perf_counter()
            ref = thesis_method(image, mask, cfg, pair.crop)
            result["thesis_s"] = time.perf_counter() - t0
            result["thesis_end_to_end_s"] = result["thesis_s"] + result["read_s"]
            result["speedup_end_to_end"] = result["thesis_end_to_end_s"] / result["end_to_end_s"]
            result["speedup_processing"] = result["thesis_s"] / result["pipeline_s"]
            hu_a, lab_a = unpack(pair.packed, cfg)
            hu_b, lab_b = unpack(ref.astype(np.float32), cfg)
            result["image_mae_hu"] = float(np.abs(hu_a - hu_b).mean())
            inter = np.count_nonzero(lab_a & lab_b)
            result["mask_dice"] = (
                2 * inter / max(1, np.count_nonzero(lab_a) + np.count_nonzero(lab_b))
            )
    return result
