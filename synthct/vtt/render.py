"""One rendering pipeline for every Visual Turing Test case, real or synthetic.

The thesis (§4.7) divided each volume into three equal parts and showed one part with its tumour
mask, "to ensure that only 30 % of each image was presented … making the images larger and more
visually easier to interpret". It does not say which third or how it was laid out, so synthct
shows the *middle* third along the viewing axis (where the head-and-neck crop keeps the tumour)
as a mosaic of evenly spaced slices — default 3 x 3 axial slices — each with the mask drawn as a
coloured contour (or a translucent fill). `slab="full"` spreads the slices over the whole volume.

Raters also scroll through the slab the way they read a PACS: `render_slab` draws *every* slice of
the slab once per display window (the study's window first, then `extra_windows`) as equal tiles
of one sprite sheet — one PNG per case, so it travels through the same fixed-length, nonce-padded
path as the mosaic (synthct.vtt.blinding). The rater's viewer shows one tile at a time; the sheet's
layout (`SlabLayout`) depends only on the parameters and the study's grid, never on the case.

Blinding is by construction: the same function, with the same frozen `RenderConfig`, turns any
(image_hu, mask) pair into an RGB array of a size that depends only on the parameters; PNG bytes
come from `synthct.io.encode_png` (no metadata). The tumour outline is `contour_px` display pixels
wide, centred on the mask boundary (half inside, half outside), so it reads at a glance on a
laptop screen without hiding the tumour's inside. Orientation follows synthct's arrays, RAS+
(x → patient left, y → anterior, z → superior); axial tiles are radiological (patient left on
image right, anterior up), coronal tiles radiological with superior up, sagittal anterior left.
Windows, slice orientation and the overlay drawing are `synthct.display`'s, shared with the app's
slice viewer; the slab choice and mosaic layout are the study's definition, hence written here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from synthct.display import (
    MASK_COLOURS,
    PLANES,
    WINDOWS,
    Window,
    extract_slice,
    overlay_mask,
    window_to_uint8,
)
from synthct.errors import ConfigError

SLABS = ("third", "full")
OVERLAYS = ("contour", "fill", "none")
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class RenderConfig:
    """Everything that decides how a case looks. One instance per study, for every case.

    window: a name in WINDOWS or "W,L" (e.g. "350,50"); spacing: voxel size (mm) of the shared
    grid, used only for the tile aspect ratio; tiles: slices in the mosaic; tile_px: the longer
    side of a tile in pixels; gap_px: black border between tiles; contour_px: width of the
    tumour outline in display pixels; stack: also seal the scrollable slab (every slice of the
    slab, `frame_px` on the longer side, in the study's window and each of `extra_windows`).
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
    contour_px: int = 2
    stack: bool = True
    frame_px: int = 384
    extra_windows: tuple[str, ...] = ("bone", "lung")

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
        if not 1 <= self.contour_px <= 8:
            raise ConfigError(f"contour_px {self.contour_px} is not valid; expected 1..8")
        if not 64 <= self.frame_px <= 1024:
            raise ConfigError(f"frame_px {self.frame_px} is not valid; expected 64..1024")
        extra = (self.extra_windows,) if isinstance(self.extra_windows, str) else self.extra_windows
        for w in extra:
            window_hu(w)
        if len(extra) > 4:
            raise ConfigError(f"extra_windows {extra} is not valid; expected at most 4 windows")
        object.__setattr__(self, "extra_windows", tuple(extra))
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
    lo, hi = slab_range(n, slab)
    edges = np.linspace(lo, hi, tiles + 1)
    idx = np.floor((edges[:-1] + edges[1:]) / 2.0).astype(int)
    return np.clip(idx, lo, hi - 1)


def _tile_shape(
    shape: tuple[int, int, int], params: RenderConfig, px: int | None = None
) -> tuple[int, int]:
    """(height, width) in pixels of one tile (longer side `px`, default `tile_px`), keeping the
    physical aspect ratio."""
    sx, sy, sz = params.spacing
    nx, ny, nz = shape
    h_mm, w_mm = {
        "axial": (ny * sy, nx * sx),
        "coronal": (nz * sz, nx * sx),
        "sagittal": (nz * sz, ny * sy),
    }[params.plane]
    scale = (px or params.tile_px) / max(h_mm, w_mm)
    return max(1, round(h_mm * scale)), max(1, round(w_mm * scale))


def _resize(img: np.ndarray, hw: tuple[int, int], order: int) -> np.ndarray:
    zoom = (hw[0] / img.shape[0], hw[1] / img.shape[1])
    out = ndimage.zoom(img, zoom, order=order, mode="nearest", grid_mode=True)
    return out[: hw[0], : hw[1]]


def _outline(m: np.ndarray, width: int) -> np.ndarray:
    """Boolean outline of a binary mask, `width` pixels wide and centred on its boundary:
    ceil(width / 2) pixels inside the mask, floor(width / 2) outside."""
    m = m.astype(bool)
    if not m.any():
        return m
    inside = m & ~ndimage.binary_erosion(m, iterations=math.ceil(width / 2), border_value=1)
    outside = width // 2
    if outside == 0:
        return inside
    return inside | (ndimage.binary_dilation(m, iterations=outside) & ~m)


def _draw(grey: np.ndarray, m: np.ndarray, params: RenderConfig) -> np.ndarray:
    """(H, W, 3) uint8: a windowed grey tile with the mask drawn as the study says."""
    if params.overlay == "none":
        return np.repeat(grey[..., None], 3, axis=2)
    if params.overlay == "fill":
        return overlay_mask(grey, m, alpha=params.alpha, contour=False)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[_outline(m, params.contour_px)] = MASK_COLOURS[1]
    return rgb


def _tile_arrays(
    image_hu: np.ndarray, mask: np.ndarray, i: int, params: RenderConfig, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The slice resized to `hw`: HU (linear) and binary mask (nearest)."""
    grey_hu = _resize(extract_slice(image_hu, params.plane, i).astype(np.float32), hw, order=1)
    m = _resize((extract_slice(mask, params.plane, i) > 0).astype(np.uint8), hw, order=0)
    return grey_hu, m


def render_tile(
    image_hu: np.ndarray, mask: np.ndarray, i: int, params: RenderConfig, hw: tuple[int, int]
) -> np.ndarray:
    """One slice as an (H, W, 3) uint8 tile: windowed grey + binary mask overlay (label 1 colour).

    The HU slice is resized (linear) before windowing and the mask (nearest) before drawing, so
    the outline is `contour_px` display pixels wide whatever the grid size.
    """
    grey_hu, m = _tile_arrays(image_hu, mask, i, params, hw)
    return _draw(window_to_uint8(grey_hu, window_hu(params.window)), m, params)


def _check_pair(image_hu: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image_hu = np.asarray(image_hu)
    mask = np.asarray(mask)
    if image_hu.ndim != 3 or image_hu.shape != mask.shape:
        raise ValueError(
            f"image {image_hu.shape} and mask {mask.shape} must be 3D (X, Y, Z) of the same shape"
        )
    if not np.all(np.isfinite(image_hu)):
        raise ValueError("image contains NaN/inf voxels")
    return image_hu, mask


def render_case(image_hu: np.ndarray, mask: np.ndarray, params: RenderConfig) -> np.ndarray:
    """Render a pair as an RGB mosaic.

    image_hu: (X, Y, Z) float HU; mask: (X, Y, Z) integer/bool (> 0 = tumour), same shape.
    Returns (H, W, 3) uint8 where H, W depend only on `params` and the grid shape.
    """
    image_hu, mask = _check_pair(image_hu, mask)
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


# -- the scrollable slab ------------------------------------------------------------------------
def slab_range(n: int, slab: str) -> tuple[int, int]:
    """[lo, hi) slice indices of the slab along an axis of `n` slices (the middle third, or all)."""
    return (n // 3, n - n // 3) if slab == "third" and n >= 3 else (0, n)


def slab_windows(params: RenderConfig) -> tuple[str, ...]:
    """The windows a rater can switch between: the study's own first, then the extra ones
    (a window equal to one already listed is dropped)."""
    out: list[str] = [params.window]
    seen = {window_hu(params.window)}
    for w in params.extra_windows:
        if window_hu(w) not in seen:
            out.append(w)
            seen.add(window_hu(w))
    return tuple(out)


def window_label(window: str) -> str:
    """What the rater's viewer calls a window: "Soft tissue (W400 L40)", "W350 L50"."""
    win = window_hu(window)
    numbers = f"W{win.width:g} L{win.level:g}"
    if window not in WINDOWS:
        return numbers
    return f"{window.replace('-', ' ').capitalize()} ({numbers})"


@dataclass(frozen=True)
class SlabLayout:
    """Where each frame lies in a slab sprite sheet: frame (window w, slice s) is tile
    k = w * slices + s, at row k // cols, column k % cols; tiles are `tile_h` x `tile_w` pixels
    with no gap. Depends only on the parameters and the grid shape."""

    slices: int
    windows: tuple[str, ...]
    labels: tuple[str, ...]
    tile_h: int
    tile_w: int
    cols: int
    rows: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["windows"], d["labels"] = list(self.windows), list(self.labels)
        return d


def slab_layout(shape: tuple[int, int, int], params: RenderConfig) -> SlabLayout:
    lo, hi = slab_range(int(shape[_PLANE_AXIS[params.plane]]), params.slab)
    windows = slab_windows(params)
    th, tw = _tile_shape(tuple(int(v) for v in shape), params, params.frame_px)
    n = (hi - lo) * len(windows)
    cols = math.ceil(math.sqrt(n))
    return SlabLayout(
        slices=hi - lo,
        windows=windows,
        labels=tuple(window_label(w) for w in windows),
        tile_h=th,
        tile_w=tw,
        cols=cols,
        rows=math.ceil(n / cols),
    )


def render_slab(image_hu: np.ndarray, mask: np.ndarray, params: RenderConfig) -> np.ndarray:
    """Every slice of the slab, in every window of `slab_windows`, as one RGB sprite sheet.

    image_hu, mask: (X, Y, Z) as for `render_case`. Returns (rows * tile_h, cols * tile_w, 3)
    uint8 laid out as `slab_layout(image_hu.shape, params)` says; each tile is drawn exactly as
    a mosaic tile (`render_tile`), at `frame_px` on its longer side.
    """
    image_hu, mask = _check_pair(image_hu, mask)
    layout = slab_layout(image_hu.shape, params)
    lo, _ = slab_range(image_hu.shape[_PLANE_AXIS[params.plane]], params.slab)
    th, tw = layout.tile_h, layout.tile_w
    out = np.zeros((layout.rows * th, layout.cols * tw, 3), np.uint8)
    windows = [window_hu(w) for w in layout.windows]
    for s in range(layout.slices):
        grey_hu, m = _tile_arrays(image_hu, mask, lo + s, params, (th, tw))
        for w, win in enumerate(windows):
            r, c = divmod(w * layout.slices + s, layout.cols)
            out[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = _draw(
                window_to_uint8(grey_hu, win), m, params
            )
    return out


def render_slab_png(image_hu: np.ndarray, mask: np.ndarray, params: RenderConfig) -> bytes:
    """`render_slab` encoded as PNG bytes without metadata chunks."""
    from synthct.io import encode_png

    return encode_png(render_slab(image_hu, mask, params))
