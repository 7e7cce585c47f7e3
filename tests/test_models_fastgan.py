"""FastGAN on paired slices, DiffAugment, and the shared 2D-system helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from synthct.config import DataConfig
from synthct.errors import ConfigError
from synthct.models import build_model, model_config, thesis_model_config
from synthct.models.base import StepContext
from synthct.models.diffaug import color, cutout, diff_augment, parse_policy, translation
from synthct.models.fastgan import FastGAN, quadrant, recon_l1
from synthct.models.layers import count_parameters


def tiny(size: int = 32, **kw) -> FastGAN:
    torch.manual_seed(0)
    kw = {"width": 0.125, "latent_dim": 32, **kw}
    return build_model(thesis_model_config("fastgan", **kw), DataConfig(size=size))


class Recorder:
    """A fake training loop: zero_grad / backward / step per update, names recorded."""

    def __init__(self, system, seed: int = 0):
        self.opts = system.configure_optimizers()
        self.calls: list[str] = []
        self.generator = torch.Generator().manual_seed(seed)

    def ctx(self, step: int = 0) -> StepContext:
        return StepContext(step, torch.device("cpu"), self.generator, self.update)

    def update(self, name: str, loss: torch.Tensor) -> None:
        self.opts[name].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[name].step()
        self.calls.append(name)


def phantom(n: int, side: int, seed: int) -> torch.Tensor:
    """(n, 2, side, side): a bright disk (0.6) on air (-1), a small tumour blob in the mask."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    c = side / 2 + (torch.rand(n, 2, 1, 1, generator=g) - 0.5) * side * 0.2
    r = side * (0.25 + 0.1 * torch.rand(n, 1, 1, generator=g))
    image = torch.where(((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2).sqrt() < r, 0.6, -1.0)
    blob = ((yy - c[:, 0] - 2) ** 2 + (xx - c[:, 1] + 1) ** 2).sqrt() < side * 0.1
    return torch.stack([image, torch.where(blob, 1.0, -1.0)], 1)


def distances(fake: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """(RMS distance of the mean images, Wasserstein-1 of the CT intensity histograms)."""
    l2 = (fake.mean(0) - real.mean(0)).square().mean().sqrt().item()
    w1 = wasserstein_distance(fake[:, 0].flatten().numpy(), real[:, 0].flatten().numpy())
    return l2, float(w1)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(size):
    system = tiny(size)
    assert system.view.name == "slices" and system.sample_shape == (2, size, size)
    z = system.sample_latent(3, torch.Generator().manual_seed(0))
    assert z.shape == (3, 32)
    out = system.generate(z)
    assert out.shape == (3, 2, size, size) and out.abs().max() <= 1 and out.std() > 0
    big, small = system.G(z)
    assert small.shape == (3, 2, size // 2, size // 2)
    logits, recs = system.D(big, small, part=2)
    assert logits.ndim == 2 and logits.shape[0] == 3
    d = min(128, size // 2)
    assert [tuple(r.shape) for r in recs] == [(3, 2, d, d)] * 3
    assert system.D(big, small)[1] is None


# D at 256 = the official Discriminator(ndf=64, nc=2, im_size=256) (odegeasslbc/FastGAN-pytorch
# models.py, 2 image channels for the CT + mask pair), counted by instantiating it: 11,524,640.
# The small branch runs at half the big branch's width (official nfc[4s] vs nfc[2s]).
@pytest.mark.parametrize(
    ("size", "n_g", "n_d"), [(128, 28_959_110, 11_316_544), (256, 29_127_494, 11_524_640)]
)
def test_full_size_parameter_counts_and_shapes_on_meta(size, n_g, n_d):
    # built on CPU (~2 s): under the meta device spectral norm's power iterations run through
    # Python meta kernels (~15 s); the forward then runs on meta tensors (no compute)
    system = build_model(thesis_model_config("fastgan"), DataConfig(size=size)).to("meta")
    with torch.device("meta"):
        big, small = system.G(system.sample_latent(2, device="meta"))
        logits, recs = system.D(big, small, part=0)
    assert big.shape == (2, 2, size, size) and small.shape == (2, 2, size // 2, size // 2)
    assert recs[0].shape == (2, 2, size // 2, size // 2)  # decoders: 128 at 256 (official)
    # the input layer, by hand: ConvTranspose latent 256 -> 2 x 1024 (4x4, no bias) + BatchNorm
    assert count_parameters(system.G.init) == 256 * 2048 * 16 + 2 * 2048
    # SLE at 64/128 (+256) from 4/8 (/16), ratio 16 as in the paper
    assert sorted(system.G.sle, key=int) == [str(s) for s in (64, 128, 256) if s <= size]
    assert (count_parameters(system.G), count_parameters(system.D)) == (n_g, n_d)
    # the small branch by hand (official at 256): R/2 pair -> 32 -> 64 -> 128 -> 256 channels
    convs = [m for m in system.D.from_small.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [32, 64, 128, 256][4 - len(convs) :]
    assert count_parameters(system.D.rf_small) == 256 * 16  # 4x4 conv 256 -> 1, no bias


def test_thesis_defaults_and_config_errors():
    cfg = thesis_model_config("fastgan")
    assert (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.latent_dim) == (2e-4, 2e-4, (0.5, 0.99), 256)
    assert cfg.section.diffaug == "color,translation" and cfg.preset == "thesis"  # official policy
    opts = build_model(
        thesis_model_config("fastgan", width=0.125), DataConfig(size=32)
    ).configure_optimizers()
    assert opts["G"].param_groups[0]["betas"] == (0.5, 0.99)
    assert (
        build_model(
            model_config(kind="fastgan", resolution=64, width=0.1), DataConfig(size=128)
        ).resolution
        == 64
    )
    with pytest.raises(ConfigError, match="resolution 96"):
        build_model(model_config(kind="fastgan", resolution=96), DataConfig(size=128))
    with pytest.raises(ConfigError, match="n_centres"):
        build_model(model_config(kind="fastgan", n_centres=2), DataConfig(size=32))
    with pytest.raises(ValueError, match=r"\(B, 2, 32, 32\)"):
        tiny().train_step(torch.zeros(2, 1, 32, 32), Recorder(tiny()).ctx())


def _changed(before: dict, module: nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("r1_gamma", [None, 0.5])
def test_train_step_updates_both_networks(r1_gamma):
    system = tiny(r1_gamma=r1_gamma)
    rec = Recorder(system)
    g0 = {k: v.clone() for k, v in system.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in system.D.state_dict().items()}
    real = phantom(4, 32, seed=1)
    for step in range(2):
        losses = system.train_step(real, rec.ctx(step))
        assert set(losses) == {"d_loss", "g_loss", "recon", "d_real", "d_fake"}
        assert all(np.isfinite(v) for v in losses.values())
    assert rec.calls == ["D", "G", "D", "G"]
    assert _changed(g0, system.G) and _changed(d0, system.D)
    assert losses["recon"] > 0


def test_train_step_is_deterministic_with_seed():
    runs = []
    for _ in range(2):
        system = tiny()
        rec = Recorder(system, seed=5)
        losses = [system.train_step(phantom(4, 32, seed=1), rec.ctx(i)) for i in range(2)]
        runs.append((losses, system.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tiny().generate(z), tiny().generate(z))  # eval mode: fixed noise maps


def test_quadrant():
    x = torch.arange(16.0).reshape(4, 4)
    assert quadrant(x, 0).tolist() == [[0, 1], [4, 5]]
    assert quadrant(x, 3).tolist() == [[10, 11], [14, 15]]


def test_translation_is_an_integer_shift_with_air_fill():
    x = torch.randn(6, 2, 16, 16)
    out = translation(x, torch.Generator().manual_seed(0))
    for b in range(6):  # some shift (dy, dx) within ±2 (1/8 of 16) reproduces sample b exactly
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.full_like(x[b], -1.0)
                ys, yd = slice(max(0, -dy), 16 - max(0, dy)), slice(max(0, dy), 16 - max(0, -dy))
                xs, xd = slice(max(0, -dx), 16 - max(0, dx)), slice(max(0, dx), 16 - max(0, -dx))
                ref[:, yd, xd] = x[b][:, ys, xs]
                found |= torch.equal(out[b], ref)
        assert found, f"sample {b} is not a shifted copy"


def pair_batch(n: int = 6, side: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 2, side, side): smooth random CT in [-1, 1], a binary mask in {-1, 1}."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 1, side, side, generator=g) * 2 - 1
    mask = torch.where(torch.rand(n, 1, side, side, generator=g) > 0.7, 1.0, -1.0)
    return torch.cat([image, mask], 1)


def test_colour_augmentation_changes_the_ct_only():
    """Brightness/contrast act on channel 0 (an affine map per sample with gain in [0.5, 1.5]);
    the mask channel comes back bit-identical."""
    x = pair_batch()
    out = color(x, torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 1], x[:, 1])
    for b in range(len(x)):  # per-sample least-squares fit out = a * x + d is exact
        a, d = np.polyfit(x[b, 0].flatten().numpy(), out[b, 0].flatten().numpy(), 1)
        np.testing.assert_allclose(out[b, 0].numpy(), a * x[b, 0].numpy() + d, atol=1e-5)
        assert 0.5 <= a <= 1.5
    assert not torch.allclose(out[:, 0], x[:, 0])
    # the whole official policy: the mask keeps only its own values (-1, 1); before, one colour
    # draw for both channels spread them over about -1.7 ... 2.2, revealing the draw
    full = diff_augment(x, "color,translation", torch.Generator().manual_seed(2))
    assert set(torch.unique(full[:, 1]).tolist()) <= {-1.0, 1.0}


def test_geometric_augmentations_move_image_and_mask_alike_and_pass_gradients():
    x = torch.rand(4, 1, 16, 16).repeat(1, 2, 1, 1).requires_grad_(True)  # channel 1 == channel 0
    out = diff_augment(x, "translation,cutout", torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], out[:, 1]) and not torch.equal(out, x)
    full = diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0))
    full.sum().backward()
    assert x.grad is not None and x.grad[:, 0].abs().sum() > 0 and x.grad[:, 1].abs().sum() > 0
    holes = (cutout(torch.ones(8, 2, 16, 16), torch.Generator().manual_seed(1)) == 0)[:, 0]
    assert all(0 < h.sum() <= 64 for h in holes)  # at most an 8x8 box, clipped at the border
    assert parse_policy(" color, cutout") == ("color", "cutout") and parse_policy("") == ()
    with pytest.raises(ConfigError, match="flip"):
        parse_policy("flip")


def test_reconstruction_loss_is_summed_over_the_batch():
    """Like the reference's LPIPS(...).sum(): the same real slice twice gives twice the term of
    it once (mean reduction would give the same value); per-sample mean |r - t| by hand."""
    rec, target = torch.rand(3, 2, 8, 8), torch.rand(3, 2, 8, 8)
    by_hand = sum((rec[b] - target[b]).abs().mean() for b in range(3))
    torch.testing.assert_close(recon_l1(rec, target), by_hand)
    x = phantom(1, 32, seed=1)
    recon = {}
    for n in (1, 2):  # no DiffAugment: both copies of the slice see the same D input
        system = tiny(diffaug="")
        recon[n] = system.train_step(x.repeat(n, 1, 1, 1), Recorder(system, seed=3).ctx())["recon"]
    assert recon[2] == pytest.approx(2 * recon[1], rel=1e-4)


@pytest.mark.slow
def test_learns_phantom_slices():
    """200 steps on disk + blob phantoms move samples toward the data (both distances drop;
    calibration run: mean-image RMS 0.88 -> 0.25, CT-histogram W1 0.89 -> 0.28)."""
    system = tiny(latent_dim=64)
    rec = Recorder(system)
    data, ref = phantom(256, 32, seed=1), phantom(128, 32, seed=2)
    z = system.sample_latent(128, torch.Generator().manual_seed(3))
    l2_0, w1_0 = distances(system.generate(z), ref)
    for step in range(200):
        idx = torch.randint(0, 256, (8,), generator=rec.generator)
        system.train_step(data[idx], rec.ctx(step))
    l2, w1 = distances(system.generate(z), ref)
    assert l2 < 0.5 * l2_0 and w1 < 0.5 * w1_0, (l2_0, l2, w1_0, w1)
