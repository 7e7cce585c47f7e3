"""Generative models. Each file holds one architecture; all implement `base.GANSystem`.

`build_system(model_cfg, size)` is the one entry point the loop, checkpoints and sampling use.
"""

from __future__ import annotations

from synthct.config import ModelConfig
from synthct.errors import ConfigError
from synthct.models.base import GANSystem, StepContext

__all__ = [
    "GANSystem",
    "StepContext",
    "build_system",
    "thesis_model_config",
    "KINDS",
    "SLICE_KINDS",
]

KINDS = ("hagan", "vanilla", "wgan", "fastgan", "stylegan2")  # implemented kinds
SLICE_KINDS = ("fastgan", "stylegan2")  # 2D systems: data_view "slices", (B, 2, R, R) pairs


def build_system(model_cfg: ModelConfig, size: int, packing: str = "z") -> GANSystem:
    """The GANSystem of `model_cfg.kind` for (S, S, S) packed pairs, on CPU, in train mode.

    size: S (HA-GAN: a power of two >= 32; baselines: a multiple of 16 >= 32).
    packing: the DataConfig packing ("z" | "interleave"); HA-GAN pools its low-res target per half.
    Raises ConfigError for an unknown kind or a size the architecture cannot take.
    """
    kind = model_cfg.kind
    if kind == "hagan":
        from synthct.models.hagan import HAGAN

        return HAGAN(model_cfg, size, packing=packing)
    if kind in ("vanilla", "wgan"):
        from synthct.models.baselines import VanillaGAN, WassersteinGAN

        cls = VanillaGAN if kind == "vanilla" else WassersteinGAN
        return cls(model_cfg, size)
    if kind == "fastgan":
        from synthct.models.fastgan import FastGAN

        return FastGAN(model_cfg, size)
    if kind == "stylegan2":
        from synthct.models.stylegan2 import StyleGAN2

        return StyleGAN2(model_cfg, size)
    raise ConfigError(f"model kind {kind!r} is not implemented; available: {', '.join(KINDS)}")


def thesis_model_config(kind: str, **overrides) -> ModelConfig:
    """ModelConfig with the thesis's settings for `kind` (HA-GAN: the dataclass defaults).

    The 2D systems are labelled with preset "thesis" (`synthct.presets`) unless an override
    changes a setting that preset fixes (then "" = custom) or names another preset.
    """
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r} is not implemented; available: {', '.join(KINDS)}")
    from synthct.models.baselines import THESIS_DEFAULTS

    defaults = THESIS_DEFAULTS.get(kind, {})
    if kind in SLICE_KINDS:
        import importlib

        from synthct.presets import PRESETS

        defaults = importlib.import_module(f"synthct.models.{kind}").THESIS_DEFAULTS
        fixed = {k.split(".", 1)[1] for k in PRESETS[kind]["thesis"] if k.startswith("model.")}
        changed = any(k in fixed and overrides[k] != defaults[k] for k in overrides)
        defaults = {**defaults, "preset": "" if changed else "thesis"}
    values = {"kind": kind, **defaults, **overrides}
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model config: {e}") from None
