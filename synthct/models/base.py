"""The interface between a generative model and the training loop, sampling and evaluation.

A `GenerativeModel` is an `nn.Module` that owns its networks (as attributes, e.g. `G`, `D`,
`E`, `Sub_E`), builds its optimisers, performs one training iteration in `train_step` and
samples in `generate`. It declares how it sees the data through its `view`, chosen when it is
built: a `synthct.views.VolumeView` for models of packed (B, 1, S, S, S) pairs or a
`SliceView` for models of (B, 2, R, R) slice pairs. The loop (`synthct/train.py`) owns
everything else: precision, EMA, logging, checkpoints, distributed gradient averaging, NaN guard;
the view owns batching, the collapse probe, snapshots and the sample layout on disk.

Every optimiser update goes through `ctx.update(name, loss)`, which zeroes the grads of that
optimiser, back-propagates, averages the gradients across DDP ranks (explicit all-reduce, so any
call pattern of the networks is allowed), checks the loss is finite and steps the optimiser.
Nothing here is GAN-specific: a model with one optimiser (a diffusion model) calls
`ctx.update` once per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from synthct.views import DataView


@dataclass
class StepContext:
    """What the loop hands to `GenerativeModel.train_step` for one iteration."""

    step: int
    device: torch.device
    generator: torch.Generator  # CPU generator for crop positions etc. (seeded, checkpointed)
    update: Callable[[str, torch.Tensor], None]  # zero_grad + backward + grad sync + step
    autocast: Callable[[], contextlib.AbstractContextManager] = field(
        default=contextlib.nullcontext
    )
    train_encoder: bool = True


class GenerativeModel(nn.Module):
    """Base class of every model kind (registered in `synthct.models.registry`).

    Subclasses set `kind`, `latent_dim`, `view` (and `n_centres` when centre-conditioned),
    create their networks in `__init__(model_cfg, data_cfg)`, and implement the methods below.
    Tensor shapes follow the view: real batches and generated samples are (B, 1, S, S, S) packed
    pairs for a VolumeView (image in z < S/2, mask in z >= S/2), (B, 2, R, R) slice pairs for a
    SliceView (channel 0 CT, channel 1 mask), all in [-1, 1].
    """

    kind: ClassVar[str] = "base"
    ema_modules: ClassVar[tuple[str, ...]] = ("G",)  # networks the loop keeps an EMA copy of

    latent_dim: int
    n_centres: int = 0
    view: DataView

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per update name used in `train_step` (e.g. {"G":…, "D":…, "E":…})."""
        raise NotImplementedError

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One training iteration on a real batch (the view's shape); returns named losses."""
        raise NotImplementedError

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Latent input for `generate` (the model's own noise shape)."""
        return torch.randn(n, self.latent_dim, generator=generator).to(device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Samples (the view's shape) in [-1, 1] from latents, in eval mode, one pass."""
        raise NotImplementedError
