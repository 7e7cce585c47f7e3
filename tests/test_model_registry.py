"""The model registry, per-kind config sections, and reading 0.1.0's flat model configs."""

from __future__ import annotations

import pytest

from synthct.config import (
    MODEL_SECTIONS,
    HAGANConfig,
    ModelConfig,
    RunConfig,
    WGANConfig,
    from_dict,
    to_dict,
)
from synthct.errors import ConfigError
from synthct.models.registry import KINDS, model_class, thesis_model_config

FLAT_HAGAN_010 = {  # the `model` mapping of a 0.1.0 checkpoint (every kind's keys, flat)
    "kind": "hagan", "latent_dim": 128, "width": 0.25, "n_centres": 0, "lambda_class": 0.1,
    "lr_g": 2e-4, "lr_d": 4e-4, "lr_e": 2e-4, "betas": [0.0, 0.99], "eps": 1e-8,
    "wgan_mode": "gp", "clip_value": 0.01, "gp_lambda": 10.0, "n_critic": 5, "resolution": 0,
    "diffaug": "color,translation,cutout", "recon_weight": 1.0, "r1_gamma": None,
    "pl_weight": 2.0,
}  # fmt: skip


def test_every_kind_has_a_section_a_class_and_a_view():
    from synthct.config import DataConfig
    from synthct.views import DataView

    assert set(KINDS) == set(MODEL_SECTIONS)
    for kind in KINDS:
        cls = model_class(kind)
        assert cls.kind == kind
        model = cls(thesis_model_config(kind, width=0.0625, latent_dim=8), DataConfig(size=32))
        assert isinstance(model.view, DataView) and model.view.name in ("volumes", "slices")


def test_a_config_holds_only_its_kinds_section():
    cfg = ModelConfig(kind="wgan")
    assert cfg.section == WGANConfig() and cfg.hagan is None
    assert "wgan" in to_dict(cfg) and "hagan" not in to_dict(cfg)
    with pytest.raises(ValueError, match="sections"):
        ModelConfig(kind="wgan", hagan=HAGANConfig())
    with pytest.raises(ConfigError, match="n_critics"):
        from_dict(ModelConfig, {"kind": "wgan", "wgan": {"n_critics": 3}})


def test_flat_010_model_config_reads_into_its_section_and_round_trips():
    cfg = from_dict(ModelConfig, FLAT_HAGAN_010)
    assert cfg.section == HAGANConfig(lr_e=2e-4, n_centres=0, lambda_class=0.1)
    assert (cfg.lr_g, cfg.betas, cfg.latent_dim) == (2e-4, (0.0, 0.99), 128)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    wgan = from_dict(ModelConfig, {**FLAT_HAGAN_010, "kind": "wgan", "n_centres": 0})
    assert wgan.section == WGANConfig(mode="gp", clip_value=0.01, gp_lambda=10.0, n_critic=5)
    # a flat key overrides the section (grids written "model.lr_e" keep working)
    over = from_dict(ModelConfig, {"kind": "hagan", "hagan": {"lr_e": 1e-4}, "lr_e": 3e-4})
    assert over.section.lr_e == 3e-4
    with pytest.raises(ConfigError, match="only available for kind 'hagan'"):
        from_dict(ModelConfig, {**FLAT_HAGAN_010, "kind": "vanilla", "n_centres": 2})


def test_shipped_demo_checkpoint_converts_loads_and_samples():
    """The demo checkpoint (written by 0.1.0, format 1, flat model config) reads into today's
    sections and rebuilds a model that samples."""
    import shutil
    import tempfile
    from pathlib import Path

    import torch

    from synthct.checkpoint import load_checkpoint, load_generator, run_config_of
    from synthct.demo import shipped_checkpoint

    src = shipped_checkpoint()
    assert src is not None
    state = load_checkpoint(src)
    raw = state["config"]["model"]
    cfg = run_config_of(state)
    assert isinstance(cfg, RunConfig) and cfg.model.kind == "hagan"
    if "hagan" not in raw:  # written before per-kind sections
        assert cfg.model.section.lr_e == raw["lr_e"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(src, run / "checkpoints" / src.name)
        model, cfg2, meta = load_generator(run)
    assert cfg2 == cfg and meta["step"] == state["step"]
    with torch.no_grad():
        out = model.generate(model.sample_latent(1, torch.Generator().manual_seed(0)))
    s = cfg.data.size
    assert out.shape == (1, 1, s, s, s) and out.abs().max() <= 1
