"""The latent-diffusion model kind (synthct/models/ldm.py): networks, stages, resume, learning,
generation, benchmarks and the comparison with HA-GAN.

Runs on configs/ldm-tiny.yaml (S=16) and phantom workspaces built here; the networks of the
S=64/128 recipe are checked on the meta device (shapes and parameter counts without compute).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synthct.config import (
    DataConfig,
    LDMConfig,
    ModelConfig,
    RunConfig,
    from_dict,
    load_run_config,
    save_yaml,
    to_dict,
)
from synthct.errors import ConfigError
from synthct.models.base import StepContext

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "ldm-tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# parameters of the configs/ldm-128.yaml networks (LDMConfig defaults, width 1.0); they do not
# depend on S
RECIPE_PARAMS = {"autoencoder": 5_255_906, "discriminator": 2_773_025, "unet": 41_173_124}


def tiny_cfg(**ldm) -> RunConfig:
    cfg = load_run_config(TINY)
    model = dataclasses.replace(cfg.model, ldm=dataclasses.replace(cfg.model.ldm, **ldm))
    return dataclasses.replace(cfg, model=model)


def read_losses(run_dir: Path) -> list[dict]:
    with open(run_dir / "losses.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_s"} for row in csv.DictReader(f)]


# -- networks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 128])
def test_recipe_networks_shapes_and_parameter_counts(size):
    """The ldm-128 networks at S=64/128 (meta device: shapes without compute)."""
    from synthct.models.ldm import LDM

    cfg = load_run_config(REPO / "configs" / "ldm-128.yaml")
    assert cfg.model.ldm == LDMConfig()  # the recipe is the default section
    with torch.device("meta"):
        model = LDM(cfg.model, DataConfig(size=size))
    counts = {n: sum(p.numel() for p in getattr(model, n).parameters()) for n in RECIPE_PARAMS}
    assert counts == RECIPE_PARAMS
    s, h = size, size // 2
    assert model.latent_shape == (4, s // 4, s // 4, h // 4)
    x = torch.empty(2, 2, s, s, h, device="meta")
    with torch.no_grad():
        rec, mu, sigma = model.autoencoder(x)
        z = model.autoencoder.encode_stage_2_inputs(x)
        v = model.unet(z, torch.zeros(2, device="meta"))
        patches = model.discriminator(x)[-1]
    assert rec.shape == x.shape and mu.shape == sigma.shape == z.shape == v.shape
    assert tuple(z.shape[1:]) == model.latent_shape
    assert tuple(model.sample_latent(3, device="meta").shape) == (3, *model.latent_shape)
    assert patches.shape[:2] == (2, 1) and min(patches.shape[2:]) >= 1


def test_pair_is_unpacked_to_two_aligned_channels_and_packed_back():
    from synthct.models.ldm import pack_pair, unpack_pair

    x = torch.randn(2, 1, 8, 8, 8)
    pair = unpack_pair(x, "z")
    assert torch.equal(pair[:, 0], x[:, 0, ..., :4]) and torch.equal(pair[:, 1], x[:, 0, ..., 4:])
    assert torch.equal(pack_pair(pair, "z"), x)
    inter = unpack_pair(x, "interleave")
    assert torch.equal(inter[:, 0], x[:, 0, ..., 0::2]) and torch.equal(
        inter[:, 1], x[:, 0, ..., 1::2]
    )
    assert torch.equal(pack_pair(inter, "interleave"), x)


def test_sizes_the_networks_cannot_halve_are_refused():
    from synthct.models import build_model

    with pytest.raises(ConfigError, match="S=16.*multiple of 16"):
        build_model(ModelConfig(kind="ldm"), DataConfig(size=16))  # 2 + 2 halvings of S/2 = 8
    with pytest.raises(ConfigError, match="unet_attention"):
        from_dict(ModelConfig, {"kind": "ldm", "ldm": {"unet_attention": [True]}})
    with pytest.raises(ConfigError, match="scheduler"):
        from_dict(ModelConfig, {"kind": "ldm", "ldm": {"scheduler": "euler"}})


def test_registry_and_config_round_trip():
    from synthct.models import KINDS, build_model
    from synthct.models.ldm import LDM

    assert "ldm" in KINDS
    for name in ("ldm-tiny.yaml", "ldm-128.yaml"):
        cfg = load_run_config(REPO / "configs" / name)
        assert from_dict(RunConfig, to_dict(cfg)) == cfg
        assert (
            set(to_dict(cfg)["model"]) >= {"kind", "ldm"} and "hagan" not in to_dict(cfg)["model"]
        )
    model = build_model(tiny_cfg().model, tiny_cfg().data)
    assert isinstance(model, LDM) and model.ema_modules == ("unet",)
    assert set(model.configure_optimizers()) == {"autoencoder", "discriminator", "unet"}


# -- the training step ------------------------------------------------------------------------
def _steps(seed: int, n: int, scheduler: str = "rflow", probe=None) -> list[dict]:
    """n loop steps of the tiny model (autoencoder stage 2 steps, adversarial from step 1)."""
    from synthct.models import build_model
    from synthct.train import make_update, seed_everything

    cfg = tiny_cfg(autoencoder_steps=2, adv_start=1, scheduler=scheduler)
    seed_everything(seed)
    model = build_model(cfg.model, cfg.data)
    opts = model.configure_optimizers()
    gen = torch.Generator().manual_seed(seed)
    real = model.view.random_batch(2, torch.Generator().manual_seed(0))
    out = []
    for step in range(n):
        if probe:
            probe(step, model, real)
        ctx = StepContext(step, torch.device("cpu"), gen, make_update(opts, step, 1))
        out.append(model.train_step(real, ctx))
    return out


@pytest.mark.parametrize("scheduler", ["rflow", "ddpm"])
def test_seeded_steps_repeat_and_differ_across_seeds(scheduler):
    a, b, c = (_steps(s, 4, scheduler) for s in (5, 5, 6))
    assert a == b and a != c
    assert [r["stage"] for r in a] == [1.0, 1.0, 2.0, 2.0]
    assert all(list(r) == ["stage", "diffusion", "recon_l1", "kl", "g_adv", "d_adv"] for r in a)
    assert np.isnan(a[0]["g_adv"]) and np.isfinite(a[1]["g_adv"]) and np.isfinite(a[1]["d_adv"])
    assert np.isnan(a[2]["recon_l1"]) and np.isfinite(a[2]["diffusion"])


def test_each_stage_trains_only_its_networks_and_sets_the_scale_factor_once():
    from synthct.models.ldm import unpack_pair

    seen: dict[int, dict] = {}

    def probe(step, model, real):
        seen[step] = {n: [p.detach().clone() for p in getattr(model, n).parameters()]
                      for n in ("autoencoder", "discriminator", "unet")}  # fmt: skip
        seen[step]["scale"] = float(model.scale_factor)
        if step == 2:  # the first diffusion step draws exactly this latent (same RNG state)
            state = torch.get_rng_state()
            with torch.no_grad():
                z = model.autoencoder.encode_stage_2_inputs(unpack_pair(real, "z"))
            torch.set_rng_state(state)
            seen["expected_scale"] = float(1 / z.std())
        if step == 4:
            seen["final_scale"] = float(model.scale_factor)

    _steps(0, 5, probe=probe)

    def changed(net: str, a: int, b: int) -> bool:
        return any(not torch.equal(x, y) for x, y in zip(seen[a][net], seen[b][net], strict=True))

    assert changed("autoencoder", 0, 1) and not changed("unet", 0, 1)
    assert not changed("discriminator", 0, 1) and changed("discriminator", 1, 2)  # from adv_start
    assert changed("unet", 2, 3) and not changed("autoencoder", 2, 4)
    assert not changed("discriminator", 2, 4)
    assert seen[2]["scale"] == 0.0
    assert seen[3]["scale"] == pytest.approx(seen["expected_scale"], rel=1e-5)
    assert seen["final_scale"] == seen[3]["scale"]  # computed once, then kept


def test_one_pass_models_refuse_sampling_steps(tmp_path):
    from synthct.generate import GenerateConfig, write_set
    from synthct.models import build_model

    hagan = build_model(ModelConfig(kind="hagan", width=1 / 16, latent_dim=8), DataConfig(size=32))
    with pytest.raises(ConfigError, match="one pass"):
        write_set(tmp_path / "s", hagan, (1.5, 1.5, 3.0), GenerateConfig(n=1, sampling_steps=5))
    assert not (tmp_path / "s").exists()


# -- runs on phantoms ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_ws(tmp_path_factory):
    """Phantom cases (synthct.phantom) ingested and preprocessed at S=16 (~5 s)."""
    from synthct.datasets import ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.workspace import Workspace

    root = tmp_path_factory.mktemp("ldm")
    src = write_phantom_set(root / "cases", n=6, seed=4, scale=0.125)[0].parent.parent
    ws = Workspace.resolve(root / "ws").ensure()
    ingest(src, ws, test_fraction=0.3, seed=0, workers=1)
    preprocess_workspace(ws, DataConfig(size=16), workers=1, progress=False)
    return ws


def _w1(model, real_images: np.ndarray, window) -> float:
    """HU-histogram W1 (scipy) between 8 fixed-seed samples' image halves and the real ones."""
    from synthct.hpo import wasserstein_hu
    from synthct.views.volumes import image_half

    g = torch.Generator().manual_seed(0)
    fake = model.eval().generate(model.sample_latent(8, generator=g))
    return wasserstein_hu(image_half(fake[:, 0], "z").numpy(), real_images, window)


