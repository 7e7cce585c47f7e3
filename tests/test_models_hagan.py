"""HA-GAN: shapes per size, reference parameter counts, slab invariants, the fixed reference
defects (alignment, batch 1, anti-aliased low-res target), conditioning and a training step."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from synthct.config import DataConfig, ModelConfig, from_dict
from synthct.errors import ConfigError
from synthct.models import build_model, model_config
from synthct.models.base import StepContext
from synthct.models.hagan import (
    HAGAN,
    crop_positions,
    extract_slab,
    lowres_target,
    minibatch_stddev,
    mode_seeking_loss,
    sample_crop_index,
    slab_thickness,
)
from synthct.models.layers import count_parameters

TINY = {"latent_dim": 16, "width": 1 / 8}

# Counted by hand from batmanlab/HA-GAN models/Model_HA_GAN_128.py and _256.py (channel=32,
# latent_dim=1024): weights + biases of every Conv3d/Linear/GroupNorm; spectral-norm u vectors
# are buffers, not parameters.
REFERENCE_COUNTS = {
    128: {"G": 52_518_210, "D": 7_241_442, "E": 161_152, "Sub_E": 19_663_168},
    256: {"G": 52_518_210, "D": 7_402_258, "E": 161_152, "Sub_E": 19_663_264},
}
REFERENCE_G_LINEAR = 1024 * 32_768 + 32_768  # Linear(1024, 4*4*4*512)


def tiny(size: int, **kw) -> HAGAN:
    torch.manual_seed(0)
    return build_model(model_config(**{**TINY, **kw}), DataConfig(size=size))


class Recorder:
    """A fake training loop: one optimiser step per `update`, remembering what got gradients."""

    def __init__(self, system, seed: int = 0, train_encoder: bool = True):
        self.opts = system.configure_optimizers()
        self.system = system
        self.calls: list[str] = []
        self.with_grad: dict[str, set[str]] = {}
        self.ctx = StepContext(
            step=0,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(seed),
            update=self.update,
            train_encoder=train_encoder,
        )

    def update(self, name: str, loss: torch.Tensor) -> None:
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        for net in ("G", "D", "E", "Sub_E"):  # grads left over from earlier updates
            for p in getattr(self.system, net).parameters():
                p.grad = None
        loss.backward()
        self.with_grad[name] = {
            net
            for net in ("G", "D", "E", "Sub_E")
            if any(p.grad is not None for p in getattr(self.system, net).parameters())
        }
        opt.step()
        self.calls.append(name)


def packed_pair(size: int, batch: int = 1) -> torch.Tensor:
    """Image half: smooth values in [-1, 0.9]; mask half: -1 with a tumour rod along x (+1)."""
    g = torch.Generator().manual_seed(1)
    vol = torch.full((batch, 1, size, size, size), -1.0)
    vol[..., : size // 2] = torch.rand(batch, 1, size, size, size // 2, generator=g) * 1.9 - 1
    c = size // 2
    vol[:, :, :, c - 2 : c + 2, size // 2 + 3 : size // 2 + 7] = 1.0  # tumour spans every x
    return vol


# ---------------------------------------------------------------- parameter counts (no forward)


@pytest.mark.parametrize("size", [128, 256])
def test_parameter_counts_match_reference(size):
    with torch.device("meta"):  # shapes only: no 80 M-parameter allocation on CPU
        system = build_model(ModelConfig(), DataConfig(size=size))
    for net, ref in REFERENCE_COUNTS[size].items():
        ours = count_parameters(getattr(system, net))
        assert abs(ours - ref) / ref < 0.02, (net, ours, ref)
    assert count_parameters(system.G.fc) == REFERENCE_G_LINEAR


@pytest.mark.parametrize("size", [128, 256])
def test_full_size_shapes_on_meta(size):
    with torch.device("meta"):
        system = build_model(ModelConfig(), DataConfig(size=size))
        z = system.sample_latent(2, device="meta")
        slab, small = system.G(z, None, crop_positions(size)[-1])
        logit, cls = system.D(slab, small, crop_positions(size)[-1])
        full = system.generate(z)
        latent = system.encode_latent(full)
        z_hat = system.Sub_E(latent)
    assert slab.shape == (2, 1, size // 8, size, size)
    assert small.shape == (2, 1, size // 4, size // 4, size // 4)
    assert logit.shape == (2, 1) and cls is None
    assert full.shape == (2, 1, size, size, size)
    assert latent.shape == (2, system.G.latent_channels, size // 4, size // 4, size // 4)
    assert z_hat.shape == (2, 1024)


# ---------------------------------------------------------------- shapes on CPU, tiny width


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_shapes_and_ranges(size):
    system = tiny(size)
    z = system.sample_latent(2, torch.Generator().manual_seed(0))
    assert z.shape == (2, 16)
    crop = crop_positions(size)[1]
    slab, small = system.G(z, None, crop)
    assert slab.shape == (2, 1, size // 8, size, size)
    assert small.shape == (2, 1, size // 4, size // 4, size // 4)
    logit, _ = system.D(slab, small, crop)
    assert logit.shape == (2, 1)
    latent_slab = system.E(extract_slab(packed_pair(size, 2), crop))
    assert latent_slab.shape == (2, system.G.latent_channels, size // 32, size // 4, size // 4)
    assert system.G.decode_high(latent_slab).shape == slab.shape
    full = system.generate(z)
    assert full.shape == (2, 1, size, size, size)
    assert full.min() >= -1 and full.max() <= 1
    assert full.std() > 0
    assert system.encode(full).shape == (2, 16)


def test_generate_is_the_same_in_train_and_eval_mode():
    system = tiny(32)
    z = system.sample_latent(2, torch.Generator().manual_seed(3))
    a = system.generate(z)
    system.eval()
    b = system.generate(z)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("size", [16, 48, 100])
def test_unsupported_sizes_raise_config_error(size):
    with pytest.raises(ConfigError, match=str(size)):
        build_model(model_config(**TINY), from_dict(DataConfig, {"size": size}))


# ---------------------------------------------------------------- slabs, crops, low-res target


@pytest.mark.parametrize("size", [32, 64, 128])
def test_crop_positions_are_latent_aligned_and_cover_the_volume(size):
    pos = crop_positions(size)
    assert pos[0] == 0 and pos[-1] == size - size // 8 == 7 * size // 8
    assert all(p % 4 == 0 for p in pos) and np.all(np.diff(pos) == 4)
    g = torch.Generator().manual_seed(0)
    drawn = {sample_crop_index(size, g) for _ in range(40 * len(pos))}
    assert drawn == set(pos)


def test_every_training_slab_holds_image_and_mask():
    size = 32
    pair = packed_pair(size)
    assert (pair[..., size // 2 :] > 0).any()
    system = tiny(size)
    for crop in crop_positions(size):
        slab, small = system.real_targets(pair, crop)
        assert slab.shape == (1, 1, size // 8, size, size)
        image, mask = slab[..., : size // 2], slab[..., size // 2 :]
        torch.testing.assert_close(image, pair[:, :, crop : crop + size // 8, :, : size // 2])
        assert (image > -1).any()  # image voxels (not the mask background value)
        assert ((mask == 1) | (mask == -1)).all() and (mask == 1).any()  # tumour voxels
    # the packing axis would not do: a slab cut along z holds only image or only mask
    t = slab_thickness(size)
    z_slabs = [pair[..., z : z + t] for z in range(0, size, t)]
    assert not any(((s > -1) & (s < 1)).any() and (s == 1).any() for s in z_slabs)


def test_real_and_fake_slabs_cover_the_same_x_range():
    """With G^H replaced by a plain x4 upsampling of latent channel 0, the fake slab at crop c
    must equal rows c .. c+S/8 of the full fake volume, i.e. exactly what `extract_slab` cuts
    from a real volume at c (the reference was off by up to 3 rows)."""
    size = 64
    system = tiny(size)
    pick = nn.Conv3d(system.G.latent_channels, 1, 1, bias=False)
    with torch.no_grad():
        pick.weight.zero_()
        pick.weight[0, 0] = 1.0
    system.G.high = nn.Sequential(nn.Upsample(scale_factor=4, mode="nearest"), pick)
    z = system.sample_latent(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = system.G(z)
        assert full.shape == (1, 1, size, size, size)
        for crop in crop_positions(size):
            fake_slab, _ = system.G(z, None, crop)
            torch.testing.assert_close(fake_slab, extract_slab(full, crop))
    with pytest.raises(ValueError, match="latent-aligned"):
        extract_slab(full, 2)


def test_lowres_target_is_area_average_per_half():
    size = 32
    pair = packed_pair(size, 2)
    pair[0, 0, 1, 1, size // 2 + 1] = 1.0  # a one-voxel tumour nearest subsampling misses
    small = lowres_target(pair)
    ref = pair.numpy().reshape(2, 1, 8, 4, 8, 4, 8, 4).mean(axis=(3, 5, 7))
    np.testing.assert_allclose(small.numpy(), ref, rtol=1e-6, atol=1e-6)
    # low-res z < S/8 comes only from the image half, z >= S/8 only from the mask half
    torch.testing.assert_close(small[..., : size // 8], lowres_target(pair[..., : size // 2]))
    torch.testing.assert_close(small[..., size // 8 :], lowres_target(pair[..., size // 2 :]))
    nearest = nn.functional.interpolate(pair, scale_factor=0.25)  # the reference target
    assert nearest[0, 0, 0, 0, size // 8] == -1.0
    assert small[0, 0, 0, 0, size // 8] == pytest.approx(-1 + 2 / 64)


def test_lowres_target_interleave_keeps_image_and_mask_apart():
    size = 32
    vol = torch.empty(1, 1, size, size, size)
    vol[..., 0::2] = 0.25  # image slices
    vol[..., 1::2] = -1.0  # mask slices, one tumour voxel
    vol[0, 0, 5, 5, 3] = 1.0
    small = lowres_target(vol, "interleave")
    assert small.shape == (1, 1, 8, 8, 8)
    assert (small[..., 0::2] == 0.25).all()
    assert small[0, 0, 1, 1, 1] == pytest.approx(-1 + 2 / 64)
    assert (small[..., 1::2] <= -1 + 2 / 64 + 1e-6).all()


# ---------------------------------------------------------------- discriminator, batch 1


def test_discriminator_batch_one_and_position_input():
    size = 32
    system = tiny(size)
    pair = packed_pair(size, 1)
    first, last = crop_positions(size)[0], crop_positions(size)[-1]
    slab, small = system.real_targets(pair, first)
    logit, cls = system.D(slab, small, first)
    assert logit.shape == (1, 1) and cls is None
    assert system.Sub_E(system.encode_latent(pair)).shape == (1, 16)
    # the position enters D^H: the same slab at another nominal position scores differently
    assert not torch.allclose(logit, system.D(slab, small, last)[0])


def test_minibatch_stddev_matches_its_definition():
    x = torch.randn(6, 3, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    out = minibatch_stddev(x, 3)  # groups of 3: samples {0, 2, 4} and {1, 3, 5}
    assert out.shape == (6, 4, 2, 2, 2)
    torch.testing.assert_close(out[:, :3], x)
    a = x.numpy().reshape(6, -1)
    for members in ([0, 2, 4], [1, 3, 5]):
        want = np.sqrt(a[members].var(axis=0) + 1e-8).mean()
        for i in members:
            assert np.allclose(out[i, 3].numpy(), want, rtol=1e-5)
    assert minibatch_stddev(x[:1], 4)[0, 3].abs().max() < 1e-3  # a batch of one: no spread


def test_minibatch_std_lets_the_discriminator_see_a_collapsed_batch():
    size = 32
    plain, mbstd = tiny(size), tiny(size, hagan={"minibatch_std": 2})
    assert count_parameters(mbstd.D) > count_parameters(plain.D)  # one input more in two layers
    assert count_parameters(mbstd.G) == count_parameters(plain.G)
    for d in (plain.D, mbstd.D):
        d.eval()  # no spectral-norm power iteration between the calls
    varied = torch.rand(2, 1, size, size, size, generator=torch.Generator().manual_seed(3)) * 2 - 1
    alike = varied[:1].repeat(2, 1, 1, 1, 1)  # a collapsed batch: both samples the same
    slab_v, small_v = mbstd.real_targets(varied, 0)
    slab_a, small_a = mbstd.real_targets(alike, 0)
    # the first sample is the same in both batches; only what D sees of the batch differs
    logit_v = mbstd.D(slab_v, small_v, 0)[0][0]
    logit_a = mbstd.D(slab_a, small_a, 0)[0][0]
    assert (logit_v - logit_a).abs() > 1e-4
    plain_v = plain.D(*plain.real_targets(varied, 0), 0)[0][0]
    plain_a = plain.D(*plain.real_targets(alike, 0), 0)[0][0]
    torch.testing.assert_close(plain_v, plain_a)  # without it, D judges each sample alone
    with pytest.raises(ConfigError, match="minibatch_std"):
        model_config(**TINY, hagan={"minibatch_std": -1})


def test_mode_seeking_loss_matches_msgan():
    g = torch.Generator().manual_seed(4)
    z, slab, small = (torch.randn(4, *shape, generator=g) for shape in ((8,), (1, 4, 8, 8), (2,)))
    zn, sn, mn = (t.numpy().reshape(4, -1) for t in (z, slab, small))
    d_img = (np.abs(sn[:2] - sn[2:]).mean() + np.abs(mn[:2] - mn[2:]).mean()) / 2
    want = 1 / (d_img / np.abs(zn[:2] - zn[2:]).mean() + 1e-5)
    assert mode_seeking_loss(z, slab, small).item() == pytest.approx(want, rel=1e-5)
    same = slab[:1].repeat(4, 1, 1, 1, 1), small[:1].repeat(4, 1)
    assert mode_seeking_loss(z, *same).item() == pytest.approx(1e5)  # z ignored: 1 / eps


def test_mode_seeking_enters_the_generator_loss_only_when_asked():
    size = 32
    real = packed_pair(size, batch=2)
    plain = Recorder(tiny(size), train_encoder=False)
    seeking = Recorder(tiny(size, hagan={"mode_seeking": 0.5}), train_encoder=False)
    out_plain = plain.system.train_step(real, plain.ctx)
    out_seeking = seeking.system.train_step(real, seeking.ctx)
    assert "g_ms" not in out_plain and out_seeking["g_ms"] > 0
    # same seeds, same D step: the generator loss differs by exactly the weighted term
    assert out_seeking["d_loss"] == pytest.approx(out_plain["d_loss"], rel=1e-6)
    assert out_seeking["g_loss"] - out_plain["g_loss"] == pytest.approx(
        0.5 * out_seeking["g_ms"], rel=1e-4
    )


# ---------------------------------------------------------------- conditioning


def test_centre_conditioning_changes_the_output():
    system = tiny(32, n_centres=3)
    z = system.sample_latent(1, torch.Generator().manual_seed(0)).repeat(3, 1)
    out = system.generate(z, torch.tensor([0, 1, 2]))
    assert (out[0] - out[1]).abs().max() > 1e-4 and (out[1] - out[2]).abs().max() > 1e-4
    torch.testing.assert_close(out[0], system.generate(z[:1], torch.tensor([0]))[0])
    slab, small = system.G(z, nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).float(), 0)
    _, cls = system.D(slab, small, 0)
    assert cls.shape == (3, 3)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        system.generate(z, torch.tensor([0, 1, 3]))


def test_conditioned_train_step_needs_centres():
    system = tiny(32, n_centres=2)
    rec = Recorder(system)
    with pytest.raises(ValueError, match="centre"):
        system.train_step(packed_pair(32, 2), rec.ctx)
    losses = system.train_step(packed_pair(32, 2), rec.ctx, torch.tensor([0, 1]))
    assert {"d_class", "g_class"} <= set(losses) and losses["d_class"] > 0


# ---------------------------------------------------------------- training step


def test_train_step_updates_every_network_and_only_the_right_one():
    system = tiny(32)
    before = {n: copy.deepcopy(getattr(system, n).state_dict()) for n in ("G", "D", "E", "Sub_E")}
    rec = Recorder(system)
    losses = system.train_step(packed_pair(32, 1), rec.ctx)  # batch 1
    assert rec.calls == ["D", "G", "E", "Sub_E"]
    assert rec.with_grad == {"D": {"D"}, "G": {"G"}, "E": {"E"}, "Sub_E": {"Sub_E"}}
    for name, state in before.items():
        after = getattr(system, name).state_dict()
        assert any(not torch.equal(state[k], after[k]) for k in state), name
    assert all(p.requires_grad for p in system.parameters())  # flags restored
    assert set(losses) == {"d_loss", "g_loss", "d_real", "d_fake", "e_loss", "sub_e_loss"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
    # batch 1: the BCE loss of D is exactly -log p_real - log(1 - p_fake)
    expected = -math.log(losses["d_real"]) - math.log(1 - losses["d_fake"])
    assert losses["d_loss"] == pytest.approx(expected, rel=1e-4)


def test_train_step_without_encoder_leaves_encoders_alone():
    system = tiny(32)
    e_before = copy.deepcopy(system.E.state_dict())
    rec = Recorder(system, train_encoder=False)
    losses = system.train_step(packed_pair(32, 2), rec.ctx)
    assert rec.calls == ["D", "G"] and "e_loss" not in losses
    assert all(torch.equal(v, system.E.state_dict()[k]) for k, v in e_before.items())


def test_train_step_is_reproducible_from_the_step_generator():
    start = tiny(32)
    a, b, c = (copy.deepcopy(start) for _ in range(3))
    real = packed_pair(32, 2)
    la = a.train_step(real, Recorder(a, seed=5).ctx)
    lb = b.train_step(real, Recorder(b, seed=5).ctx)
    assert la == lb
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert c.train_step(real, Recorder(c, seed=6).ctx) != la  # other noise, other losses


def test_train_step_rejects_wrong_shape():
    system = tiny(32)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32, 32\)"):
        system.train_step(torch.zeros(1, 1, 32, 32, 16), Recorder(system).ctx)


def test_optimizers_follow_the_config():
    system = build_model(model_config(**TINY, lr_g=2e-4, lr_d=3e-4, lr_e=5e-5), DataConfig(size=32))
    opts = system.configure_optimizers()
    assert set(opts) == {"G", "D", "E", "Sub_E"}
    assert [opts[k].param_groups[0]["lr"] for k in ("G", "D", "E", "Sub_E")] == [
        2e-4,
        3e-4,
        5e-5,
        5e-5,
    ]
    assert opts["G"].param_groups[0]["betas"] == (0.0, 0.999)  # thesis code, official HA-GAN
    n_opt = sum(p.numel() for o in opts.values() for g in o.param_groups for p in g["params"])
    assert n_opt == count_parameters(system)
