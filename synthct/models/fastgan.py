"""FastGAN (Liu et al. 2021) for paired axial slices: CT and tumour mask as two channels.

A 2D baseline the thesis tried before moving to 3D (§3.6.3, §4.4.2). Hand-written because the
official code is a research script (not a library) and it has no two-channel, seeded,
`GenerativeModel`; the structure follows the paper and the official PyTorch code:

- Generator: z (latent_dim; thesis tried 256/512/1024, official 256) -> ConvTranspose 4x4 + BN +
  GLU -> x2 up blocks (nearest upsample, 3x3 conv, BN, GLU; every other block the "comp" variant
  with two convs and noise injection) up to R. Skip-layer excitation (SLE): the feature at 4, 8,
  16, 32 gates the channels of the feature at 16x that size (8x for R < 128, so the tiny test
  models have SLE too). Two outputs, tanh: the R x R pair and an R/2 pair (from the R/2 feature).
  Spectral norm on every conv, as in the official code.
- Discriminator: two paths. The big one reads the R image (3x3 conv, then residual "comp" down
  blocks to 8x8, or 4x4 for R = 32) with SLE from the feature 8x larger; the small one reads the
  R/2 image (plain down blocks to the same size) at half the big path's width at each side, as
  the official code (the small feature at side s has the official nfc[4s] channels, the big one
  nfc[2s]). Each ends in patch logits; both are used. At R = 256 with the pair's 2 channels the
  parameter count equals the official `Discriminator(ndf=64, nc=2, im_size=256)`: 11,524,640.
- Self-supervised reconstruction: on real inputs three small decoders rebuild, from D features,
  the whole image (from the last big feature), the whole small image, and one random quadrant
  (from the feature before last, cropped). The official code scores each with LPIPS (a
  pretrained VGG) and *sums* the per-sample distances over the batch. LPIPS weights cannot be
  downloaded here, so each reconstruction is scored by the per-sample mean absolute error (L1)
  instead, summed over the batch like the reference, so the reconstruction term has the
  reference's scale relative to the hinge loss (it grows with the batch, as there) — the
  distance differs (L1 on [-1, 1] pairs, not LPIPS), the reduction does not. Weighted by
  `recon_weight` (the thesis's "recreation weight"; 1 in the official code).
- Losses (official): hinge with a random margin, D: relu(u - D(real)) + relu(u + D(fake)),
  u ~ U(0.8, 1), averaged over the patch logits; G: -D(fake). DiffAugment (`diffaug.py`) on
  every D input, real and fake; the official policy "color,translation" in the FastGAN configs
  and `THESIS_DEFAULTS` (colour on the CT channel only). Optional R1 penalty (`r1_gamma` > 0;
  the thesis mentions a gradient penalty; off by default).

Thesis hyperparameters (Tables 4.12/4.13) as `THESIS_DEFAULTS`: Adam lr 2e-4 for G and D,
betas (0.5, 0.99), batch 8 (a `TrainConfig` setting); preset "thesis" (`synthct.presets`). The
official code's settings differ only in beta2 = 0.999: preset "reference". The thesis mosaics
were 1024 x 3680 RGB PNGs; here the input is the slice view of `synthct.slices` (mosaic layout
available there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from synthct.config import DataConfig, ModelConfig
from synthct.models.base import StepContext
from synthct.models.diffaug import device_generator, diff_augment
from synthct.models.layers import trainable
from synthct.models.slice_gan import SliceGAN, check_pair_batch

THESIS_DEFAULTS: dict = {
    "latent_dim": 256,
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "betas": (0.5, 0.99),
    "fastgan": {"diffaug": "color,translation"},  # the official FastGAN policy
}
PAIR_CHANNELS = 2  # CT image, tumour mask
NGF, NDF, NDEC = 64, 64, 32  # official base widths of G, D and the reconstruction decoders
# channel multipliers by spatial size (official `nfc_multi`); D's feature at side s uses D_MULT[2s]
G_MULT = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125, 2048: 0.0625}
D_MULT = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125, 2048: 0.0625}
DECODER_MAX = 128  # the official decoders reconstruct at 128 x 128


def _ch(base: int, mult: float, width: float) -> int:
    return max(4, round(base * mult * width))


def sn_conv(*args, **kwargs) -> nn.Module:
    return spectral_norm(nn.Conv2d(*args, **kwargs))


class GLU(nn.Module):
    """Gated linear unit over channels: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


