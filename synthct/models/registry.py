"""The model kinds synthct can train: config `kind` -> the class that implements it.

Adding a kind touches this table, its module (a `GenerativeModel` subclass that builds its view),
its config section (`synthct.config.MODEL_SECTIONS`) and its tests; the training loop, sampling
and evaluation work through the `GenerativeModel` interface and the model's view only.

Model modules import torch, so a kind's module is imported when that kind is built, not when
this table is read (light commands list kinds without paying for torch).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synthct.config import DataConfig, ModelConfig, from_dict
from synthct.errors import ConfigError
from synthct.presets import check_preset, preset_names

if TYPE_CHECKING:
    from synthct.models.base import GenerativeModel


@dataclass(frozen=True)
class ModelKind:
    """One trainable kind: where its class lives and what it is."""

    kind: str
    module: str
    class_name: str
    summary: str


KINDS: dict[str, ModelKind] = {
    k.kind: k
    for k in (
        ModelKind("hagan", "synthct.models.hagan", "HAGAN", "HA-GAN, 3D image + mask pairs"),
        ModelKind("vanilla", "synthct.models.baselines", "VanillaGAN", "vanilla 3D GAN (thesis)"),
        ModelKind("wgan", "synthct.models.baselines", "WassersteinGAN", "Wasserstein 3D GAN"),
        ModelKind("fastgan", "synthct.models.fastgan", "FastGAN", "FastGAN, 2D slice pairs"),
        ModelKind("stylegan2", "synthct.models.stylegan2", "StyleGAN2", "StyleGAN2, 2D pairs"),
    )
}


def _kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r} is not implemented; available: {', '.join(KINDS)}")
    return KINDS[kind]


def model_class(kind: str) -> type[GenerativeModel]:
    """The `GenerativeModel` subclass of `kind` (imports its module)."""
    entry = _kind(kind)
    return getattr(importlib.import_module(entry.module), entry.class_name)


def build_model(model_cfg: ModelConfig, data_cfg: DataConfig) -> GenerativeModel:
    """The model of `model_cfg.kind` for the packed pairs of `data_cfg`, on CPU, in train mode.

    Raises ConfigError for an unknown kind or a data size the architecture cannot take.
    """
    return model_class(model_cfg.kind)(model_cfg, data_cfg)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def model_config(kind: str = "hagan", **settings: Any) -> ModelConfig:
    """A ModelConfig from keyword settings: common fields, the kind's section as a mapping
    (`hagan={"n_centres": 2}`) or its fields written flat (`n_centres=2`, as in 0.1.0)."""
    return from_dict(ModelConfig, {"kind": kind, **settings}, where="model config")


def thesis_model_config(kind: str, **overrides: Any) -> ModelConfig:
    """ModelConfig with the thesis's settings for `kind` (the class's `THESIS_DEFAULTS`; HA-GAN:
    the dataclass defaults), then `overrides` (as in `model_config`).

    Kinds with a "thesis" preset (`synthct.presets`) are labelled with it unless an override
    changes a setting the preset fixes (then "" = custom) or names another preset.
    """
    defaults = dict(getattr(model_class(kind), "THESIS_DEFAULTS", {}))
    values = _merge(_merge({"kind": kind}, defaults), ModelConfig.upgrade_dict(
        {"kind": kind, **overrides}))  # fmt: skip
    cfg = from_dict(ModelConfig, values, where="model config")
    if "thesis" in preset_names(kind) and "preset" not in overrides:
        try:
            check_preset(kind, "thesis", "model", cfg)
        except ValueError:
            return cfg
        cfg = dataclasses.replace(cfg, preset="thesis")
    return cfg
