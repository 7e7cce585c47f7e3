"""HA-GAN (Sun et al. 2022): hierarchical amortised GAN for 3D volumes (a `GenerativeModel`).

Hand-written because no library ships it: the structure follows the official PyTorch models
(Model_HA_GAN_128/256) and training script, generalised to S in {32, 64, 128, 256} with a channel
`width` multiplier and `latent_dim`. At S = 128/256, width 1.0, latent 1024 the
parameter counts equal the reference (tested).

Volumes are (B, 1, X, Y, Z) tensors in [-1, 1], the packed image+mask pair (VolumeView). The
high-resolution slab runs along axis X (tensor dim 2), orthogonal to the packing axis Z, so every
slab holds image and mask voxels.

    G:  z (+ one-hot centre) -> Linear -> C x 4^3 -> 5 conv+GN+ReLU blocks with x2 nearest
        upsampling -> latent (C_l, S/4, S/4, S/4)
        G^L: latent -> 3 convs -> low-res volume (1, S/4, S/4, S/4), tanh
        G^H: latent slab (S/32 latent slices along X) -> 2 x (x2 upsample + conv) -> slab
             (1, S/8, S, S), tanh. Without a crop (sampling) G^H runs on the whole latent -> S^3.
    D:  D^H(slab, crop position) and D^L(low-res volume), spectral norm, LeakyReLU(0.2);
        logit = mean of the two (auxiliary centre head likewise when conditioned). Optional
        (`hagan.minibatch_std` > 0, off in the reference): a minibatch standard-deviation
        feature (Karras et al. 2018) appended before D^H's first linear layer and D^L's last
        conv, so D sees how much the samples of a batch differ and a collapsed generator (all
        samples alike) is told apart from real data. Optional (`hagan.mode_seeking` > 0,
        off in the reference): the generator also pays the mode-seeking term of MSGAN (Mao et
        al. 2019), large when two latents give nearly the same volume.
    E:  real slab -> latent slab; Sub_E: whole latent (E on every slab) -> z. L1 only.

Defects of the reference that are fixed here:
  (a) the real crop index was drawn at voxel granularity while the fake slab was cut at latent
      granularity (crop // 4), misaligning them by up to 3 slices: crops are now multiples of 4;
  (b) `squeeze()` dropped the batch dim at per-device batch 1: `flatten(1)` is used;
  (c) the real low-res target was nearest-subsampled (aliasing, small tumours vanish): it is now
      an area (4^3 average) downsampling computed per half, so image and mask never mix and the
      mask half becomes a partial-volume occupancy in [-1, 1];
  (d) the reference loader was not shuffled (centre-ordered data collapsed): shuffling is the
      training loop's job (synthct.train), not the model's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from synthct.config import DataConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models.base import GenerativeModel, StepContext
from synthct.models.layers import channels, conv_gn_relu, one_hot, sn_conv3d, sn_linear, trainable
from synthct.views import VolumeView

LATENT_STRIDE = 4  # full-res voxels per latent voxel (the latent lives at S/4)


def check_size(size: int) -> None:
    """HA-GAN needs a power of two >= 32 (slab = S/8 voxels = S/32 latent slices >= 1)."""
    if size < 32 or size & (size - 1):
        raise ConfigError(
            f"HA-GAN needs a power-of-two volume size >= 32 (32, 64, 128, 256), got {size}"
        )


def slab_thickness(size: int) -> int:
    """Full-resolution slices per training slab (S/8: 16 at S=128, 32 at S=256)."""
    return size // 8


def crop_positions(size: int) -> list[int]:
    """Valid slab start indices along X: multiples of 4 in [0, 7S/8] (latent-aligned, fix a)."""
    return list(range(0, size - slab_thickness(size) + 1, LATENT_STRIDE))


def sample_crop_index(size: int, generator: torch.Generator | None = None) -> int:
    """A uniformly drawn entry of `crop_positions(size)`, reproducible through `generator`."""
    positions = crop_positions(size)
    return positions[int(torch.randint(len(positions), (1,), generator=generator))]


def extract_slab(volume: torch.Tensor, crop_idx: int) -> torch.Tensor:
    """High-res training slab: (B, C, S, S, S) -> (B, C, S/8, S, S), rows crop_idx.. along X."""
    size = volume.shape[2]
    if crop_idx not in crop_positions(size):
        raise ValueError(
            f"crop index {crop_idx} is not latent-aligned for S={size}; "
            f"expected a multiple of {LATENT_STRIDE} in [0, {size - slab_thickness(size)}]"
        )
    return volume[:, :, crop_idx : crop_idx + slab_thickness(size)]


def lowres_target(volume: torch.Tensor, packing: str = "z") -> torch.Tensor:
    """Anti-aliased low-res real target (fix c): (B, C, S, S, S) -> (B, C, S/4, S/4, S/4).

    Each 4^3 block is averaged (area downsampling). With packing "z" the image/mask boundary at
    z = S/2 is a multiple of 4, so no block mixes image and mask. With "interleave" (even z =
    image, odd z = mask) image and mask slices are pooled separately and re-interleaved, so the
    low-res volume keeps the same convention (even z = image).
    """
    if packing == "z":
        return F.avg_pool3d(volume, LATENT_STRIDE)
    if packing == "interleave":
        image = F.avg_pool3d(volume[..., 0::2], LATENT_STRIDE)
        mask = F.avg_pool3d(volume[..., 1::2], LATENT_STRIDE)
        return torch.stack([image, mask], dim=-1).flatten(-2)
    raise ValueError(f"packing must be 'z' or 'interleave', got {packing!r}")


def minibatch_stddev(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append one channel to x (B, C, ...): the standard deviation over groups of samples,
    averaged over channels and positions (Karras et al. 2018). Groups have the largest size
    <= `group` that divides the batch; sample i is in group i % (B / size)."""
    b = x.shape[0]
    size = max(d for d in range(1, min(group, b) + 1) if b % d == 0)
    y = x.float().reshape(size, -1, *x.shape[1:])
    y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().flatten(1).mean(1)  # (B / size,)
    y = y.repeat(size).reshape(b, 1, *([1] * (x.ndim - 2))).expand(b, 1, *x.shape[2:])
    return torch.cat([x, y.to(x.dtype)], dim=1)


