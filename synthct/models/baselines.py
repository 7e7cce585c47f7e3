"""The thesis's baseline 3D GANs: Vanilla GAN ("Vanilla GAN 2") and Wasserstein GAN.

Hand-written because the thesis versions were TensorFlow/Keras code that is not available as a
library. Both share the same networks, as in the thesis (§3.6.1–3.6.2, §4.3):

- Generator: a U-Net with four encoder and four decoder blocks and skip connections, fed a noise
  *volume* of the image's shape (1, S, S, S) (thesis: "random noise vector with the same dimensions
  as the input images"). Encoder: Conv3d k4 s2 (+ BatchNorm after the first) + LeakyReLU(0.2);
  bottleneck conv; decoder: ConvTranspose3d k4 s2 + ReLU + channel dropout, concatenated with the skip;
  tanh output. Channels 16, 32, 64, 128 times `width` (the thesis does not report them).
- Discriminator / critic: four Conv3d k4 s2 + LeakyReLU(0.2), a k3 conv, global average pooling and
  a linear logit. No normalisation, so the same network is a valid WGAN-GP critic (batch norm
  would break the per-sample gradient penalty).

Vanilla: non-saturating BCE-with-logits, Adam (thesis "Vanilla GAN 2": lr G 2e-4, D 1e-4; see
`THESIS_DEFAULTS`). WGAN: RMSprop for both networks (thesis), either weight clipping to
±clip_value after each critic step (`wgan.mode: clip`, WGAN-WC, 0.01) or a gradient penalty
λ·(‖∇D‖−1)² (`wgan.mode: gp`, WGAN-GP, λ = 10). The thesis text *multiplies* the critic loss by the penalty; that is a
defect, the penalty is added here (Gulrajani et al. 2017). One `train_step` is one generator
iteration: the critic takes `n_critic` steps on the step's real batch (fresh noise each time),
then the generator one.

`model.latent_dim` is not used: the noise is the (1, S, S, S) volume, and `latent_dim` = S³.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthct.config import DataConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models.base import GenerativeModel, StepContext
from synthct.models.layers import channels, trainable
from synthct.views import VolumeView

BASE_CHANNELS = (16, 32, 64, 128)  # per encoder level, times `width`
DROPOUT = 0.5


def check_size(size: int) -> None:
    """The U-Net halves four times and keeps BatchNorm statistics at S/16 >= 2: S % 16 == 0, >= 32."""
    if size < 32 or size % 16:
        raise ConfigError(
            f"the baseline GANs need a volume size that is a multiple of 16 and >= 32, got {size}"
        )


class UNetGenerator(nn.Module):
    """Noise volume (B, 1, S, S, S) -> volume (B, 1, S, S, S) in [-1, 1] (Vanilla GAN 2 U-Net)."""

    def __init__(self, width: float = 1.0, dropout: float = DROPOUT):
        super().__init__()
        self.dropout = dropout
        c = [channels(b, width) for b in BASE_CHANNELS]
        self.enc = nn.ModuleList()
        c_in = 1
        for i, c_out in enumerate(c):
            layers = [nn.Conv3d(c_in, c_out, 4, stride=2, padding=1)]
            if i > 0:
                layers.append(nn.BatchNorm3d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.enc.append(nn.Sequential(*layers))
            c_in = c_out
        self.bottleneck = nn.Sequential(nn.Conv3d(c[3], c[3], 3, padding=1), nn.ReLU(inplace=True))
        self.dec = nn.ModuleList()
        # decoder i upsamples to the resolution of encoder level 3-i-1 and concatenates its skip
        for c_in, c_out in ((c[3], c[2]), (2 * c[2], c[1]), (2 * c[1], c[0])):
            self.dec.append(
                nn.Sequential(
                    nn.ConvTranspose3d(c_in, c_out, 4, stride=2, padding=1),
                    nn.ReLU(inplace=True),
                )
            )
        self.out = nn.Sequential(nn.ConvTranspose3d(2 * c[0], 1, 4, stride=2, padding=1), nn.Tanh())

    def forward(
        self, noise: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """noise (B, 1, S, S, S) -> (B, 1, S, S, S); `generator` (CPU) draws the dropout masks."""
        skips = []
        h = noise
        for block in self.enc:
            h = block(h)
            skips.append(h)
        h = self.bottleneck(h)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            h = torch.cat([self._drop(block(h), generator), skip], dim=1)
        return self.out(h)

    def _drop(self, h: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Channel dropout (as Dropout3d) with masks from `generator`, so steps are reproducible
        from the loop's seeded generator; the mask is (B, C, 1, 1, 1), cheap to draw on CPU."""
        if not self.training or self.dropout == 0:
            return h
        keep = torch.rand(h.shape[:2] + (1, 1, 1), generator=generator) >= self.dropout
        return h * keep.to(h.device, h.dtype) / (1 - self.dropout)


