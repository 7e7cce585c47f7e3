"""`synthct bench data`: phantom generation and full-size NIfTI write/read times.

The two waits of the data steps: `synthct.phantom.make_case` at full size and at scale 0.25 (the
demo and test data), and one full-size int16 .nii.gz case written, read header-only (what
`ingest` does for most checks) and read in full. Every figure is the median of `repeats` runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

from synthct.io import load_header, load_volume, save_volume
from synthct.phantom import make_case

# (case id, scale): two full-size centres of different extent and the scale the demo uses
PHANTOM_CASES = (("HGJ-003", 1.0), ("CHUS-001", 1.0), ("HGJ-003", 0.25))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn`."""
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def time_phantom(case_id: str, scale: float, repeats: int) -> tuple[tuple[int, ...], float]:
    """(image shape (X, Y, Z), median seconds) of `make_case(case_id, seed=0, scale=scale)`."""
    case = make_case(case_id, seed=0, scale=scale)
    secs = median_seconds(lambda: make_case(case_id, seed=0, scale=scale), repeats)
    return case.image.shape, secs


def time_nifti(repeats: int) -> dict:
    """One full-size phantom CT as int16 .nii.gz: shape, write_s, header_s and read_s (medians)."""
    case = make_case("HGJ-003", seed=0, scale=1.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ct.nii.gz")
        write_s = median_seconds(lambda: save_volume(case.image, path, dtype=np.int16), repeats)
        header_s = median_seconds(lambda: load_header(path), repeats)
        read_s = median_seconds(lambda: load_volume(path), repeats)
    return {"shape": case.image.shape, "write_s": write_s, "header_s": header_s, "read_s": read_s}
