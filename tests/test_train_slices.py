"""The 2D systems (FastGAN, StyleGAN2) in the training loop and CLI (their benchmark: test_bench.py).

A real workspace (6 phantom cases ingested and preprocessed at S = 32) is shared by the module;
the shipped tiny configs run a few steps each.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthct.config import DataConfig, RunConfig, load_run_config
from synthct.models.base import GenerativeModel
from synthct.views import SliceView

REPO = Path(__file__).resolve().parent.parent
KINDS = ("fastgan", "stylegan2")


@pytest.fixture(scope="module")
def packed_ws(tmp_path_factory):
    """6 phantom cases ingested and preprocessed at S=32 (~10 s)."""
    from synthct.datasets import ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.workspace import Workspace

    root = tmp_path_factory.mktemp("packed2d")
    src = write_phantom_set(root / "cases", n=6, seed=4, scale=0.125)[0].parent.parent
    ws = Workspace.resolve(root / "ws").ensure()
    ingest(src, ws, test_fraction=0.3, seed=0, workers=1)
    preprocess_workspace(ws, DataConfig(size=32), workers=1, progress=False)
    return ws


def tiny(kind: str, **train) -> RunConfig:
    cfg = load_run_config(REPO / "configs" / f"{kind}-tiny.yaml")
    base = dict(steps=4, log_every=1, snapshot_every=2, checkpoint_every=2, collapse_every=2,
                keep_checkpoints=5)  # fmt: skip
    base.update(train)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **base))


def read_losses(run_dir: Path) -> list[dict]:
    with open(run_dir / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_2d_config_runs_through_the_loop(packed_ws, kind):
    from PIL import Image

    from synthct.checkpoint import list_checkpoints, load_generator
    from synthct.preprocess import load_packed
    from synthct.train import train

    run_dir = train(tiny(kind), packed_ws, f"smoke-{kind}")
    rows = read_losses(run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= set(rows[0])
    assert all(np.isfinite(float(r["d_loss"])) and np.isfinite(float(r["g_loss"])) for r in rows)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]
    cases = json.loads((run_dir / "train_cases.json").read_text())
    packed = load_packed(packed_ws, DataConfig(size=32), "train")
    assert cases["case_ids"] == sorted(packed.case_ids) and cases["split"] == "train"
    assert cases["data_view"] == "slices" and cases["resolution"] == 32
    assert cases["spacing"] == pytest.approx(list(packed.spacing))
    # 32 image slices per case, minus air-only slices; some slices carry tumour
    assert 0 < cases["n_tumour_slices"] < cases["n_slices"] <= 16 * len(packed.case_ids)
    png = np.asarray(Image.open(run_dir / "samples" / "step-00000004.png"))
    assert png.shape == (2 * 32, 4 * 32, 3)  # CT row over overlay row, 4 samples
    with open(run_dir / "collapse.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "done"
    system, cfg, meta = load_generator(run_dir)
    assert meta["step"] == 4 and cfg == tiny(kind)
    out = system.generate(system.sample_latent(3, torch.Generator().manual_seed(0)))
    assert out.shape == (3, 2, 32, 32) and out.abs().max() <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_2d_run_interrupted_then_resumed_matches_uninterrupted(packed_ws, kind):
    """An exception at step 5 (after the checkpoint at 4), then --resume: identical losses.csv."""
    from synthct.train import train

    cfg = tiny(kind, steps=8, checkpoint_every=4, snapshot_every=4, collapse_every=4)
    full = train(cfg, packed_ws, f"full-{kind}")

    def stop_at_5(fraction: float, message: str) -> None:
        if message == "step 5/8":
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        train(cfg, packed_ws, f"cut-{kind}", progress=stop_at_5)
    status = json.loads((packed_ws.run_dir(f"cut-{kind}") / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 5
    cut = train(cfg, packed_ws, f"cut-{kind}", resume=True)
    a, b = read_losses(full), read_losses(cut)
    assert len(a) == 8 and a == b


def test_cli_trains_the_shipped_fastgan_config(packed_ws):
    from typer.testing import CliRunner

    from synthct.cli import app

    r = CliRunner().invoke(app, ["train", "--config", str(REPO / "configs" / "fastgan-tiny.yaml"),
                                 "--steps", "2", "--run", "cli-fastgan",
                                 "--workspace", str(packed_ws.root)])  # fmt: skip
    assert r.exit_code == 0, r.output
    from synthct.checkpoint import list_checkpoints

    run_dir = packed_ws.run_dir("cli-fastgan")
    # log_every 10 in the config: the last step is always logged and checkpointed
    assert [int(x["step"]) for x in read_losses(run_dir)] == [2]
    assert [s for s, _ in list_checkpoints(run_dir)] == [2]
    assert "run cli-fastgan" in r.output


def test_3d_augmentation_is_refused_for_2d_systems(packed_ws):
    from synthct.errors import ConfigError
    from synthct.train import train

    with pytest.raises(ConfigError, match="augment is 'affine'.*2D"):
        train(tiny("fastgan", augment="affine"), packed_ws, "aug2d")
    assert not (packed_ws.run_dir("aug2d") / "config.yaml").exists()


def test_slice_draws_are_a_pure_function_of_seed_and_step_and_shard_over_ranks(packed_ws):
    from synthct.train import load_split
    from synthct.views.slices import slice_batch_indices, step_generator

    cfg = tiny("fastgan", batch_size=4)
    view = SliceView(cfg.data, 32)
    data = view.training_data(load_split(packed_ws, cfg, False), "train")
    ds = data.items
    a = slice_batch_indices(ds, 0, 7, 4)
    assert torch.equal(a, slice_batch_indices(ds, 0, 7, 4))
    assert not torch.equal(a, slice_batch_indices(ds, 0, 8, 4))
    assert not torch.equal(a, slice_batch_indices(ds, 1, 7, 4))
    world = torch.cat([slice_batch_indices(ds, 0, 7, 4, r, 2) for r in range(2)])
    assert torch.equal(world, ds.draw_indices(8, step_generator(0, 7)))
    batch = view.batch(data, cfg, 7, 0, 1, torch.Generator(), torch.device("cpu"))[0]
    assert batch.shape == (4, 2, 32, 32)
    assert torch.equal(batch, torch.stack([ds[int(i)] for i in a]))
    assert set(torch.unique(batch[:, 1]).tolist()) <= {-1.0, 1.0}
    # the natural tumour mix (the default; the mix slice-level evaluation compares against)
    many = torch.cat([slice_batch_indices(ds, 0, t, 50) for t in range(20)])
    assert abs(ds.tumour[many].float().mean() - ds.tumour.float().mean()) < 0.1
    assert data.record["tumour_fraction"] is None


class _Bank(GenerativeModel):
    """generate() returns rows of a fixed (n, 2, R, R) bank; `collapsed` repeats row 0."""

    def __init__(self, bank: torch.Tensor, collapsed: bool):
        super().__init__()
        self.view = SliceView(DataConfig(size=bank.shape[-1]), bank.shape[-1])
        self.G = nn.Identity()
        self.bank, self.collapsed, self.latent_dim = bank, collapsed, 1

    def generate(self, z, centre=None):
        idx = torch.zeros(len(z), dtype=torch.long) if self.collapsed else torch.arange(len(z))
        return self.bank[(idx + 3) % len(self.bank)]


def test_slice_collapse_alarm_flags_identical_samples_not_real_slices(packed_ws):
    from synthct.collapse import N_COLLAPSE, check_collapse, probe_samples
    from synthct.train import load_split

    cfg = tiny("fastgan")
    view = SliceView(cfg.data, 32)
    data = view.training_data(load_split(packed_ws, cfg, False), "train")
    probe = view.probe(data, cfg)
    g = torch.Generator().manual_seed(99)
    idx = torch.multinomial(data.items.weights, 8, replacement=False, generator=g)
    bank = torch.stack([data.items[int(i)] for i in idx])
    for collapsed, expect in ((True, [False, True, True]), (False, [False, False, False])):
        alarm = {"strikes": 0, "flagged": False}
        model = _Bank(bank, collapsed)
        results = [
            check_collapse(
                probe, probe_samples(model, {}, N_COLLAPSE, 0, torch.device("cpu")), alarm
            )
            for _ in range(3)
        ]
        assert [r[2] for r in results] == expect
        if collapsed:
            assert results[0][0] == pytest.approx(0.0)
        else:
            assert 0.5 < results[0][0] / probe.real_diversity < 2.0


def test_snapshot_png_overlays_the_mask_in_radiological_orientation():
    from synthct.display import MASK_COLOURS
    from synthct.views.slices import pairs_png

    pair = torch.full((1, 2, 8, 8), -1.0)
    pair[0, 0, 6, 1] = 1.0  # bright pixel at x=6, y=1
    pair[0, 1, 6, 1] = 1.0  # tumour at the same place
    png = pairs_png(pair)
    assert png.shape == (16, 8, 3) and png.dtype == np.uint8
    # rows = y descending (row 7 - 1 = 6), cols = x
    assert tuple(png[6, 6]) == (255, 255, 255) and png[:8].sum() == 3 * 255
    assert tuple(png[8 + 6, 6]) == MASK_COLOURS[1]  # one-pixel tumour: its outline colour
    assert png[8:].sum() == sum(MASK_COLOURS[1])


def test_mosaic_layout_trains_and_generates_volumes(packed_ws):
    """model.fastgan.slice_layout: mosaic (the thesis's layout) trains on mosaics of the packed halves,
    records its grid, and generation cuts the mosaics back into volumes."""
    import json

    from synthct.generate import GenerateConfig, generate_from_run
    from synthct.sets import load_synthetic_pair
    from synthct.slices import mosaic_grid
    from synthct.train import train

    cfg = tiny("fastgan", steps=2, snapshot_every=0, collapse_every=0, checkpoint_every=2)
    mosaic = dataclasses.replace(cfg.model.section, slice_layout="mosaic")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, fastgan=mosaic))
    run_dir = train(cfg, packed_ws, "mosaic")
    record = json.loads((run_dir / "train_cases.json").read_text())
    rows, cols = mosaic_grid(cfg.data.size // 2)
    assert record["layout"] == "mosaic" and record["grid"] == [rows, cols]
    set_dir = generate_from_run(packed_ws, "mosaic", "mosaic-set", GenerateConfig(n=2))
    image, mask = load_synthetic_pair(set_dir, "SYN-0001")
    assert image.shape[2] == rows * cols and image.shape == mask.shape


def test_the_preset_a_run_used_is_recorded_in_its_config_checkpoint_and_datacard(packed_ws):
    from synthct.checkpoint import load_generator
    from synthct.generate import GenerateConfig, generate_from_run
    from synthct.sets import load_datacard
    from synthct.train import train

    cfg = tiny("stylegan2", steps=1, snapshot_every=0, collapse_every=0, checkpoint_every=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, preset="thesis"))
    run_dir = train(cfg, packed_ws, "preset-thesis")
    assert load_run_config(run_dir / "config.yaml").model.preset == "thesis"
    assert load_generator(run_dir)[1].model.preset == "thesis"
    set_dir = generate_from_run(packed_ws, "preset-thesis", "preset-set", GenerateConfig(n=1))
    assert load_datacard(set_dir)["run_config"]["model"]["preset"] == "thesis"
