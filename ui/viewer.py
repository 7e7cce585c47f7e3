"""Browse's viewers: NiiVue (multiplanar + 3D, in the browser) and the server-rendered PNG slices.

`niivue_viewer` shows one or two cases in NiiVue through the component in ui/frontend (a vendored
build of the npm package @niivue/niivue; nothing is fetched at run time): each case travels as
NIfTI bytes (int16 HU, uint8 mask, gzip) in the component's arguments, with its own geometry.
`slice_viewer` is the PNG path (synthct.display), kept for browsers without WebGL 2; reports,
thumbnails and the memorisation gallery use synthct.display directly.

Slice numbers are shown 1-based everywhere ("slice 32 of 32" is the last one), in the slider and
in the caption alike.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import streamlit.components.v1 as components

from synthct.display import PLANES, WINDOWS, Window, n_slices, render_slice, slice_with_most_mask
from synthct.io import Volume, encode_png, spacing_affine, volume_to_nifti_bytes

FRONTEND = Path(__file__).resolve().parent / "frontend"
_niivue_component = components.declare_component("niivue_viewer", path=str(FRONTEND))

WINDOW_LABELS = {
    "soft-tissue": "Soft tissue (W400/L40)",
    "bone": "Bone (W1800/L400)",
    "lung": "Lung (W1500/L-600)",
    "brain": "Brain (W80/L40)",
    "custom": "Custom",
}
PRESET_NAMES = {"soft-tissue": "Soft tissue", "bone": "Bone", "lung": "Lung", "brain": "Brain"}
MASK_COLOURS = ("red", "green", "blue", "redyell", "violet")
INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class ViewerCase:
    """One case for the NiiVue view: its title, NIfTI bytes and where the view opens."""

    title: str
    image: bytes  # NIfTI-1, int16 HU, gzip
    mask: bytes | None  # NIfTI-1, uint8 {0, 1}, gzip
    start: tuple[int, int, int]  # voxel (x, y, z) the crosshair opens on
    hu_window: tuple[float, float] | None = None  # the data's own HU window, if clipped


def case_nifti(
    image_hu: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, float, float]
) -> tuple[bytes, bytes | None]:
    """(image, mask) NIfTI bytes of an (X, Y, Z) RAS+ case with the given voxel size (mm).

    The image is rounded to int16 HU (clipped to its range), the mask binarised to uint8; both
    carry the same RAS+ affine, so NiiVue shows them with their real geometry.
    """
    affine = spacing_affine(spacing)
    hu = np.clip(np.rint(np.asarray(image_hu, np.float32)), INT16.min, INT16.max).astype(np.int16)
    image = volume_to_nifti_bytes(Volume(hu, affine), compress=True)
    if mask is None:
        return image, None
    m = (np.asarray(mask) > 0).astype(np.uint8)
    return image, volume_to_nifti_bytes(Volume(m, affine), compress=True)


def start_voxel(shape: tuple[int, int, int], mask: np.ndarray | None) -> tuple[int, int, int]:
    """Where a case opens: on its tumour (the slice with most mask in each plane), else the
    middle of the volume."""
    if mask is None or not np.any(mask):
        return tuple(int(s) // 2 for s in shape)  # type: ignore[return-value]
    return (
        slice_with_most_mask(mask, "sagittal"),
        slice_with_most_mask(mask, "coronal"),
        slice_with_most_mask(mask, "axial"),
    )


def presets(hu_windows: list[tuple[float, float] | None]) -> list[dict]:
    """CT window presets for the viewer: soft tissue first, then bone, lung, brain, and the
    data's own HU window(s) (the preprocessing clip range) when known."""
    out = [
        {"label": PRESET_NAMES[k], "width": w.width, "level": w.level} for k, w in WINDOWS.items()
    ]
    for lo, hi in sorted({tuple(w) for w in hu_windows if w is not None}):
        out.append({"label": f"Data ({lo:g}…{hi:g})", "width": hi - lo, "level": (hi + lo) / 2})
    return out


