"""Frozen config dataclasses and their YAML/dict round trip.

Every config is a frozen dataclass; it is saved as plain YAML in run folders and as a plain dict
inside checkpoints and results (never pickled). `from_dict` refuses unknown keys with a message
that lists them, so a typo in a YAML file is an error, not a silently ignored value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from synthct.errors import ConfigError
from synthct.presets import check_preset
from synthct.workspace import atomic_write_text

T = TypeVar("T")

# The thesis's CT window (HU): clipped and mapped linearly to [-1, 1] for the networks.
HU_WINDOW: tuple[float, float] = (-1024.0, 600.0)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-safe dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {
                f.name: plain(getattr(v, f.name))
                for f in dataclasses.fields(v)
                if not (f.metadata.get("omit_if_none") and getattr(v, f.name) is None)
            }
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where) if len(args) == 1 else value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "2e-4" as a string
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys raise `ConfigError` listing them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    upgrade = getattr(cls, "upgrade_dict", None)  # older layouts of a config (ModelConfig)
    if upgrade is not None:
        data = upgrade(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def save_yaml(data: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config (for cache keys such as the packed-array folder)."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Preprocessing of real cases into packed pairs (`synthct.preprocess`).

    size: S; the packed pair is S x S x S (image and mask each S x S x S/2, stacked along z).
    """

    size: int = 128
    # mm: the crop is a cube of 128 x spacing mm, resized to S x S x S/2, so the packed grid is
    # 128 x spacing / S in x and y and twice that in z (1.5 x 1.5 x 3.0 mm at S = 128)
    spacing: float = 1.5
    hu_window: tuple[float, float] = HU_WINDOW
    packing: str = (
        "z"  # "z" (image then mask along z) | "interleave" (slice by slice, thesis variant)
    )
    mask: str = "binary"  # "binary" (GTVp ∪ GTVn) | "multiclass" (0, 1, 2)
    crop: bool = True  # automatic head-and-neck crop

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 8:
            raise ValueError(f"size must be a multiple of 8 and >= 8, got {self.size}")
        if self.spacing <= 0:
            raise ValueError(f"spacing must be > 0 mm, got {self.spacing}")
        lo, hi = self.hu_window
        if not lo < hi:
            raise ValueError(f"hu_window must be (low, high) with low < high, got {self.hu_window}")
        if self.packing not in ("z", "interleave"):
            raise ValueError(f"packing must be 'z' or 'interleave', got {self.packing!r}")
        if self.mask not in ("binary", "multiclass"):
            raise ValueError(f"mask must be 'binary' or 'multiclass', got {self.mask!r}")


DIFFAUG_POLICIES = ("color", "translation", "cutout")  # synthct/models/diffaug.py


def _check_diffaug(policy: str) -> None:
    bad = sorted(set(filter(None, policy.split(","))) - set(DIFFAUG_POLICIES))
    if bad:
        raise ValueError(
            f"diffaug policies {bad} unknown; use a comma list of {', '.join(DIFFAUG_POLICIES)}"
        )


def _check_slice_model(resolution: int, layout: str, r1_gamma: float | None) -> None:
    if resolution < 0:
        raise ValueError(f"resolution must be >= 0 (0 = data size), got {resolution}")
    if layout not in ("slices", "mosaic"):
        raise ValueError(f"slice_layout must be 'slices' or 'mosaic', got {layout!r}")
    if r1_gamma is not None and r1_gamma < 0:
        raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")


# -- per-kind model sections (YAML: `model: {kind: K, ..., K: {...}}`) ----------------------------
@dataclasses.dataclass(frozen=True)
class HAGANConfig:
    """HA-GAN's own settings (synthct/models/hagan.py).

    n_centres: > 0 enables centre conditioning (one-hot concatenated to z, class head in D).
    minibatch_std: > 0 gives D a minibatch standard-deviation feature over groups of this many
    samples; mode_seeking: > 0 weights MSGAN's mode-seeking term in the generator loss (neither
    is in the reference; both act against mode collapse on small data sets, e.g. the demo).
    """

    lr_e: float = 1e-4  # encoder E and sub-encoder Sub_E
    n_centres: int = 0
    lambda_class: float = 0.1  # weight of the generator's auxiliary centre loss (HA-GAN reference)
    minibatch_std: int = 0  # group size of D's minibatch-std feature; 0 = off (reference)
    mode_seeking: float = 0.0  # weight of the generator's mode-seeking term; 0 = off (reference)

    def __post_init__(self) -> None:
        if self.n_centres < 0:
            raise ValueError(f"n_centres must be >= 0 (0 = unconditional), got {self.n_centres}")
        if self.minibatch_std < 0:
            raise ValueError(f"minibatch_std must be >= 0 (0 = off), got {self.minibatch_std}")
        if self.mode_seeking < 0:
            raise ValueError(f"mode_seeking must be >= 0 (0 = off), got {self.mode_seeking}")


