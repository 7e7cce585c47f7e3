"""StyleGAN2 (Karras et al. 2020) for paired axial slices: CT and tumour mask as two channels.

A 2D baseline the thesis tried before moving to 3D (§3.6.4, §4.4.3; it used a Keras version).
Hand-written because the official code (custom CUDA ops, pickled networks) is not a library and
cannot be loaded safely here; the structure follows the paper:

- Mapping network: pixel-norm z (latent_dim) -> 8 equalised-lr fully connected layers (lr x0.01,
  leaky ReLU) -> w. Style mixing (p = 0.9) in training: two w's with one random crossover layer.
- Synthesis network, "skip" architecture (the paper's generator choice): a learned 4x4 constant;
  per resolution an upsampling and a plain modulated 3x3 conv (weights scaled by the per-sample
  style, then demodulated to unit output variance), per-pixel noise with a learned strength, bias
  and leaky ReLU x sqrt(2); a modulated 1x1 "toRGB" (here to 2 channels, no demodulation) whose
  outputs are upsampled and summed. Upsampling is bilinear before the conv instead of the
  paper's transposed conv with a [1,3,3,1] FIR filter (no custom ops; same receptive field).
- Discriminator, "residual" architecture (the paper's choice): 1x1 fromRGB, residual down blocks
  (3x3 conv, then 3x3 conv with stride 2; 1x1 stride-2 skip; sum / sqrt 2) to 4x4, minibatch
  standard deviation (group 4), 3x3 conv, two fully connected layers -> one logit. Every stride-2
  conv is preceded by the [1,3,3,1] FIR blur (normalised outer product, zero padding as in the
  port's `ConvLayer(downsample=True)`), so the downsampling is anti-aliased.
- Equalised learning rate everywhere: weights stored N(0, 1), scaled by 1/sqrt(fan_in) at run time.
- Losses: non-saturating logistic. Lazy R1 on real inputs every 16 D steps (gamma `r1_gamma`;
  default the StyleGAN2-ADA heuristic 0.0002 R^2 / batch 8), lazy path-length regularisation every
  4 G steps (weight `pl_weight` 2, half batch, EMA target with decay 0.01); the lazy steps are
  separate optimiser updates, with Adam's lr and betas corrected by k/(k+1) as in the paper.
  Optional DiffAugment on D's inputs (`diffaug`; the thesis notes ADA-style augmentation).
- Outputs are not squashed in training (as in the paper); `generate` clamps to [-1, 1].

Thesis hyperparameters (Tables 4.14/4.15) as `THESIS_DEFAULTS`: Adam lr 1e-4 for G and D, betas
(0, 0.99), batch 8; latent 512 (the size behind its Figure 5.8). Channels per resolution:
min(16384 / res, 512) x `width` (StyleGAN2-ADA's 256 config; the port's channel multiplier 1).
Two named presets (`synthct.presets`, `model.preset`): "thesis" (configs/stylegan2-128.yaml) and
"reference", the training defaults of rosinality/stylegan2-pytorch (lr 0.002, batch 16, R1 gamma
10, EMA 0.99778; configs/stylegan2-128-reference.yaml) — the thesis learning rate is 20x lower.
The discriminator equals the port's at channel multiplier 1 (2 input channels) when its weights
are transplanted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthct.config import DataConfig, ModelConfig
from synthct.models.base import StepContext
from synthct.models.diffaug import device_generator, diff_augment
from synthct.models.layers import trainable
from synthct.models.slice_gan import SliceGAN, check_pair_batch

THESIS_DEFAULTS: dict = {"latent_dim": 512, "lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.0, 0.99)}
PAIR_CHANNELS = 2
CHANNEL_BASE, CHANNEL_MAX = 16384, 512
MAPPING_LAYERS, MAPPING_LR_MUL = 8, 0.01
STYLE_MIXING = 0.9
R1_EVERY, PL_EVERY = 16, 4
PL_DECAY, PL_BATCH_SHRINK = 0.01, 2
MBSTD_GROUP = 4
BLUR_TAPS = (1, 3, 3, 1)  # FIR low-pass of D's downsampling (the paper's and the port's)
SQRT2 = math.sqrt(2.0)


def channels(res: int, width: float = 1.0) -> int:
    """Feature channels at side `res`: min(16384 / res, 512) x width, at least 8."""
    return max(8, round(min(CHANNEL_BASE // res, CHANNEL_MAX) * width))


def auto_r1_gamma(resolution: int, batch: int = 8) -> float:
    """StyleGAN2-ADA's R1 heuristic 0.0002 R^2 / batch (thesis batch 8)."""
    return 0.0002 * resolution**2 / batch


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (0.2) with the sqrt(2) gain that keeps activations at unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights N(0, 1)/lr_mul, scaled at run time)."""

    def __init__(
        self, c_in: int, c_out: int, bias_init: float = 0.0, lr_mul: float = 1.0, act: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init)))
        self.scale, self.lr_mul, self.act = lr_mul / math.sqrt(c_in), lr_mul, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu(out) if self.act else out


def blur_kernel(taps: tuple[int, ...] = BLUR_TAPS) -> torch.Tensor:
    """(k, k) separable low-pass filter: the outer product of `taps` normalised to sum 1."""
    t = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(t, t)
    return k / k.sum()


def blur(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Zero-pad (B, C, H, W) by pad = (before, after) on both axes, then filter every channel
    with the (k, k) `kernel` (symmetric, so correlation = convolution): H' = H + sum(pad) - k + 1."""
    c = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = kernel.to(x.dtype).expand(c, 1, *kernel.shape[-2:])
    return F.conv2d(x, weight, groups=c)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: stride 1 with 'same' padding, or with `down` the
    port's filtered downsampling — pad, [1,3,3,1] blur, k x k conv with stride 2 (s -> s/2).

    Anti-aliasing before the stride keeps D from seeing high frequencies folded into low ones:
    of the energy between the new and the old Nyquist frequency, a 2x2 box average folds back
    |cos(pi f)|^2 ~ 18 % on average, the blur |cos(pi f)|^6 ~ 2 %.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, down: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.down = 1 / math.sqrt(c_in * kernel * kernel), down
        self.padding = 0 if down else kernel // 2
        p = len(BLUR_TAPS) - 2 + kernel - 1  # the port's ConvLayer padding for factor 2
        self.blur_pad = ((p + 1) // 2, p // 2)
        # a constant, not state: kept out of the state dict (checkpoints hold parameters only)
        self.register_buffer("blur_kernel", blur_kernel(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = blur(x, self.blur_kernel, self.blur_pad)
        stride = 2 if self.down else 1
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=stride, padding=self.padding)


class ModulatedConv2d(nn.Module):
    """(B, c_in, H, W), w (B, w_dim) -> (B, c_out, H', W'): per-sample modulated [demodulated]
    conv, as one grouped convolution; `upsample` doubles H and W (bilinear) first."""

    def __init__(self, c_in: int, c_out: int, kernel: int, w_dim: int, demodulate: bool = True,
                 upsample: bool = False):  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, kernel, kernel))
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # styles start at 1
        self.scale = 1 / math.sqrt(c_in * kernel * kernel)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, c_in = x.shape[:2]
        style = self.affine(w).view(b, 1, c_in, 1, 1)
        weight = self.weight * self.scale * style  # (B, c_out, c_in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum((2, 3, 4), keepdim=True) + 1e-8)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, wd = x.shape[-2:]
        out = F.conv2d(
            x.reshape(1, b * c_in, h, wd),
            weight.reshape(-1, c_in, *weight.shape[-2:]).to(x.dtype),
            padding=self.padding,
            groups=b,
        )
        return out.reshape(b, -1, h, wd)