@pytest.fixture(scope="module")
def trained(phantom_ws):
    """configs/ldm-tiny.yaml trained in full (150 autoencoder + 250 diffusion steps), with the
    W1 of the untrained model, of the autoencoder-stage checkpoint and of the final EMA model."""
    from synthct.checkpoint import load_generator
    from synthct.models import build_model
    from synthct.preprocess import load_packed
    from synthct.train import train
    from synthct.views.volumes import image_half

    cfg = load_run_config(TINY)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, checkpoint_every=150, keep_checkpoints=0, snapshot_every=0, collapse_every=0))  # fmt: skip
    real = load_packed(phantom_ws, cfg.data, split="train").arrays
    real_images = image_half(torch.from_numpy(np.asarray(real)), "z").numpy()
    window = cfg.data.hu_window
    torch.manual_seed(cfg.train.seed)  # the loop seeds the same way before building
    before = _w1(build_model(cfg.model, cfg.data), real_images, window)
    run_dir = train(cfg, phantom_ws, "learn")
    ae_only = _w1(load_generator(run_dir, checkpoint=150)[0], real_images, window)
    after = _w1(load_generator(run_dir, ema=True)[0], real_images, window)
    return run_dir, {"before": before, "autoencoder_only": ae_only, "after": after}


@pytest.mark.slow
def test_tiny_ldm_learns_the_phantom_distribution(trained):
    """HU-histogram W1 of 8 EMA samples vs the real phantom image halves drops by more than half
    from the untrained model, and the diffusion stage improves on decoding plain noise."""
    _, w = trained
    assert w["after"] < 0.5 * w["before"], w
    assert w["after"] < w["autoencoder_only"], w


