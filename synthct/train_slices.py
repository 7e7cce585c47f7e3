"""The 2D data view of the training loop: slice-pair data, batches, snapshots, collapse probe.

2D systems (FastGAN, StyleGAN2; `data_view == "slices"`) train on (B, 2, R, R) image + mask
slice pairs cut from the same packed train split as the 3D systems (`synthct.slices`). The loop
in `synthct.train` stays one loop; it calls the pieces here when the system asks for slices:

- `SliceTrainData`: the `SliceDataset` of the packed split at the system's resolution R, plus
  what the run records (case ids, centres, spacing, number of slices).
- `next_slice_batch`: step t draws B * world items with the tumour over-sampling weights from a
  generator seeded by (seed, t) alone, and rank r takes the r-th block of B. The draw is thus a
  pure function of (seed, step): a resumed run sees the same batches without any RNG state, and
  the ranks of a DDP run share one global draw.
- `SliceCollapseProbe`: the loop's mode-collapse rule on 2D samples: features = CT channel
  average-pooled to <= 32 x 32; the real diversity is that of 8 distinct real slices drawn
  without replacement.
- `pairs_png`: snapshots of (n, 2, R, R) samples: the CT row (radiological orientation, the
  data's HU window as grey levels) over the same slices with the mask overlaid
  (`synthct.display.overlay_mask`), as one RGB image.

Hand-written: the glue between this product's loop and its slice view.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from synthct.config import DataConfig, RunConfig, TrainConfig
from synthct.train import N_COLLAPSE, N_SNAPSHOT, CollapseProbe

PROBE_SIDE = 32  # collapse features: CT channel pooled to at most this side


class SliceTrainData:
    """The packed split as 2D pairs: `dataset` (SliceDataset), case ids, centres, spacing."""

    view = "slices"

    def __init__(
        self, packed, split: str, cfg: DataConfig, resolution: int, layout: str = "slices"
    ) -> None:
        from synthct.slices import SliceDataset

        self.dataset = SliceDataset.from_packed(
            packed.arrays, cfg, resolution, case_ids=list(packed.case_ids), layout=layout
        )
        self.case_ids = list(packed.case_ids)
        self.centre_names = sorted(set(packed.centres))
        self.spacing = tuple(float(s) for s in packed.spacing)
        self.split = split
        self.resolution = resolution
        self.record = {  # extra fields of train_cases.json
            "data_view": "slices",
            "layout": self.dataset.layout,
            "grid": list(self.dataset.grid) if self.dataset.layout == "mosaic" else None,
            "resolution": resolution,
            "n_slices": len(self.dataset),
            "n_tumour_slices": int(self.dataset.tumour.sum()),
            "tumour_fraction": self.dataset.tumour_fraction,
        }


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step) (for the slice draw of a step)."""
    mixed = int(np.random.SeedSequence([seed, step, 2]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(mixed)


def slice_batch_indices(
    dataset, seed: int, step: int, batch: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """Item indices (B,) of `rank`'s share of step `step`'s global weighted draw."""
    idx = dataset.draw_indices(batch * world, step_generator(seed, step))
    return idx[rank * batch : (rank + 1) * batch]


def next_slice_batch(
    data: SliceTrainData,
    cfg: TrainConfig,
    step: int,
    rank: int,
    world: int,
    device: torch.device,
    channels_last: bool = False,
) -> torch.Tensor:
    """This rank's real batch (B, 2, R, R) in [-1, 1] for `step`, on `device`."""
    idx = slice_batch_indices(data.dataset, cfg.seed, step, cfg.batch_size, rank, world)
    real = torch.stack([data.dataset[int(i)] for i in idx]).to(device, non_blocking=True)
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    return real


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


class SliceCollapseProbe(CollapseProbe):
    """`CollapseProbe` for 2D systems: fixed latents, real reference slices from the dataset."""

    def __init__(self, dataset, run_cfg: RunConfig, device: torch.device) -> None:
        self.packing = run_cfg.data.packing
        self.seed = run_cfg.train.seed
        self.device = device
        g = torch.Generator().manual_seed(self.seed + 4242)
        k = min(N_COLLAPSE, int((dataset.weights > 0).sum()))
        ref_idx = torch.multinomial(dataset.weights, k, replacement=False, generator=g)
        self.set_reference(self.features(torch.stack([dataset[int(i)] for i in ref_idx])))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 2, R, R) -> CT channel average-pooled to <= 32 x 32, as (n, d) float32."""
        img = x[:, :1].float()
        side = tuple(min(s, PROBE_SIDE) for s in img.shape[-2:])
        return F.adaptive_avg_pool2d(img, side).flatten(1).cpu()

    def snapshot(self, system, ema) -> np.ndarray:
        """RGB (2R, n*R, 3): fixed-latent EMA samples, CT row over mask-overlay row."""
        return pairs_png(self.samples(system, ema, N_SNAPSHOT))
