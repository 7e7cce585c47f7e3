"""StyleGAN2 on paired slices: layers against independent formulas, shapes, training steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch import nn

from synthct.config import DataConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models import build_model, thesis_model_config
from synthct.models.base import StepContext
from synthct.models.layers import count_parameters
from synthct.models.stylegan2 import (
    R1_EVERY,
    DiscriminatorBlock,
    EqualLinear,
    ModulatedConv2d,
    StyleGAN2,
    auto_r1_gamma,
    blur_kernel,
    channels,
    minibatch_stddev,
)


# the same fake loop and phantom as tests/test_models_fastgan.py (kept local: tests/ is not a package)
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


def _changed(before: dict, module: nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def tiny(size: int = 32, **kw) -> StyleGAN2:
    torch.manual_seed(0)
    kw = {"width": 1 / 16, "latent_dim": 32, **kw}
    return build_model(thesis_model_config("stylegan2", **kw), DataConfig(size=size))


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(size):
    system = tiny(size)
    assert system.view.name == "slices" and system.sample_shape == (2, size, size)
    assert system.G.num_ws == 2 * int(math.log2(size)) - 2
    z = system.sample_latent(3, torch.Generator().manual_seed(0))
    out = system.generate(z)
    assert out.shape == (3, 2, size, size) and out.abs().max() <= 1 and out.std() > 0
    assert system.D(out).shape == (3, 1)


@pytest.mark.parametrize(
    ("size", "n_g", "n_d"), [(128, 24_522_775, 23_882_241), (256, 24_764_955, 24_001_025)]
)
def test_full_size_parameter_counts_and_shapes_on_meta(size, n_g, n_d):
    with torch.device("meta"):
        system = build_model(thesis_model_config("stylegan2"), DataConfig(size=size))
        out = system.G(system.sample_latent(2, device="meta"))
        logit = system.D(out)
    assert out.shape == (2, 2, size, size) and logit.shape == (2, 1)
    # mapping network by hand: 8 fully connected 512 -> 512 layers with bias
    assert count_parameters(system.G.mapping) == 8 * (512 * 512 + 512)
    assert [channels(r) for r in (4, 32, 64, 128, 256)] == [512, 512, 256, 128, 64]
    assert (count_parameters(system.G), count_parameters(system.D)) == (n_g, n_d)


def test_thesis_defaults_and_lazy_regularisation_optimisers():
    cfg = thesis_model_config("stylegan2")
    assert (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.latent_dim) == (1e-4, 1e-4, (0.0, 0.99), 512)
    assert cfg.preset == "thesis" and thesis_model_config("stylegan2", lr_g=2e-3).preset == ""
    opts = tiny(lr_g=1e-4, lr_d=1e-4).configure_optimizers()
    d = opts["D"].param_groups[0]
    assert d["lr"] == pytest.approx(1e-4 * 16 / 17)
    assert d["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert opts["G"].param_groups[0]["lr"] == pytest.approx(1e-4 * 4 / 5)
    assert tiny().r1_gamma == pytest.approx(0.0002 * 32**2 / 8) == auto_r1_gamma(32)
    assert tiny(r1_gamma=0.0).r1_gamma == 0.0
    with pytest.raises(ConfigError, match="resolution 16"):
        build_model(ModelConfig(kind="stylegan2"), DataConfig(size=16))


def test_modulated_conv_matches_per_sample_convolution():
    torch.manual_seed(0)
    layer = ModulatedConv2d(3, 4, 3, w_dim=5)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    out = layer(x, w)
    for b in range(2):  # independent path: build sample b's kernel and run a plain conv
        style = F.linear(w[b], layer.affine.weight / math.sqrt(5), layer.affine.bias)
        k = layer.weight[0] / math.sqrt(3 * 9) * style.view(1, 3, 1, 1)
        k = k / k.square().sum((1, 2, 3), keepdim=True).sqrt()
        torch.testing.assert_close(out[b : b + 1], F.conv2d(x[b : b + 1], k, padding=1))
    up = ModulatedConv2d(3, 4, 3, w_dim=5, upsample=True)(x, w)
    assert up.shape == (2, 4, 12, 12)


def test_blur_filter_is_the_normalised_outer_product_of_1_3_3_1():
    t = torch.tensor([1.0, 3.0, 3.0, 1.0])
    expected = torch.stack([t * v for v in t]) / 64  # sum of the outer product = 8 * 8
    assert torch.equal(blur_kernel(), expected) and blur_kernel().sum() == 1


def _folded_energy(freqs: list[float], side: int = 64) -> float:
    """Energy ratio out/in of a DiscriminatorBlock reduced to its downsampling: main path zeroed,
    1x1 skip = identity, so block(x) = down(x) / sqrt 2. Input: cosines along x with the given
    frequencies (cycles per input pixel), constant along y; energy measured away from the
    zero-padded borders."""
    block = DiscriminatorBlock(1, 1)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
        block.skip.weight.fill_(1.0)  # scale 1 / sqrt(1 * 1 * 1) = 1: the identity
        g = torch.Generator().manual_seed(0)
        n = torch.arange(side, dtype=torch.float64)
        wave = sum(torch.cos(2 * math.pi * f * n + 2 * math.pi * torch.rand((), generator=g))
                   for f in freqs)  # fmt: skip
        x = wave.float().view(1, 1, side, 1).expand(1, 1, side, side).contiguous()
        out = block(x) * math.sqrt(2)
    inner_in, inner_out = x[..., 8:-8, 8:-8], out[..., 4:-4, 4:-4]
    return float(inner_out.square().mean() / inner_in.square().mean())


def test_discriminator_downsampling_is_antialiased():
    """Frequencies above the output's Nyquist limit (0.25 .. 0.5 cycles/pixel) can only fold
    back as aliases: band averages |cos(pi f)|^2 = 18 % for a 2x2 box average, |cos(pi f)|^6 =
    2 % for the [1,3,3,1] blur (measured on this signal: 22 % with the former box downsampling,
    2.4 % now). Low frequencies still pass."""
    high = [k / 64 for k in range(17, 32)]
    assert _folded_energy(high) < 0.05
    assert _folded_energy([2 / 64]) > 0.9


def test_equalised_linear_scales_at_run_time():
    torch.manual_seed(0)
    layer = EqualLinear(16, 4, bias_init=1.0, lr_mul=0.01)
    x = torch.randn(3, 16)
    ref = x @ (layer.weight * 0.01 / 4).T + layer.bias * 0.01
    torch.testing.assert_close(layer(x), ref)
    assert layer.weight.std() > 10  # stored N(0, 1) / lr_mul


def test_minibatch_stddev_against_formula():
    x = torch.randn(8, 3, 4, 4)
    out = minibatch_stddev(x, group=4)
    assert out.shape == (8, 4, 4, 4)
    for i in range(8):  # sample i is grouped with i ± 2, i ± 4, i ± 6 (columns of a 4 x 2 view)
        members = x[i % 2 :: 2]
        expected = members.std(dim=0, unbiased=False).mean()
        torch.testing.assert_close(
            out[i, 3], torch.full((4, 4), expected.item()), atol=1e-5, rtol=0
        )
    assert minibatch_stddev(torch.randn(3, 2, 4, 4)).shape == (3, 3, 4, 4)  # groups of 3


def test_train_step_with_lazy_regularisation():
    system = tiny()
    rec = Recorder(system)
    g0 = {k: v.clone() for k, v in system.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in system.D.state_dict().items()}
    real = phantom(4, 32, seed=1)
    losses = system.train_step(real, rec.ctx(0))  # step 0: R1 and path length are due
    assert rec.calls == ["D", "D", "G", "G"]
    assert losses["r1"] > 0 and losses["pl"] > 0 and system.pl_mean > 0
    losses = system.train_step(real, rec.ctx(1))
    assert rec.calls[4:] == ["D", "G"] and losses["r1"] == 0 and losses["pl"] == 0
    assert all(np.isfinite(v) for v in losses.values())
    assert _changed(g0, system.G) and _changed(d0, system.D)
    assert "pl_mean" in system.state_dict()  # checkpointed with the system
    system = tiny(r1_gamma=0.0, pl_weight=0.0)
    rec = Recorder(system)
    system.train_step(real, rec.ctx(R1_EVERY))
    assert rec.calls == ["D", "G"]


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
    assert torch.equal(tiny().generate(z), tiny().generate(z))


@pytest.mark.slow
def test_learns_phantom_slices():
    """250 steps on disk + blob phantoms move samples toward the data (both distances drop;
    calibration run: mean-image RMS 1.36 -> 0.69 at 200 steps, 0.48 at 300; CT-histogram W1
    0.71 -> 0.30 at 200 steps, 0.31 at 300)."""
    system = tiny(latent_dim=64, diffaug="")
    rec = Recorder(system)
    data, ref = phantom(256, 32, seed=1), phantom(128, 32, seed=2)
    z = system.sample_latent(128, torch.Generator().manual_seed(3))
    l2_0, w1_0 = distances(system.generate(z), ref)
    for step in range(250):
        idx = torch.randint(0, 256, (8,), generator=rec.generator)
        system.train_step(data[idx], rec.ctx(step))
    l2, w1 = distances(system.generate(z), ref)
    assert l2 < 0.6 * l2_0 and w1 < 0.6 * w1_0, (l2_0, l2, w1_0, w1)
