"""The Auto3DSeg SegResNet recipe, rebuilt from MONAI parts.

Auto3DSeg's algorithm templates are downloaded from the internet at run time, which synthct may
not do, so the recipe is assembled here from the same MONAI building blocks with the template's
defaults (segresnet `hyper_parameters.yaml` / `segmenter.py`):

- network: `SegResNetDS` (init_filters 32, blocks_down (1, 2, 2, 4, 4), instance norm, deep
  supervision with dsdepth 4);
- loss: `DeepSupervisionLoss` (weight_mode "exp") over `DiceCELoss` (softmax, to_onehot_y,
  include_background=True, squared_pred, smooth_nr 0, smooth_dr 1e-5);
- optimiser: AdamW lr 2e-4, weight decay 1e-5; `WarmupCosineSchedule` stepped once per epoch
  (3 warm-up epochs from 0.1 x lr, cosine to 0 at the last epoch);
- augmentation (the template's "default" mode): RandAffined, RandGaussianSmoothd,
  RandScaleIntensityd, RandShiftIntensityd, RandGaussianNoised, RandFlipd on all three axes (masks
  resampled nearest);
- mixed precision on CUDA (bf16 autocast, or fp16 with a GradScaler); fp32 on CPU;
- inference: `SlidingWindowInferer` with Gaussian blending, overlap 0.625.

Inputs follow the thesis: one half of a packed S=128 pair, 128 x 128 x 64 voxels of
1.5 x 1.5 x 3.0 mm, binarised mask (GTVp u GTVn) or the two classes GTVp / GTVn. Intensities
follow the template's CT mode by default (`normalise.py`): bounds from the 0.5 / 99.5
percentiles of the training cases' foreground HU, `ScaleIntensityRange` to [-1, 1] without
clipping, then a sigmoid; `normalisation: linear` maps the GAN's HU window [-1024, 600]
linearly to [-1, 1] instead (for comparison). Real and synthetic cases of one model always
share one normalisation.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import numpy as np

from synthct.config import HU_WINDOW, DataConfig, from_dict, load_yaml, save_yaml, to_dict
from synthct.runtime import pick_device
from synthct.segment.normalise import NORMALISATIONS

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class SegConfig:
    """A segmentation training recipe. Defaults are the thesis / Auto3DSeg values.

    size: S of the packed pairs; a segmentation volume is one half, (S, S, S/2).
    roi_size: training crop and sliding-window size; None = the whole (S, S, S/2) volume.
    mask: "binary" (GTVp u GTVn, 2 output channels) | "multiclass" (GTVp, GTVn: 3 channels).
    normalisation: "auto3dseg-ct" (the template's CT recipe, bounds fitted per fold) | "linear"
    (the HU window mapped linearly to [-1, 1]).
    """

    size: int = 128
    spacing: float = 1.5
    hu_window: tuple[float, float] = HU_WINDOW
    mask: str = "binary"
    init_filters: int = 32
    blocks_down: tuple[int, ...] = (1, 2, 2, 4, 4)
    dsdepth: int = 4
    epochs: int = 300
    warmup_epochs: int = 3
    batch_size: int = 2
    lr: float = 2e-4
    weight_decay: float = 1e-5
    roi_size: tuple[int, int, int] | None = None
    folds: int = 5
    seed: int = 0
    augment: bool = True
    precision: str = "auto"
    sw_overlap: float = 0.625
    val_every: int = 1
    num_workers: int = 0  # data-loading processes (augmentation runs there); part of the result
    normalisation: str = "auto3dseg-ct"

    def __post_init__(self) -> None:
        DataConfig(size=self.size, spacing=self.spacing, hu_window=self.hu_window, mask=self.mask)
        if self.init_filters < 1 or not self.blocks_down or min(self.blocks_down) < 1:
            raise ValueError(
                f"init_filters and blocks_down must be positive, got {self.init_filters}, "
                f"{self.blocks_down}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError(
                f"epochs, batch_size and val_every must be >= 1, got {self.epochs}, "
                f"{self.batch_size}, {self.val_every}"
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 for cross-validation, got {self.folds}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(
                f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        factor = 2 ** (len(self.blocks_down) - 1)
        bad = [r for r in self.roi if r % factor]
        if bad:
            raise ValueError(
                f"roi {self.roi} must be divisible by {factor} (2^(levels-1) for blocks_down "
                f"{self.blocks_down}); lower the depth or change size/roi_size"
            )

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of one segmentation volume: one half of a packed S^3 pair."""
        return (self.size, self.size, self.size // 2)

    @property
    def roi(self) -> tuple[int, int, int]:
        return tuple(self.roi_size) if self.roi_size is not None else self.volume_shape  # type: ignore[return-value]

    @property
    def out_channels(self) -> int:
        return 2 if self.mask == "binary" else 3

    def data_config(self) -> DataConfig:
        """The preprocessing config whose packed arrays hold this recipe's real cases."""
        return DataConfig(
            size=self.size, spacing=self.spacing, hu_window=self.hu_window, mask=self.mask
        )


def load_seg_config(path) -> SegConfig:
    return from_dict(SegConfig, load_yaml(path), where=str(path))


def save_seg_config(cfg: SegConfig, path) -> None:
    save_yaml(to_dict(cfg), path)


# -- data normalisation -------------------------------------------------------------------------
def normalise_hu(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU (any shape) -> float32 in [-1, 1]: clip to `window`, map linearly (as the packing does).

    The `linear` normalisation; the default is `normalise.py`'s Auto3DSeg CT recipe."""
    from synthct.preprocess import hu_to_unit

    return hu_to_unit(np.asarray(hu, dtype=np.float32), window).astype(np.float32, copy=False)


# -- device and precision -----------------------------------------------------------------------
def select_device(device: str | None = None):
    """`device` if given ("auto"/None: CUDA when present, else CPU)."""
    return pick_device(device)


def resolve_precision(cfg: SegConfig, device) -> str:
    """ "fp32" on CPU; on CUDA "auto" means bf16 where supported, else fp16."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return "fp32"
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision: str, device):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(precision: str, device):
    """A GradScaler, enabled only for fp16 (bf16 and fp32 need none)."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


# -- recipe parts -------------------------------------------------------------------------------
def build_network(cfg: SegConfig):
    """SegResNetDS: input (B, 1, X, Y, Z) -> train: list of (B, C, ...) at 1, 1/2, ... scale;
    eval: (B, C, X, Y, Z) logits."""
    from monai.networks.nets import SegResNetDS

    return SegResNetDS(
        spatial_dims=3,
        init_filters=cfg.init_filters,
        in_channels=1,
        out_channels=cfg.out_channels,
        blocks_down=tuple(cfg.blocks_down),
        dsdepth=cfg.dsdepth,
        norm="instance",
    )


def build_loss(cfg: SegConfig):
    """DeepSupervisionLoss(DiceCELoss): (list of (B, C, ...) logits, (B, 1, X, Y, Z) labels)."""
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    dice_ce = DiceCELoss(
        include_background=True,
        to_onehot_y=True,
        softmax=True,
        squared_pred=True,
        smooth_nr=0.0,
        smooth_dr=1e-5,
    )
    return DeepSupervisionLoss(dice_ce, weight_mode="exp")


def build_optimizer(model, cfg: SegConfig):
    import torch

    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer, cfg: SegConfig, epochs: int | None = None):
    """Per-epoch warm-up (from 0.1 x lr) + half-cosine to 0; call `.step()` once per epoch."""
    from monai.optimizers import WarmupCosineSchedule

    total = epochs or cfg.epochs
    return WarmupCosineSchedule(
        optimizer,
        warmup_steps=min(cfg.warmup_epochs, max(total - 1, 0)),
        t_total=total,
        warmup_multiplier=0.1,
    )


def build_train_transforms(cfg: SegConfig, norm=None):
    """Dict transforms on {"image": (1, X, Y, Z) float, "label": (1, X, Y, Z) float}.

    In the template's order: the intensity normalisation `norm` (a `normalise.Normalisation`;
    None = the image is used as given), a crop to `roi_size` (label-class balanced, as
    Auto3DSeg's "ratio" mode) when the roi is smaller than the volume, then the template's
    default augmentation when `cfg.augment` (its intensity jitter acts on normalised values).
    """
    from monai.transforms import (
        Compose,
        RandAffined,
        RandCropByLabelClassesd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    from synthct.segment.normalise import dict_transforms

    keys = ["image", "label"]
    ts: list[Any] = dict_transforms(norm) if norm is not None else []
    if cfg.roi != cfg.volume_shape:
        ts.append(SpatialPadd(keys=keys, spatial_size=cfg.roi))
        ts.append(
            RandCropByLabelClassesd(
                keys=keys,
                label_key="label",
                num_classes=cfg.out_channels,
                spatial_size=cfg.roi,
                num_samples=1,
                warn=False,
            )
        )
    if cfg.augment:
        ts += [
            RandAffined(
                keys=keys,
                prob=0.2,
                rotate_range=(0.26, 0.26, 0.26),
                scale_range=(0.2, 0.2, 0.2),
                mode=("bilinear", "nearest"),
                spatial_size=cfg.roi,
                padding_mode="border",
            ),
            RandGaussianSmoothd(
                keys="image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)
            ),
            RandScaleIntensityd(keys="image", prob=0.5, factors=0.3),
            RandShiftIntensityd(keys="image", prob=0.5, offsets=0.1),
            RandGaussianNoised(keys="image", prob=0.2, mean=0.0, std=0.1),
        ]
        ts += [RandFlipd(keys=keys, prob=0.5, spatial_axis=axis) for axis in (0, 1, 2)]
    return Compose(ts)


def build_inferer(cfg: SegConfig):
    """Sliding window over (B, 1, X, Y, Z) with Gaussian blending of overlapping windows."""
    from monai.inferers import SlidingWindowInferer

    return SlidingWindowInferer(
        roi_size=cfg.roi, sw_batch_size=1, overlap=cfg.sw_overlap, mode="gaussian"
    )


def predict_probs(model, images, cfg: SegConfig, precision: str = "fp32"):
    """Softmax probabilities (B, C, X, Y, Z) float32 for images (B, 1, X, Y, Z) on model's device."""
    import torch

    inferer = build_inferer(cfg)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(precision, images.device):
            logits = inferer(images, model)
        return torch.softmax(logits.float(), dim=1)
    finally:
        model.train(was_training)


def ensemble_probs(models, images, cfg: SegConfig, precision: str = "fp32", normalisations=None):
    """Mean of the softmax of each model: (B, C, X, Y, Z) for images (B, 1, X, Y, Z).

    `normalisations` (one `normalise.Normalisation` per model): `images` are HU and each model
    sees them normalised its own way (each fold fits its own bounds); None: `images` are fed as
    given.
    """
    from synthct.segment.normalise import apply

    if normalisations is not None and len(normalisations) != len(models):
        raise ValueError(f"{len(normalisations)} normalisations for {len(models)} models")
    total = None
    for k, model in enumerate(models):
        x = images if normalisations is None else apply(normalisations[k], images).to(images.device)
        p = predict_probs(model, x, cfg, precision)
        total = p if total is None else total + p
    if total is None:
        raise ValueError("ensemble_probs needs at least one model")
    return total / len(models)