class StyledConv(nn.Module):
    """Modulated 3x3 conv + noise (learned strength) + bias + leaky ReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, side: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))
        fixed = torch.randn(1, 1, side, side, generator=torch.Generator().manual_seed(side))
        self.register_buffer("noise_const", fixed)  # eval-mode noise: `generate` depends on z only

    def forward(self, x: torch.Tensor, w: torch.Tensor, g: torch.Generator | None = None):
        x = self.conv(x, w)
        if self.training:
            b, _, h, wd = x.shape
            noise = torch.randn(b, 1, h, wd, generator=g, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        return lrelu(x + self.noise_strength * noise + self.bias)


class ToPair(nn.Module):
    """The "toRGB" layer for 2 channels: modulated 1x1 conv, no demodulation, plus skip."""

    def __init__(self, c_in: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, PAIR_CHANNELS, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, PAIR_CHANNELS, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None):
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return out


class MappingNetwork(nn.Module):
    """z (B, latent_dim) -> w (B, latent_dim)."""

    def __init__(self, latent_dim: int, layers: int = MAPPING_LAYERS):
        super().__init__()
        self.net = nn.Sequential(
            *(EqualLinear(latent_dim, latent_dim, lr_mul=MAPPING_LR_MUL, act=True)
              for _ in range(layers))
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        return self.net(z)


class StyleGAN2Generator(nn.Module):
    """z (B, latent_dim) -> pair (B, 2, R, R), unbounded (about [-1, 1] once trained)."""

    def __init__(self, resolution: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        self.resolution, self.latent_dim = resolution, latent_dim
        self.num_ws = 2 * int(math.log2(resolution)) - 2
        self.mapping = MappingNetwork(latent_dim)
        c4 = channels(4, width)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        self.conv4 = StyledConv(c4, c4, latent_dim, 4)
        self.out4 = ToPair(c4, latent_dim)
        self.blocks = nn.ModuleList()
        for k in range(3, int(math.log2(resolution)) + 1):
            side = 2**k
            c_in, c_out = channels(side // 2, width), channels(side, width)
            self.blocks.append(
                nn.ModuleList(
                    [
                        StyledConv(c_in, c_out, latent_dim, side, upsample=True),
                        StyledConv(c_out, c_out, latent_dim, side),
                        ToPair(c_out, latent_dim),
                    ]
                )
            )

    def styles(
        self, z: torch.Tensor, z_mix: torch.Tensor | None = None, cutoff: int | None = None
    ) -> torch.Tensor:
        """ws (B, num_ws, latent_dim): w(z) for every layer, or w(z_mix) from layer `cutoff` on."""
        ws = self.mapping(z).unsqueeze(1).repeat(1, self.num_ws, 1)
        if z_mix is not None and cutoff is not None:
            ws = torch.cat([ws[:, :cutoff], self.mapping(z_mix).unsqueeze(1)
                            .expand(-1, self.num_ws - cutoff, -1)], dim=1)  # fmt: skip
        return ws

    def synthesis(self, ws: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        """ws (B, num_ws, latent_dim) -> pair (B, 2, R, R)."""
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        x = self.conv4(x, ws[:, 0], g)
        skip = self.out4(x, ws[:, 1])
        i = 1
        for up, conv, to_pair in self.blocks:
            x = up(x, ws[:, i], g)
            x = conv(x, ws[:, i + 1], g)
            skip = to_pair(x, ws[:, i + 2], skip)
            i += 2
        return skip

    def forward(self, z: torch.Tensor, g: torch.Generator | None = None, **mix) -> torch.Tensor:
        return self.synthesis(self.styles(z, **mix), g)


class DiscriminatorBlock(nn.Module):
    """Residual down block (B, c_in, s, s) -> (B, c_out, s/2, s/2): 3x3 conv, then a filtered
    3x3 stride-2 conv; skip: filtered 1x1 stride-2 conv without bias; sum / sqrt 2 (the port's
    `ResBlock`)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = EqualConv2d(c_in, c_in, 3)
        self.conv2 = EqualConv2d(c_in, c_out, 3, down=True)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = lrelu(self.conv2(lrelu(self.conv1(x))))
        return (y + self.skip(x)) / SQRT2


