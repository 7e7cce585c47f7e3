"""`synthct bench preprocess`: one 512 x 512 x 200 CT + mask .nii.gz to a packed S³ pair.

The case is a full-size whole-body phantom cut to its top 200 slices (head, neck, shoulders), so
the automatic crop has real work to do. synthct's pipeline (`preprocess_pair`: crop on the
original grid, one anti-aliased resize) is timed against the thesis's method on the same crop
box (`thesis_method`: scikit-image order-3 resize of the whole scan to the target spacing, crop,
a second resize), and the two outputs are compared (mean absolute HU difference, mask Dice) to
show the speed-up does not come from doing something else.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthct.bench.machine import bench_header
from synthct.config import DataConfig
from synthct.io import Volume, load_volume, save_volume
from synthct.phantom import make_case
from synthct.preprocess import (
    extract_box,
    hu_to_unit,
    mask_to_unit,
    pack,
    preprocess_pair,
    unpack,
)


def write_bench_case(folder: Path) -> tuple[Path, Path]:
    """The benchmark case as (image, label) .nii.gz paths in `folder`: a full-size whole-body
    phantom cut to 512 x 512 x 200 (the top slices), int16 HU and uint8 labels."""
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
    from skimage.transform import resize as sk_resize  # heavy; only this comparison needs it

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
    """Run the preprocessing benchmark; returns the timings (seconds, medians of `repeats` runs
    after one warm-up) and, with `thesis`, the thesis method's time, the speed-ups and the
    agreement of the two outputs (image_mae_hu, mask_dice)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = DataConfig(size=size)
    with tempfile.TemporaryDirectory(prefix="synthct-bench-") as tmp:
        img_path, lab_path = write_bench_case(Path(tmp))
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


def format_preprocess(result: dict, thesis: bool) -> list[str]:
    """The lines `synthct bench preprocess` prints for `result`."""
    lines = [
        result["header"],
        f"case: {result['case']}; load average {result['load_average']}",
        f"read image + mask:          {result['read_s']:.2f} s",
        f"synthct pipeline (no read): {result['pipeline_s']:.2f} s",
        f"synthct end to end:         {result['end_to_end_s']:.2f} s",
    ]
    if thesis:
        lines += [
            f"thesis method (no read):    {result['thesis_s']:.2f} s",
            f"thesis end to end:          {result['thesis_end_to_end_s']:.2f} s",
            f"speed-up end to end {result['speedup_end_to_end']:.1f}x, "
            f"processing only {result['speedup_processing']:.1f}x; outputs differ by "
            f"{result['image_mae_hu']:.1f} HU mean, mask Dice {result['mask_dice']:.3f}",
        ]
    return lines