@dataclasses.dataclass(frozen=True)
class VanillaConfig:
    """The vanilla 3D GAN has no settings beyond the common ones (synthct/models/baselines.py)."""


@dataclasses.dataclass(frozen=True)
class WGANConfig:
    """Wasserstein 3D GAN (synthct/models/baselines.py)."""

    mode: str = "gp"  # "clip" (RMSprop, weight clipping) | "gp" (gradient penalty)
    clip_value: float = 0.01
    gp_lambda: float = 10.0
    n_critic: int = 5

    def __post_init__(self) -> None:
        if self.mode not in ("clip", "gp"):
            raise ValueError(f"wgan mode must be 'clip' or 'gp', got {self.mode!r}")


@dataclasses.dataclass(frozen=True)
class FastGANConfig:
    """FastGAN on 2D slice pairs (synthct/models/fastgan.py)."""

    resolution: int = 0  # side R of the generated (2, R, R) slice pair; 0 = the data size S
    diffaug: str = "color,translation"  # DiffAugment policy for D's inputs ("" = off)
    recon_weight: float = 1.0  # weight of D's self-supervised reconstruction loss
    r1_gamma: float | None = None  # R1 weight; None = 0 (off)
    slice_layout: str = "slices"  # "slices" (axial pairs) | "mosaic" (thesis layout)

    def __post_init__(self) -> None:
        _check_diffaug(self.diffaug)
        _check_slice_model(self.resolution, self.slice_layout, self.r1_gamma)
        if self.recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {self.recon_weight}")


@dataclasses.dataclass(frozen=True)
class StyleGAN2Config:
    """StyleGAN2 on 2D slice pairs (synthct/models/stylegan2.py)."""

    resolution: int = 0  # side R of the generated (2, R, R) slice pair; 0 = the data size S
    diffaug: str = "color,translation,cutout"  # DiffAugment policy for D's inputs ("" = off)
    r1_gamma: float | None = None  # R1 weight; None = the resolution's automatic value
    pl_weight: float = 2.0  # path-length regularisation weight (0 = off)
    slice_layout: str = "slices"  # "slices" (axial pairs) | "mosaic" (thesis layout)

    def __post_init__(self) -> None:
        _check_diffaug(self.diffaug)
        _check_slice_model(self.resolution, self.slice_layout, self.r1_gamma)
        if self.pl_weight < 0:
            raise ValueError(f"pl_weight must be >= 0, got {self.pl_weight}")


