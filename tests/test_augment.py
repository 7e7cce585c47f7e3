"""Augmentation of packed pairs: labels stay labels, image and mask move together, seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthct.augment import augment_packed, augment_params
from synthct.config import DataConfig
from synthct.preprocess import pack, unpack_halves

S = 32


def _pair(packing="z", multiclass=False) -> torch.Tensor:
    """A packed pair whose image is bright exactly where the mask is (plus a body ellipsoid)."""
    idx = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (S, S, S // 2)), indexing="ij"))
    c = torch.tensor([S / 2, S / 2, S / 4]).view(3, 1, 1, 1)
    r = ((idx - c) / torch.tensor([S / 2.5, S / 3, S / 5]).view(3, 1, 1, 1)).pow(2).sum(0)
    img = torch.where(r < 1, -0.2, -1.0)
    tumour = ((idx - c - torch.tensor([3, -2, 1]).view(3, 1, 1, 1)).abs() <= 3).all(0)
    img = torch.where(tumour, 0.9, img)
    lab = tumour.float()
    if multiclass:
        lab = lab + (tumour & (idx[0] > S / 2 + 3)).float()  # part of it labelled 2
        msk = lab - 1.0
    else:
        msk = lab * 2 - 1
    return pack(img, msk, packing)[None]


@pytest.mark.parametrize("kind", ["affine", "elastic"])
@pytest.mark.parametrize("packing", ["z", "interleave"])
def test_augment_keeps_labels_and_alignment(kind, packing):
    cfg = DataConfig(size=S, packing=packing)
    p = _pair(packing)
    out = augment_packed(p, kind, seed=11, cfg=cfg)
    assert out.shape == p.shape and out.dtype == p.dtype
    img, msk = unpack_halves(out[0], packing)
    assert set(torch.unique(msk).tolist()) <= {-1.0, 1.0}
    assert img.min() >= -1 and img.max() <= 1
    assert not torch.equal(out, p)  # it did transform
    # the tumour moved with the anatomy: the bright image region and the mask still coincide
    bright, tumour = img > 0.5, msk > 0
    dice = 2 * (bright & tumour).sum() / (bright.sum() + tumour.sum())
    assert tumour.sum() > 0 and dice > 0.8
    moved = (tumour ^ (unpack_halves(p[0], packing)[1] > 0)).sum()
    assert moved > 0


def test_augment_multiclass_keeps_three_labels():
    cfg = DataConfig(size=S, mask="multiclass")
    out = augment_packed(_pair(multiclass=True), "affine", seed=2, cfg=cfg)
    _, msk = unpack_halves(out[0], "z")
    assert set(torch.unique(msk).tolist()) == {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("kind", ["affine", "elastic"])
def test_augment_is_deterministic_per_seed(kind):
    p = _pair()
    a = augment_packed(p, kind, seed=5)
    b = augment_packed(p, kind, seed=5)
    c = augment_packed(p, kind, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert torch.equal(augment_packed(p, kind, seed=g1), augment_packed(p, kind, seed=g2))


def test_padding_outside_is_air_and_background():
    p = torch.full((1, S, S, S), 0.3)
    p[..., S // 2 :] = -1.0
    out = augment_packed(p, "affine", seed=1)
    img, msk = unpack_halves(out[0], "z")
    # the rotation/translation uncovers the outside: air (-1); zero padding would give 0.0
    assert (img == -1.0).float().mean() > 0.01 and img.max() <= 0.3 + 1e-6
    assert ((img - 0.3).abs() < 1e-5).float().mean() > 0.3  # the inside keeps its value
    assert torch.all(msk == -1.0)


def test_params_scale_with_size_and_reject_unknown_kind():
    a128, a32 = augment_params("affine", 128), augment_params("affine", 32)
    assert a128["translate_range"] == (40, 40, 2)
    assert a32["translate_range"] == (10, 10, 0.5)
    assert a32["rotate_range"] == a128["rotate_range"]
    e32 = augment_params("elastic", 32)
    assert e32["sigma_range"] == (1.25, 2.0)
    np.testing.assert_allclose(e32["magnitude_range"], (100 / 32, 200 / 32))
    with pytest.raises(ValueError, match="affine"):
        augment_params("flip", 32)
    with pytest.raises(ValueError, match=r"\(1, S, S, S\)"):
        augment_packed(torch.zeros(2, S, S, S), "affine", seed=0)


def test_elastic_displacement_is_the_same_fraction_of_the_volume_at_every_size():
    """The f^2.5 magnitude scaling keeps the deformation proportional to S (module docstring)."""
    from monai.transforms import Rand3DElastic

    rms = {}
    for s in (32, 64):
        p = augment_params("elastic", s)
        vals = []
        for seed in range(2):
            tr = Rand3DElastic(
                p["sigma_range"], p["magnitude_range"], prob=1.0, padding_mode="border"
            )
            tr.set_random_state(seed)
            ramp = torch.arange(s, dtype=torch.float32).view(s, 1, 1).expand(s, s, s // 2)[None]
            out = torch.as_tensor(tr(ramp.clone())).as_subclass(torch.Tensor)
            m = s // 8  # x displacement (a ramp along x is interpolated exactly), away from borders
            d = (out - ramp)[:, m:-m, m:-m, m:-m] / s
            vals.append(float(d.pow(2).mean().sqrt()))
        rms[s] = np.mean(vals)
    assert rms[32] > 0.002 and 0.6 < rms[32] / rms[64] < 1.6
