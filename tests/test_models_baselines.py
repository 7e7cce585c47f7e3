"""Vanilla GAN and Wasserstein GAN baselines, and `build_model` dispatch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from synthct.config import DataConfig, ModelConfig, from_dict
from synthct.errors import ConfigError
from synthct.models import build_model, model_config, thesis_model_config
from synthct.models.base import StepContext
from synthct.models.baselines import (
    ConvDiscriminator,
    UNetGenerator,
    VanillaGAN,
    WassersteinGAN,
    gradient_penalty,
)
from synthct.models.hagan import HAGAN


def tiny(kind: str, size: int = 32, **kw):
    torch.manual_seed(0)
    return build_model(thesis_model_config(kind, width=0.5, **kw), DataConfig(size=size))


class Recorder:
    """A fake training loop: zero_grad / backward / step per update, names recorded."""

    def __init__(self, system, seed: int = 0):
        self.opts = system.configure_optimizers()
        self.calls: list[str] = []
        self.ctx = StepContext(
            step=0,
            device=torch.device("cpu"),
            generator=torch.Generator().manual_seed(seed),
            update=self.update,
        )

    def update(self, name: str, loss: torch.Tensor) -> None:
        self.opts[name].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[name].step()
        self.calls.append(name)


def real_batch(size: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.rand(batch, 1, size, size, size, generator=g) * 2 - 1


def changed(before: dict, module: nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kind", ["vanilla", "wgan"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(kind, size):
    system = tiny(kind, size)
    z = system.sample_latent(2, torch.Generator().manual_seed(0))
    assert z.shape == (2, 1, size, size, size)
    assert system.latent_dim == size**3
    out = system.generate(z)
    assert out.shape == (2, 1, size, size, size)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0
    assert system.D(out).shape == (2, 1)


@pytest.mark.parametrize("size", [128, 256])
def test_full_size_shapes_on_meta(size):
    with torch.device("meta"):
        system = build_model(ModelConfig(kind="vanilla"), DataConfig(size=size))
        out = system.G(system.sample_latent(1, device="meta"))
        score = system.D(out)
    assert out.shape == (1, 1, size, size, size) and score.shape == (1, 1)


def test_generate_is_deterministic_and_restores_train_mode():
    system = tiny("vanilla")
    z = system.sample_latent(1, torch.Generator().manual_seed(1))
    torch.testing.assert_close(system.generate(z), system.generate(z))  # dropout off
    assert system.G.training
    with torch.no_grad():
        noisy = system.G(z)  # train mode: dropout on
    assert not torch.allclose(noisy, system.generate(z))


def test_unet_has_four_levels_with_skips():
    g = UNetGenerator(width=0.5)
    assert len(g.enc) == 4 and len(g.dec) == 3  # + the output decoder = 4 decoders
    assert isinstance(g.enc[0][1], nn.LeakyReLU)  # no norm in the first encoder (thesis)
    assert all(isinstance(block[1], nn.BatchNorm3d) for block in g.enc[1:])
    assert not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ConvDiscriminator().modules()
    )


def test_vanilla_train_step_batch_one():
    system = tiny("vanilla")
    g0, d0 = copy.deepcopy(system.G.state_dict()), copy.deepcopy(system.D.state_dict())
    rec = Recorder(system)
    losses = system.train_step(real_batch(32), rec.ctx)
    assert rec.calls == ["D", "G"]
    assert changed(g0, system.G) and changed(d0, system.D)
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values())
    assert 0 < losses["d_real"] < 1 and 0 < losses["d_fake"] < 1
    expected = -math.log(losses["d_real"]) - math.log(1 - losses["d_fake"])
    assert losses["d_loss"] == pytest.approx(expected, rel=1e-4)


def test_wgan_clip_keeps_critic_weights_clipped():
    system = tiny("wgan", wgan_mode="clip", n_critic=3)
    assert max(p.abs().max().item() for p in system.D.parameters()) > 0.01  # init exceeds it
    g0 = copy.deepcopy(system.G.state_dict())
    rec = Recorder(system)
    losses = system.train_step(real_batch(32, 2), rec.ctx)
    assert rec.calls == ["D", "D", "D", "G"]
    assert max(p.abs().max().item() for p in system.D.parameters()) <= 0.01 + 1e-9
    assert changed(g0, system.G)
    assert losses["wasserstein"] == pytest.approx(losses["d_real"] - losses["d_fake"], abs=1e-6)
    assert losses["d_loss"] == pytest.approx(-losses["wasserstein"], abs=1e-6)
    assert losses["gp"] == 0.0
    assert all(isinstance(o, torch.optim.RMSprop) for o in rec.opts.values())


def test_wgan_gp_step_adds_the_penalty():
    system = tiny("wgan", wgan_mode="gp", n_critic=1)
    d0 = copy.deepcopy(system.D.state_dict())
    losses = system.train_step(real_batch(32), Recorder(system).ctx)
    assert changed(d0, system.D)
    assert losses["gp"] > 0
    expected = -losses["wasserstein"] + 10.0 * losses["gp"]
    assert losses["d_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = <w, x> has gradient w everywhere, so the penalty is (|w| - 1)^2."""

    class Linear(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = nn.Parameter(w)

        def forward(self, x):
            return (x * self.w).flatten(1).sum(1, keepdim=True)

    w = torch.randn(1, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    real, fake = torch.randn(3, 1, 4, 4, 4), torch.randn(3, 1, 4, 4, 4)
    gp = gradient_penalty(Linear(w), real, fake, torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_train_step_is_reproducible():
    a = tiny("wgan", n_critic=2)
    b = copy.deepcopy(a)
    real = real_batch(32)
    assert a.train_step(real, Recorder(a, 3).ctx) == b.train_step(real, Recorder(b, 3).ctx)


def test_vanilla_optimizers_follow_thesis_defaults():
    system = tiny("vanilla")
    opts = system.configure_optimizers()
    assert isinstance(opts["G"], torch.optim.Adam)
    assert opts["G"].param_groups[0]["lr"] == 2e-4 and opts["D"].param_groups[0]["lr"] == 1e-4
    assert opts["G"].param_groups[0]["betas"] == (0.5, 0.999)


def test_build_model_dispatch_and_errors():
    assert isinstance(
        build_model(ModelConfig(latent_dim=8, width=1 / 8), DataConfig(size=32)), HAGAN
    )
    assert isinstance(
        build_model(ModelConfig(kind="vanilla", width=0.5), DataConfig(size=32)), VanillaGAN
    )
    assert isinstance(
        build_model(ModelConfig(kind="wgan", width=0.5), DataConfig(size=48)), WassersteinGAN
    )
    with pytest.raises(ConfigError, match="fastgan"):
        build_model(
            ModelConfig(kind="fastgan"), DataConfig(size=48)
        )  # 2D side must be a power of two
    with pytest.raises(ConfigError, match="40"):
        build_model(ModelConfig(kind="vanilla"), DataConfig(size=40))
    with pytest.raises(ConfigError, match="n_centres"):
        build_model(model_config(kind="wgan", n_centres=3), DataConfig(size=32))
    with pytest.raises(ConfigError, match="interleave"):
        build_model(
            ModelConfig(latent_dim=8, width=1 / 8),
            from_dict(DataConfig, {"size": 32, "packing": "slices"}),
        )
    with pytest.raises(ConfigError, match="stylegan"):
        thesis_model_config("stylegan9")


def test_train_step_rejects_wrong_shape():
    system = tiny("vanilla")
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32, 32\)"):
        system.train_step(torch.zeros(1, 32, 32, 32), Recorder(system).ctx)
