"""The slice viewer widget: plane, slice slider (in a fragment), window, overlay, PNG output."""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

from synthct.display import PLANES, WINDOWS, Window, n_slices, render_slice, slice_with_most_mask
from synthct.io import encode_png

WINDOW_LABELS = {
    "soft-tissue": "Soft tissue (W400/L40)",
    "bone": "Bone (W1800/L400)",
    "lung": "Lung (W1500/L-600)",
    "brain": "Brain (W80/L40)",
    "custom": "Custom",
}


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
    """Interactive viewer for one (X, Y, Z) volume; only this fragment reruns on slider moves."""
    c1, c2 = st.columns(2)
    plane = c1.radio("Plane", PLANES, horizontal=True, key=f"{key}-plane")
    with c2:
        window = window_picker(key)
    n = n_slices(image_hu.shape, plane)
    idx_key = f"{key}-{plane}-idx"
    if idx_key not in st.session_state:  # open on the tumour when there is one
        st.session_state[idx_key] = (
            slice_with_most_mask(mask, plane) if mask is not None else n // 2
        )
    c3, c4, c5 = st.columns([2, 1, 1])
    show_mask = c4.toggle("Mask", value=mask is not None, key=f"{key}-mask", disabled=mask is None)
    alpha = c5.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key=f"{key}-alpha", disabled=mask is None)
    if c3.button("Go to slice with most tumour", key=f"{key}-most", disabled=mask is None):
        st.session_state[idx_key] = slice_with_most_mask(mask, plane)
    index = st.slider("Slice", 0, n - 1, key=idx_key)
    png, ms = render_png(image_hu, mask, plane, index, window, alpha, show_mask, spacing)
    st.image(png, width=width, output_format="PNG")
    st.caption(f"{plane} slice {index + 1}/{n} · rendered in {ms:.1f} ms")
