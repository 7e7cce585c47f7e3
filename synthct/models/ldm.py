"""Latent diffusion of CT + tumour-mask pairs (a `GenerativeModel`), built from MONAI parts.

Nothing here is hand-written network or sampler code: the autoencoder is MONAI's
`AutoencoderKL`, the adversary its `PatchDiscriminator` with `PatchAdversarialLoss`, the denoiser
its `DiffusionModelUNet`, the noise schedules its `RFlowScheduler` / `DDPMScheduler` /
`DDIMScheduler`, and training and sampling go through `DiffusionInferer` /
`LatentDiffusionInferer`. This module decides how the pair is encoded, when each stage trains,
and how the pieces meet the training loop.

The pair as two channels. The view's packed (B, 1, S, S, S) batch is unpacked to
(B, 2, S, S, S/2): channel 0 the CT, channel 1 the mask, on the same (physically isotropic)
S x S x S/2 grid. The mask then lies on the anatomy it belongs to, so every convolution of the
autoencoder sees both at once and one latent encodes the pair; in the packed layout the mask
would sit S/2 voxels away along z, beyond the reach of a convolutional encoder's receptive field,
and the seam at z = S/2 would be a false edge to learn. Samples are packed back the same way, so
the view, the sets on disk and every evaluation are the ones of the other 3D models.

Two stages in the one training loop, chosen by the step alone (so resume is exact in each):

    steps [0, autoencoder_steps)          autoencoder: L1 + kl_weight * KL (+ adv_weight *
                                          least-squares patch-adversarial loss from adv_start;
                                          then a discriminator update). Optimisers
                                          "autoencoder", "discriminator".
    steps [autoencoder_steps, train.steps) diffusion: latents of the frozen autoencoder, scaled
                                          by `scale_factor`, noised by the scheduler; the UNet
                                          learns the velocity (rflow) or the noise (ddpm), MSE.
                                          Optimiser "unet".

`scale_factor` (1 / std of the latents, MONAI's tutorial rule) is computed from the batch of
the first diffusion step, averaged over DDP ranks, and kept as a buffer, so it is in every
checkpoint from then on. The loop keeps an EMA of the UNet (`ema_modules`); the autoencoder is
frozen when the UNet trains, so its live weights are the ones the latents came from.

`losses.csv` has the same columns in both stages ("stage" is 1 or 2; a loss of the other stage
is NaN). No perceptual loss: MONAI's needs downloaded weights, and everything here trains from
scratch.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.inferers import DiffusionInferer, LatentDiffusionInferer
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler
from torch import nn

from synthct.config import DataConfig, LDMConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models.base import GenerativeModel, StepContext
from synthct.models.layers import trainable
from synthct.runtime import state_dict_sha256
from synthct.views import VolumeView
from synthct.views.volumes import image_half, mask_half

LOSS_KEYS = ("stage", "diffusion", "recon_l1", "kl", "g_adv", "d_adv")
# DDPM noise schedule of MONAI's 3D latent-diffusion tutorial
DDPM_SCHEDULE = {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195}


def scaled(base: tuple[int, ...], width: float, groups: int) -> tuple[int, ...]:
    """Channel widths `base * width`, each rounded to a multiple of `groups` (GroupNorm), >= it."""
    return tuple(max(groups, round(c * width / groups) * groups) for c in base)


def disc_layers_for(size: int, wanted: int) -> int:
    """Stride-2 layers of the PatchDiscriminator: at most `wanted`, and few enough that its
    patch map on the (S, S, S/2) pair keeps >= 1 voxel (each layer halves, the last two k4
    convs take 1 voxel each: S/2 / 2^L >= 3)."""
    layers = wanted
    while layers > 1 and (size // 2) / 2**layers < 3:
        layers -= 1
    return layers


def latent_shape(size: int, cfg: LDMConfig) -> tuple[int, int, int, int]:
    """(C, X, Y, Z) of the autoencoder's latent for S = `size`: (C, S/f, S/f, S/(2f)),
    f = 2^(len(ae_channels) - 1)."""
    f = 2 ** (len(cfg.ae_channels) - 1)
    return (cfg.latent_channels, size // f, size // f, size // (2 * f))


def check_size(size: int, cfg: LDMConfig) -> None:
    """The pair (S, S, S/2) must halve len(ae_channels) - 1 times into the latent and the latent
    len(unet_channels) - 1 more times in the UNet."""
    halvings = len(cfg.ae_channels) - 1 + len(cfg.unet_channels) - 1
    if (size // 2) % 2**halvings or size % 2:
        raise ConfigError(
            f"ldm at S={size}: the (S, S, S/2) pair must halve {halvings} times (autoencoder "
            f"{len(cfg.ae_channels) - 1} + UNet {len(cfg.unet_channels) - 1}); S/2 = {size // 2} "
            f"is not a multiple of {2**halvings} (use a larger S or fewer channel levels)"
        )


def unpack_pair(packed: torch.Tensor, packing: str) -> torch.Tensor:
    """Packed pairs (B, 1, S, S, S) -> (B, 2, S, S, S/2): channel 0 image, channel 1 mask."""
    return torch.cat([image_half(packed, packing), mask_half(packed, packing)], dim=1)


def pack_pair(pair: torch.Tensor, packing: str) -> torch.Tensor:
    """(B, 2, S, S, S/2) -> packed (B, 1, S, S, S) (the inverse of `unpack_pair`)."""
    image, mask = pair[:, :1], pair[:, 1:]
    if packing == "interleave":  # even z = image, odd z = mask
        return torch.stack([image, mask], dim=-1).flatten(-2)
    return torch.cat([image, mask], dim=-1)


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent, mean over the batch (MONAI
    tutorials' form)."""
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1)
    return kl.flatten(1).sum(1).mean()