class ConvDiscriminator(nn.Module):
    """Volume (B, 1, S, S, S) -> logit / critic score (B, 1)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for b in BASE_CHANNELS:
            c_out = channels(b, width)
            layers += [nn.Conv3d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers += [nn.Conv3d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(volume).mean(dim=(2, 3, 4)))


class _NoiseVolumeGAN(GenerativeModel):
    """Shared parts of the baselines: networks G and D, noise volume, generation."""

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__()
        size = data_cfg.size
        check_size(size)
        self.cfg, self.size = model_cfg, size
        self.view = VolumeView(data_cfg)
        self.latent_dim = size**3
        self.G = UNetGenerator(model_cfg.width)
        self.D = ConvDiscriminator(model_cfg.width)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, self.size, self.size, self.size)

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Noise volumes (n, 1, S, S, S) ~ N(0, 1)."""
        return torch.randn(n, *self.latent_shape, generator=generator).to(device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Noise volumes (B, 1, S, S, S) -> volumes (B, 1, S, S, S) in [-1, 1], eval mode
        (dropout off, BatchNorm running statistics); the previous mode is restored."""
        was_training = self.G.training
        self.G.eval()
        try:
            return self.G(z)
        finally:
            self.G.train(was_training)

    def _check_real(self, real: torch.Tensor) -> None:
        if real.ndim != 5 or tuple(real.shape[1:]) != (1,) + (self.size,) * 3:
            raise ValueError(
                f"expected a real batch (B, 1, {self.size}, {self.size}, {self.size}), "
                f"got {tuple(real.shape)}"
            )


class VanillaGAN(_NoiseVolumeGAN):
    """Vanilla GAN 2: BCE-with-logits (non-saturating generator loss), Adam."""

    kind = "vanilla"
    # the thesis's settings (Table 4.6); Adam betas are not reported (Keras): (0.5, 0.999) is
    # the usual DCGAN choice
    THESIS_DEFAULTS = {"lr_g": 2e-4, "lr_d": 1e-4, "betas": (0.5, 0.999)}

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        return {
            "G": torch.optim.Adam(
                self.G.parameters(), c.lr_g, betas=c.betas, eps=c.eps, fused=fused
            ),
            "D": torch.optim.Adam(
                self.D.parameters(), c.lr_d, betas=c.betas, eps=c.eps, fused=fused
            ),
        }

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One D and one G update; returns d_loss, g_loss, d_real, d_fake (mean probabilities)."""
        self._check_real(real)
        real = real.to(ctx.device)
        batch = real.shape[0]
        ones, zeros = real.new_ones(batch, 1), real.new_zeros(batch, 1)
        with trainable([self.D], [self.G]):
            noise = self.sample_latent(batch, ctx.generator, ctx.device)
            with ctx.autocast():
                with torch.no_grad():
                    fake = self.G(noise, ctx.generator)
                logit_real, logit_fake = self.D(real).float(), self.D(fake).float()
            d_loss = F.binary_cross_entropy_with_logits(
                logit_real, ones
            ) + F.binary_cross_entropy_with_logits(logit_fake, zeros)
            ctx.update("D", d_loss)
        with trainable([self.G], [self.D]):
            noise = self.sample_latent(batch, ctx.generator, ctx.device)
            with ctx.autocast():
                logit = self.D(self.G(noise, ctx.generator)).float()
            g_loss = F.binary_cross_entropy_with_logits(logit, ones)
            ctx.update("G", g_loss)
        values = torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                torch.sigmoid(logit_real.detach()).mean(),
                torch.sigmoid(logit_fake.detach()).mean(),
            ]
        ).tolist()
        return dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), values, strict=True))


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """WGAN-GP penalty mean((‖∇_x D(x)‖₂ − 1)²) at random points x on real–fake segments."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, 1, generator=generator).to(real.device, real.dtype)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class WassersteinGAN(_NoiseVolumeGAN):
    """WGAN-WC (`wgan.mode: clip`) or WGAN-GP (`gp`) with RMSprop, `n_critic` critic steps."""

    kind = "wgan"
    # the thesis's settings (Table 4.8)
    THESIS_DEFAULTS = {"lr_g": 2e-4, "lr_d": 1e-4, "wgan": {"clip_value": 0.01, "gp_lambda": 10.0}}

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        return {
            "G": torch.optim.RMSprop(self.G.parameters(), lr=c.lr_g),
            "D": torch.optim.RMSprop(self.D.parameters(), lr=c.lr_d),
        }

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """n_critic critic updates, then one generator update.

        Returns d_loss (critic loss incl. penalty), g_loss, wasserstein (mean D(real) − mean
        D(fake), the critic's distance estimate), d_real, d_fake (mean critic scores) and gp.
        """
        self._check_real(real)
        real = real.to(ctx.device)
        batch, c = real.shape[0], self.cfg.section
        gp = real.new_zeros(())
        with trainable([self.D], [self.G]):
            for _ in range(c.n_critic):
                noise = self.sample_latent(batch, ctx.generator, ctx.device)
                with ctx.autocast():
                    with torch.no_grad():
                        fake = self.G(noise, ctx.generator)
                    score_real, score_fake = self.D(real).float(), self.D(fake).float()
                d_loss = score_fake.mean() - score_real.mean()
                if c.mode == "gp":  # fp32, outside autocast: double backward is sensitive
                    gp = gradient_penalty(self.D, real, fake.float(), ctx.generator)
                    d_loss = d_loss + c.gp_lambda * gp
                ctx.update("D", d_loss)
                if c.mode == "clip":
                    with torch.no_grad():
                        for p in self.D.parameters():
                            p.clamp_(-c.clip_value, c.clip_value)
        with trainable([self.G], [self.D]):
            noise = self.sample_latent(batch, ctx.generator, ctx.device)
            with ctx.autocast():
                g_loss = -self.D(self.G(noise, ctx.generator)).float().mean()
            ctx.update("G", g_loss)
        distance = score_real.detach().mean() - score_fake.detach().mean()
        values = torch.stack(
            [
                d_loss.detach(),
                g_loss.detach(),
                distance,
                score_real.detach().mean(),
                score_fake.detach().mean(),
                gp.detach(),
            ]
        ).tolist()
        keys = ("d_loss", "g_loss", "wasserstein", "d_real", "d_fake", "gp")
        return dict(zip(keys, values, strict=True))
