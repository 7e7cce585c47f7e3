"""The thesis's augmentation sets on packed pairs, with MONAI.

`augment_packed` splits a packed (1, S, S, S) pair into its image and mask halves, draws one
random transform, applies it to both (image trilinear, mask nearest, so the mask stays a label
map and the tumour moves with the anatomy) and packs them again.

The thesis values are in voxels of the S = 128 halves (128 x 128 x 64); they are scaled to the
volume size S with f = S / 128:

- affine: translate ±40/±40/±2 vox · f, rotate ±5/±5/±45° (about x/y/z), scale 0.85–1.15.
- elastic: the same kind of affine (translate ±50/±50/±2 · f, rotate ±5/±5/±180°) plus a
  smooth random displacement field of sigma 5–8 vox · f and magnitude 100–200 · f^2.5. MONAI
  smooths uniform noise with a Gaussian of that sigma, which divides its amplitude by
  ~(3.5 sigma)^1.5; scaling the magnitude by f^2.5 keeps the displacement at the same fraction
  of the volume (a fixed magnitude would deform a 32^3 volume ~30 times more than a 128^3 one).

Outside the volume the image is padded with air (-1) and the mask with background.
"""

from __future__ import annotations

import math

import numpy as np

from synthct.config import DataConfig
from synthct.preprocess import pack, unpack_halves

KINDS = ("affine", "elastic")
REFERENCE_SIZE = 128


def augment_params(kind: str, size: int) -> dict:
    """MONAI keyword arguments of one augmentation set for packed size S (halves S x S x S/2)."""
    f = size / REFERENCE_SIZE
    deg = math.pi / 180.0
    scale = (0.15, 0.15, 0.15)  # MONAI: factor 1 + U(-0.15, 0.15) per axis
    if kind == "affine":
        return {
            "translate_range": (40 * f, 40 * f, 2 * f),
            "rotate_range": (5 * deg, 5 * deg, 45 * deg),
            "scale_range": scale,
        }
    if kind == "elastic":
        return {
            "sigma_range": (5 * f, 8 * f),
            "magnitude_range": (100 * f**2.5, 200 * f**2.5),
            "translate_range": (50 * f, 50 * f, 2 * f),
            "rotate_range": (5 * deg, 5 * deg, 180 * deg),
            "scale_range": scale,
        }
    raise ValueError(f"augmentation kind must be one of {KINDS}, got {kind!r}")


def _seed(seed) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, 2**31 - 1))
    if seed is None:
        return int(np.random.default_rng().integers(0, 2**31 - 1))
    return int(seed) % (2**31 - 1)


def augment_packed(packed, kind: str, seed=None, cfg: DataConfig | None = None):
    """Augment one packed pair: (1, S, S, S) tensor in [-1, 1] -> same shape, dtype and device.

    kind: "affine" | "elastic". seed: an int (the same seed gives the same transform), a numpy
    Generator (one draw from it), or None (fresh randomness). cfg: the DataConfig the pair was
    packed with (its packing and mask coding); the default is z packing with a binary mask.
    """
    import torch  # deferred: loads torch
    from monai.transforms import Rand3DElasticd, RandAffined  # deferred: loads monai

    cfg = cfg or DataConfig(size=int(packed.shape[-1]))
    if not isinstance(packed, torch.Tensor) or packed.ndim != 4 or packed.shape[0] != 1:
        raise ValueError(f"expected a (1, S, S, S) tensor, got {getattr(packed, 'shape', packed)}")
    s = packed.shape[-1]
    if tuple(packed.shape[1:]) != (s, s, s):
        raise ValueError(f"expected a (1, S, S, S) tensor, got shape {tuple(packed.shape)}")
    params = augment_params(kind, s)
    img, msk = unpack_halves(packed.float(), cfg.packing)
    # image shifted to [0, 2] so that zero padding is air; mask as labels {0, 1} or {0, 1, 2}
    data = {
        "image": img + 1.0,
        "mask": torch.round(msk + 1.0) if cfg.mask == "multiclass" else (msk > 0).float(),
    }
    common = {"keys": ["image", "mask"], "prob": 1.0, "mode": ["bilinear", "nearest"]}
    common["padding_mode"] = "zeros"
    if kind == "affine":
        tr = RandAffined(**common, **params, device=packed.device)
    else:
        tr = Rand3DElasticd(**common, **params, device=packed.device)
    tr.set_random_state(seed=_seed(seed))
    out = tr(data)
    img_out = (torch.as_tensor(out["image"]).as_subclass(torch.Tensor) - 1.0).clamp(-1.0, 1.0)
    lab = torch.round(torch.as_tensor(out["mask"]).as_subclass(torch.Tensor))
    msk_out = lab * 2.0 - 1.0 if cfg.mask == "binary" else lab.clamp(0, 2) - 1.0
    return pack(img_out, msk_out, cfg.packing).to(dtype=packed.dtype, device=packed.device)
