"""HPO: grid expansion (thesis numbering), resumable grid runs, ranking, the HU-W1 proxy."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from synthct.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_thesis_grid_numbering_and_second_stage():
    from synthct.hpo import expand_stage, load_grid

    spec = load_grid(REPO / "configs" / "hpo-thesis.yaml")
    stage1 = expand_stage(spec, 0, {})
    assert len(stage1) == 27 and len({n for n, _ in stage1}) == 27
    name, point = stage1[16]  # "HPO17", the thesis's best point
    assert name == "hpo-thesis-17"
    assert point == {"model.lr_g": 2e-4, "model.lr_d": 4e-4, "model.lr_e": 2e-4}
    stage2 = expand_stage(spec, 1, point)
    assert [p["model.latent_dim"] for _, p in stage2] == [1280, 1536, 1792]
    assert all(p["model.lr_g"] == 2e-4 for _, p in stage2)  # from_best carries the winner
    assert stage2[0][0] == "hpo-thesis-s2-01"


def test_bad_grid_key_is_refused(tmp_path):
    from synthct.hpo import load_grid

    (tmp_path / "base.yaml").write_text((REPO / "configs" / "hagan-tiny.yaml").read_text())
    grid = {"name": "g", "base": "base.yaml", "stages": [{"grid": {"model.lr_x": [1.0]}}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match="lr_x"):
        load_grid(tmp_path / "g.yaml")


def test_wasserstein_hu_known_shift():
    from synthct.hpo import wasserstein_hu

    real = np.random.default_rng(0).uniform(-0.8, 0.8, 5000)
    # W1 between a distribution and its shift by c is |c|; [-1, 1] -> HU scales by (hi - lo)/2
    assert wasserstein_hu(real + 0.1, real, (-1024.0, 600.0)) == pytest.approx(0.1 * 812, rel=1e-9)
    assert wasserstein_hu(real, real, (-1024.0, 600.0)) == 0.0


def test_run_hpo_trains_ranks_and_skips_done_runs(workspace, tmp_path, monkeypatch):
    from test_train import TinyGAN, install_packed, tiny_cfg

    import synthct.train
    from synthct.hpo_study import run_hpo

    install_packed(monkeypatch, 16)
    from synthct.config import save_yaml, to_dict

    save_yaml(to_dict(tiny_cfg(steps=2, snapshot_every=0, collapse_every=0)), tmp_path / "b.yaml")
    grid = {"name": "g", "base": "b.yaml", "stages": [{"grid": {"model.lr_g": [1e-3, 3e-3]}}]}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(grid))

    def factory(run_cfg):
        return TinyGAN(run_cfg.data.size, run_cfg.model.latent_dim, lr=run_cfg.model.lr_g)

    def score(run_dir: Path) -> float:  # a stand-in metric: prefers the larger learning rate
        return -yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["lr_g"]

    trained = []
    real_train = synthct.train.train
    monkeypatch.setattr(
        synthct.train, "train", lambda *a, **k: trained.append(a[2]) or real_train(*a, **k)
    )
    summary = run_hpo(tmp_path / "g.yaml", workspace, metric=score, model_factory=factory)
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["g-02", "g-01"] and [r["rank"] for r in rows] == ["1", "2"]
    assert float(rows[0]["model.lr_g"]) == 3e-3 and rows[0]["steps"] == "2"
    assert "d_loss" in rows[0] and np.isfinite(float(rows[0]["d_loss"]))
    assert json.loads((summary.parent / "summary.json").read_text())["rows"][0]["run"] == "g-02"
    assert trained == ["g-01", "g-02"]
    run_hpo(tmp_path / "g.yaml", workspace, metric=score, model_factory=factory)
    assert trained == ["g-01", "g-02"]  # done runs are not trained again


def test_default_metric_hu_w1_matches_an_independent_computation(workspace, monkeypatch):
    """hu_w1 on a 2-step tiny HA-GAN run equals W1 between HU values from `preprocess.unpack`."""
    import dataclasses

    import torch
    from scipy.stats import wasserstein_distance
    from test_train import install_packed

    from synthct.checkpoint import load_generator
    from synthct.config import load_run_config
    from synthct.hpo import hu_w1
    from synthct.preprocess import unpack
    from synthct.train import train

    sets = install_packed(monkeypatch, 32, n=8)
    cfg = load_run_config(REPO / "configs" / "hagan-tiny.yaml")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=2, snapshot_every=0, collapse_every=0))  # fmt: skip
    run_dir = train(cfg, workspace, "m")
    system, _, _ = load_generator(run_dir)
    fake = system.generate(system.sample_latent(8, generator=torch.Generator().manual_seed(0)))
    fake_hu, _ = unpack(fake[:, 0].numpy(), cfg.data)
    pick = np.random.default_rng(0).permutation(8)[:8]
    real_hu, _ = unpack(sets["train"].arrays[pick], cfg.data)
    expected = wasserstein_distance(np.ravel(fake_hu), np.ravel(real_hu))
    assert hu_w1(run_dir) == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0


def test_hpo_command_dry_run_lists_the_thesis_grid():
    from typer.testing import CliRunner

    from synthct.cli import app

    res = CliRunner().invoke(app, ["hpo", str(REPO / "configs" / "hpo-thesis.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 27 and lines[16].startswith("hpo-thesis-17:")
    assert "'model.lr_d': 0.0004" in lines[16]


def test_fid_ranking_never_uses_the_test_split(workspace, monkeypatch):
    """HPO's FID metric selects models on val (train when there is no val), never on test."""
    import synthct.metrics.evaluation as ev
    from synthct import hpo
    from synthct.workspace import atomic_write_json

    calls = []

    def fake_fid_for_run(ws, run, **kw):
        calls.append((run, kw["real_split"]))
        return {"fid": 1.5}

    monkeypatch.setattr(ev, "fid_for_run", fake_fid_for_run)
    atomic_write_json(workspace.case_index, {"cases": []})
    splits = {"A-001": "train", "A-002": "test"}
    atomic_write_json(workspace.splits, {"splits": splits})
    monkeypatch.setattr(
        "synthct.datasets.cases_in_split",
        lambda ws, split: [c for c, s in splits.items() if s == split],
    )
    assert hpo.METRICS["fid"](workspace.run_dir("r1")) == 1.5
    splits["A-003"] = "val"
    hpo.METRICS["fid"](workspace.run_dir("r2"))
    assert calls == [("r1", "train"), ("r2", "val")]
