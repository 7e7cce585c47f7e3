"""The 2D view of the packed real pairs: axial image + mask slice pairs, or the thesis's mosaics.

The 2D systems (FastGAN, StyleGAN2) train on (2, R, R) pairs in [-1, 1]: channel 0 the CT slice
(the HU window of the DataConfig mapped linearly to [-1, 1], as in the packed volumes), channel 1
the tumour mask (-1 background, +1 tumour; multiclass masks are binarised, label > 0). They are
cut from the packed pairs of `synthct.preprocess` (contract 2: `load_packed` + `unpack`), so the
2D and 3D systems see the same cases, split, crop, spacing and window.

- Layout "slices": every axial slice (fixed z of the image half, (X, Y) in-plane) of every case.
  Slices with no voxel above `BODY_HU` (pure air / padding beyond the scan) are left out by
  default. Resizing to R: the image by area averaging (down) or bilinear (up), the mask the same
  way then thresholded at 0 (a majority vote, so small tumours are not aliased away).
- Layout "mosaic" (thesis §3.4.2, for reproduction): the Z consecutive slices of a case tiled row
  by row into one image of `rows` x `cols` tiles, padded with empty (-1) tiles or centre-chopped
  to rows x cols slices, then resized to R x R. The thesis tiled ~100 slices of 256^2 (50 %
  resampling) into 1024 x 3680 images (about 4 x 14 tiles); square models need a square image,
  so the default grid is the smallest square that holds the Z = S/2 slices (8 x 8 for S = 128).
- Tumour mix: by default (`DEFAULT_TUMOUR_FRACTION = None`) items are drawn uniformly, so
  training sees the natural share of tumour slices -- the mix slice-level evaluation compares
  against, and the mix slices cut from a 3D model's volumes have. Over-sampling stays available:
  with fraction p, a draw is a tumour item (mask has any +1) with probability p: tumour items
  get weight p / n_tumour, the others (1 - p) / n_other (uniform within each group); with only
  one group present the weights are uniform. A run records its fraction in train_cases.json
  and slice-level evaluation of its sets draws real slices on that mix (`case_draw`).
- Case draw (`case_draw`, the slice-level evaluation protocol): k slices of every case, drawn
  without replacement (with replacement when the case has fewer than k) from its body slices,
  with the same weighting within the case.

Pure functions on tensors plus `SliceDataset` (a torch Dataset with seeded weighted draws).
Hand-written: slicing and tiling are a few tensor reshapes (einops), and no library offers this
paired, seeded view.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from synthct.config import HU_WINDOW, DataConfig

if TYPE_CHECKING:
    from synthct.workspace import Workspace

BODY_HU = -500.0  # a slice with no voxel above this is air / padding only
LAYOUTS = ("slices", "mosaic")
DEFAULT_TUMOUR_FRACTION: float | None = None  # natural mix (see the module docstring)


def parse_tumour_mix(value) -> float | str | None:
    """A tumour mix option -> "auto", None (natural) or a fraction in [0, 1]."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "natural"):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        p = float(value)
    except (TypeError, ValueError):
        p = float("nan")
    if not 0 <= p <= 1:
        raise ValueError(
            f"tumour mix must be 'auto', 'natural' or a fraction in [0, 1], got {value!r}"
        )
    return p


def mix_label(fraction: float | None) -> str | float:
    """How results name a tumour mix: "natural" or the tumour-slice fraction."""
    return "natural" if fraction is None else float(fraction)