class LDM(GenerativeModel):
    """Latent diffusion with networks `autoencoder`, `discriminator`, `unet` (module docstring).

    S (`data_cfg.size`) must allow the halvings of both networks (`check_size`). Settings: the
    common ones of `model_cfg` (width, lr_g, lr_d, betas, eps) and its `ldm` section.
    """

    kind = "ldm"
    ema_modules = ("unet",)

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig):
        super().__init__()
        own: LDMConfig = model_cfg.section
        size, packing = data_cfg.size, data_cfg.packing
        check_size(size, own)
        self.cfg, self.own, self.size, self.packing = model_cfg, own, size, packing
        self.view = VolumeView(data_cfg)
        self.n_centres = own.n_centres
        self.latent_shape = latent_shape(size, own)
        self.latent_dim = math.prod(self.latent_shape)
        self.sampling_steps = own.sampling_steps
        g = own.norm_groups
        ae_ch = scaled(own.ae_channels, model_cfg.width, g)
        unet_ch = scaled(own.unet_channels, model_cfg.width, g)
        self.autoencoder = AutoencoderKL(
            spatial_dims=3, in_channels=2, out_channels=2, channels=ae_ch,
            latent_channels=own.latent_channels, num_res_blocks=own.ae_res_blocks,
            norm_num_groups=g, attention_levels=(False,) * len(ae_ch),
            with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False, include_fc=False,
        )  # fmt: skip
        self.discriminator = PatchDiscriminator(
            spatial_dims=3, num_layers_d=disc_layers_for(size, own.disc_layers),
            channels=max(8, round(own.disc_channels * model_cfg.width)), in_channels=2,
            out_channels=1, norm="INSTANCE",
        )  # fmt: skip
        self.unet = DiffusionModelUNet(
            spatial_dims=3, in_channels=own.latent_channels, out_channels=own.latent_channels,
            channels=unet_ch, attention_levels=own.unet_attention,
            num_res_blocks=own.unet_res_blocks, norm_num_groups=g,
            num_head_channels=[min(own.head_channels, c) for c in unet_ch],
            num_class_embeds=own.n_centres or None, include_fc=False,
        )  # fmt: skip
        self.adv_loss = PatchAdversarialLoss(criterion="least_squares")
        # 0 until the first diffusion step sets it (then checkpointed with the model)
        self.register_buffer("scale_factor", torch.zeros(()))

    # -- training ---------------------------------------------------------------------------
    def configure_optimizers(self, fused: bool = False) -> dict[str, torch.optim.Optimizer]:
        """Adam per stage network: autoencoder (lr_g), discriminator (lr_d), unet
        (lr_diffusion), all with the common betas and eps."""
        c = self.cfg

        def adam(net: nn.Module, lr: float) -> torch.optim.Optimizer:
            return torch.optim.Adam(net.parameters(), lr=lr, betas=c.betas, eps=c.eps, fused=fused)

        return {
            "autoencoder": adam(self.autoencoder, c.lr_g),
            "discriminator": adam(self.discriminator, c.lr_d),
            "unet": adam(self.unet, self.own.lr_diffusion),
        }

    def stage(self, step: int) -> int:
        """1 (autoencoder) before `autoencoder_steps`, 2 (diffusion) from there."""
        return 1 if step < self.own.autoencoder_steps else 2

    def train_step(
        self, real: torch.Tensor, ctx: StepContext, centre: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One step of the stage `ctx.step` is in. real: (B, 1, S, S, S) in [-1, 1]; centre:
        (B,) centre indices (required when n_centres > 0; used by the diffusion stage).
        Returns every key of LOSS_KEYS (NaN for the other stage's losses)."""
        if real.ndim != 5 or tuple(real.shape[1:]) != (1,) + (self.size,) * 3:
            raise ValueError(
                f"expected a real batch (B, 1, {self.size}, {self.size}, {self.size}), "
                f"got {tuple(real.shape)}"
            )
        pair = unpack_pair(real.to(ctx.device), self.packing)
        if self.stage(ctx.step) == 1:
            out = self._autoencoder_step(pair, ctx)
        else:
            out = self._diffusion_step(pair, ctx, self._labels(centre, pair.shape[0], pair.device))
        values = torch.stack([v.detach().float() for v in out.values()]).tolist()
        losses = dict(zip(out, values, strict=True))
        return {"stage": float(self.stage(ctx.step))} | {
            k: losses.get(k, math.nan) for k in LOSS_KEYS[1:]
        }

    def _autoencoder_step(self, pair: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        adversarial = ctx.step >= self.own.adv_start and self.own.adv_weight > 0
        out: dict[str, torch.Tensor] = {}
        with trainable([self.autoencoder], [self.discriminator, self.unet]):
            with ctx.autocast():
                rec, mu, sigma = self.autoencoder(pair)
            rec = rec.float()
            out["recon_l1"] = F.l1_loss(rec, pair)
            out["kl"] = kl_loss(mu.float(), sigma.float())
            loss = out["recon_l1"] + self.own.kl_weight * out["kl"]
            if adversarial:
                with ctx.autocast():
                    logits = self.discriminator(rec)[-1]
                out["g_adv"] = self.adv_loss(logits.float(), target_is_real=True,
                                             for_discriminator=False)  # fmt: skip
                loss = loss + self.own.adv_weight * out["g_adv"]
            ctx.update("autoencoder", loss)
        if adversarial:
            with trainable([self.discriminator], [self.autoencoder, self.unet]):
                with ctx.autocast():
                    fake = self.discriminator(rec.detach())[-1]
                    real = self.discriminator(pair)[-1]
                out["d_adv"] = 0.5 * (
                    self.adv_loss(fake.float(), target_is_real=False, for_discriminator=True)
                    + self.adv_loss(real.float(), target_is_real=True, for_discriminator=True)
                )
                ctx.update("discriminator", out["d_adv"])
        return out

    @torch.no_grad()
    def encode(self, pair: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """(B, 2, S, S, S/2) pairs -> latent draws of the frozen autoencoder (B, C, x, y, z)."""
        with ctx.autocast():
            z = self.autoencoder.encode_stage_2_inputs(pair)  # mu + sigma * eps (global RNG)
        return z.float()

    def _set_scale_factor(self, z: torch.Tensor) -> None:
        var = z.var().reshape(1)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(var)  # the same factor on every rank
            var = var / dist.get_world_size()
        self.scale_factor.fill_(float(1.0 / var.clamp_min(1e-12).sqrt()))

    def _diffusion_step(
        self, pair: torch.Tensor, ctx: StepContext, labels: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        z = self.encode(pair, ctx)
        if float(self.scale_factor) == 0.0:  # the first diffusion step of the run
            self._set_scale_factor(z)
        latent = z * self.scale_factor
        noise = torch.randn_like(latent)
        scheduler = self.train_scheduler()
        if self.own.scheduler == "rflow":
            timesteps = scheduler.sample_timesteps(latent)
            target = latent - noise  # the velocity of the straight path noise -> data
        else:
            timesteps = torch.randint(0, self.own.train_timesteps, (latent.shape[0],),
                                      device=latent.device)  # fmt: skip
            target = noise
        with trainable([self.unet], [self.autoencoder, self.discriminator]):
            with ctx.autocast():
                pred = DiffusionInferer(scheduler)(
                    inputs=latent, diffusion_model=self._denoiser(self.unet, labels),
                    noise=noise, timesteps=timesteps,
                )  # fmt: skip
            loss = F.mse_loss(pred.float(), target)
            ctx.update("unet", loss)
        return {"diffusion": loss}

    # -- schedulers and sampling ------------------------------------------------------------
    def train_scheduler(self) -> RFlowScheduler | DDPMScheduler:
        """The noise schedule the UNet is trained with."""
        t = self.own.train_timesteps
        if self.own.scheduler == "rflow":
            return RFlowScheduler(num_train_timesteps=t, use_discrete_timesteps=False)
        return DDPMScheduler(num_train_timesteps=t, clip_sample=False, **DDPM_SCHEDULE)

    def sampler(self, steps: int, device: torch.device) -> RFlowScheduler | DDIMScheduler:
        """The deterministic sampler of `steps` steps: Euler on the rectified flow, or DDIM
        (eta 0) on the DDPM schedule."""
        if self.own.scheduler == "rflow":
            scheduler = self.train_scheduler()
            scheduler.set_timesteps(steps, device=device)
            return scheduler
        scheduler = DDIMScheduler(num_train_timesteps=self.own.train_timesteps,
                                  clip_sample=False, **DDPM_SCHEDULE)  # fmt: skip
        scheduler.set_timesteps(steps, device=device)
        return scheduler

    def _denoiser(self, unet: nn.Module, labels: torch.Tensor | None):
        return unet if labels is None else functools.partial(unet, class_labels=labels)

    def _labels(self, centre, batch: int, device) -> torch.Tensor | None:
        if self.n_centres <= 0:
            return None
        if centre is None:
            raise ValueError(
                f"this model is conditioned on {self.n_centres} centres; pass `centre`"
            )
        labels = torch.as_tensor(centre, device=device).long().reshape(-1)
        if labels.numel() != batch:
            raise ValueError(f"centre has {labels.numel()} entries, batch has {batch}")
        if int(labels.min()) < 0 or int(labels.max()) >= self.n_centres:
            raise ValueError(
                f"centre indices must be in [0, {self.n_centres - 1}], got {labels.tolist()}"
            )
        return labels

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Initial noise of the sampler: (n, C, S/f, S/f, S/(2f)) standard normal."""
        return torch.randn(n, *self.latent_shape, generator=generator).to(device)

    def set_sampling_steps(self, steps: int) -> None:
        """Sample with `steps` steps (1 .. train_timesteps) from now on."""
        if not 1 <= int(steps) <= self.own.train_timesteps:
            raise ConfigError(
                f"sampling steps must be in [1, {self.own.train_timesteps}], got {steps}"
            )
        self.sampling_steps = int(steps)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, centre: torch.Tensor | None = None) -> torch.Tensor:
        """Initial noise z (B, C, x, y, z) -> packed pairs (B, 1, S, S, S) in [-1, 1], with
        `sampling_steps` steps of the deterministic sampler, then the decoder.

        A conditioned model without `centre` cycles through the centres 0, 1, ... n-1. Before
        the diffusion stage (scale_factor not yet set) the latents are decoded unscaled.
        """
        batch = z.shape[0]
        if self.n_centres > 0 and centre is None:
            centre = torch.arange(batch) % self.n_centres
        labels = self._labels(centre, batch, z.device)
        scheduler = self.sampler(self.sampling_steps, z.device)
        scale = float(self.scale_factor) or 1.0
        pair = LatentDiffusionInferer(scheduler, scale_factor=scale).sample(
            input_noise=z, autoencoder_model=self.autoencoder,
            diffusion_model=self._denoiser(self.unet, labels), scheduler=scheduler,
            verbose=False,
        )  # fmt: skip
        return pack_pair(pair.float().clamp(-1, 1), self.packing)

    def card_fields(self) -> dict[str, Any]:
        """The datacard's "sampler" section: scheduler, steps, scale factor and the SHA-256 of
        the autoencoder's and the UNet's weights (the UNet is the EMA copy when loaded so)."""
        return {
            "sampler": {
                "scheduler": "rflow" if self.own.scheduler == "rflow" else "ddim",
                "trained_with": self.own.scheduler,
                "steps": int(self.sampling_steps),
                "train_timesteps": int(self.own.train_timesteps),
                "scale_factor": float(self.scale_factor),
                "autoencoder_sha256": state_dict_sha256(self.autoencoder.state_dict()),
                "unet_sha256": state_dict_sha256(self.unet.state_dict()),
            }
        }