def minibatch_stddev(x: torch.Tensor, group: int = MBSTD_GROUP) -> torch.Tensor:
    """Append one channel: the std over groups of samples, averaged over features and pixels.
    Groups have the largest size <= `group` dividing the batch (any batch size works)."""
    b, c, h, w = x.shape
    size = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = x.float().reshape(size, -1, c, h, w)  # sample i is in column i % (b / size)
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (b / size,)
    y = y.reshape(-1, 1, 1, 1).repeat(size, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(nn.Module):
    """pair (B, 2, R, R) -> logit (B, 1)."""

    def __init__(self, resolution: int, width: float = 1.0):
        super().__init__()
        self.from_pair = EqualConv2d(PAIR_CHANNELS, channels(resolution, width), 1)
        sides = [2**k for k in range(int(math.log2(resolution)), 2, -1)]  # R .. 8
        self.blocks = nn.Sequential(
            *(DiscriminatorBlock(channels(s, width), channels(s // 2, width)) for s in sides)
        )
        c4 = channels(4, width)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, act=True)
        self.out = EqualLinear(c4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(lrelu(self.from_pair(x)))
        x = lrelu(self.conv(minibatch_stddev(x)))
        return self.out(self.fc(x.flatten(1)))


class StyleGAN2(SliceGAN):
    """StyleGAN2 on (B, 2, R, R) image + mask slice pairs in [-1, 1] (see module docstring)."""

    kind = "stylegan2"
    THESIS_DEFAULTS = THESIS_DEFAULTS

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__(model_cfg, data_cfg)
        own = model_cfg.section
        self.r1_gamma = auto_r1_gamma(self.resolution) if own.r1_gamma is None else own.r1_gamma
        self.pl_weight = own.pl_weight
        self.G = StyleGAN2Generator(self.resolution, model_cfg.latent_dim, model_cfg.width)
        self.D = StyleGAN2Discriminator(self.resolution, model_cfg.width)
        self.register_buffer("pl_mean", torch.zeros(()))  # path-length EMA target (checkpointed)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(2, R, R): one generated image + mask slice pair."""
        return (PAIR_CHANNELS, self.resolution, self.resolution)

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        """Adam for G and D; lr and betas corrected for the lazy regularisation intervals."""
        c = self.cfg

        def adam(params, lr: float, every: int) -> torch.optim.Optimizer:
            k = every / (every + 1)
            betas = (c.betas[0] ** k, c.betas[1] ** k)
            return torch.optim.Adam(params, lr * k, betas=betas, eps=c.eps, fused=fused)

        return {"G": adam(self.G.parameters(), c.lr_g, PL_EVERY),
                "D": adam(self.D.parameters(), c.lr_d, R1_EVERY)}  # fmt: skip

    def _mixing(self, ctx: StepContext, z_shape, g: torch.Generator) -> dict:
        """Style-mixing arguments for G (decided on the CPU generator: no device sync)."""
        if float(torch.rand((), generator=ctx.generator)) >= STYLE_MIXING:
            return {}
        cutoff = int(torch.randint(1, self.G.num_ws, (1,), generator=ctx.generator))
        return {"z_mix": torch.randn(z_shape, generator=g, device=ctx.device), "cutoff": cutoff}

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """D update (+ lazy R1), G update (+ lazy path length) on real pairs (B, 2, R, R).

        Returns d_loss, g_loss, d_real, d_fake (mean logits), r1 and pl (the last penalties,
        0 on steps without them).
        """
        check_pair_batch(real, self.resolution)
        g = device_generator(ctx)
        real = real.to(ctx.device)
        b = real.shape[0]
        shape = (b, self.latent_dim)
        r1 = pl = real.new_zeros(())

        with trainable([self.D], [self.G]):
            z = torch.randn(shape, generator=g, device=ctx.device)
            with torch.no_grad(), ctx.autocast():
                fake = self.G(z, g, **self._mixing(ctx, shape, g))
            with ctx.autocast():
                logit_real = self.D(diff_augment(real, self.policy, g)).float()
                logit_fake = self.D(diff_augment(fake.float(), self.policy, g)).float()
            d_loss = F.softplus(logit_fake).mean() + F.softplus(-logit_real).mean()
            ctx.update("D", d_loss)
            if self.r1_gamma > 0 and ctx.step % R1_EVERY == 0:  # fp32: double backward
                x = diff_augment(real, self.policy, g).detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.D(x).sum(), x, create_graph=True)
                r1 = grad.square().sum((1, 2, 3)).mean()
                ctx.update("D", r1 * (self.r1_gamma / 2 * R1_EVERY))

        with trainable([self.G], [self.D]):
            z = torch.randn(shape, generator=g, device=ctx.device)
            with ctx.autocast():
                fake = self.G(z, g, **self._mixing(ctx, shape, g))
                logit_g = self.D(diff_augment(fake.float(), self.policy, g)).float()
            g_loss = F.softplus(-logit_g).mean()
            ctx.update("G", g_loss)
            if self.pl_weight > 0 and ctx.step % PL_EVERY == 0:
                pl = self._path_length(max(1, b // PL_BATCH_SHRINK), ctx, g)
                ctx.update("G", pl * (self.pl_weight * PL_EVERY))

        values = torch.stack(
            [d_loss.detach(), g_loss.detach(), logit_real.detach().mean(),
             logit_fake.detach().mean(), r1.detach(), pl.detach()]
        ).tolist()  # fmt: skip
        keys = ("d_loss", "g_loss", "d_real", "d_fake", "r1", "pl")
        return dict(zip(keys, values, strict=True))

    def _path_length(self, n: int, ctx: StepContext, g: torch.Generator) -> torch.Tensor:
        """mean (|J_w^T y| - a)^2 over n samples, y ~ N(0, 1)/sqrt(HW); updates the EMA a."""
        shape = (n, self.latent_dim)
        ws = self.G.styles(torch.randn(shape, generator=g, device=ctx.device),
                           **self._mixing(ctx, shape, g))  # fmt: skip
        fake = self.G.synthesis(ws, g)
        h, w = fake.shape[-2:]
        y = torch.randn(fake.shape, generator=g, device=ctx.device) / math.sqrt(h * w)
        (grad,) = torch.autograd.grad((fake * y).sum(), ws, create_graph=True)
        lengths = grad.square().sum(2).mean(1).sqrt()  # (n,)
        with torch.no_grad():
            self.pl_mean.lerp_(lengths.mean().detach(), PL_DECAY)
        return (lengths - self.pl_mean).square().mean()

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> slice pairs (B, 2, R, R) clamped to [-1, 1] (channel 0 CT,
        1 mask), eval mode (fixed noise maps, no mixing); the previous mode is restored."""
        was_training = self.G.training
        self.G.eval()
        try:
            return self.G(z).clamp(-1, 1)
        finally:
            self.G.train(was_training)
