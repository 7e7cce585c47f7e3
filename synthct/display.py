"""Turning CT volumes into pictures: HU windows, slice extraction, mask overlays.

Pure numpy, shared by the app's slice viewer and anything else that shows a slice. Arrays are
indexed (x, y, z) in RAS+ (synthct.io). Displayed slices follow the radiological convention:
axial slices are seen from the feet (patient left on image right, anterior at the top); coronal
slices from the front (patient left on image right, superior at the top); sagittal slices from
the patient's left (anterior on the left, superior at the top).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window in HU: `level` (centre) and `width`."""

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2


WINDOWS: dict[str, Window] = {
    "soft-tissue": Window(40, 400),
    "bone": Window(400, 1800),
    "lung": Window(-600, 1500),
    "brain": Window(40, 80),
}

PLANES = ("axial", "coronal", "sagittal")
_PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def window_to_uint8(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU to 0..255 through `window` (values outside saturate)."""
    scaled = (np.asarray(hu, dtype=np.float32) - window.low) / max(window.width, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def n_slices(shape: tuple[int, ...], plane: str) -> int:
    return int(shape[_PLANE_AXIS[_check_plane(plane)]])


def _check_plane(plane: str) -> str:
    if plane not in _PLANE_AXIS:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    return plane


def extract_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """A 2D display slice (rows, cols) of an (X, Y, Z) RAS+ array, radiologically oriented."""
    axis = _PLANE_AXIS[_check_plane(plane)]
    n = volume.shape[axis]
    if not 0 <= index < n:
        raise IndexError(f"{plane} slice {index} is outside 0..{n - 1}")
    sl = volume[(slice(None),) * axis + (index,)]  # a view in any memory order (np.take copies)
    if plane == "axial":  # sl[x, y] -> rows = y (anterior at top), cols = x (patient left on right)
        return sl.T[::-1, :]
    if plane == "coronal":  # sl[x, z] -> rows = z (superior at top), cols = x
        return sl.T[::-1, :]
    return sl.T[::-1, ::-1]  # sagittal sl[y, z] -> rows = z, cols = y (anterior on the left)


def slice_with_most_mask(mask: np.ndarray, plane: str) -> int:
    """Index of the slice in `plane` holding the most foreground voxels (middle if none)."""
    axis = _PLANE_AXIS[_check_plane(plane)]
    other = tuple(a for a in range(3) if a != axis)
    counts = np.count_nonzero(mask, axis=other)
    return int(np.argmax(counts)) if counts.any() else mask.shape[axis] // 2


MASK_COLOURS = {1: (255, 64, 64), 2: (64, 160, 255)}  # GTVp red, GTVn blue


def overlay_mask(
    gray: np.ndarray, mask: np.ndarray | None, alpha: float = 0.4, contour: bool = True
) -> np.ndarray:
    """RGB (H, W, 3) uint8: grey slice with the mask blended in (and its outline drawn).

    `mask` holds labels {0, 1, 2}; 1 is drawn red, 2 blue. `alpha` in [0, 1] is the fill opacity.
    """
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    if mask is not None and mask.any():
        if mask.shape != gray.shape:
            raise ValueError(f"mask slice {mask.shape} != image slice {gray.shape}")
        for label, colour in MASK_COLOURS.items():
            m = mask == label
            if not m.any():
                continue
            col = np.asarray(colour, np.float32)
            rgb[m] = (1 - alpha) * rgb[m] + alpha * col
            if contour:
                inner = m.copy()
                inner[1:, :] &= m[:-1, :]
                inner[:-1, :] &= m[1:, :]
                inner[:, 1:] &= m[:, :-1]
                inner[:, :-1] &= m[:, 1:]
                rgb[m & ~inner] = col
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


_ROW_COL_AXES = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}


def square_pixels(rgb: np.ndarray, plane: str, spacing: tuple[float, float, float]) -> np.ndarray:
    """Stretch the rows of a displayed slice so one pixel covers the same mm in both directions.

    `spacing` is the volume's (sx, sy, sz) in mm; rows are repeated/dropped (nearest), so mask
    outlines stay crisp. A 3 mm slice spacing with 1 mm pixels triples the row count.
    """
    r_ax, c_ax = _ROW_COL_AXES[_check_plane(plane)]
    ratio = float(spacing[r_ax]) / float(spacing[c_ax])
    rows = max(1, round(rgb.shape[0] * ratio))
    if rows == rgb.shape[0]:
        return rgb
    src = np.minimum((np.arange(rows) + 0.5) / ratio, rgb.shape[0] - 1).astype(int)
    return rgb[src]


def render_slice(
    image_hu: np.ndarray,
    mask: np.ndarray | None,
    plane: str,
    index: int,
    window: Window,
    alpha: float = 0.4,
    show_mask: bool = True,
    spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """One displayable RGB slice of an (X, Y, Z) CT volume with its optional mask overlay.

    With `spacing` (mm), pixels are made square (see `square_pixels`).
    """
    gray = window_to_uint8(extract_slice(image_hu, plane, index), window)
    msk = extract_slice(mask, plane, index) if (mask is not None and show_mask) else None
    rgb = overlay_mask(gray, msk, alpha=alpha)
    return rgb if spacing is None else square_pixels(rgb, plane, spacing)