class NoiseInjection(nn.Module):
    """x + w * noise: fresh N(0, 1) noise from `g` in training, a fixed map in eval mode (so
    `generate` is a function of z alone); w starts at 0 (official)."""

    def __init__(self, side: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        fixed = torch.randn(1, 1, side, side, generator=torch.Generator().manual_seed(side))
        self.register_buffer("fixed", fixed)

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        if self.training:
            b, _, h, w = x.shape
            noise = torch.randn(b, 1, h, w, generator=g, device=x.device, dtype=x.dtype)
        else:
            noise = self.fixed.to(x.dtype)
        return x + self.weight * noise


class UpBlock(nn.Module):
    """(B, c_in, s, s) -> (B, c_out, 2s, 2s); `comp`: two convs with noise injection."""

    def __init__(self, c_in: int, c_out: int, side: int, comp: bool):
        super().__init__()
        self.conv1 = sn_conv(c_in, 2 * c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * c_out)
        self.comp = comp
        if comp:
            self.noise1, self.noise2 = NoiseInjection(side), NoiseInjection(side)
            self.conv2 = sn_conv(c_out, 2 * c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(2 * c_out)
        self.glu = GLU()

    def forward(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        x = self.conv1(F.interpolate(x, scale_factor=2, mode="nearest"))
        if not self.comp:
            return self.glu(self.bn1(x))
        x = self.glu(self.bn1(self.noise1(x, g)))
        return self.glu(self.bn2(self.noise2(self.conv2(x), g)))


class SkipExcitation(nn.Module):
    """Skip-layer excitation: channel gates from a small feature applied to a big one."""

    def __init__(self, c_small: int, c_big: int):
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(4),
            sn_conv(c_small, c_big, 4, 1, 0, bias=False),
            nn.SiLU(),  # "Swish" in the paper
            sn_conv(c_big, c_big, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


def _sle_ratio(resolution: int) -> int:
    return 16 if resolution >= 128 else 8


class FastGANGenerator(nn.Module):
    """z (B, latent_dim) -> (pair (B, 2, R, R), pair (B, 2, R/2, R/2)), both tanh."""

    def __init__(self, resolution: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        self.resolution = resolution

        def ch(s: int) -> int:
            return _ch(NGF, G_MULT[s], width)

        self.init = nn.Sequential(
            spectral_norm(nn.ConvTranspose2d(latent_dim, 2 * ch(4), 4, 1, 0, bias=False)),
            nn.BatchNorm2d(2 * ch(4)),
            GLU(),
        )
        self.sides = [2**k for k in range(3, resolution.bit_length())]  # 8 .. R
        # comp blocks at 8, 32, 128, 512 (odd powers of two), plain ones between (official)
        self.ups = nn.ModuleList(
            UpBlock(ch(s // 2), ch(s), s, comp=s.bit_length() % 2 == 0) for s in self.sides
        )
        r = _sle_ratio(resolution)
        self.sle = nn.ModuleDict(
            {
                str(s * r): SkipExcitation(ch(s), ch(s * r))
                for s in (4, 8, 16, 32)
                if s * r <= resolution
            }
        )
        self.to_big = sn_conv(ch(resolution), PAIR_CHANNELS, 3, 1, 1, bias=False)
        self.to_small = sn_conv(ch(resolution // 2), PAIR_CHANNELS, 1, 1, 0, bias=False)

    def forward(
        self, z: torch.Tensor, g: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = {4: self.init(z.reshape(z.shape[0], -1, 1, 1))}
        h, r = feats[4], _sle_ratio(self.resolution)
        for side, block in zip(self.sides, self.ups, strict=True):
            h = block(h, g)
            if str(side) in self.sle:
                h = self.sle[str(side)](feats[side // r], h)
            feats[side] = h
        big = torch.tanh(self.to_big(feats[self.resolution]))
        return big, torch.tanh(self.to_small(feats[self.resolution // 2]))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.main = nn.Sequential(
            sn_conv(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DownBlockComp(nn.Module):
    """Residual down block: (strided conv, conv) averaged with (avg-pool, 1x1 conv)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.main = nn.Sequential(
            sn_conv(c_in, c_out, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
            sn_conv(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
        )
        self.direct = nn.Sequential(
            nn.AvgPool2d(2, 2),
            sn_conv(c_in, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """D feature (B, c, s, s) -> reconstruction (B, 2, out, out) in [-1, 1] (pool to 8, upsample)."""

    def __init__(self, c_in: int, out: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(8)]
        c, side = c_in, 8
        while side < out:
            side *= 2
            c_out = _ch(NDEC, G_MULT[side], width)
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                sn_conv(c, 2 * c_out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(2 * c_out),
                GLU(),
            ]
            c = c_out
        layers += [sn_conv(c, PAIR_CHANNELS, 3, 1, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def quadrant(x: torch.Tensor, part: int) -> torch.Tensor:
    """Quadrant `part` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of (..., H, W)."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    top, left = divmod(part, 2)
    return x[..., top * h : (top + 1) * h, left * w : (left + 1) * w]


class FastGANDiscriminator(nn.Module):
    """(pair (B, 2, R, R), pair (B, 2, R/2, R/2)) -> patch logits (B, P) [, reconstructions]."""

    def __init__(self, resolution: int, width: float = 1.0):
        super().__init__()

        def ch(s: int) -> int:  # big path: the feature at side s has the official nfc[2s]
            return _ch(NDF, D_MULT[2 * s], width)

        def ch_small(s: int) -> int:  # small path: official nfc[4s] (half the big path's width)
            return _ch(NDF, D_MULT[4 * s], width)

        self.last = last = 8 if resolution >= 64 else 4
        self.decoder_side = min(DECODER_MAX, resolution // 2)
        self.from_big = nn.Sequential(
            sn_conv(PAIR_CHANNELS, ch(resolution), 3, 1, 1, bias=False), nn.LeakyReLU(0.2)
        )
        self.sides = [resolution >> k for k in range(1, (resolution // last).bit_length())]
        self.downs = nn.ModuleList(DownBlockComp(ch(2 * s), ch(s)) for s in self.sides)
        # feature j (side R / 2^j) is gated by feature j - 3 (side 8x larger), as in the paper
        feat_sides = [resolution, *self.sides]
        self.sle = nn.ModuleDict(
            {
                str(j): SkipExcitation(ch(feat_sides[j - 3]), ch(feat_sides[j]))
                for j in range(3, len(feat_sides))
            }
        )
        self.rf_big = nn.Sequential(
            sn_conv(ch(last), ch(last // 2), 1, 1, 0, bias=False),
            nn.BatchNorm2d(ch(last // 2)),
            nn.LeakyReLU(0.2),
            sn_conv(ch(last // 2), 1, 4, 1, 0, bias=False),
        )
        small: list[nn.Module] = [
            sn_conv(PAIR_CHANNELS, ch_small(resolution // 4), 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),
        ]
        side = resolution // 4
        while side > last:
            small.append(DownBlock(ch_small(side), ch_small(side // 2)))
            side //= 2
        self.from_small = nn.Sequential(*small)
        self.rf_small = sn_conv(ch_small(last), 1, 4, 1, 0, bias=False)
        self.decoder_big = SimpleDecoder(ch(last), self.decoder_side, width)
        self.decoder_small = SimpleDecoder(ch_small(last), self.decoder_side, width)
        self.decoder_part = SimpleDecoder(ch(2 * last), self.decoder_side, width)

    def forward(
        self, big: torch.Tensor, small: torch.Tensor, part: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Logits (B, P); with `part` (0-3, real inputs) also the reconstructions
        [whole (B, 2, d, d), small (B, 2, d, d), quadrant `part` (B, 2, d, d)], d = decoder_side."""
        feats = [self.from_big(big)]
        for j, block in enumerate(self.downs, start=1):
            h = block(feats[-1])
            if str(j) in self.sle:
                h = self.sle[str(j)](feats[j - 3], h)
            feats.append(h)
        feat_small = self.from_small(small)
        b = big.shape[0]
        logits = torch.cat(
            [self.rf_big(feats[-1]).reshape(b, -1), self.rf_small(feat_small).reshape(b, -1)], 1
        )
        if part is None:
            return logits, None
        recs = [
            self.decoder_big(feats[-1]),
            self.decoder_small(feat_small),
            self.decoder_part(quadrant(feats[-2], part)),
        ]
        return logits, recs


def recon_l1(rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reconstruction loss of (B, C, H, W) pairs: mean |rec - target| per sample, summed over
    the batch (the reduction of the official `percept(rec, target).sum()`)."""
    return (rec - target).abs().mean(dim=(1, 2, 3)).sum()


def _down(x: torch.Tensor, side: int) -> torch.Tensor:
    """Anti-aliased (area) resize of (B, C, H, W) to side x side; identity at the same size."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="area")


class FastGAN(SliceGAN):
    """FastGAN on (B, 2, R, R) image + mask slice pairs in [-1, 1] (see module docstring)."""

    kind = "fastgan"
    THESIS_DEFAULTS = THESIS_DEFAULTS

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__(model_cfg, data_cfg)
        own = model_cfg.section
        self.r1_gamma, self.recon_weight = own.r1_gamma or 0.0, own.recon_weight
        self.G = FastGANGenerator(self.resolution, model_cfg.latent_dim, model_cfg.width)
        self.D = FastGANDiscriminator(self.resolution, model_cfg.width)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(2, R, R): one generated image + mask slice pair."""
        return (PAIR_CHANNELS, self.resolution, self.resolution)

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        c = self.cfg
        kw = {"betas": c.betas, "eps": c.eps, "fused": fused}
        return {
            "G": torch.optim.Adam(self.G.parameters(), c.lr_g, **kw),
            "D": torch.optim.Adam(self.D.parameters(), c.lr_d, **kw),
        }

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One D update (hinge + reconstruction [+ R1]) and one G update on real (B, 2, R, R).

        Returns d_loss, g_loss, recon (the reconstruction term: per-sample L1 of the three
        reconstructions, summed over the batch), d_real, d_fake (mean logits).
        """
        check_pair_batch(real, self.resolution)
        g = device_generator(ctx)
        real = real.to(ctx.device)
        b, half = real.shape[0], self.resolution // 2
        part = int(torch.randint(0, 4, (1,), generator=ctx.generator))
        z = torch.randn(b, self.latent_dim, generator=g, device=ctx.device)
        with trainable([self.G], [self.D]), ctx.autocast():
            fake_big, fake_small = self.G(z, g)  # graph kept for the G update below
        fake_big = diff_augment(fake_big.float(), self.policy, g)
        fake_small = diff_augment(fake_small.float(), self.policy, g)

        with trainable([self.D], [self.G]):
            real_big = diff_augment(real, self.policy, g).detach()
            real_big.requires_grad_(self.r1_gamma > 0)
            real_small = _down(real_big, half)
            with ctx.autocast():
                logit_real, recs = self.D(real_big, real_small, part)
                logit_fake, _ = self.D(fake_big.detach(), fake_small.detach())
            logit_real, logit_fake = logit_real.float(), logit_fake.float()
            u_real = torch.rand(logit_real.shape, generator=g, device=ctx.device) * 0.2 + 0.8
            u_fake = torch.rand(logit_fake.shape, generator=g, device=ctx.device) * 0.2 + 0.8
            d = self.D.decoder_side
            targets = (_down(real_big, d), _down(real_small, d), _down(quadrant(real_big, part), d))
            recon = sum(recon_l1(r.float(), t.detach()) for r, t in zip(recs, targets, strict=True))
            d_loss = F.relu(u_real - logit_real).mean() + F.relu(u_fake + logit_fake).mean()
            d_loss = d_loss + self.recon_weight * recon
            if self.r1_gamma > 0:
                (grad,) = torch.autograd.grad(logit_real.sum(), real_big, create_graph=True)
                d_loss = d_loss + self.r1_gamma / 2 * grad.square().sum((1, 2, 3)).mean()
            ctx.update("D", d_loss)

        with trainable([self.G], [self.D]):
            with ctx.autocast():
                logit_g, _ = self.D(fake_big, fake_small)
            g_loss = -logit_g.float().mean()
            ctx.update("G", g_loss)
        values = torch.stack(
            [d_loss.detach(), g_loss.detach(), recon.detach(), logit_real.detach().mean(),
             logit_fake.detach().mean()]
        ).tolist()  # fmt: skip
        return dict(zip(("d_loss", "g_loss", "recon", "d_real", "d_fake"), values, strict=True))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> slice pairs (B, 2, R, R) in [-1, 1] (channel 0 CT, 1 mask),
        eval mode (BatchNorm running statistics, fixed noise maps); the previous mode is restored."""
        was_training = self.G.training
        self.G.eval()
        try:
            return self.G(z)[0]
        finally:
            self.G.train(was_training)