def mode_seeking_loss(
    z: torch.Tensor, slab: torch.Tensor, small: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Mode-seeking term (Mao et al. 2019, MSGAN): 1 / (d_img / d_z + eps), where sample i of
    the first half of the batch is paired with sample i of the second half, d_img is the mean
    absolute difference of their outputs (slab and low-res volume averaged) and d_z that of
    their latents. Small when different latents give different volumes; a generator that
    ignores z pays up to 1 / eps."""
    half = z.shape[0] // 2
    a, b = slice(0, half), slice(half, 2 * half)
    d_img = ((slab[a] - slab[b]).abs().mean() + (small[a] - small[b]).abs().mean()) / 2
    d_z = (z[a] - z[b]).abs().mean()
    return 1.0 / (d_img / d_z + eps)


def _log2(n: int) -> int:
    return int(round(math.log2(n)))


class Generator(nn.Module):
    """Shared trunk G^A, low-res branch G^L and high-res slab branch G^H."""

    def __init__(self, size: int, latent_dim: int, width: float = 1.0, n_centres: int = 0):
        super().__init__()
        check_size(size)
        self.size, self.n_centres = size, n_centres
        c512, c256, c128 = (channels(c, width) for c in (512, 256, 128))
        self.latent_channels = c64 = channels(64, width)
        self.fc = nn.Linear(latent_dim + n_centres, c512 * 4**3)
        widths = [c512, c512, c512, c256, c128, c64]
        self.trunk = nn.ModuleList(
            conv_gn_relu(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        # 4^3 -> S/4 needs log2(S/16) doublings, placed before trunk blocks 2, 3, ...
        self.n_up = _log2(size // 16)
        self.high = nn.Sequential(  # G^H: two x2 stages
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv_gn_relu(c64, channels(32, width)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv3d(channels(32, width), 1, 3, padding=1),
            nn.Tanh(),
        )
        self.low = nn.Sequential(  # G^L: 64 -> 32 -> 16 -> 1 at S/4
            conv_gn_relu(c64, channels(32, width)),
            conv_gn_relu(channels(32, width), channels(16, width)),
            nn.Conv3d(channels(16, width), 1, 3, padding=1),
            nn.Tanh(),
        )

    def latent(self, z: torch.Tensor, onehot: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim) [+ one-hot (B, n_centres)] -> shared latent (B, C_l, S/4, S/4, S/4)."""
        if onehot is not None:
            z = torch.cat([z, onehot.to(z.dtype)], dim=1)
        h = self.fc(z).view(z.shape[0], -1, 4, 4, 4)
        for i, block in enumerate(self.trunk):
            if 1 <= i <= self.n_up:
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(h)
        return h

    def decode_high(self, latent: torch.Tensor) -> torch.Tensor:
        """G^H: latent (B, C_l, x, S/4, S/4) -> (B, 1, 4x, S, S) in [-1, 1]."""
        return self.high(latent)

    def decode_low(self, latent: torch.Tensor) -> torch.Tensor:
        """G^L: latent (B, C_l, S/4, S/4, S/4) -> low-res volume (B, 1, S/4, S/4, S/4)."""
        return self.low(latent)

    def forward(
        self, z: torch.Tensor, onehot: torch.Tensor | None = None, crop_idx: int | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Without `crop_idx`: the full volume (B, 1, S, S, S). With it (training): the slab
        (B, 1, S/8, S, S) starting at X = crop_idx and the low-res volume (B, 1, S/4, S/4, S/4).
        """
        h = self.latent(z, onehot)
        if crop_idx is None:
            return self.decode_high(h)
        k = crop_idx // LATENT_STRIDE
        slab = self.decode_high(h[:, :, k : k + slab_thickness(self.size) // LATENT_STRIDE])
        return slab, self.decode_low(h)


def _sn_stack(c_in: int, outs: list[int]) -> tuple[nn.ModuleList, int]:
    """Spectral-norm k4 s2 p1 convs c_in -> outs[0] -> outs[1] ...; returns (convs, last c)."""
    convs = nn.ModuleList()
    for c_out in outs:
        convs.append(sn_conv3d(c_in, c_out, 4, stride=2, padding=1))
        c_in = c_out
    return convs, c_in


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class Discriminator(nn.Module):
    """D^H on (slab, position) and D^L on the low-res volume; returns (logit, class logits)."""

    def __init__(self, size: int, width: float = 1.0, n_centres: int = 0, mbstd: int = 0):
        super().__init__()
        check_size(size)
        self.size, self.n_centres, self.mbstd = size, n_centres, mbstd
        extra = 1 if mbstd > 0 else 0  # the minibatch-std feature
        c = {k: channels(k, width) for k in (16, 32, 64, 128, 256, 512)}
        # D^H: (S/8, S, S) -> (4, 32, 32) by log2(S/32) full-stride convs, then the fixed tail
        n_full = _log2(size // 32)
        self.high_full, c_in = _sn_stack(1, [c[64 >> (n_full - 1 - i)] for i in range(n_full)])
        self.high_tail = nn.ModuleList(
            [
                sn_conv3d(c_in, c[128], (2, 4, 4), stride=2, padding=(0, 1, 1)),  # (2, 16, 16)
                sn_conv3d(c[128], c[256], (2, 4, 4), stride=2, padding=(0, 1, 1)),  # (1, 8, 8)
                sn_conv3d(c[256], c[512], (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1)),
                sn_conv3d(c[512], c[128], (1, 4, 4)),  # (1, 1, 1)
            ]
        )
        self.fc1 = sn_linear(c[128] + 1 + extra, c[64])  # + 1: the slab position
        self.fc2 = sn_linear(c[64], 1)
        self.fc_class = sn_linear(c[64], n_centres) if n_centres > 0 else None
        # D^L: (S/4)^3 -> 4^3 by log2(S/16) convs, then k4 -> 1 x 1 x 1
        n_low = _log2(size // 16)
        self.low, c_in = _sn_stack(1, [c[256 >> (n_low - 1 - i)] for i in range(n_low)])
        self.low_out = sn_conv3d(c_in + extra, 1 + n_centres, 4)

    def forward(
        self, slab: torch.Tensor, small: torch.Tensor, crop_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """slab (B, 1, S/8, S, S), small (B, 1, S/4, S/4, S/4) -> logit (B, 1), class (B, n)."""
        h = slab
        for conv in (*self.high_full, *self.high_tail):
            h = _leaky(conv(h))
        h = h.flatten(1)  # not squeeze(): batch 1 must keep its batch dim (fix b)
        if self.mbstd > 0:
            h = minibatch_stddev(h, self.mbstd)
        position = crop_idx / (self.size - slab_thickness(self.size))  # crop_idx / (7S/8)
        h = torch.cat([h, h.new_full((h.shape[0], 1), position)], dim=1)
        h = _leaky(self.fc1(h))
        logit_high = self.fc2(h)
        s = small
        for conv in self.low:
            s = _leaky(conv(s))
        if self.mbstd > 0:
            s = minibatch_stddev(s, self.mbstd)
        s = self.low_out(s).flatten(1)
        logit = (logit_high + s[:, :1]) / 2
        if self.fc_class is None:
            return logit, None
        return logit, (self.fc_class(h) + s[:, 1:]) / 2


class Encoder(nn.Module):
    """E^H: slab (B, 1, x, S, S) -> latent slab (B, C_l, x/4, S/4, S/4)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        c32, c64 = channels(32, width), channels(64, width)
        self.net = nn.Sequential(
            conv_gn_relu(1, c32, 4, stride=2, padding=1),
            conv_gn_relu(c32, c32, 3),
            conv_gn_relu(c32, c64, 4, stride=2, padding=1),
        )

    def forward(self, slab: torch.Tensor) -> torch.Tensor:
        return self.net(slab)


class SubEncoder(nn.Module):
    """E^G: whole latent (B, C_l, S/4, S/4, S/4) -> z (B, latent_dim)."""

    def __init__(self, size: int, latent_dim: int, width: float = 1.0):
        super().__init__()
        check_size(size)
        n_down = _log2(size // 16)
        outs = [channels(256 >> (n_down - 1 - i), width) for i in range(n_down)]
        blocks, c_in = [], channels(64, width)
        for c_out in outs:
            blocks.append(conv_gn_relu(c_in, c_out, 4, stride=2, padding=1))
            c_in = c_out
        self.net = nn.Sequential(*blocks, nn.Conv3d(c_in, latent_dim, 4))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent).flatten(1)  # (B, latent_dim) even at batch 1 (fix b)


class HAGAN(GenerativeModel):
    """HA-GAN with networks `G`, `D`, `E`, `Sub_E` and optimisers of the same names.

    S (`data_cfg.size`) is a power of two >= 32; the data's packing selects the low-res target
    pooling (see `lowres_target`). Settings: the common ones of `model_cfg` and its `hagan`
    section (lr_e, n_centres, lambda_class, minibatch_std, mode_seeking).
    """

    kind = "hagan"

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__()
        size, packing = data_cfg.size, data_cfg.packing
        check_size(size)
        if packing not in ("z", "interleave"):
            raise ConfigError(f"packing must be 'z' or 'interleave', got {packing!r}")
        self.cfg, self.size, self.packing = model_cfg, size, packing
        self.view = VolumeView(data_cfg)
        own = model_cfg.section
        self.latent_dim, self.n_centres = model_cfg.latent_dim, own.n_centres
        self.lr_e, self.lambda_class = own.lr_e, own.lambda_class
        self.mode_seeking = own.mode_seeking
        self.G = Generator(size, model_cfg.latent_dim, model_cfg.width, own.n_centres)
        self.D = Discriminator(size, model_cfg.width, own.n_centres, own.minibatch_std)
        self.E = Encoder(model_cfg.width)
        self.Sub_E = SubEncoder(size, model_cfg.latent_dim, model_cfg.width)

    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        """Adam(betas, eps) per network; lr G / D / E, Sub_E uses lr_e (reference)."""
        c = self.cfg

        def adam(net: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(net.parameters(), lr=lr, betas=c.betas, eps=c.eps, fused=fused)

        return {
            "G": adam(self.G, c.lr_g),
            "D": adam(self.D, c.lr_d),
            "E": adam(self.E, self.lr_e),
            "Sub_E": adam(self.Sub_E, self.lr_e),
        }

    def real_targets(self, real: torch.Tensor, crop_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(slab (B, 1, S/8, S, S), low-res target (B, 1, S/4, S/4, S/4)) of a real batch."""
        return extract_slab(real, crop_idx), lowres_target(real, self.packing)

    def _noise(self, batch: int, ctx: StepContext) -> torch.Tensor:
        return torch.randn(batch, self.latent_dim, generator=ctx.generator).to(ctx.device)

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """D update, G update, then (if ctx.train_encoder) E and Sub_E updates.

        real: (B, 1, S, S, S) in [-1, 1]; centre: (B,) centre indices (required when
        n_centres > 0). Returns python floats: d_loss, g_loss, d_real, d_fake (mean D
        probabilities), e_loss, sub_e_loss, and d_class/g_class when conditioned.
        """
        if real.ndim != 5 or tuple(real.shape[1:]) != (1,) + (self.size,) * 3:
            raise ValueError(
                f"expected a real batch (B, 1, {self.size}, {self.size}, {self.size}), "
                f"got {tuple(real.shape)}"
            )
        real = real.to(ctx.device)
        batch = real.shape[0]
        onehot = one_hot(centre, self.n_centres, batch, ctx.device)
        labels = None if onehot is None else onehot.argmax(1)
        crop = sample_crop_index(self.size, ctx.generator)
        real_slab, real_small = self.real_targets(real, crop)
        ones, zeros = real.new_ones(batch, 1), real.new_zeros(batch, 1)
        out: dict[str, torch.Tensor] = {}

        # Phase 1: discriminator (real vs fake at the same, aligned slab position)
        with trainable([self.D], [self.G, self.E, self.Sub_E]):
            z = self._noise(batch, ctx)
            with ctx.autocast():
                with torch.no_grad():
                    fake_slab, fake_small = self.G(z, onehot, crop)
                logit_real, class_real = self.D(real_slab, real_small, crop)
                logit_fake, class_fake = self.D(fake_slab, fake_small, crop)
            logit_real, logit_fake = logit_real.float(), logit_fake.float()
            d_loss = F.binary_cross_entropy_with_logits(
                logit_real, ones
            ) + F.binary_cross_entropy_with_logits(logit_fake, zeros)
            if labels is not None:  # auxiliary centre classifier on real and fake (AC-GAN)
                out["d_class"] = F.cross_entropy(class_real.float(), labels) + F.cross_entropy(
                    class_fake.float(), labels
                )
                d_loss = d_loss + out["d_class"]
            ctx.update("D", d_loss)
        out["d_loss"] = d_loss.detach()
        out["d_real"] = torch.sigmoid(logit_real.detach()).mean()
        out["d_fake"] = torch.sigmoid(logit_fake.detach()).mean()

        # Phase 2: generator (non-saturating), fresh noise, same slab position
        with trainable([self.G], [self.D, self.E, self.Sub_E]):
            z = self._noise(batch, ctx)
            with ctx.autocast():
                fake_slab, fake_small = self.G(z, onehot, crop)
                logit, class_logit = self.D(fake_slab, fake_small, crop)
            g_loss = F.binary_cross_entropy_with_logits(logit.float(), ones)
            if self.mode_seeking > 0 and batch >= 2:
                out["g_ms"] = mode_seeking_loss(z, fake_slab.float(), fake_small.float())
                g_loss = g_loss + self.mode_seeking * out["g_ms"]
            if labels is not None:
                out["g_class"] = F.cross_entropy(class_logit.float(), labels)
                g_loss = g_loss + self.lambda_class * out["g_class"]
            ctx.update("G", g_loss)
        out["g_loss"] = g_loss.detach()

        if ctx.train_encoder:
            out.update(self._encoder_phase(real, real_slab, real_small, crop, onehot, ctx))
        return dict(zip(out, torch.stack([v.float() for v in out.values()]).tolist(), strict=True))

    def _encoder_phase(self, real, real_slab, real_small, crop, onehot, ctx) -> dict:
        # Phase 3: E reconstructs the real slab through the frozen G^H
        with trainable([self.E], [self.G, self.D, self.Sub_E]):
            with ctx.autocast():
                rec = self.G.decode_high(self.E(real_slab))
            e_loss = F.l1_loss(rec.float(), real_slab)
            ctx.update("E", e_loss)
        # Phase 4: Sub_E maps the whole E-latent to z; reconstructs slab and low-res volume
        with trainable([self.Sub_E], [self.G, self.D, self.E]):
            with ctx.autocast():
                with torch.no_grad():
                    latent = self.encode_latent(real)
                rec_slab, rec_small = self.G(self.Sub_E(latent), onehot, crop)
            sub_e_loss = (
                F.l1_loss(rec_slab.float(), real_slab) + F.l1_loss(rec_small.float(), real_small)
            ) / 2
            ctx.update("Sub_E", sub_e_loss)
        return {"e_loss": e_loss.detach(), "sub_e_loss": sub_e_loss.detach()}

    def encode_latent(self, volume: torch.Tensor) -> torch.Tensor:
        """E on every slab along X, concatenated: (B, 1, S, S, S) -> (B, C_l, S/4, S/4, S/4)."""
        t = slab_thickness(self.size)
        return torch.cat([self.E(volume[:, :, i : i + t]) for i in range(0, self.size, t)], dim=2)

    @torch.no_grad()
    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """Amortised inversion: volume (B, 1, S, S, S) -> z (B, latent_dim) via E and Sub_E."""
        return self.Sub_E(self.encode_latent(volume))

    def _centre_for(self, z: torch.Tensor, centre: torch.Tensor | None) -> torch.Tensor | None:
        if self.n_centres > 0 and centre is None:  # no centre asked: cycle through all centres
            centre = torch.arange(z.shape[0]) % self.n_centres
        return one_hot(centre, self.n_centres, z.shape[0], z.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """z (B, latent_dim), centre (B,) or None -> volumes (B, 1, S, S, S) in [-1, 1].

        G^H runs on the whole latent in one pass (GroupNorm has no running statistics, so train
        and eval mode compute the same). A conditioned model without `centre` cycles through the
        centres 0, 1, ... n-1.
        """
        return self.G(z, self._centre_for(z, centre))
