"""One rendering pipeline for every Visual Turing Test case, real or synthetic.

The thesis (§4.7) divided each volume into three equal parts and showed one part with its tumour
mask, "to ensure that only 30 % of each image was presented … making the images larger and more
visually easier to interpret". It does not say which third or how it was laid out, so synthct
shows the *middle* third along the viewing axis (where the head-and-neck crop keeps the tumour)
as a mosaic of evenly spaced slices — default 3 x 3 axial slices — each with the mask drawn as a
coloured contour (or a translucent fill). `slab="full"` spreads the slices over the whole volume.

Blinding is by construction: the same function, with the same frozen `RenderConfig`, turns any
(image_hu, mask) pair into an RGB array of a size that depends only on the parameters; PNG bytes
come from `synthct.io.encode_png` (no metadata). Orientation follows synthct's arrays, RAS+
(x → patient left, y → anterior, z → superior); axial tiles are radiological (patient left on
image right, anterior up), coronal tiles radiological with superior up, sagittal anterior left.
Windows, slice orientation and the overlay drawing are `synthct.display`'s, shared with the app's
slice viewer; the slab choice and mosaic layout are the study's definition, hence written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthct.display import PLANES, WINDOWS, Window, extract_slice, overlay_mask, window_to_uint8
from synthct.errors import ConfigError

SLABS = ("third", "full")
OVERLAYS = ("contour", "fill", "none")
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how a case looks. One instance per study, for every case.

    window: a name in WINDOWS or "W,L" (e.g. "350,50"); spacing: voxel size (mm) of the shared
    grid, used only for the tile aspect ratio; tiles: slices in the mosaic; tile_px: the longer
    side of a tile in pixels; gap_px: black border between tiles.
    """

    plane: str = "axial"
    slab: str = "third"
    window: str = "soft-tissue"
    tiles: int = 9
    tile_px: int = 256
    gap_px: int = 2
    overlay: str = "contour"
    alpha: float = 0.35
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.plane not in PLANES:
            raise ConfigError(f"plane {self.plane!r} is not valid; expected one of {PLANES}")
        if self.slab not in SLABS:
            raise ConfigError(f"slab {self.slab!r} is not valid; expected one of {SLABS}")
        if self.overlay not in OVERLAYS:
            raise ConfigError(f"overlay {self.overlay!r} is not valid; expected one of {OVERLAYS}")
        window_hu(self.window)
        if not 1 <= self.tiles <= 64:
            raise ConfigError(f"tiles {self.tiles} is not valid; expected 1..64")
        if not 16 <= self.tile_px <= 1024:
            raise ConfigError(f"tile_px {self.tile_px} is not valid; expected 16..1024")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ConfigError(f"spacing {self.spacing} is not valid; expected 3 positive values")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha {self.alpha} is not valid; expected 0..1")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))


def window_hu(window: str) -> Window:
    """The `synthct.display.Window` for a named window or a "W,L" string."""
    if window in WINDOWS:
        return WINDOWS[window]
    try:
        w, level = (float(v) for v in window.split(","))
    except ValueError:
        raise ConfigError(
            f"window {window!r} is not valid; expected one of {sorted(WINDOWS)} or 'W,L'"
        ) from None
    if w <= 0:
        raise ConfigError(f"window {window!r}: width must be positive")
    return Window(level=level, width=w)


def slab_slices(n: int, slab: str, tiles: int) -> np.ndarray:
    """Indices of `tiles` evenly spaced slices (centres of equal bins) inside the chosen slab."""
    lo, hi = (n // 3, n - n // 3) if slab == "third" and n >= 3 else (0, n)
    edges = np.linspace(lo, hi, tiles + 1)
    idx = np.floor((edges[:-1] + edges[1:]) / 2.0).astype(int)
    return np.clip(idx, lo, hi - 1)


def _tile_shape(shape: tuple[int, int, int], params: RenderConfig) -> tuple[int, int]:
    """(height, width) in pixels of one tile, keeping the physical aspect ratio."""
    sx, sy, sz = params.spacing
    nx, ny, nz = shape
    h_mm, w_mm = {
        "axial": (ny * sy, nx * sx),
        "coronal": (nz * sz, nx * sx),
        "sagittal": (nz * sz, ny * sy),
    }[params.plane]
    scale = params.tile_px / max(h_mm, w_mm)
    return max(1, round(h_mm * scale)), max(1, round(w_mm * scale))


def _resize(img: np.ndarray, hw: tuple[int, int], order: int) -> np.ndarray:
    zoom = (hw[0] / img.shape[0], hw[1] / img.shape[1])
    out = ndimage.zoom(img, zoom, order=order, mode="nearest", grid_mode=True)
    return out[: hw[0], : hw[1]]


def render_tile(
    image_hu: np.ndarray, mask: np.ndarray, i: int, params: RenderConfig, hw: tuple[int, int]
) -> np.ndarray:
    """One slice as an (H, W, 3) uint8 tile: windowed grey + binary mask overlay (label 1 colour).

    The HU slice is resized (linear) before windowing and the mask (nearest) before drawing, so
    contours are one display pixel wide whatever the grid size.
    """
    grey_hu = _resize(extract_slice(image_hu, params.plane, i).astype(np.float32), hw, order=1)
    grey = window_to_uint8(grey_hu, window_hu(params.window))
    m = _resize((extract_slice(mask, params.plane, i) > 0).astype(np.uint8), hw, order=0)
    if params.overlay == "none":
        return np.repeat(grey[..., None], 3, axis=2)
    if params.overlay == "contour":
        return overlay_mask(grey, m, alpha=0.0, contour=True)
    return overlay_mask(grey, m, alpha=params.alpha, contour=False)


def render_case(image_hu: np.ndarray, mask: np.ndarray, params: RenderConfig) -> np.ndarray:
    """Render a pair as an RGB mosaic.

    image_hu: (X, Y, Z) float HU; mask: (X, Y, Z) integer/bool (> 0 = tumour), same shape.
    Returns (H, W, 3) uint8 where H, W depend only on `params` and the grid shape.
    """
    image_hu = np.asarray(image_hu)
    mask = np.asarray(mask)
    if image_hu.ndim != 3 or image_hu.shape != mask.shape:
        raise ValueError(
            f"image {image_hu.shape} and mask {mask.shape} must be 3D (X, Y, Z) of the same shape"
        )
    if not np.all(np.isfinite(image_hu)):
        raise ValueError("image contains NaN/inf voxels")
    axis = _PLANE_AXIS[params.plane]
    idx = slab_slices(image_hu.shape[axis], params.slab, params.tiles)
    th, tw = _tile_shape(image_hu.shape, params)
    cols = math.ceil(math.sqrt(params.tiles))
    rows = math.ceil(params.tiles / cols)
    g = params.gap_px
    out = np.zeros((rows * th + (rows + 1) * g, cols * tw + (cols + 1) * g, 3), np.uint8)
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        y0, x0 = g + r * (th + g), g + c * (tw + g)
        out[y0 : y0 + th, x0 : x0 + tw] = render_tile(image_hu, mask, int(i), params, (th, tw))
    return out


def render_case_png(image_hu: np.ndarray, mask: np.ndarray, params: RenderConfig) -> bytes:
    """`render_case` encoded as PNG bytes without metadata chunks."""
    from synthct.io import encode_png

    return encode_png(render_case(image_hu, mask, params))
