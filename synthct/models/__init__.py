"""Generative models. Each module holds one architecture; all implement `base.GenerativeModel`.

`registry.build_model(model_cfg, data_cfg)` is the one entry point the loop, checkpoints and
sampling use; `registry.KINDS` lists the kinds.
"""

from __future__ import annotations

from synthct.models.base import GenerativeModel, StepContext
from synthct.models.registry import KINDS, build_model, model_config, thesis_model_config

__all__ = [
    "GenerativeModel",
    "KINDS",
    "StepContext",
    "build_model",
    "model_config",
    "thesis_model_config",
]