@pytest.mark.slow
def test_generate_writes_a_set_whose_card_records_the_sampler(trained, phantom_ws):
    from synthct.checkpoint import list_checkpoints, load_checkpoint
    from synthct.generate import GenerateConfig, generate_from_run
    from synthct.runtime import file_sha256, state_dict_sha256
    from synthct.sets import read_datacard

    run_dir, _ = trained
    out = generate_from_run(phantom_ws, "learn", "ldm-set", GenerateConfig(n=3, sampling_steps=4))
    card = read_datacard(out)
    assert card.model.kind == "ldm" and card.model.data_view == "volumes"
    assert card.n_written == 3 and card.shape == (16, 16, 8) and card.options["sampling_steps"] == 4
    assert len(list((out / "imagesTr").glob("*.nii.gz"))) == 3
    path = list_checkpoints(run_dir)[-1][1]
    state = load_checkpoint(path)
    ae = {k.removeprefix("autoencoder."): v for k, v in state["model"].items()
          if k.startswith("autoencoder.")}  # fmt: skip
    sampler = card.extra["sampler"]
    assert sampler["scheduler"] == "rflow" and sampler["steps"] == 4
    assert sampler["autoencoder_sha256"] == state_dict_sha256(ae)
    assert sampler["unet_sha256"] == state_dict_sha256(state["ema"]["unet"])  # the EMA UNet
    assert sampler["scale_factor"] == pytest.approx(float(state["model"]["scale_factor"]))
    assert card.checkpoint.sha256 == file_sha256(path)
    on_disk = json.loads((out / "datacard.json").read_text())
    assert on_disk["sampler"] == sampler


def _config(path: Path, **train) -> Path:
    cfg = to_dict(tiny_cfg(autoencoder_steps=20, adv_start=10))
    cfg["train"].update(steps=40, checkpoint_every=5, log_every=1, snapshot_every=20,
                        collapse_every=20, keep_checkpoints=0, **train)  # fmt: skip
    save_yaml(cfg, path)
    return path


def _kill_after(cmd: list[str], ckpt: Path) -> None:
    """Start `cmd`, SIGKILL it as soon as checkpoint `ckpt` exists."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_and_resume_in_each_stage_reproduces_the_loss_log(phantom_ws, tmp_path):
    """SIGKILL `python -m synthct train` in the autoencoder stage, resume it (`--resume`), SIGKILL
    it again in the diffusion stage, resume to the end: losses.csv equals an uninterrupted
    run's."""
    from synthct.checkpoint import list_checkpoints
    from synthct.train import train

    config = _config(tmp_path / "ldm.yaml")
    train(load_run_config(config), phantom_ws, "straight")  # what `synthct train` runs
    cmd = [sys.executable, "-m", "synthct", "train", "--workspace", str(phantom_ws.root),
           "--config", str(config)]  # fmt: skip
    run_dir = phantom_ws.run_dir("killed")
    ckpts = run_dir / "checkpoints"
    _kill_after([*cmd, "--run", "killed"], ckpts / "step-00000010.pt")
    first = list_checkpoints(run_dir)[-1][0]
    assert 10 <= first < 20, "not killed in the autoencoder stage"
    _kill_after([*cmd, "--run", "killed", "--resume"], ckpts / "step-00000030.pt")
    second = list_checkpoints(run_dir)[-1][0]
    assert 30 <= second < 40, "not killed in the diffusion stage"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 40
    train(load_run_config(config), phantom_ws, "killed", resume=True)  # `train --resume`
    a, b = read_losses(phantom_ws.run_dir("straight")), read_losses(run_dir)
    assert len(a) == 40 and a == b
    assert {r["stage"] for r in a[:20]} == {"1.0"} and {r["stage"] for r in a[20:]} == {"2.0"}