@dataclasses.dataclass(frozen=True)
class LDMConfig:
    """Latent diffusion of (image, mask) pairs from MONAI parts (synthct/models/ldm.py).

    Two stages in one run: steps [0, autoencoder_steps) train the AutoencoderKL (L1 + KL +
    patch-adversarial, PatchDiscriminator from step adv_start), steps [autoencoder_steps,
    train.steps) the DiffusionModelUNet on the frozen autoencoder's scaled latents.
    Channel tuples are the widths at model.width 1.0 (the width multiplies them, rounded to a
    multiple of norm_groups); the autoencoder halves each axis len(ae_channels) - 1 times, the
    UNet len(unet_channels) - 1 more times. model.lr_g is the autoencoder's learning rate,
    model.lr_d the discriminator's, lr_diffusion the UNet's; model.latent_dim is not used (the
    latent's shape follows from the autoencoder). scheduler "rflow": rectified flow (velocity
    target, Euler sampling, few steps); "ddpm": DDPM noise schedule (noise target), sampled with
    DDIM (eta 0). Both samplers are deterministic given the initial noise. sampling_steps: the
    default number of sampling steps (`synthct generate --sampling-steps` overrides it).
    n_centres > 0: the UNet gets a centre class embedding (centre conditioning).
    """

    autoencoder_steps: int = 30_000
    ae_channels: tuple[int, ...] = (32, 64, 128)
    latent_channels: int = 4
    ae_res_blocks: int = 2
    unet_channels: tuple[int, ...] = (64, 128, 256)
    unet_attention: tuple[bool, ...] = (False, True, True)
    unet_res_blocks: int = 2
    head_channels: int = 32
    norm_groups: int = 16
    disc_channels: int = 32
    disc_layers: int = 3  # at most; fewer at small S so the patch map keeps >= 1 voxel
    kl_weight: float = 1e-6
    adv_weight: float = 0.01
    adv_start: int = 10_000
    lr_diffusion: float = 1e-4
    scheduler: str = "rflow"
    train_timesteps: int = 1000
    sampling_steps: int = 30
    n_centres: int = 0

    def __post_init__(self) -> None:
        if len(self.unet_attention) != len(self.unet_channels):
            raise ValueError(
                f"unet_attention {list(self.unet_attention)} needs one flag per unet_channels "
                f"level {list(self.unet_channels)}"
            )
        if len(self.ae_channels) < 1 or len(self.unet_channels) < 1:
            raise ValueError("ae_channels and unet_channels need at least one level")
        ints = {"autoencoder_steps": self.autoencoder_steps, "latent_channels": self.latent_channels,
                "ae_res_blocks": self.ae_res_blocks, "unet_res_blocks": self.unet_res_blocks,
                "head_channels": self.head_channels, "norm_groups": self.norm_groups,
                "disc_channels": self.disc_channels, "disc_layers": self.disc_layers,
                "train_timesteps": self.train_timesteps, "sampling_steps": self.sampling_steps,
                **{f"ae_channels[{i}]": c for i, c in enumerate(self.ae_channels)},
                **{f"unet_channels[{i}]": c for i, c in enumerate(self.unet_channels)}}  # fmt: skip
        bad = {k: v for k, v in ints.items() if v < 1}
        if bad:
            raise ValueError(f"these ldm settings must be >= 1: {bad}")
        if self.scheduler not in ("rflow", "ddpm"):
            raise ValueError(f"ldm scheduler must be 'rflow' or 'ddpm', got {self.scheduler!r}")
        if self.sampling_steps > self.train_timesteps:
            raise ValueError(
                f"sampling_steps ({self.sampling_steps}) cannot exceed train_timesteps "
                f"({self.train_timesteps})"
            )
        if min(self.kl_weight, self.adv_weight, self.lr_diffusion, self.adv_start) < 0:
            raise ValueError("kl_weight, adv_weight, lr_diffusion and adv_start must be >= 0")
        if self.n_centres < 0:
            raise ValueError(f"n_centres must be >= 0 (0 = unconditional), got {self.n_centres}")


# kind -> its section's dataclass; synthct/models/registry.py maps the same kinds to networks
MODEL_SECTIONS: dict[str, type] = {
    "hagan": HAGANConfig,
    "vanilla": VanillaConfig,
    "wgan": WGANConfig,
    "fastgan": FastGANConfig,
    "stylegan2": StyleGAN2Config,
    "ldm": LDMConfig,
}
_SECTION = {"omit_if_none": True}  # to_dict leaves out the sections of other kinds

