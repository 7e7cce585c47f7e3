"""The slices slice-level evaluation compares: k axial pairs from every case (`CaseSlices`).

What a case is: a real patient (packed pairs of a split), a synthetic volume (3D models), a
mosaic (mosaic 2D models: its tiles are the case's slices), or, for 2D models whose slices are
generated independently, a group of k consecutive generated slices (sorted case ids; any
grouping of independent draws is statistically the same). Volume-like cases give k slices drawn
by `synthct.slices.case_draw` from their body slices (a voxel above -500 HU) with the tumour
mix's weights; groups of generated slices are taken as generated. See `slice_level.py` for the
protocol and `resampling.py` for how the k slices enter the metrics.

Slices are resized to R x R (`synthct.slices.resize_pairs`); synthetic pairs are mapped back to
[-1, 1] exactly as real data are (`synthct.slices.halves_to_unit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from synthct.config import DataConfig
from synthct.errors import WorkspaceError
from synthct.metrics.volume_sets import VolumeSet, load_synthetic_set


@dataclass
class SliceSet:
    """Slice pairs (N, 2, R, R) float32 in [-1, 1] with the case id and centre of each slice."""

    pairs: np.ndarray
    case_ids: list[str]
    centres: list[str]

    @property
    def n_cases(self) -> int:
        return len(set(self.case_ids))


@dataclass
class CaseSlices:
    """k slice pairs of each of C cases: pairs (C, k, 2, R, R) float32 in [-1, 1].

    short: cases that had fewer than k candidate slices (drawn with replacement); unit: what a
    case is on this side.
    """

    pairs: np.ndarray
    case_ids: list[str]
    centres: list[str]
    short: int = 0
    unit: str = "case"

    @property
    def n_cases(self) -> int:
        return int(self.pairs.shape[0])

    @property
    def per_case(self) -> int:
        return int(self.pairs.shape[1])

    @property
    def flat(self) -> np.ndarray:
        """(C * k, 2, R, R), case-major."""
        return self.pairs.reshape(-1, *self.pairs.shape[2:])

    @property
    def tumour_fraction(self) -> float:
        return float((self.pairs[:, :, 1] > 0).any(axis=(2, 3)).mean()) if self.n_cases else 0.0

    def describe(self) -> dict[str, Any]:
        return {"n_cases": self.n_cases, "slices_per_case": self.per_case,
                "cases_short_of_k": self.short, "case": self.unit,
                "tumour_slice_fraction": self.tumour_fraction}  # fmt: skip


def _cap(n: int, max_slices: int | None, seed: int) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_slices, replace=False))


def volume_slices(
    vs: VolumeSet, cfg: DataConfig, resolution: int, max_slices: int | None = None, seed: int = 0
) -> SliceSet:
    """Every body axial slice pair of packed pairs (N, S, S, S) at R x R (at most `max_slices`,
    a seeded sample): the training data of the default slice encoder."""
    from synthct.slices import SliceDataset

    ds = SliceDataset.from_packed(
        vs.arrays, cfg, resolution, case_ids=list(vs.ids), tumour_fraction=None
    )
    centre_of = dict(zip(vs.ids, vs.centres, strict=True))
    keep = _cap(len(ds), max_slices, seed)
    pairs = torch.stack([ds[int(i)] for i in keep]).numpy() if len(keep) else np.zeros((0, 2))
    ids = [ds.item_case(int(i)) for i in keep]
    return SliceSet(pairs.astype(np.float32), ids, [centre_of[c] for c in ids])


def case_slices_of_stacks(
    images: torch.Tensor,
    masks: torch.Tensor,
    case_ids: list[str],
    centres: list[str],
    resolution: int,
    k: int,
    window: tuple[float, float],
    fraction: float | None = None,
    seed: int = 0,
    unit: str = "case",
) -> CaseSlices:
    """Image halves (C, X, Y, Z) in [-1, 1] and masks -> k axial pairs per case (`case_draw`)."""
    from synthct.slices import SliceDataset, case_draw

    ds = SliceDataset(images, masks, resolution, drop_empty=False, case_ids=case_ids,
                      tumour_fraction=None, window=window)  # fmt: skip
    idx, short = case_draw(ds.index[:, 0].numpy(), ds.tumour.numpy(), len(case_ids), k,
                           fraction, seed, eligible=ds.body.numpy())  # fmt: skip
    pairs = torch.stack([ds[int(i)] for i in idx.reshape(-1)]).numpy().astype(np.float32)
    pairs = pairs.reshape(len(case_ids), k, *pairs.shape[1:])
    return CaseSlices(pairs, list(case_ids), list(centres), int(short.sum()), unit)


def volume_case_slices(
    vs: VolumeSet,
    cfg: DataConfig,
    resolution: int,
    k: int,
    fraction: float | None = None,
    seed: int = 0,
    unit: str = "patient",
) -> CaseSlices:
    """Packed pairs (N, S, S, S) -> k body axial slice pairs per case at R x R."""
    from synthct.preprocess import unpack
    from synthct.slices import halves_to_unit

    image_hu, mask = unpack(np.asarray(vs.arrays), cfg)
    image, mask = halves_to_unit(image_hu, mask, cfg.hu_window)
    return case_slices_of_stacks(image, mask, list(vs.ids), list(vs.centres), resolution, k,
                                 cfg.hu_window, fraction, seed, unit)  # fmt: skip


def set_case_ids(set_dir: Path) -> list[str]:
    """The case ids of a synthetic set (its imagesTr/*__CT.nii.gz), sorted; at least 2."""
    ids = sorted(p.name[: -len("__CT.nii.gz")] for p in (set_dir / "imagesTr").glob("*__CT.nii.gz"))
    if len(ids) < 2:
        raise WorkspaceError(f"{set_dir}/imagesTr holds {len(ids)} cases; need at least 2")
    return ids


def read_slice_pairs(set_dir: Path, cid: str, cfg: DataConfig, resolution: int) -> torch.Tensor:
    """A synthetic case's axial pairs (Z, 2, R, R) in [-1, 1] at resolution R."""
    from synthct.sets import load_synthetic_pair
    from synthct.slices import axial_stack, halves_to_unit, resize_pairs

    image, mask = load_synthetic_pair(set_dir, cid)
    img, msk = halves_to_unit(image.array, mask.array, cfg.hu_window)
    return resize_pairs(axial_stack(img, msk), resolution)


def volume_set_case_slices(
    set_dir: Path,
    cfg: DataConfig,
    resolution: int,
    k: int,
    n_cases: int,
    fraction: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CaseSlices:
    """At most `n_cases` volumes of a set of 3D samples, k slice pairs each, drawn as real
    cases are (`volume_case_slices`)."""
    vs, _, _ = load_synthetic_set(set_dir, cfg, n_cases, seed, progress)
    return volume_case_slices(vs, cfg, resolution, k, fraction, seed, "synthetic volume")


def mosaic_set_case_slices(
    set_dir: Path,
    cfg: DataConfig,
    resolution: int,
    k: int,
    n_cases: int,
    fraction: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CaseSlices:
    """At most `n_cases` mosaics of a set (each cut back into its stack of tiles on writing),
    k slice pairs each, drawn as real cases are."""
    ids = set_case_ids(set_dir)
    if n_cases < len(ids):
        ids = sorted(np.random.default_rng(seed).choice(ids, n_cases, replace=False).tolist())
    stacks = [read_slice_pairs(set_dir, c, cfg, resolution)
              for c in tqdm(ids, desc="read synthetic mosaics", disable=not progress)]  # fmt: skip
    images = torch.stack([rearrange_stack(s, 0) for s in stacks])
    masks = torch.stack([rearrange_stack(s, 1) for s in stacks])
    return case_slices_of_stacks(images, masks, ids, [""] * len(ids), resolution, k,
                                 cfg.hu_window, fraction, seed, "mosaic")  # fmt: skip


def slice_group_case_slices(
    set_dir: Path,
    cfg: DataConfig,
    resolution: int,
    k: int,
    n_cases: int,
    seed: int = 0,
    progress: bool = True,
) -> CaseSlices:
    """At most `n_cases` groups of k consecutive independently generated slices (a set of a 2D
    model), taken as generated."""
    ids = set_case_ids(set_dir)
    groups = [ids[i : i + k] for i in range(0, len(ids) - k + 1, k)]
    if not groups:
        raise WorkspaceError(
            f"{set_dir} holds {len(ids)} generated slices, fewer than one case of "
            f"--slices-per-case {k}"
        )
    if n_cases < len(groups):
        keep = np.sort(np.random.default_rng(seed).choice(len(groups), n_cases, replace=False))
        groups = [groups[i] for i in keep]
    chunks = []
    for group in tqdm(groups, desc="read synthetic slices", disable=not progress):
        chunks.append(torch.cat([read_slice_pairs(set_dir, c, cfg, resolution) for c in group]))
    pairs = torch.stack(chunks).numpy().astype(np.float32)
    names = [f"{g[0]}..{g[-1]}" if len(g) > 1 else g[0] for g in groups]
    return CaseSlices(pairs, names, [""] * len(groups), 0, f"group of {k} generated slices")


def rearrange_stack(pairs: torch.Tensor, channel: int) -> torch.Tensor:
    """(Z, 2, R, R) axial pairs -> one channel as a half (R, R, Z)."""
    return pairs[:, channel].permute(1, 2, 0)