# -- benchmarks and the model comparison ------------------------------------------------------
def test_bench_train_times_each_stage_of_the_ldm():
    from synthct.bench.train import TrainBenchConfig, bench_train

    spec = TrainBenchConfig(run_config=str(TINY), batch=2, steps=1, warmup=0)
    ae = bench_train(dataclasses.replace(spec, start_step=50))  # adversarial term on
    diffusion = bench_train(dataclasses.replace(spec, start_step=150))
    assert ae["model"] == diffusion["model"] == "ldm" and ae["size"] == 16
    # the autoencoder stage (full-resolution convolutions + discriminator) costs more FLOPs than
    # a UNet step on the 8 x 8 x 4 latent
    assert ae["tflop_per_it"] > diffusion["tflop_per_it"] > 0


def test_bench_generate_times_sampling_steps():
    from typer.testing import CliRunner

    from synthct.cli import app

    res = CliRunner().invoke(app, ["bench", "generate", "--config", str(TINY), "--n", "2",
                                   "--batch", "2", "--device", "cpu", "--sampling-steps", "1",
                                   "--sampling-steps", "3"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "- ldm S=16 (pairs 16x16x8)" in res.output and "10 sampling steps" in res.output
    assert "  - 1 sampling steps: " in res.output and "  - 3 sampling steps: " in res.output


def test_comparison_table_shows_hagan_and_ldm_side_by_side(workspace, monkeypatch):
    """A HA-GAN set and an LDM set evaluated on the same real cases and extractor share a
    protocol in the dashboard's comparison table, each with its interval around its estimate."""
    from typer.testing import CliRunner

    from synthct.bench.blobs import blob_set, split_loader
    from synthct.cli import app
    from synthct.generate import GenerateConfig, write_set
    from synthct.metrics import evaluation as E
    from synthct.metrics.comparison import compare_models
    from synthct.models import build_model
    from synthct.runtime import case_ids_hash

    data = DataConfig(size=32)
    train, test = blob_set(12, data, 1, "TRAIN"), blob_set(12, data, 2, "TEST")
    monkeypatch.setattr(E, "load_real_set", split_loader({"train": train, "test": test}))
    ldm = dataclasses.replace(tiny_cfg().model, ldm=dataclasses.replace(
        tiny_cfg().model.ldm, sampling_steps=2))  # fmt: skip
    models = {"hagan": ModelConfig(kind="hagan", width=1 / 16, latent_dim=8), "ldm": ldm}
    for name, model_cfg in models.items():
        torch.manual_seed(0)
        model = build_model(model_cfg, data)
        provenance = {
            "run_config": {"data": to_dict(data), "model": to_dict(model_cfg)},
            "training_cases": {"split": "train", "case_ids": train.ids,
                               "sha256": case_ids_hash(train.ids)},
            "model": {"kind": name, "size": 32},
        }  # fmt: skip
        write_set(workspace.synthetic_dir(name), model, (1.5, 1.5, 3.0),
                  GenerateConfig(n=12, batch_size=4), provenance=provenance)  # fmt: skip
        res = CliRunner().invoke(app, ["evaluate", "--synthetic", name, "--extractor", "random",
                                       "--n", "12", "--workspace", str(workspace.root)])  # fmt: skip
        assert res.exit_code == 0, res.output
    table = compare_models(workspace, "volume").set_index("model_kind")
    assert set(table.index) == {"hagan", "ldm"}
    assert table.loc["hagan", "protocol"] == table.loc["ldm", "protocol"]
    assert (table["dims"] == "3D").all() and (table["n_cases"] == 12).all()
    for metric in ("fid", "kid", "precision", "recall", "density", "coverage"):
        low, value, high = table[f"{metric}_low"], table[metric], table[f"{metric}_high"]
        assert ((low <= value) & (value <= high)).all(), table.filter(like=metric)
    assert table["tier"].notna().all()
