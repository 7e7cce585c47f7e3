"""Small building blocks shared by the 3D GANs in this package.

Hand-written because they are one-liners over `torch.nn` that fix the conventions the models share
(channel rounding for GroupNorm(8), spectral-norm wrappers, parameter freezing); MONAI has no
equivalents for GAN training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

GROUPS = 8  # GroupNorm groups in HA-GAN's generator and encoders (reference value)


def channels(base: int, width: float, minimum: int = GROUPS) -> int:
    """`base * width` rounded to a multiple of 8 (GroupNorm(8) needs it), at least `minimum`."""
    return max(minimum, round(base * width / GROUPS) * GROUPS)


def conv_gn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1):
    """Conv3d -> GroupNorm(8) -> ReLU (HA-GAN generator / encoder block)."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding),
        nn.GroupNorm(GROUPS, c_out),
        nn.ReLU(inplace=True),
    )


def sn_conv3d(*args, **kwargs) -> nn.Module:
    """Conv3d with spectral normalisation (parameters: `parametrizations.weight.original`)."""
    return spectral_norm(nn.Conv3d(*args, **kwargs))


def sn_linear(*args, **kwargs) -> nn.Module:
    """Linear with spectral normalisation."""
    return spectral_norm(nn.Linear(*args, **kwargs))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable-or-not parameters (buffers such as spectral-norm vectors excluded)."""
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def trainable(train: list[nn.Module], frozen: list[nn.Module]) -> Iterator[None]:
    """Within the block only `train` networks get gradients; `frozen` ones are skipped by autograd.

    Freezing (instead of detaching outputs) lets gradients flow *through* a frozen network to an
    upstream trainable one (e.g. encoder -> frozen generator -> L1 loss), and it avoids computing
    weight gradients nobody steps. Previous `requires_grad` flags are restored on exit.
    """
    saved = [(p, p.requires_grad) for m in (*train, *frozen) for p in m.parameters()]
    try:
        for m in frozen:
            m.requires_grad_(False)
        for m in train:
            m.requires_grad_(True)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def one_hot(centre: torch.Tensor | None, n_centres: int, batch: int, device) -> torch.Tensor | None:
    """(B,) centre indices -> (B, n_centres) float one-hot; None when unconditional.

    Raises ValueError naming the bad value when an index is out of range or the batch differs.
    """
    if n_centres <= 0:
        return None
    if centre is None:
        raise ValueError(f"this model is conditioned on {n_centres} centres; pass `centre` (B,)")
    centre = torch.as_tensor(centre, device=device).long().reshape(-1)
    if centre.numel() != batch:
        raise ValueError(f"centre has {centre.numel()} entries, batch has {batch}")
    if centre.numel() and (int(centre.min()) < 0 or int(centre.max()) >= n_centres):
        raise ValueError(f"centre indices must be in [0, {n_centres - 1}], got {centre.tolist()}")
    return nn.functional.one_hot(centre, n_centres).float()
