"""The small interface between a generative model and the training loop.

A `GANSystem` is an `nn.Module` that owns its networks (as attributes, e.g. `G`, `D`, `E`,
`Sub_E`), builds its optimisers, and performs one full training iteration in `train_step`. The
loop (`synthct/train.py`) owns everything else: data, precision, EMA, logging, checkpoints,
distributed gradient averaging, NaN guard.

Every optimiser update goes through `ctx.update(name, loss)`, which zeroes the grads of that
optimiser, back-propagates, averages the gradients across DDP ranks (explicit all-reduce, so any
call pattern of the networks is allowed), checks the loss is finite and steps the optimiser.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


@dataclass
class StepContext:
    """What the loop hands to `GANSystem.train_step` for one iteration."""

    step: int
    device: torch.device
    generator: torch.Generator  # CPU generator for crop positions etc. (seeded, checkpointed)
    update: Callable[[str, torch.Tensor], None]  # zero_grad + backward + grad sync + step
    autocast: Callable[[], contextlib.AbstractContextManager] = field(
        default=contextlib.nullcontext
    )
    train_encoder: bool = True


class GANSystem(nn.Module):
    """Base class for HA-GAN and the baselines.

    Subclasses set `kind`, `size` and `latent_dim`, create their networks in `__init__`, and
    implement the methods below. Volumes are (B, 1, S, S, S) tensors in [-1, 1]: the packed
    image+mask pair (image in z < S/2, mask in z >= S/2; design §5).
    """

    kind: ClassVar[str] = "base"
    ema_modules: ClassVar[tuple[str, ...]] = ("G",)  # networks the loop keeps an EMA copy of

    size: int
    latent_dim: int
    n_centres: int = 0

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per update name used in `train_step` (e.g. {"G":…, "D":…, "E":…})."""
        raise NotImplementedError

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One training iteration on a real batch (B, 1, S, S, S); returns named scalar losses."""
        raise NotImplementedError

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Latent input for `generate` (the generator's own noise shape)."""
        return torch.randn(n, self.latent_dim, generator=generator).to(device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Full volumes (B, 1, S, S, S) in [-1, 1] from latents, in eval mode, one pass."""
        raise NotImplementedError
