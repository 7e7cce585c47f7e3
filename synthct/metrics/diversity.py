"""Within-set diversity: mean pairwise 3D MS-SSIM (the mode-collapse indicator).

A synthetic set whose pairs are much more similar to each other than real cases are to each
other (higher mean pairwise MS-SSIM) has collapsed onto few modes. MONAI's
`MultiScaleSSIMMetric` does the work.

Standard MS-SSIM (Wang et al. 2003) uses a Gaussian window of 11 (sigma 1.5) at 5 scales with
the weights `STANDARD_WEIGHTS`; in 3D MONAI needs every side >= 176 voxels for that (a 256^3
pair). Where the volume allows it, that configuration is used and the result is called
"msssim". Otherwise the number of scales and then the kernel shrink to fit (128 x 128 x 64
image halves: kernel 3, 5 scales; 128^3 pairs: kernel 7, 5 scales), the values are not
comparable with standard MS-SSIM, and the metric is named with its configuration everywhere
it is shown: key "msssim_k<kernel>_s<scales>", label "3D MS-SSIM, kernel K, S scales (not
standard)" (`msssim_config`).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch

STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
STANDARD_KERNEL = 11
KERNEL_SIGMA = 1.5  # MONAI's default, the standard one


def fit_msssim_params(shape: tuple[int, ...]) -> tuple[int, tuple[float, ...]]:
    """(kernel_size, scale weights) valid for spatial `shape`: as many scales (<= 5) as fit,
    then the largest odd kernel (<= 11). Weights are the standard ones, truncated, renormalised.

    MONAI requires min_side // (scales - 1)^2 > kernel - 1, and the coarsest scale
    (min_side / 2^(scales - 1)) must hold one kernel.
    """
    side = min(shape)
    for scales in range(5, 0, -1):
        for k in (11, 9, 7, 5, 3):
            if side // max(1, (scales - 1) ** 2) > k - 1 and side // 2 ** (scales - 1) >= k:
                w = np.asarray(STANDARD_WEIGHTS[:scales])
                return k, tuple(float(v) for v in w / w.sum())
    raise ValueError(f"volume shape {shape} too small for MS-SSIM (need every side >= 3)")


def msssim_config(shape: tuple[int, ...]) -> dict[str, Any]:
    """The MS-SSIM configuration for spatial `shape` and how results name it.

    {"key", "name", "kernel_size", "kernel_sigma", "scales", "weights", "standard", "why"}.
    """
    k, w = fit_msssim_params(shape)
    scales = len(w)
    standard = k == STANDARD_KERNEL and scales == len(STANDARD_WEIGHTS)
    if standard:
        key, name = "msssim", "3D MS-SSIM (standard: Gaussian kernel 11, sigma 1.5, 5 scales)"
    else:
        key = f"msssim_k{k}_s{scales}"
        name = f"3D MS-SSIM, kernel {k}, {scales} scales (not standard)"
    why = (
        "standard configuration"
        if standard
        else f"a {'x'.join(map(str, shape))} volume is too small for kernel 11 at 5 scales "
        "(MONAI needs every side >= 176); values are not comparable with standard MS-SSIM"
    )
    return {"key": key, "name": name, "kernel_size": k, "kernel_sigma": KERNEL_SIGMA,
            "scales": scales, "weights": list(w), "standard": standard, "why": why}  # fmt: skip


def find_msssim(metrics: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(key, entry) of the MS-SSIM result in a metrics dict ("msssim" or "msssim_k*"), if any."""
    for key, entry in metrics.items():
        if (key == "msssim" or key.startswith("msssim_k")) and isinstance(entry, dict):
            return key, entry
    return None


def msssim(a: np.ndarray, b: np.ndarray, data_range: float = 2.0) -> np.ndarray:
    """MS-SSIM of paired volumes a, b (B, X, Y, Z) or (B, 1, X, Y, Z) -> (B,)."""
    from monai.metrics import MultiScaleSSIMMetric  # deferred: loads monai

    ta = torch.as_tensor(np.asarray(a), dtype=torch.float32)
    tb = torch.as_tensor(np.asarray(b), dtype=torch.float32)
    if ta.ndim == 4:
        ta, tb = ta[:, None], tb[:, None]
    k, w = fit_msssim_params(tuple(ta.shape[2:]))
    metric = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=data_range, kernel_size=k, weights=w, reduction="none"
    )
    return metric(ta, tb).reshape(-1).double().numpy()


def pairwise_msssim(
    volumes: np.ndarray,
    max_pairs: int = 100,
    seed: int = 0,
    data_range: float = 2.0,
    batch_size: int = 8,
) -> dict[str, float]:
    """Mean/std MS-SSIM over at most `max_pairs` distinct pairs (seeded) of volumes (N, [1,] X, Y, Z).

    Returns {"mean", "std", "pairs", "n"}. Higher = less diverse.
    """
    n = len(volumes)
    if n < 2:
        raise ValueError(f"pairwise MS-SSIM needs >= 2 volumes, got {n}")
    pairs = list(combinations(range(n), 2))
    if len(pairs) > max_pairs:
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), max_pairs, replace=False))]
    vals = []
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        i, j = zip(*chunk, strict=True)
        vals.append(msssim(volumes[list(i)], volumes[list(j)], data_range))
    v = np.concatenate(vals)
    return {"mean": float(v.mean()), "std": float(v.std()), "pairs": len(v), "n": n}