def case_draw(
    cases: np.ndarray,
    tumour: np.ndarray,
    n_cases: int,
    k: int,
    fraction: float | None = None,
    seed: int = 0,
    eligible: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k item indices per case: ((n_cases, k) int, (n_cases,) bool "drawn with replacement").

    cases (M,): the case of every item; tumour (M,): its tumour flag; eligible (M,): items to
    draw from (body slices; a case with no eligible item draws from all its items). Within a
    case the draw uses `oversampling_weights(tumour, fraction)`, without replacement when the
    case has at least k candidates. Seeded; the order of the k draws is random.
    """
    cases, tumour = np.asarray(cases), np.asarray(tumour, dtype=bool)
    eligible = np.ones(len(cases), bool) if eligible is None else np.asarray(eligible, bool)
    rng = np.random.default_rng(seed)
    out = np.empty((n_cases, k), dtype=np.int64)
    replaced = np.zeros(n_cases, dtype=bool)
    for c in range(n_cases):
        items = np.flatnonzero((cases == c) & eligible)
        if len(items) == 0:
            items = np.flatnonzero(cases == c)
        if len(items) == 0:
            raise ValueError(f"case {c} has no items to draw from")
        w = oversampling_weights(tumour[items], fraction)
        replaced[c] = len(items) < k
        out[c] = rng.choice(items, k, replace=bool(replaced[c]), p=w)
    return out, replaced


def halves_to_unit(
    image_hu, mask, window: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`unpack` output -> (image in [-1, 1] float32, mask in {-1, +1} float32), same shapes."""
    from synthct.preprocess import hu_to_unit, mask_to_unit

    image = hu_to_unit(torch.as_tensor(np.asarray(image_hu), dtype=torch.float32), window)
    mask = mask_to_unit(torch.as_tensor(np.asarray(mask)), "binary").float()
    return image, mask


def axial_stack(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Halves (X, Y, Z) -> axial pairs (Z, 2, X, Y): pair k is (image[:, :, k], mask[:, :, k])."""
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(
            f"image and mask halves must be (X, Y, Z) and equal, got "
            f"{tuple(image.shape)} and {tuple(mask.shape)}"
        )
    return rearrange(torch.stack([image, mask]), "c x y z -> z c x y")


def resize_pairs(pairs: torch.Tensor, side: int) -> torch.Tensor:
    """(N, 2, H, W) -> (N, 2, side, side): image area/bilinear, mask resized then thresholded."""
    if pairs.shape[-2:] == (side, side):
        return pairs
    down = side <= min(pairs.shape[-2:])
    mode = {"mode": "area"} if down else {"mode": "bilinear", "align_corners": False}
    out = F.interpolate(pairs.float(), size=(side, side), **mode)
    mask = torch.where(out[:, 1:] > 0, 1.0, -1.0)
    return torch.cat([out[:, :1].clamp(-1, 1), mask], dim=1)


def tumour_flags(pairs: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) -> bool (N,): the mask channel has a tumour pixel (> 0)."""
    return (pairs[:, 1] > 0).flatten(1).any(dim=1)


def oversampling_weights(flags, fraction: float | None = DEFAULT_TUMOUR_FRACTION) -> np.ndarray:
    """Sampling weights (N,) float64 summing to 1 so that a draw is a tumour item with
    probability `fraction` (see module docstring); None = uniform."""
    flags = np.asarray(flags, dtype=bool)
    n = flags.size
    if n == 0:
        raise ValueError("no items to sample from")
    if fraction is not None and not 0 <= fraction <= 1:
        raise ValueError(f"tumour fraction must be in [0, 1] or None, got {fraction}")
    n_t = int(flags.sum())
    if fraction is None or n_t in (0, n):
        return np.full(n, 1.0 / n)
    return np.where(flags, fraction / n_t, (1 - fraction) / (n - n_t))


def mosaic_grid(depth: int) -> tuple[int, int]:
    """The smallest square grid (rows, cols) holding `depth` tiles."""
    side = math.isqrt(max(depth, 1) - 1) + 1
    return side, side


def mosaic(stack: torch.Tensor, rows: int, cols: int, fill: float = -1.0) -> torch.Tensor:
    """Tile (..., Z, H, W) row by row into (..., rows*H, cols*W).

    Tile r*cols + c is slice r*cols + c. Z < rows*cols: empty tiles (`fill`) at the end;
    Z > rows*cols: the central rows*cols slices are kept (the thesis's pad / chop).
    """
    z = stack.shape[-3]
    n = rows * cols
    if z > n:
        start = (z - n) // 2
        stack = stack[..., start : start + n, :, :]
    elif z < n:
        pad = stack.new_full((*stack.shape[:-3], n - z, *stack.shape[-2:]), fill)
        stack = torch.cat([stack, pad], dim=-3)
    return rearrange(stack, "... (r c) h w -> ... (r h) (c w)", r=rows, c=cols)


def unmosaic(image: torch.Tensor, rows: int, cols: int, depth: int | None = None) -> torch.Tensor:
    """Inverse of `mosaic`: (..., rows*H, cols*W) -> (..., depth, H, W), the first `depth` tiles
    (default all rows*cols)."""
    if image.shape[-2] % rows or image.shape[-1] % cols:
        raise ValueError(
            f"mosaic of shape {tuple(image.shape[-2:])} does not split into {rows} x {cols} tiles"
        )
    tiles = rearrange(image, "... (r h) (c w) -> ... (r c) h w", r=rows, c=cols)
    return tiles if depth is None else tiles[..., :depth, :, :]


class SliceDataset(torch.utils.data.Dataset):
    """Image + mask pairs (2, R, R) in [-1, 1] from image/mask halves, with a seeded tumour mix.

    Stores the halves compactly (image float16, mask bool: 1.5 bytes a voxel) and cuts / resizes
    items on access. `__getitem__(i)` returns item i (2, R, R) float32; `draw(batch, generator)`
    returns a weighted, seeded batch (B, 2, R, R); `sampler(n, generator)` gives the same
    weighting as a torch `WeightedRandomSampler` for a DataLoader.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, resolution: int,
                 layout: str = "slices", tumour_fraction: float | None = DEFAULT_TUMOUR_FRACTION,
                 grid: tuple[int, int] | None = None, drop_empty: bool = True,
                 case_ids: list[str] | None = None,
                 window: tuple[float, float] = HU_WINDOW):  # fmt: skip
        """images, masks: (N, X, Y, Z) image halves in [-1, 1] and masks in {-1, +1} (or bool);
        `window`: the HU window behind the images (locates `BODY_HU` for `drop_empty`)."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if images.shape != masks.shape or images.ndim != 4:
            raise ValueError(
                f"images and masks must both be (N, X, Y, Z), got {tuple(images.shape)} "
                f"and {tuple(masks.shape)}"
            )
        if resolution < 4:
            raise ValueError(f"resolution must be >= 4, got {resolution}")
        self.layout, self.resolution = layout, resolution
        self.images = rearrange(images.to(torch.float16), "n x y z -> n z x y").contiguous()
        self.masks = rearrange(torch.as_tensor(masks) > 0, "n x y z -> n z x y").contiguous()
        n, z = self.images.shape[:2]
        self.case_ids = list(case_ids) if case_ids is not None else [str(i) for i in range(n)]
        self.grid = grid or mosaic_grid(z)
        if layout == "slices":
            body_unit = (BODY_HU - window[0]) / (window[1] - window[0]) * 2 - 1
            body = (self.images.float() > body_unit).flatten(2).any(2)
            keep = body if drop_empty else torch.ones(n, z, dtype=torch.bool)
            self.index = keep.nonzero()  # (M, 2): (case, z)
            flags = self.masks.flatten(2).any(2)[keep]
            self.body = body[keep]  # (M,): the item has a voxel above BODY_HU
        else:
            self.index = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long)], 1)
            flags = self.masks.flatten(1).any(1)
            self.body = torch.ones(n, dtype=torch.bool)
        if len(self.index) == 0:
            raise ValueError("no non-empty slices: every slice is air or padding only")
        self.tumour = torch.as_tensor(flags, dtype=torch.bool)
        self.tumour_fraction = tumour_fraction
        self.weights = torch.as_tensor(oversampling_weights(self.tumour.numpy(), tumour_fraction))

    @classmethod
    def from_packed(cls, arrays, cfg: DataConfig, resolution: int | None = None,
                    **kwargs) -> SliceDataset:  # fmt: skip
        """From packed pairs (N, S, S, S) in [-1, 1] (e.g. `PackedSet.arrays`), unpacked with
        `synthct.preprocess.unpack` under `cfg`; resolution defaults to S."""
        from synthct.preprocess import unpack

        image_hu, mask = unpack(np.asarray(arrays), cfg)
        image, mask = halves_to_unit(image_hu, mask, cfg.hu_window)
        kwargs.setdefault("window", cfg.hu_window)
        return cls(image, mask, resolution or cfg.size, **kwargs)

    @classmethod
    def from_workspace(cls, ws: Workspace, cfg: DataConfig, resolution: int | None = None,
                       split: str = "train", **kwargs) -> SliceDataset:  # fmt: skip
        """The slice view of the workspace's packed `split` (GAN training reads only "train")."""
        from synthct.preprocess import load_packed

        packed = load_packed(ws, cfg, split=split)
        return cls.from_packed(packed.arrays, cfg, resolution, case_ids=packed.case_ids, **kwargs)

    def __len__(self) -> int:
        return len(self.index)

    def _raw(self, i: int) -> torch.Tensor:
        case, z = (int(v) for v in self.index[i])
        if self.layout == "slices":
            return torch.stack([self.images[case, z].float(), self.masks[case, z].float() * 2 - 1])
        image = mosaic(self.images[case].float(), *self.grid)
        mask = mosaic(self.masks[case].float() * 2 - 1, *self.grid)
        return torch.stack([image, mask])

    def __getitem__(self, i: int) -> torch.Tensor:
        """Item i: (2, R, R) float32, channel 0 CT in [-1, 1], channel 1 mask in {-1, +1}."""
        return resize_pairs(self._raw(i).unsqueeze(0), self.resolution)[0]

    def item_case(self, i: int) -> str:
        """The case id item i was cut from."""
        return self.case_ids[int(self.index[i, 0])]

    def draw_indices(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n item indices drawn with replacement by the over-sampling weights."""
        return torch.multinomial(self.weights, n, replacement=True, generator=generator)

    def draw(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A weighted random batch (B, 2, R, R), reproducible from `generator`."""
        idx = self.draw_indices(batch, generator)
        return resize_pairs(torch.stack([self._raw(int(i)) for i in idx]), self.resolution)

    def sampler(self, num_samples: int, generator: torch.Generator | None = None):
        """A `WeightedRandomSampler` with this dataset's over-sampling weights."""
        return torch.utils.data.WeightedRandomSampler(
            self.weights, num_samples, replacement=True, generator=generator
        )
