"""The volume view: models of whole packed pairs (B, 1, S, S, S) in [-1, 1] (HA-GAN, baselines).

Image and mask are packed along z (image in z < S/2, mask in z >= S/2; `packing: interleave`
alternates slices instead), as `synthct.preprocess.pack` writes them.

- Training data: the packed split held in memory as one (N, S, S, S) float32 tensor.
- Batches: the global sample stream is the concatenation of epoch permutations, each a pure
  function of (seed, epoch); step t takes the next batch * world positions and rank r the r-th
  block of `batch` (a seeded DistributedSampler without drop-last), so every epoch shows each
  case once across ranks and a resumed run sees the same batches. `train.augment` applies the
  thesis's MONAI affine/elastic sets to both halves, seeded from the loop's generator.
- Probe: 8 real train cases fixed by the seed; features are the image halves average-pooled to
  at most 16 x 16 x 8 voxels. Snapshots are the mid axial slices of image and mask halves.
- Samples: unpacked to image HU and mask halves of S x S x S/2 on the packed grid's spacing.
- Evaluation: volume-level metrics by default; at slice level each synthetic volume is a case,
  its k slices drawn as a real patient's are (the natural tumour mix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthct.config import DataConfig, RunConfig
from synthct.metrics.slice_cases import CaseSlices, volume_set_case_slices
from synthct.sets import ModelInfo
from synthct.views.base import DataView, Probe, TrainingData

N_PROBE = 8  # real reference cases of the collapse probe


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled case order of one epoch: a pure function of (seed, epoch)."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


def batch_indices(seed: int, step: int, batch: int, n: int, rank: int = 0, world: int = 1):
    """Case indices of `rank`'s batch at `step` (see the module docstring)."""
    first = (step * world + rank) * batch
    perms: dict[int, torch.Tensor] = {}
    out = []
    for i in range(first, first + batch):
        epoch, pos = divmod(i, n)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(seed, epoch, n)
        out.append(int(perms[epoch][pos]))
    return out


def image_half(x: torch.Tensor, packing: str) -> torch.Tensor:
    """Image part of packed pairs (..., S, S, S) -> (..., S, S, S/2)."""
    return x[..., ::2] if packing == "interleave" else x[..., : x.shape[-1] // 2]


def mask_half(x: torch.Tensor, packing: str) -> torch.Tensor:
    """Mask part of packed pairs (..., S, S, S) -> (..., S, S, S/2)."""
    return x[..., 1::2] if packing == "interleave" else x[..., x.shape[-1] // 2 :]


def slice_png(batch: torch.Tensor, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """Mid axial slices (radiological: patient left on the right, anterior up) of the image and
    mask halves of (n, 1, S, S, S) pairs, tiled side by side as uint8 (S, n*S) arrays."""
    img, msk = image_half(batch[:, 0], packing), mask_half(batch[:, 0], packing)
    z = img.shape[-1] // 2

    def tile(v: torch.Tensor) -> np.ndarray:
        sl = v[..., z].float().clamp(-1, 1).add(1).mul(127.5).round().byte().cpu().numpy()
        return np.concatenate([s.T[::-1] for s in sl], axis=1)  # (x, y) -> rows y desc, cols x

    return tile(img), tile(msk)


class VolumeProbe(Probe):
    """Image halves pooled to <= 16 x 16 x 8; reference: N_PROBE real cases fixed by the seed."""

    def __init__(self, arrays: torch.Tensor, packing: str, seed: int) -> None:
        self.packing = packing
        pick = torch.randperm(len(arrays), generator=torch.Generator().manual_seed(seed))
        self.set_reference(self.features(arrays[pick[:N_PROBE]].unsqueeze(1)))

    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """(n, 1, S, S, S) -> image halves average-pooled to at most 16x16x8, as (n, d)."""
        img = image_half(samples.float(), self.packing)
        size = tuple(min(s, t) for s, t in zip(img.shape[-3:], (16, 16, 8), strict=True))
        return F.adaptive_avg_pool3d(img, size).flatten(1).cpu()

    def snapshot(self, samples: torch.Tensor) -> np.ndarray:
        """uint8 (2S, n*S): mid axial image slices over mask slices."""
        return np.concatenate(slice_png(samples, self.packing))


class VolumeView(DataView):
    """Packed (B, 1, S, S, S) pairs (see the module docstring)."""

    name = "volumes"
    dims = "3D"
    evaluation_level = "volume"

    def __init__(self, data_cfg: DataConfig) -> None:
        super().__init__(data_cfg)
        self.size = data_cfg.size

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last_3d

    def training_data(self, packed, split: str) -> TrainingData:
        arrays = torch.from_numpy(np.ascontiguousarray(packed.arrays, dtype=np.float32))
        return TrainingData.of_packed(packed, split, arrays)

    def batch(self, data, run_cfg: RunConfig, step, rank, world, generator, device):
        cfg = run_cfg.train
        idx = batch_indices(cfg.seed, step, cfg.batch_size, len(data.case_ids), rank, world)
        real = data.items[idx].unsqueeze(1)
        if cfg.augment != "none":
            from synthct.augment import augment_packed  # MONAI: loaded only when augmenting

            seeds = torch.randint(0, 2**31 - 1, (len(idx),), generator=generator).tolist()
            real = torch.stack(
                [
                    augment_packed(r, cfg.augment, s, run_cfg.data)
                    for r, s in zip(real, seeds, strict=True)
                ]
            )
        return real.to(device, non_blocking=True), torch.tensor(idx)

    def probe(self, data, run_cfg: RunConfig) -> VolumeProbe:
        return VolumeProbe(data.items, run_cfg.data.packing, run_cfg.train.seed)

    def random_batch(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """(B, 1, S, S, S): uniform image half, {-1, 1} mask half."""
        s = self.size
        x = torch.rand(batch, 1, s, s, s, generator=generator) * 2 - 1
        x[..., s // 2 :] = torch.sign(x[..., s // 2 :])
        return x

    def to_volumes(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 1, S, S, S) -> image HU (B, S, S, S/2) float32, mask (B, S, S, S/2) uint8."""
        from synthct.preprocess import unpack

        image_hu, mask = unpack(np.asarray(out)[:, 0], self.data_cfg)
        return image_hu.astype(np.float32, copy=False), mask.astype(np.uint8, copy=False)

    def output_shape(self) -> list[int]:
        return [self.size, self.size, self.size // 2]

    def output_spacing(self, packed_spacing) -> tuple[float, float, float]:
        return tuple(float(s) for s in packed_spacing)  # type: ignore[return-value]

    @classmethod
    def set_resolution(cls, model_info: ModelInfo, data_cfg: DataConfig) -> int:
        return int(data_cfg.size)

    @classmethod
    def set_tumour_mix(cls, model_info: ModelInfo) -> str | None:
        return "3D model: slices cut from volumes carry the natural mix"

    @classmethod
    def set_case_slices(
        cls, set_dir: Path, model_info: ModelInfo, data_cfg, resolution, k, n_cases, fraction=None, seed=0,
        progress=True,
    ) -> CaseSlices:  # fmt: skip
        return volume_set_case_slices(set_dir, data_cfg, resolution, k, n_cases, fraction, seed,
                                      progress)  # fmt: skip