def niivue_viewer(
    cases: list[ViewerCase],
    key: str,
    view: str = "mpr",
    opacity: float = 0.4,
    colour: str = "red",
    min_height: int = 520,
) -> None:
    """The NiiVue view of one or two cases (two: linked side by side)."""
    if not 1 <= len(cases) <= 2:
        raise ValueError(f"the viewer shows one or two cases, got {len(cases)}")
    if colour not in MASK_COLOURS:
        raise ValueError(f"mask colour {colour!r} is not one of {MASK_COLOURS}")
    digest = hashlib.sha256()
    for c in cases:
        digest.update(c.image)
        digest.update(c.mask or b"")
    args: dict = {
        f"{part}{i}": data
        for i, c in enumerate(cases)
        for part, data in (("image", c.image), ("mask", c.mask))
        if data is not None
    }
    _niivue_component(
        kind="niivue",
        views=[{"title": c.title, "start": list(c.start)} for c in cases],
        presets=presets([c.hu_window for c in cases]),
        token=digest.hexdigest()[:16],
        view=view,
        opacity=opacity,
        colour=colour,
        min_height=min_height,
        key=key,
        default=None,
        **args,
    )


# -- the PNG path ---------------------------------------------------------------------------------
def window_picker(key: str) -> Window:
    name = st.selectbox(
        "Window", list(WINDOW_LABELS), format_func=WINDOW_LABELS.get, key=f"{key}-window"
    )
    if name != "custom":
        return WINDOWS[name]
    c1, c2 = st.columns(2)
    level = c1.number_input("Level (HU)", -1500, 3000, 40, key=f"{key}-level")
    width = c2.number_input("Width (HU)", 1, 5000, 400, key=f"{key}-width")
    return Window(float(level), float(width))


def render_png(
    image_hu, mask, plane, index, window, alpha, show_mask, spacing=None
) -> tuple[bytes, float]:
    """PNG bytes of one slice and the server-side render time in ms (slice + overlay + PNG)."""
    t0 = time.perf_counter()
    rgb = render_slice(image_hu, mask, plane, index, window, alpha, show_mask, spacing)
    png = encode_png(rgb)
    return png, (time.perf_counter() - t0) * 1000


@st.fragment
def slice_viewer(
    key: str,
    image_hu: np.ndarray,
    mask: np.ndarray | None,
    width: int = 420,
    spacing: tuple[float, float, float] | None = None,
) -> None:
    """Interactive viewer for one (X, Y, Z) volume; only this fragment reruns on slider moves.

    The slider counts slices from 1 to n, like the caption.
    """
    c1, c2 = st.columns(2)
    plane = c1.radio("Plane", PLANES, horizontal=True, key=f"{key}-plane")
    with c2:
        window = window_picker(key)
    n = n_slices(image_hu.shape, plane)
    idx_key = f"{key}-{plane}-slice"  # 1-based
    if idx_key not in st.session_state:  # open on the tumour when there is one
        st.session_state[idx_key] = 1 + (
            slice_with_most_mask(mask, plane) if mask is not None else n // 2
        )
    c3, c4, c5 = st.columns([2, 1, 1])
    show_mask = c4.toggle("Mask", value=mask is not None, key=f"{key}-mask", disabled=mask is None)
    alpha = c5.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key=f"{key}-alpha", disabled=mask is None)
    if c3.button("Go to slice with most tumour", key=f"{key}-most", disabled=mask is None):
        st.session_state[idx_key] = 1 + slice_with_most_mask(mask, plane)
    number = st.slider("Slice", 1, n, key=idx_key)
    png, ms = render_png(image_hu, mask, plane, number - 1, window, alpha, show_mask, spacing)
    st.image(png, width=width, output_format="PNG")
    st.caption(f"{plane} slice {number} of {n} · rendered in {ms:.1f} ms")


@st.cache_resource(max_entries=6, show_spinner="Preparing the volume for the viewer…")
def viewer_case(root: str, kind: str, key: str, case_id: str, title: str) -> ViewerCase:
    """A workspace case as a `ViewerCase` (cached per process; at most 6 are kept)."""
    from ui.data import load_case

    case = load_case(root, kind, key, case_id)
    image, mask = case_nifti(case.image_hu, case.mask, case.spacing)
    start = start_voxel(case.image_hu.shape, case.mask)
    return ViewerCase(title, image, mask, start, case.hu_window)
