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


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-safe dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
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
    """Preprocessing of real cases into packed pairs (design §2, §5).

    size: S; the packed pair is S x S x S (image and mask each S x S x S/2, stacked along z).
    """

    size: int = 128
    # mm: the crop is a cube of 128 x spacing mm, resized to S x S x S/2, so the packed grid is
    # 128 x spacing / S in x and y and twice that in z (1.5 x 1.5 x 3.0 mm at S = 128)
    spacing: float = 1.5
    hu_window: tuple[float, float] = (-1024.0, 600.0)
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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which generative model, and its architecture and optimiser settings.

    kind: "hagan" | "vanilla" | "wgan". The volume size S comes from `DataConfig.size`.
    width: channel multiplier (1.0 = the reference HA-GAN widths; tiny values for tests/demo).
    n_centres: > 0 enables centre conditioning (one-hot concatenated to z, class head in D).
    """

    kind: str = "hagan"
    latent_dim: int = 1024
    width: float = 1.0
    n_centres: int = 0
    lambda_class: float = 0.1  # weight of the generator's auxiliary centre loss (HA-GAN reference)
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    lr_e: float = 1e-4
    # Adam betas; HA-GAN uses (0, 0.999): the thesis text says 0.99, but its training code and
    # the official HA-GAN code use 0.999, and the runs behind its tables used 0.999 (README)
    betas: tuple[float, float] = (0.0, 0.999)
    eps: float = 1e-8
    # Wasserstein GAN options (kind == "wgan")
    wgan_mode: str = "gp"  # "clip" (RMSprop, weight clipping) | "gp" (gradient penalty)
    clip_value: float = 0.01
    gp_lambda: float = 10.0
    n_critic: int = 5
    # 2D slice models (kind "fastgan" | "stylegan2"; synthct/models/fastgan.py, stylegan2.py)
    resolution: int = 0  # side of the generated (2, H, W) slice pair, H = W; 0 = the data size S
    diffaug: str = "color,translation,cutout"  # DiffAugment policy for D's inputs ("" = off)
    recon_weight: float = 1.0  # FastGAN: weight of D's self-supervised reconstruction loss
    r1_gamma: float | None = None  # R1 weight; None = kind default (FastGAN 0, StyleGAN2 auto)
    pl_weight: float = 2.0  # StyleGAN2: path-length regularisation weight (0 = off)
    slice_layout: str = "slices"  # 2D data: "slices" (axial pairs) | "mosaic" (thesis layout)
    # named settings this config claims to follow ("" = custom): synthct/presets.py, e.g.
    # stylegan2 "thesis" | "reference"; refused when a setting the preset fixes differs
    preset: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("hagan", "vanilla", "wgan", "fastgan", "stylegan2"):
            raise ValueError(
                f"model kind must be hagan, vanilla, wgan, fastgan or stylegan2, got {self.kind!r}"
            )
        if self.latent_dim < 1 or self.width <= 0:
            raise ValueError(
                f"latent_dim and width must be positive, got {self.latent_dim}, {self.width}"
            )
        if self.n_centres < 0:
            raise ValueError(f"n_centres must be >= 0 (0 = unconditional), got {self.n_centres}")
        if self.wgan_mode not in ("clip", "gp"):
            raise ValueError(f"wgan_mode must be 'clip' or 'gp', got {self.wgan_mode!r}")
        if self.resolution < 0:
            raise ValueError(f"resolution must be >= 0 (0 = data size), got {self.resolution}")
        if self.slice_layout not in ("slices", "mosaic"):
            raise ValueError(
                f"slice_layout must be 'slices' or 'mosaic', got {self.slice_layout!r}"
            )
        bad = sorted(set(filter(None, self.diffaug.split(","))) - set(DIFFAUG_POLICIES))
        if bad:
            raise ValueError(
                f"diffaug policies {bad} unknown; use a comma list of {', '.join(DIFFAUG_POLICIES)}"
            )
        if min(self.recon_weight, self.pl_weight, self.r1_gamma or 0.0) < 0:
            raise ValueError(
                "recon_weight, pl_weight and r1_gamma must be >= 0, got "
                f"{self.recon_weight}, {self.pl_weight}, {self.r1_gamma}"
            )
        check_preset(self.kind, self.preset, "model", self)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (one run)."""

    steps: int = 80_000
    batch_size: int = 4
    seed: int = 0
    split: str = "train"  # GAN training reads only this split (design §5); "gan": GAN-only cases
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
