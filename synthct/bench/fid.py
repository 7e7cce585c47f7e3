"""`synthct bench fid`: the stable FID against the `scipy.linalg.sqrtm` recipe, and `synthct
evaluate` end to end.

Two seeded random feature sets of n x d (the second scaled and shifted, so the distance is not
zero) go through `synthct.metrics.distances.compute_fid` and through the usual recipe
(covariances, `sqrtm` of their product, real part of the trace); the two values must agree, and
their times are compared. The end-to-end figure is `run_evaluation` on blob pairs
(`synthct.bench.blobs`): n real test + n real train cases and m synthetic ones, with the
default encoder trained in the run, so it includes every metric `synthct evaluate` computes.
"""

from __future__ import annotations

import tempfile
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from synthct.bench.blobs import blob_set, split_loader, write_blob_synthetic_set
from synthct.config import DataConfig
from synthct.metrics.distances import compute_fid
from synthct.metrics.evaluation import EvalConfig, run_evaluation
from synthct.workspace import Workspace


def limit_threads(threads: int) -> None:
    """Limit torch and the BLAS libraries to `threads` threads (0: leave them as configured)."""
    if threads > 0:
        torch.set_num_threads(threads)
        threadpool_limits(threads)


def random_features(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Two seeded (n, d) float64 feature sets: standard normal, and 1.1 x normal + 0.05."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    y = rng.standard_normal((n, d)) * 1.1 + 0.05
    return x, y


def time_stable_fid(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(FID, seconds) of `compute_fid(x, y)`."""
    t0 = time.perf_counter()
    fid = compute_fid(x, y)
    return fid, time.perf_counter() - t0


def time_sqrtm_fid(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(FID, seconds, largest imaginary part of the matrix square root) of the scipy recipe."""
    import scipy.linalg  # heavy; only this comparison needs it

    t0 = time.perf_counter()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    ref = float(
        np.sum((x.mean(0) - y.mean(0)) ** 2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.trace(covmean.real)
    )
    return ref, time.perf_counter() - t0, float(np.abs(covmean.imag).max())


def time_end_to_end(size: int = 16, n_real: int = 100, n_synthetic: int = 200) -> tuple[float, str]:
    """Seconds for `run_evaluation` on blob data (n_real test + n_real train, default encoder)."""
    cfg = DataConfig(size=size)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp).ensure()
        train = blob_set(n_real, cfg, 1, "TRAIN")
        test = blob_set(n_real, cfg, 2, "TEST")
        write_blob_synthetic_set(ws, "bench", n_synthetic, cfg, 3, train.ids, shift=0.2)
        t0 = time.perf_counter()
        folder, result = run_evaluation(
            ws,
            EvalConfig(synthetic="bench"),
            real_loader=split_loader({"train": train, "test": test}),
        )
        secs = time.perf_counter() - t0
    fid = result["metrics"]["fid"]
    return (
        secs,
        f"FID {fid['value']:.3f} (real-vs-real {fid['baseline']['real_vs_real']['mean']:.3f})",
    )
