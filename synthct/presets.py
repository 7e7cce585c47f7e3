"""Named training presets of the 2D systems, and the check that a config naming one uses it.

A preset is a name for the optimiser and regularisation settings of one source. A run config
names it in `model.preset`; the name travels with the config into the run folder, every
checkpoint and the datacard of every set sampled from the run (`run_config.model.preset`), so a
result says which settings produced it. `""` names no preset (custom settings; no claim).

A config that names a preset must hold that preset's values: `check_preset` refuses one that
changes any of them (so the label cannot drift from the numbers). Settings a preset does not
list (latent size, width, DiffAugment policy, steps, ...) are free.

- StyleGAN2 "thesis": the thesis's Table 4.15 (Adam lr 1e-4 for G and D, betas (0, 0.99),
  batch 8).
- StyleGAN2 "reference": the defaults of the most-used StyleGAN2 port
  (rosinality/stylegan2-pytorch, `train.py`): lr 0.002 for G and D, betas (0, 0.99), batch 16
  per device, R1 gamma 10 every 16 D steps, path length weight 2 every 4 G steps (both systems
  then correct lr and betas by k/(k+1)), generator EMA 0.5^(32/10,000) = 0.99778 per step. The
  thesis learning rate is 20x lower.
- FastGAN "thesis": Table 4.13 (Adam lr 2e-4, betas (0.5, 0.99), batch 8).
- FastGAN "reference": the official FastGAN `train.py` (lr 2e-4, betas (0.5, 0.999), batch 8,
  DiffAugment "color,translation").

Hand-written: a table of numbers read from those sources.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PORT_EMA = 0.99778  # rosinality/stylegan2-pytorch: accum = 0.5 ** (32 / (10 * 1000)) = 0.997784

# kind -> preset name -> {"model.<field>" | "model.<kind>.<field>" | "train.<field>": value}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "stylegan2": {
        "thesis": {
            "model.lr_g": 1e-4,
            "model.lr_d": 1e-4,
            "model.betas": (0.0, 0.99),
            "train.batch_size": 8,
        },
        "reference": {
            "model.lr_g": 2e-3,
            "model.lr_d": 2e-3,
            "model.betas": (0.0, 0.99),
            "model.stylegan2.r1_gamma": 10.0,
            "model.stylegan2.pl_weight": 2.0,
            "train.batch_size": 16,
            "train.ema_decay": PORT_EMA,
        },
    },
    "fastgan": {
        "thesis": {
            "model.lr_g": 2e-4,
            "model.lr_d": 2e-4,
            "model.betas": (0.5, 0.99),
            "train.batch_size": 8,
        },
        "reference": {
            "model.lr_g": 2e-4,
            "model.lr_d": 2e-4,
            "model.betas": (0.5, 0.999),
            "model.fastgan.diffaug": "color,translation",
            "train.batch_size": 8,
        },
    },
}


def preset_names(kind: str) -> tuple[str, ...]:
    """The presets defined for model kind `kind` (empty for the 3D models)."""
    return tuple(PRESETS.get(kind, {}))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def check_preset(kind: str, name: str, section: str, values: Mapping[str, Any] | object) -> None:
    """Raise ValueError unless the `section` ("model" | "train") settings in `values` (a
    dataclass or a mapping) agree with preset `name` of `kind`; "" (no preset) always passes.

    The message names the preset, each differing setting, the preset's value and the config's.
    """
    if not name:
        return
    table = PRESETS.get(kind, {})
    if name not in table:
        known = ", ".join(repr(n) for n in table) or "none"
        raise ValueError(
            f"model.preset {name!r} is not defined for kind {kind!r} (presets: {known}; "
            "'' = custom settings)"
        )
    wrong = []
    for key, expected in table[name].items():
        where, *path = key.split(".")
        if where != section:
            continue
        got = values
        for field in path:  # "model.stylegan2.r1_gamma": the kind's own section
            got = got[field] if isinstance(got, Mapping) else getattr(got, field)
        if not _same(got, expected):
            wrong.append(f"{key} = {got!r} (preset: {expected!r})")
    if wrong:
        raise ValueError(
            f"model.preset {name!r} of {kind} fixes these settings, but the config differs: "
            f"{'; '.join(wrong)}. Use the preset's values or set model.preset to '' (custom)"
        )
