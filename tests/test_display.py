import numpy as np
import pytest

from synthct.display import (
    WINDOWS,
    Window,
    extract_slice,
    overlay_mask,
    render_slice,
    slice_with_most_mask,
    window_to_uint8,
)


def test_window_mapping_endpoints():
    w = WINDOWS["soft-tissue"]  # W400 / L40 -> [-160, 240]
    out = window_to_uint8(np.array([-1000, -160, 40, 240, 3000]), w)
    assert out.tolist() == [0, 0, 128, 255, 255]
    assert Window(0, 100).low == -50


def test_axial_slice_is_radiological():
    vol = np.zeros((4, 5, 3))
    vol[3, 4, 1] = 1  # patient left-most (x max), anterior-most (y max)
    sl = extract_slice(vol, "axial", 1)
    assert sl.shape == (5, 4)
    # anterior at the top row; patient left on the image right
    assert sl[0, 3] == 1 and sl.sum() == 1


def test_coronal_superior_at_top_and_sagittal_anterior_left():
    vol = np.zeros((4, 5, 6))
    vol[0, 2, 5] = 1  # right-most, superior-most
    cor = extract_slice(vol, "coronal", 2)
    assert cor.shape == (6, 4) and cor[0, 0] == 1
    vol2 = np.zeros((4, 5, 6))
    vol2[1, 4, 0] = 1  # anterior-most, inferior-most
    sag = extract_slice(vol2, "sagittal", 1)
    assert sag.shape == (6, 5) and sag[5, 0] == 1


def test_slice_bounds_checked():
    with pytest.raises(IndexError, match="axial slice 9 is outside 0..2"):
        extract_slice(np.zeros((2, 2, 3)), "axial", 9)
    with pytest.raises(ValueError):
        extract_slice(np.zeros((2, 2, 3)), "oblique", 0)


def test_most_mask_slice():
    m = np.zeros((4, 4, 6), np.uint8)
    m[:, :, 2] = 1
    m[:2, :2, 4] = 1
    assert slice_with_most_mask(m, "axial") == 2
    assert slice_with_most_mask(np.zeros((4, 4, 6)), "axial") == 3


def test_overlay_colours_only_masked_pixels():
    gray = np.full((6, 6), 100, np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[1:5, 1:5] = 1
    rgb = overlay_mask(gray, mask, alpha=0.5, contour=True)
    assert rgb.shape == (6, 6, 3)
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    assert tuple(rgb[1, 1]) == (255, 64, 64)  # outline in full colour
    assert tuple(rgb[2, 2]) == (178, 82, 82)  # fill blended 50 %
    plain = render_slice(
        np.zeros((6, 6, 2)), np.ones((6, 6, 2)), "axial", 0, WINDOWS["bone"], show_mask=False
    )
    assert (plain == plain[..., :1]).all()


def test_square_pixels_stretches_rows_by_spacing_ratio():
    from synthct.display import square_pixels

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    out = square_pixels(rgb, "coronal", (1.0, 1.0, 3.0))  # rows = z (3 mm), cols = x (1 mm)
    assert out.shape == (12, 5, 3)
    np.testing.assert_array_equal(out[::3], rgb)
    assert square_pixels(rgb, "axial", (1.0, 1.0, 3.0)) is rgb  # x, y isotropic: unchanged
    vol = np.zeros((5, 6, 4))
    assert render_slice(vol, None, "sagittal", 0, WINDOWS["bone"], spacing=(1, 2, 4)).shape == (
        8,
        6,
        3,
    )


def test_extract_slice_is_a_view_in_any_memory_order():
    """NIfTI volumes are Fortran-ordered: a slice must not copy the whole volume."""
    for order in ("C", "F"):
        vol = np.zeros((6, 5, 4), np.float32, order=order)
        for plane, n in (("axial", 4), ("coronal", 5), ("sagittal", 6)):
            for k in (0, n - 1):
                assert np.shares_memory(extract_slice(vol, plane, k), vol)
