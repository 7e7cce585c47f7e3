"""Checkpoints: atomic save + pruning, safe loading, `load_generator` with and without EMA."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from synthct.errors import WorkspaceError

REPO = Path(__file__).resolve().parents[1]


def test_save_list_prune_and_ignore_temp_files(tmp_path):
    from synthct.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    for step in (5, 10, 15):
        save_checkpoint(
            {"format": 1, "step": step, "w": torch.full((3,), float(step))}, tmp_path, keep=2
        )
    (tmp_path / "checkpoints" / ".step-00000020.pt.abc.tmp").write_bytes(b"half")  # killed write
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 15]
    state = load_checkpoint(tmp_path / "checkpoints" / "step-00000015.pt")
    assert state["step"] == 15 and torch.equal(state["w"], torch.full((3,), 15.0))


class Payload:  # an arbitrary object: a checkpoint holding it must not load (weights_only)
    pass


def test_load_refuses_corrupt_and_pickled_object_checkpoints(tmp_path):
    from synthct.checkpoint import load_checkpoint

    bad = tmp_path / "step-00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WorkspaceError, match="unreadable"):
        load_checkpoint(bad)
    torch.save({"format": 1, "step": 1, "obj": Payload()}, bad)
    with pytest.raises(WorkspaceError, match="unreadable"):
        load_checkpoint(bad)
    torch.save({"step": 1}, bad)
    with pytest.raises(WorkspaceError, match="format"):
        load_checkpoint(bad)


def test_load_generator_with_and_without_ema(workspace, monkeypatch):
    """A tiny HA-GAN trained 3 steps: EMA and live weights load as requested and sample."""
    from test_train import install_packed

    from synthct.checkpoint import load_checkpoint, load_generator, resolve_checkpoint
    from synthct.config import load_run_config
    from synthct.train import train

    install_packed(monkeypatch, 32, n=3)
    cfg = load_run_config(REPO / "configs" / "hagan-tiny.yaml")
    import dataclasses

    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, steps=3, checkpoint_every=2, snapshot_every=0,
                                       collapse_every=0, log_every=1)
    )  # fmt: skip
    run_dir = train(cfg, workspace, "tiny")
    state = load_checkpoint(resolve_checkpoint(run_dir))
    sys_ema, cfg_back, meta = load_generator(run_dir, ema=True)
    sys_live, _, meta2 = load_generator(run_dir, checkpoint=3, ema=False)
    assert cfg_back == cfg and meta["step"] == meta2["step"] == 3
    assert meta["sha256"] == hashlib.sha256(Path(meta["path"]).read_bytes()).hexdigest()
    assert meta["spacing"] == [1.5, 1.5, 1.5]
    for k, v in sys_ema.G.state_dict().items():
        torch.testing.assert_close(v, state["ema"]["G"][k], rtol=0, atol=0)
    for k, v in sys_live.G.state_dict().items():
        torch.testing.assert_close(v, state["model"][f"G.{k}"], rtol=0, atol=0)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(sys_ema.G.parameters(), sys_live.G.parameters(), strict=True)
    )  # after 3 steps the EMA (decay warm-up 0.1 .. 0.25) lags the live weights
    assert not sys_ema.training
    g = torch.Generator().manual_seed(0)
    out = sys_ema.generate(sys_ema.sample_latent(2, generator=g))
    assert out.shape == (2, 1, 32, 32, 32) and out.abs().max() <= 1
    with pytest.raises(WorkspaceError, match="no checkpoint at step 7"):
        load_generator(run_dir, checkpoint=7)


def test_sampling_export_samples_identically_and_refuses_resume(workspace, monkeypatch):
    import dataclasses

    from test_train import install_packed

    from synthct.checkpoint import export_for_sampling, load_generator, resolve_checkpoint
    from synthct.config import load_run_config
    from synthct.errors import ConfigError
    from synthct.train import train

    install_packed(monkeypatch, 32, n=3)
    cfg = load_run_config(REPO / "configs" / "hagan-tiny.yaml")
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, steps=2, checkpoint_every=2, snapshot_every=0,
                                       collapse_every=0, log_every=1)
    )  # fmt: skip
    run_dir = train(cfg, workspace, "full")
    slim_dir = workspace.run_dir("slim")
    slim = export_for_sampling(resolve_checkpoint(run_dir), slim_dir)
    assert slim.stat().st_size < 0.6 * resolve_checkpoint(run_dir).stat().st_size
    outs = []
    for d in (run_dir, slim_dir):
        system, cfg_back, meta = load_generator(d)
        assert cfg_back == cfg and meta["step"] == 2
        g = torch.Generator().manual_seed(3)
        outs.append(system.generate(system.sample_latent(2, generator=g)))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="sampling-only"):
        train(cfg, workspace, "slim", resume=True)
