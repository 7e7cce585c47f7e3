"""The slice view: models of 2D (B, 2, R, R) image + mask slice pairs (FastGAN, StyleGAN2).

Pairs are cut from the same packed train split as the volume models see (`synthct.slices`):
channel 0 the CT slice in [-1, 1], channel 1 the tumour mask in {-1, +1}; layout "slices" (every
axial body slice) or "mosaic" (the thesis's tiling of a case's S/2 slices into one image).

- Batches: step t draws B * world items with the dataset's weights from a generator seeded by
  (seed, t) alone, and rank r takes the r-th block of B: a pure function of (seed, step), so a
  resumed run sees the same batches and the ranks of a DDP run share one global draw.
- Probe: 8 distinct real items drawn by the seed; features are the CT channel average-pooled to
  at most 32 x 32. Snapshots: the CT row over the same slices with the mask overlaid (RGB).
- Samples: channel 0 -> HU, channel 1 > 0 -> mask, each pair one axial slice (R, R, 1) whose
  in-plane spacing is the packed grid's scaled by S / R (the same field of view) and whose
  thickness is the packed grid's; a mosaic is cut back into its (R/rows, R/cols, rows*cols) stack.
- Evaluation: slice-level metrics only. A case is a mosaic (its tiles, drawn as a real patient's
  slices are: the natural mix) or a group of k independently generated slices (taken as
  generated: the mix the run trained on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthct.config import DataConfig, RunConfig, TrainConfig
from synthct.errors import ConfigError
from synthct.metrics.slice_cases import (
    CaseSlices,
    mosaic_set_case_slices,
    slice_group_case_slices,
)
from synthct.sets import ModelInfo
from synthct.slices import SliceDataset, mosaic_grid, unmosaic
from synthct.views.base import DataView, Probe, TrainingData

N_PROBE = 8  # real reference slices of the collapse probe
PROBE_SIDE = 32  # collapse features: CT channel pooled to at most this side


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step) (for the slice draw of a step)."""
    mixed = int(np.random.SeedSequence([seed, step, 2]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(mixed)


def slice_batch_indices(
    dataset: SliceDataset, seed: int, step: int, batch: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """Item indices (B,) of `rank`'s share of step `step`'s global weighted draw."""
    idx = dataset.draw_indices(batch * world, step_generator(seed, step))
    return idx[rank * batch : (rank + 1) * batch]


def pairs_png(batch: torch.Tensor) -> np.ndarray:
    """(n, 2, R, R) pairs in [-1, 1] -> RGB uint8 (2R, n*R, 3): CT row over the overlay row.

    Channel 0 is CT (the data's HU window as grey 0..255), channel 1 the mask (> 0 = tumour).
    Slices are (X, Y) and shown radiologically (anterior up, patient left on the right).
    """
    from synthct.display import overlay_mask

    if batch.ndim != 4 or batch.shape[1] != 2:
        raise ValueError(f"expected (n, 2, R, R) slice pairs, got {tuple(batch.shape)}")
    grey = batch[:, 0].float().clamp(-1, 1).add(1).mul(127.5).round().byte().cpu().numpy()
    mask = (batch[:, 1] > 0).cpu().numpy().astype(np.uint8)
    plain, over = [], []
    for g, m in zip(grey, mask, strict=True):
        g, m = g.T[::-1], m.T[::-1]  # (x, y) -> rows y descending, cols x
        plain.append(overlay_mask(g, None))
        over.append(overlay_mask(g, m))
    return np.concatenate([np.concatenate(plain, axis=1), np.concatenate(over, axis=1)], axis=0)


def slice_spacing(
    spacing: tuple[float, ...], size: int, resolution: int
) -> tuple[float, float, float]:
    """Voxel size (mm) of an R x R slice covering the S x S field of view of the packed grid:
    (sx * S / R, sy * S / R, sz)."""
    f = size / resolution
    return (float(spacing[0]) * f, float(spacing[1]) * f, float(spacing[2]))


def slices_to_volumes(
    out: np.ndarray, hu_window: tuple[float, float], grid: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """2D generator output (B, 2, R, R) in [-1, 1] -> (image_hu (B, X, Y, Z) float32, mask uint8).

    grid None: each pair is one axial slice, Z = 1. grid (rows, cols): each pair is a mosaic of
    rows * cols axial tiles (`synthct.slices.mosaic`), cut back into (R/rows, R/cols, rows*cols).
    """
    from synthct.preprocess import unit_to_hu

    x = np.clip(np.asarray(out, dtype=np.float32), -1.0, 1.0)
    if grid is None:
        vol = x[..., None]  # (B, 2, X, Y, 1)
    else:
        tiles = unmosaic(torch.from_numpy(x), int(grid[0]), int(grid[1])).numpy()
        vol = np.moveaxis(tiles, 2, -1)  # (B, 2, Z, X, Y) -> (B, 2, X, Y, Z)
    image_hu = unit_to_hu(vol[:, 0], hu_window).astype(np.float32)
    return image_hu, (vol[:, 1] > 0).astype(np.uint8)


class SliceProbe(Probe):
    """CT channel pooled to <= 32 x 32; reference: N_PROBE distinct real items of the dataset."""

    def __init__(self, dataset: SliceDataset, seed: int) -> None:
        g = torch.Generator().manual_seed(seed + 4242)
        k = min(N_PROBE, int((dataset.weights > 0).sum()))
        ref_idx = torch.multinomial(dataset.weights, k, replacement=False, generator=g)
        self.set_reference(self.features(torch.stack([dataset[int(i)] for i in ref_idx])))

    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """(n, 2, R, R) -> CT channel average-pooled to <= 32 x 32, as (n, d) float32."""
        img = samples[:, :1].float()
        side = tuple(min(s, PROBE_SIDE) for s in img.shape[-2:])
        return F.adaptive_avg_pool2d(img, side).flatten(1).cpu()

    def snapshot(self, samples: torch.Tensor) -> np.ndarray:
        """RGB (2R, n*R, 3): CT row over mask-overlay row."""
        return pairs_png(samples)


class SliceView(DataView):
    """(B, 2, R, R) slice pairs at resolution R in layout "slices" or "mosaic"."""

    name = "slices"
    dims = "2D"
    evaluation_level = "slice"

    def __init__(self, data_cfg: DataConfig, resolution: int, layout: str = "slices") -> None:
        super().__init__(data_cfg)
        self.resolution, self.layout = resolution, layout
        self.grid = mosaic_grid(data_cfg.size // 2) if layout == "mosaic" else None

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last

    def check_train_config(self, train_cfg: TrainConfig, kind: str) -> None:
        if train_cfg.augment != "none":
            raise ConfigError(
                f"train.augment is {train_cfg.augment!r}, but {kind} trains on 2D slices: the "
                "affine/elastic sets are 3D MONAI transforms of packed volumes; set "
                "train.augment: none (DiffAugment, model.<kind>.diffaug, is applied inside the "
                "model)"
            )

    def training_data(self, packed, split: str) -> TrainingData:
        dataset = SliceDataset.from_packed(
            packed.arrays,
            self.data_cfg,
            self.resolution,
            case_ids=list(packed.case_ids),
            layout=self.layout,
        )
        record = {  # extra fields of train_cases.json
            "data_view": self.name,
            "layout": dataset.layout,
            "grid": list(dataset.grid) if dataset.layout == "mosaic" else None,
            "resolution": self.resolution,
            "n_slices": len(dataset),
            "n_tumour_slices": int(dataset.tumour.sum()),
            "tumour_fraction": dataset.tumour_fraction,
        }
        return TrainingData.of_packed(packed, split, dataset, record)

    def batch(self, data, run_cfg: RunConfig, step, rank, world, generator, device):
        cfg = run_cfg.train
        idx = slice_batch_indices(data.items, cfg.seed, step, cfg.batch_size, rank, world)
        real = torch.stack([data.items[int(i)] for i in idx]).to(device, non_blocking=True)
        return real, data.items.index[idx, 0]

    def probe(self, data, run_cfg: RunConfig) -> SliceProbe:
        return SliceProbe(data.items, run_cfg.train.seed)

    def random_batch(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 2, R, R): uniform CT channel, {-1, 1} mask channel."""
        r = self.resolution
        x = torch.rand(batch, 2, r, r, generator=generator) * 2 - 1
        x[:, 1] = torch.sign(x[:, 1])
        return x

    def to_volumes(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return slices_to_volumes(out, self.data_cfg.hu_window, self.grid)

    def output_shape(self) -> list[int]:
        r = self.resolution
        if self.grid is None:
            return [r, r, 1]
        rows, cols = self.grid
        return [r // rows, r // cols, rows * cols]

    def output_spacing(self, packed_spacing) -> tuple[float, float, float]:
        tile = self.resolution if self.grid is None else self.resolution // self.grid[1]
        return slice_spacing(packed_spacing, self.data_cfg.size, tile)

    def card_fields(self) -> dict[str, Any]:
        return {
            "size": self.resolution,
            "data_view": self.name,
            "data_size": int(self.data_cfg.size),
            "layout": self.layout,
            "grid": None if self.grid is None else [int(v) for v in self.grid],
        }

    def sample_name(self) -> str:
        return "slice pair"

    def supports_png(self) -> bool:
        return self.grid is None

    @classmethod
    def set_resolution(cls, model_info: ModelInfo, data_cfg: DataConfig) -> int:
        return int(model_info.size or data_cfg.size)

    @classmethod
    def set_tumour_mix(cls, model_info: ModelInfo) -> str | None:
        if model_info.layout == "mosaic":
            return "mosaic model: tiles cut from whole cases carry the natural mix"
        return None

    @classmethod
    def set_case_slices(
        cls, set_dir: Path, model_info: ModelInfo, data_cfg, resolution, k, n_cases, fraction=None, seed=0,
        progress=True,
    ) -> CaseSlices:  # fmt: skip
        if model_info.layout == "mosaic":
            return mosaic_set_case_slices(set_dir, data_cfg, resolution, k, n_cases, fraction,
                                          seed, progress)  # fmt: skip
        return slice_group_case_slices(set_dir, data_cfg, resolution, k, n_cases, seed, progress)