# 0.1.0 configs kept every kind's settings in one flat `model` mapping: flat key -> (kind, field)
LEGACY_FLAT_KEYS: dict[str, dict[str, str]] = {
    "hagan": {"lr_e": "lr_e", "n_centres": "n_centres", "lambda_class": "lambda_class"},
    "vanilla": {},
    "wgan": {"wgan_mode": "mode", "clip_value": "clip_value", "gp_lambda": "gp_lambda",
             "n_critic": "n_critic"},
    "fastgan": {"resolution": "resolution", "diffaug": "diffaug", "recon_weight": "recon_weight",
                "r1_gamma": "r1_gamma", "slice_layout": "slice_layout"},
    "stylegan2": {"resolution": "resolution", "diffaug": "diffaug", "r1_gamma": "r1_gamma",
                  "pl_weight": "pl_weight", "slice_layout": "slice_layout"},
}  # fmt: skip
_ALL_LEGACY = {k for table in LEGACY_FLAT_KEYS.values() for k in table} | {"lr_e", "n_centres"}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which generative model, its common optimiser settings and its own section.

    kind: a registered kind (`synthct.models.registry`); the section of that name holds the
    kind's own settings (`section`), the other sections stay None. The data size S comes from
    `DataConfig.size`. width: channel multiplier (1.0 = the reference widths; tiny values for
    tests and the demo). preset: the name of a recorded set of settings (`synthct.presets`;
    "" = custom).
    """

    kind: str = "hagan"
    latent_dim: int = 1024
    width: float = 1.0
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    # Adam betas; HA-GAN uses (0, 0.999): the thesis text says 0.99, but its training code and
    # the official HA-GAN code use 0.999, and the runs behind its tables used 0.999 (README)
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    preset: str = ""
    hagan: HAGANConfig | None = dataclasses.field(default=None, metadata=_SECTION)
    vanilla: VanillaConfig | None = dataclasses.field(default=None, metadata=_SECTION)
    wgan: WGANConfig | None = dataclasses.field(default=None, metadata=_SECTION)
    fastgan: FastGANConfig | None = dataclasses.field(default=None, metadata=_SECTION)
    stylegan2: StyleGAN2Config | None = dataclasses.field(default=None, metadata=_SECTION)
    ldm: LDMConfig | None = dataclasses.field(default=None, metadata=_SECTION)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_SECTIONS:
            raise ValueError(
                f"model kind must be one of {', '.join(MODEL_SECTIONS)}, got {self.kind!r}"
            )
        if self.latent_dim < 1 or self.width <= 0:
            raise ValueError(
                f"latent_dim and width must be positive, got {self.latent_dim}, {self.width}"
            )
        others = [k for k in MODEL_SECTIONS if k != self.kind and getattr(self, k) is not None]
        if others:
            raise ValueError(f"model kind is {self.kind!r} but sections {others} are set")
        if getattr(self, self.kind) is None:  # the kind's section with its defaults
            object.__setattr__(self, self.kind, MODEL_SECTIONS[self.kind]())
        check_preset(self.kind, self.preset, "model", self)

    @property
    def section(self) -> Any:
        """This kind's own settings (e.g. `HAGANConfig`)."""
        return getattr(self, self.kind)

    @staticmethod
    def upgrade_dict(data: dict[str, Any]) -> dict[str, Any]:
        """A 0.1.0 flat `model` mapping -> the sectioned one (other kinds' keys are dropped:
        they had no effect on this kind). Flat keys also override the section, so a grid
        override written "model.lr_e" keeps working."""
        if not isinstance(data, dict) or not (set(data) & _ALL_LEGACY):
            return data
        kind = data.get("kind", "hagan")
        table = LEGACY_FLAT_KEYS.get(kind, {})
        if data.get("n_centres") and "n_centres" not in table:
            raise ConfigError(
                f"centre conditioning (n_centres={data['n_centres']}) is only available for "
                f"kind 'hagan', not {kind!r}"
            )
        out = {k: v for k, v in data.items() if k not in _ALL_LEGACY and k not in LEGACY_FLAT_KEYS}
        section = dict(data.get(kind) or {})
        section.update({table[k]: v for k, v in data.items() if k in table})
        if kind in LEGACY_FLAT_KEYS:
            out[kind] = section
        return out


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (one run)."""

    steps: int = 80_000
    batch_size: int = 4
    seed: int = 0
    split: str = (
        "train"  # GAN training reads only this split (no leakage into test); "gan": GAN-only cases
    )
    augment: str = "none"  # "none" | "affine" | "elastic"
    ema_decay: float = 0.999
    train_encoder: bool = True  # HA-GAN E/Sub_E; off when only sampling matters (~half the compute)
    precision: str = "auto"  # "fp32" | "bf16" | "auto" (bf16 on CUDA, fp32 on CPU)
    compile: bool = False
    channels_last: bool = True  # CUDA only
    log_every: int = 10
    snapshot_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    collapse_every: int = 500
    num_workers: int = 0
    tensorboard: bool = False  # also write TensorBoard scalars (needs requirements-tensorboard.txt)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(
                f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}"
            )
        if self.split not in ("train", "val", "test", "gan", "all"):
            raise ValueError(f"split must be train, val, test, gan or all, got {self.split!r}")
        if self.augment not in ("none", "affine", "elastic"):
            raise ValueError(f"augment must be none, affine or elastic, got {self.augment!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto, got {self.precision!r}")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved as runs/<run>/config.yaml and in checkpoints."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_preset(self.model.kind, self.model.preset, "train", self.train)


def load_run_config(path: str | Path) -> RunConfig:
    return from_dict(RunConfig, load_yaml(path), where=str(path))
