"""The one rendering pipeline: geometry, window, slab, overlay, PNG without metadata."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from synthct.errors import ConfigError
from synthct.vtt.render import RenderConfig, render_case, render_case_png, slab_slices, window_hu


def _chunk_types(data: bytes) -> list[bytes]:
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def test_slab_third_is_the_middle_third():
    idx = slab_slices(30, "third", 5)
    assert idx.min() >= 10 and idx.max() < 20 and len(set(idx.tolist())) == 5
    full = slab_slices(30, "full", 5)
    assert full.min() < 10 and full.max() >= 20


def test_output_size_depends_only_on_params():
    p = RenderConfig(tiles=9, tile_px=32, gap_px=2)
    rng = np.random.default_rng(0)
    a = render_case(rng.normal(0, 500, (16, 16, 8)), np.zeros((16, 16, 8), np.uint8), p)
    b = render_case(np.full((16, 16, 8), 40.0), np.ones((16, 16, 8), np.uint8), p)
    assert a.shape == b.shape == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2, 3) and a.dtype == np.uint8


def test_soft_tissue_window_values():
    p = RenderConfig(tiles=1, tile_px=16, gap_px=0, overlay="none")
    mask = np.zeros((8, 8, 6), np.uint8)
    for hu, want in ((40.0, 128), (-160.0, 0), (-1000.0, 0), (240.0, 255), (140.0, 191)):
        img = render_case(np.full((8, 8, 6), hu, np.float32), mask, p)
        assert abs(int(img[..., 0].mean()) - want) <= 1, hu
    assert window_hu("350,50").low == pytest.approx(-125.0)
    with pytest.raises(ConfigError, match="window"):
        RenderConfig(window="nope")


def test_axial_is_radiological():
    """Patient left (high x) on image right; anterior (high y) at the top."""
    vol = np.full((16, 16, 3), -1000.0, np.float32)
    vol[12:, :, :] = 200.0  # patient left half
    p = RenderConfig(tiles=1, tile_px=16, gap_px=0, overlay="none")
    img = render_case(vol, np.zeros_like(vol, dtype=np.uint8), p)[..., 0]
    assert img[:, 13:].mean() > 200 and img[:, :10].mean() < 10
    vol = np.full((16, 16, 3), -1000.0, np.float32)
    vol[:, 12:, :] = 200.0  # anterior
    img = render_case(vol, np.zeros_like(vol, dtype=np.uint8), p)[..., 0]
    assert img[:3].mean() > 200 and img[6:].mean() < 10


def test_mask_overlay_contour_and_fill():
    vol = np.full((16, 16, 3), 40.0, np.float32)
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[4:12, 4:12, :] = 1
    base = dict(tiles=1, tile_px=16, gap_px=0)
    contour = render_case(vol, mask, RenderConfig(overlay="contour", **base))
    grey = contour[..., 1] == contour[..., 2]
    red = (contour[..., 0] > 200) & (contour[..., 1] < 100)
    assert red[4, 4:12].all() and not red[7, 7] and grey[7, 7]  # edge drawn, inside untouched
    fill = render_case(vol, mask, RenderConfig(overlay="fill", alpha=0.5, **base))
    assert fill[7, 7, 0] > fill[7, 7, 1] and fill[0, 0, 0] == fill[0, 0, 1]


def test_png_has_no_metadata_and_is_deterministic():
    rng = np.random.default_rng(1)
    vol = rng.normal(0, 200, (16, 16, 8)).astype(np.float32)
    mask = (rng.random((16, 16, 8)) > 0.8).astype(np.uint8)
    p = RenderConfig(tiles=4, tile_px=24)
    a, b = render_case_png(vol, mask, p), render_case_png(vol.copy(), mask.copy(), p)
    assert a == b
    assert set(_chunk_types(a)) == {b"IHDR", b"IDAT", b"IEND"}


def test_bad_inputs_refused():
    with pytest.raises(ValueError, match="same shape"):
        render_case(np.zeros((8, 8, 4)), np.zeros((8, 8, 5)), RenderConfig())
    with pytest.raises(ConfigError, match="plane"):
        RenderConfig(plane="oblique")


def test_outline_is_two_pixels_centred_on_the_boundary():
    vol = np.full((16, 16, 3), 40.0, np.float32)
    mask = np.zeros((16, 16, 3), np.uint8)
    mask[4:12, 4:12, :] = 1
    img = render_case(vol, mask, RenderConfig(tiles=1, tile_px=16, gap_px=0))
    red = (img[..., 0] > 200) & (img[..., 1] < 100)
    # axial display: rows = y reversed, cols = x; the square occupies rows 4..11, cols 4..11
    assert red[4, 4:12].all() and red[3, 4:12].all()  # one row inside, one outside
    assert not red[5, 6] and not red[2, 6] and not red[7, 7]


def test_slab_holds_every_slice_in_every_window_as_mosaic_tiles():
    from synthct.vtt.render import render_slab, render_tile, slab_layout, slab_range

    rng = np.random.default_rng(2)
    vol = rng.normal(0, 300, (12, 10, 9)).astype(np.float32)
    mask = np.zeros(vol.shape, np.uint8)
    mask[3:8, 3:7, 3:6] = 1
    p = RenderConfig(frame_px=64, spacing=(1.0, 1.0, 2.0), extra_windows=("bone", "lung"))
    layout = slab_layout(vol.shape, p)
    lo, hi = slab_range(9, "third")
    assert (lo, hi) == (3, 6) and layout.slices == 3
    assert layout.windows == ("soft-tissue", "bone", "lung")
    assert layout.labels[0] == "Soft tissue (W400 L40)" and layout.labels[2] == "Lung (W1500 L-600)"
    assert max(layout.tile_h, layout.tile_w) == 64
    sheet = render_slab(vol, mask, p)
    assert sheet.shape == (layout.rows * layout.tile_h, layout.cols * layout.tile_w, 3)
    assert layout.cols * layout.rows >= 9
    for w, name in enumerate(layout.windows):
        for s in range(layout.slices):
            r, c = divmod(w * layout.slices + s, layout.cols)
            tile = sheet[
                r * layout.tile_h : (r + 1) * layout.tile_h,
                c * layout.tile_w : (c + 1) * layout.tile_w,
            ]
            want = render_tile(
                vol, mask, lo + s, RenderConfig(**{**p.__dict__, "window": name}),
                (layout.tile_h, layout.tile_w),
            )  # fmt: skip
            np.testing.assert_array_equal(tile, want)


def test_slab_layout_depends_only_on_params_and_grid():
    from synthct.vtt.render import render_slab_png, slab_layout

    p = RenderConfig(frame_px=64, window="350,50", extra_windows=("soft-tissue", "350,50"))
    assert slab_layout((8, 8, 6), p).windows == ("350,50", "soft-tissue")
    assert slab_layout((8, 8, 6), p).labels == ("W350 L50", "Soft tissue (W400 L40)")
    a = render_slab_png(np.zeros((8, 8, 6), np.float32), np.zeros((8, 8, 6), np.uint8), p)
    b = render_slab_png(np.full((8, 8, 6), 900.0, np.float32), np.ones((8, 8, 6), np.uint8), p)
    assert a[:24] == b[:24]  # same signature and IHDR: the same size and pixel format
    assert set(_chunk_types(a)) == {b"IHDR", b"IDAT", b"IEND"}
    with pytest.raises(ConfigError, match="frame_px"):
        RenderConfig(frame_px=8)
    with pytest.raises(ConfigError, match="window"):
        RenderConfig(extra_windows=("nope",))
