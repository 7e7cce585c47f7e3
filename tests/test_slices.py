"""The 2D slice view: pairing, resizing, tumour over-sampling, mosaic layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthct.config import DataConfig
from synthct.slices import (
    SliceDataset,
    axial_stack,
    mosaic,
    mosaic_grid,
    oversampling_weights,
    resize_pairs,
    tumour_flags,
    unmosaic,
)

S = 16


def halves(n: int = 3, seed: int = 0, tumour_slices: tuple[int, ...] = (2, 3)):
    """Image halves in [-1, 1] with body everywhere, masks with a blob on `tumour_slices` of case 0."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, S, S, S // 2, generator=g) * 1.5 - 0.5
    mask = -torch.ones(n, S, S, S // 2)
    for z in tumour_slices:
        mask[0, 5:8, 6:9, z] = 1
    return image, mask


def pack_by_contract(image: torch.Tensor, mask: torch.Tensor, packing: str) -> np.ndarray:
    """The packed layout, written out independently of synthct.preprocess."""
    n, s = image.shape[0], image.shape[1]
    packed = torch.empty(n, s, s, s)
    if packing == "z":
        packed[..., : s // 2], packed[..., s // 2 :] = image, mask
    else:
        packed[..., 0::2], packed[..., 1::2] = image, mask
    return packed.numpy()


@pytest.mark.parametrize("packing", ["z", "interleave"])
def test_from_packed_pairs_the_right_slices(packing):
    pytest.importorskip("synthct.preprocess")
    image, mask = halves()
    cfg = DataConfig(size=S, packing=packing)
    ds = SliceDataset.from_packed(pack_by_contract(image, mask, packing), cfg, drop_empty=False)
    assert len(ds) == 3 * S // 2
    case, z = 1, 5
    i = int(((ds.index[:, 0] == case) & (ds.index[:, 1] == z)).nonzero())
    item = ds[i]
    assert item.shape == (2, S, S) and ds.item_case(i) == "1"
    # the HU round trip of unpack costs float rounding only (+ float16 storage: 2^-11 relative)
    torch.testing.assert_close(item[0], image[case, :, :, z], atol=2e-3, rtol=0)
    assert torch.equal(item[1], mask[case, :, :, z])
    assert ds.tumour.sum() == 2 and set(ds.index[ds.tumour, 1].tolist()) == {2, 3}


def test_axial_stack_and_shape_errors():
    image, mask = halves(1)
    stack = axial_stack(image[0], mask[0])
    assert stack.shape == (S // 2, 2, S, S)
    assert torch.equal(stack[4, 0], image[0, :, :, 4]) and torch.equal(stack[3, 1], mask[0, ..., 3])
    with pytest.raises(ValueError, match="equal"):
        axial_stack(image[0], mask[0, :, :, :3])
    with pytest.raises(ValueError, match=r"\(N, X, Y, Z\)"):
        SliceDataset(image[0], mask[0], S)


def test_resize_keeps_mask_binary_and_averages_image():
    pairs = torch.full((2, 2, 32, 32), -1.0)
    pairs[:, 0, :16] = 0.5  # top half bright
    pairs[0, 1, 8:16, 8:16] = 1  # an 8x8 tumour
    small = resize_pairs(pairs, 8)
    assert small.shape == (2, 2, 8, 8)
    assert set(small[:, 1].unique().tolist()) <= {-1.0, 1.0}
    assert small[0, 1].eq(1).sum() == 4  # 8x8 at 32 -> 2x2 at 8: area preserved
    torch.testing.assert_close(small[:, 0, :4], torch.full((2, 4, 8), 0.5))
    assert tumour_flags(small).tolist() == [True, False]
    up = resize_pairs(pairs, 64)
    assert set(up[:, 1].unique().tolist()) <= {-1.0, 1.0} and up[0, 1].eq(1).sum() == 256


def test_drop_empty_leaves_out_air_only_slices():
    image, mask = halves(2)
    image[1, :, :, :3] = -1.0  # case 1, slices 0-2: air / padding only
    ds = SliceDataset(image, mask, S)
    assert len(ds) == 2 * S // 2 - 3
    assert not any(c == 1 and z < 3 for c, z in ds.index.tolist())
    assert len(SliceDataset(image, mask, S, drop_empty=False)) == 2 * S // 2


def test_oversampling_weights_formula():
    flags = np.array([True, False, False, False, True, False, False, False, False, False])
    w = oversampling_weights(flags, 0.5)
    np.testing.assert_allclose(w[flags], 0.25)
    np.testing.assert_allclose(w[~flags], 0.0625)
    np.testing.assert_allclose(oversampling_weights(flags, None), 0.1)
    np.testing.assert_allclose(oversampling_weights(np.zeros(4, bool), 0.5), 0.25)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        oversampling_weights(flags, 1.5)


@pytest.mark.parametrize("fraction", [0.5, 0.8, None])
def test_draws_have_the_stated_tumour_fraction(fraction):
    image, mask = halves(3)  # 2 tumour slices out of 24
    ds = SliceDataset(image, mask, 8, tumour_fraction=fraction)
    n = 3000
    batch = ds.draw(n, torch.Generator().manual_seed(0))
    assert batch.shape == (n, 2, 8, 8)
    observed = (batch[:, 1] > 0).flatten(1).any(1).float().mean().item()  # checked on the pixels
    expected = 2 / 24 if fraction is None else fraction
    sd = (expected * (1 - expected) / n) ** 0.5
    assert abs(observed - expected) < 4 * sd


def test_draws_are_seeded():
    image, mask = halves(2)
    ds = SliceDataset(image, mask, S)
    a = ds.draw(16, torch.Generator().manual_seed(7))
    b = ds.draw(16, torch.Generator().manual_seed(7))
    c = ds.draw(16, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert list(ds.sampler(5, torch.Generator().manual_seed(3))) == list(
        ds.sampler(5, torch.Generator().manual_seed(3))
    )


def test_mosaic_layout_and_round_trip():
    stack = torch.arange(10 * 3 * 4, dtype=torch.float32).reshape(10, 3, 4)
    m = mosaic(stack, 3, 4)
    assert m.shape == (9, 16)
    for k in range(12):  # tile (r, c) holds slice r * cols + c; missing tiles are -1
        r, c = divmod(k, 4)
        tile = m[3 * r : 3 * r + 3, 4 * c : 4 * c + 4]
        assert torch.equal(tile, stack[k]) if k < 10 else bool((tile == -1).all())
    assert torch.equal(unmosaic(m, 3, 4, depth=10), stack)
    chopped = mosaic(torch.arange(20.0).reshape(20, 1, 1), 2, 2)  # central 4 of 20 slices
    assert chopped.flatten().tolist() == [8.0, 9.0, 10.0, 11.0]
    assert mosaic_grid(64) == (8, 8) and mosaic_grid(65) == (9, 9) and mosaic_grid(1) == (1, 1)
    with pytest.raises(ValueError, match="3 x 4"):
        unmosaic(torch.zeros(10, 16), 3, 4)


def test_mosaic_dataset_tiles_one_case_per_item():
    image, mask = halves(2)
    ds = SliceDataset(image, mask, 32, layout="mosaic", grid=(2, 4))
    assert len(ds) == 2 and ds.tumour.tolist() == [True, False]
    item = ds[0]
    assert item.shape == (2, 32, 32)  # 2 x 4 tiles of 16 -> 32 x 64 -> 32 x 32
    full = SliceDataset(image, mask, 64, layout="mosaic", grid=(2, 4))._raw(0)
    torch.testing.assert_close(
        unmosaic(full[0], 2, 4), image[0].permute(2, 0, 1), atol=2e-3, rtol=0
    )


def test_training_draws_the_natural_tumour_mix_by_default():
    """2D training and slice-level evaluation use one mix: the natural one unless asked."""
    image, mask = halves(3)  # 2 tumour slices out of 24
    ds = SliceDataset(image, mask, 8)
    assert ds.tumour_fraction is None
    np.testing.assert_allclose(ds.weights.numpy(), 1 / len(ds))
    batch = ds.draw(2000, torch.Generator().manual_seed(0))
    observed = (batch[:, 1] > 0).flatten(1).any(1).float().mean().item()
    assert abs(observed - 2 / 24) < 4 * (2 / 24 * 22 / 24 / 2000) ** 0.5
