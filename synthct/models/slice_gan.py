"""What the 2D slice models (FastGAN, StyleGAN2) share: their view, resolution and augmentation.

A `SliceGAN` trains on and generates (B, 2, R, R) image + mask slice pairs in [-1, 1] (channel 0
CT, channel 1 mask) through a `synthct.views.SliceView` at resolution R (`resolution` of the
kind's section, or the data size S when 0; a power of two in [32, 1024]) and layout "slices" or
"mosaic". DiffAugment (`diffaug.py`) is applied to every discriminator input with the section's
policy.
"""

from __future__ import annotations

import torch

from synthct.config import DataConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models.base import GenerativeModel
from synthct.models.diffaug import parse_policy
from synthct.views import SliceView


class SliceGAN(GenerativeModel):
    """Base of the 2D models: `view` (SliceView), `resolution`, `policy` (DiffAugment)."""

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__()
        own = model_cfg.section
        self.cfg, self.size = model_cfg, data_cfg.size
        self.resolution = resolve_resolution(own.resolution, data_cfg.size, self.kind)
        self.latent_dim = model_cfg.latent_dim
        self.policy = parse_policy(own.diffaug)
        self.view = SliceView(data_cfg, self.resolution, own.slice_layout)


def resolve_resolution(resolution: int, size: int, kind: str) -> int:
    """The 2D side: `resolution` or, when 0, the data size S; a power of two in [32, 1024]."""
    r = resolution or size
    if r < 32 or r > 1024 or r & (r - 1):
        raise ConfigError(
            f"{kind} generates square slices with a power-of-two side in [32, 1024]; "
            f"got resolution {r} (model.{kind}.resolution={resolution}, data size {size})"
        )
    return r


def check_pair_batch(real: torch.Tensor, resolution: int) -> None:
    """Raise ValueError unless `real` is a (B, 2, R, R) slice-pair batch."""
    if real.ndim != 4 or tuple(real.shape[1:]) != (2, resolution, resolution):
        raise ValueError(
            f"expected a batch of image+mask slice pairs (B, 2, {resolution}, {resolution}), "
            f"got {tuple(real.shape)}"
        )
