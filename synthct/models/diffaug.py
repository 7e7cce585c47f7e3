"""Differentiable augmentation (DiffAugment) and small helpers shared by the 2D slice systems.

DiffAugment (Zhao et al. 2020) augments *every* image the discriminator sees — real and fake,
in the D and the G update — with transforms that are differentiable w.r.t. the image, so the
generator gets gradients through them and D cannot overfit a few hundred cases. Hand-written
because no dependency of synthct ships it (MONAI's transforms are not differentiable w.r.t. the
image and use their own random state, not the loop's seeded generator).

Policies, each applied with one random draw per sample, to a (B, 2, H, W) CT + mask pair:
- "color": brightness (+U(-0.5, 0.5)) then contrast (x U(0.5, 1.5) around the sample mean), on
  the CT channel (0) only; the mask channel passes through unchanged. Intensity jitter is
  meaningless on a label map, and drawing it for both channels would let D read the draw off the
  mask (whose clean values are exactly -1 and 1) and undo it on the CT, so colour augmentation
  would stop regularising. The original's "saturation" term (spread around the mean over
  channels) is the identity on a single-channel CT and is left out.
- "translation": integer shift of up to 1/8 of the side, the same for both channels (the pair
  stays aligned); vacated pixels are -1 (air / no tumour, the background of both channels)
  instead of the original's 0.
- "cutout": a square of half the side at a random position set to 0 in both channels (as in the
  original).

Geometric policies ("translation", "cutout") move image and mask identically; the colour policy
changes the image alone. Official FastGAN trains with "color,translation" (its `train.py`);
the DiffAugment paper's StyleGAN2 policy adds "cutout".

All randomness comes from an explicit `torch.Generator` on the image's device, so a training
step is a pure function of the loop's seeded generator.
"""

from __future__ import annotations

import torch

from synthct.config import DIFFAUG_POLICIES
from synthct.errors import ConfigError
from synthct.models.base import StepContext

TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2
FILL = -1.0  # background value of both channels in [-1, 1]
IMAGE_CHANNELS = 1  # channel 0 is CT; the colour policy leaves the others (the mask) alone


def parse_policy(policy: str) -> tuple[str, ...]:
    """Policy string to names: "color,cutout" -> ("color", "cutout"); "" -> (); else ConfigError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [n for n in names if n not in DIFFAUG_POLICIES]
    if bad:
        raise ConfigError(f"diffaug policy {bad} unknown; expected names from {DIFFAUG_POLICIES}")
    return names


def _uniform(x: torch.Tensor, g: torch.Generator | None, *shape: int) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, generator=g, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Brightness then contrast, per sample, on the CT channel (0) of x (B, C, H, W) only;
    channels 1.. (the mask) are returned unchanged."""
    image, rest = x[:, :IMAGE_CHANNELS], x[:, IMAGE_CHANNELS:]
    image = image + (_uniform(x, g, 1, 1, 1) - 0.5)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * (_uniform(x, g, 1, 1, 1) + 0.5) + mean
    return torch.cat([image, rest], dim=1)


def translation(
    x: torch.Tensor, g: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO
) -> torch.Tensor:
    """Shift each sample by integers (dy, dx) in [-ratio·H, ratio·H]; vacated pixels = FILL."""
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of each output pixel
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)  # (B, H, W)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).reshape(b, 1, h * w)
    out = x.reshape(b, c, h * w).gather(2, index.expand(b, c, h * w)).reshape(b, c, h, w)
    return torch.where(inside.unsqueeze(1), out, out.new_full((), FILL))


def cutout(
    x: torch.Tensor, g: torch.Generator | None = None, ratio: float = CUTOUT_RATIO
) -> torch.Tensor:
    """Set a (ratio·H, ratio·W) box at a random centre of each sample to 0 (all channels)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2
    box = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~box).unsqueeze(1).to(x.dtype)


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(
    x: torch.Tensor, policy: tuple[str, ...] | str, g: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the policies in order to (B, C, H, W); differentiable w.r.t. x; () = identity."""
    if isinstance(policy, str):
        policy = parse_policy(policy)
    for name in policy:
        x = _OPS[name](x, g)
    return x.contiguous()


# -- randomness on the model's device ------------------------------------------------------------
def device_generator(ctx: StepContext) -> torch.Generator:
    """A generator on ctx.device seeded from the loop's CPU generator (one draw per step), so
    latents, noise and augmentations are drawn on the device yet stay reproducible."""
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator))
    return torch.Generator(device=ctx.device).manual_seed(seed)
