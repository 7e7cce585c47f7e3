"""`synthct evaluate` end to end on tiny blob data, the HPO hook, and input checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from synthct.bench.blobs import blob_set, split_loader, write_blob_synthetic_set
from synthct.config import DataConfig
from synthct.errors import ConfigError, WorkspaceError
from synthct.io import Volume, save_volume, spacing_affine
from synthct.metrics import evaluation as E
from synthct.metrics import volume_sets as S
from synthct.metrics.distances import compute_fid
from synthct.metrics.features import build_random_extractor, select_part

CFG = DataConfig(size=16)


@pytest.fixture
def blobs(workspace, monkeypatch):
    train = blob_set(12, CFG, 1, "TRAIN")
    test = blob_set(12, CFG, 2, "TEST")
    monkeypatch.setattr(E, "load_real_set", split_loader({"train": train, "test": test}))
    write_blob_synthetic_set(workspace, "blob", 16, CFG, 3, train.ids, shift=0.5)
    return workspace, train, test


def _cli(args):
    from typer.testing import CliRunner

    from synthct.cli import app

    return CliRunner().invoke(app, args)


def test_evaluate_cli_writes_labelled_metrics_tables_and_datacard(blobs):
    ws, train, test = blobs
    r = _cli(["evaluate", "--synthetic", "blob", "--extractor", "random", "--n", "14",
              "--json", "--workspace", str(ws.root)])  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout[r.stdout.index("{") :])
    folder = ws.evals / result["id"]
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["id"] == result["id"]
    m = saved["metrics"]
    fx = build_random_extractor(device="cpu")
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert m[key]["n"] == 12 and m[key]["m"] == 14 and m[key]["d"] == fx.dim
        assert m[key]["extractor"]["weights_sha256"] == fx.weights_sha256
        assert {"low", "high"} <= set(m[key]["ci"]) and "real_vs_real" in m[key]["baseline"]
    # independent recomputation of FID from the NIfTI files and the packed real arrays
    syn_ids = pd.read_csv(folder / "embedding.csv").query("group == 'synthetic'")["id"].tolist()
    assert len(syn_ids) == 14
    from synthct.sets import load_synthetic_pair

    packed = np.stack(
        [
            S.to_packed(*(v.array for v in load_synthetic_pair(ws.synthetic / "blob", i)), CFG)
            for i in syn_ids
        ]
    )
    f_syn = fx.extract(select_part(packed, "pair"))
    f_real = fx.extract(select_part(test.arrays, "pair"))
    assert m["fid"]["raw"] == pytest.approx(compute_fid(f_real, f_syn), rel=1e-6)
    # the synthetic blobs are shifted (brighter tissue, bigger tumours): worse than real-vs-real
    assert m["fid"]["value"] > m["fid"]["baseline"]["real_vs_real"]["mean"]
    assert (
        m["statistics"]["tumour_ml"]["synthetic_mean"] > m["statistics"]["tumour_ml"]["real_mean"]
    )
    assert m["classifier_is"] is None  # the random network has no classifier
    emb = pd.read_csv(folder / "embedding.csv")
    assert sorted(emb["id"]) == sorted(train.ids + test.ids + syn_ids)
    priv = pd.read_csv(folder / "privacy.csv")
    assert set(priv["space"]) == {"feature", "voxel"} and len(priv) == 2 * (14 + 12)
    stats = pd.read_csv(folder / "case_stats.csv")
    assert len(stats) == 12 + 14
    card = json.loads((ws.synthetic / "blob" / "datacard.json").read_text())
    assert card["metrics"][result["id"]]["fid"]["value"] == m["fid"]["value"]
    assert not list(ws.evals.glob(".*partial"))


def test_default_encoder_is_trained_once_and_gives_classifier_is(blobs):
    ws, train, _ = blobs
    opts = E.EvalConfig(synthetic="blob", part="image", encoder_epochs=2, n_boot=5, msssim_pairs=5)
    _, res = E.run_evaluation(ws, opts, progress=False)
    enc = list((ws.evals / "encoders").glob("*.pt"))
    assert len(enc) == 1
    info = res["extractor"]
    assert info["name"] == "default" and info["classes"] == ["A", "B"]
    from synthct.runtime import file_sha256

    assert info["weights_sha256"] == file_sha256(enc[0])
    cis = res["metrics"]["classifier_is"]
    assert cis["name"] == "classifier-IS (default centre classifier, 2 classes)"
    assert 1.0 <= cis["synthetic"]["value"] <= 2.0
    mtime = enc[0].stat().st_mtime_ns
    E.run_evaluation(ws, opts, progress=False)
    assert enc[0].stat().st_mtime_ns == mtime  # cached, not retrained


def test_copied_training_cases_are_flagged(blobs):
    ws, train, _ = blobs
    aff = spacing_affine((1.5, 1.5, 3.0))
    folder = ws.synthetic / "blob"
    hu, masks = E.real_hu_and_masks(train.subset([0, 5]), CFG)
    for k, (h, mk) in enumerate(zip(hu, masks, strict=True)):  # SYN-0001/2 := TRAIN-000/005
        save_volume(
            Volume(h, aff), folder / "imagesTr" / f"SYN-000{k + 1}__CT.nii.gz", dtype=np.int16
        )
        save_volume(Volume(mk, aff), folder / "labelsTr" / f"SYN-000{k + 1}.nii.gz", dtype=np.uint8)
    opts = E.EvalConfig(synthetic="blob", extractor="random", n_boot=5, msssim_pairs=5)
    out, res = E.run_evaluation(ws, opts, progress=False)
    priv = pd.read_csv(out / "privacy.csv").query("space == 'voxel' and group == 'synthetic'")
    flagged = priv[priv["flagged"]].set_index("id")
    assert {"SYN-0001", "SYN-0002"} <= set(flagged.index)
    assert flagged.loc["SYN-0001", "nearest_train_id"] == "TRAIN-000"
    assert flagged.loc["SYN-0002", "nearest_train_id"] == "TRAIN-005"
    assert flagged.loc["SYN-0001", "dcr"] < 1e-3  # int16 HU rounding only
    gal = res["metrics"]["privacy"]["gallery"]
    assert {g["synthetic_id"] for g in gal[:2]} == {"SYN-0001", "SYN-0002"}


def test_to_packed_matches_preprocessing():
    pre = pytest.importorskip("synthct.preprocess")
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1500, 1500, (8, 8, 4)).astype(np.float32)
    mask = rng.integers(0, 3, (8, 8, 4)).astype(np.uint8)
    for packing in ("z", "interleave"):
        for kind in ("binary", "multiclass"):
            cfg = DataConfig(size=8, packing=packing, mask=kind)
            ref = pre.pack(pre.hu_to_unit(hu, cfg.hu_window), pre.mask_to_unit(mask, kind), packing)
            np.testing.assert_allclose(S.to_packed(hu, mask, cfg), ref, atol=1e-6)


class _ConstantGAN(torch.nn.Module):
    """A stand-in model whose samples are the first real pair plus small noise."""

    latent_dim = 4

    def __init__(self, volume):
        super().__init__()
        self.register_buffer("v", torch.as_tensor(volume)[None, None])

    def sample_latent(self, n, generator=None, device="cpu"):
        return torch.randn(n, self.latent_dim, generator=generator).to(device)

    def generate(self, z):
        return self.v.expand(len(z), -1, -1, -1, -1) + 0.01 * z[:, :1, None, None, None]


def test_fid_for_generator_hook():
    real = blob_set(8, CFG, 1, "R")
    fx = build_random_extractor(device="cpu")
    out = E.fid_for_generator(_ConstantGAN(real.arrays[0]), CFG, real, fx, n=6, seed=0)
    assert out["n"] == 8 and out["m"] == 6 and out["d"] == fx.dim
    assert out["extractor"]["weights_sha256"] == fx.weights_sha256
    fake = np.stack([real.arrays[0]] * 6)  # near-identical samples: far from the real spread
    ref = compute_fid(fx.extract(real.arrays[:, None]), fx.extract(fake[:, None]))
    assert out["fid"] == pytest.approx(ref, rel=0.05) and out["fid"] > 0


def test_input_errors(workspace):
    with pytest.raises(ConfigError, match="--weights"):
        E.EvalConfig(synthetic="x", extractor="medicalnet")
    with pytest.raises(ConfigError, match="part"):
        E.EvalConfig(synthetic="x", part="both")
    with pytest.raises(WorkspaceError, match="not found"):
        E.run_evaluation(workspace, E.EvalConfig(synthetic="missing"), progress=False)
    r = _cli(["evaluate", "--synthetic", "../x", "--workspace", str(workspace.root)])
    assert r.exit_code != 0


def test_evaluate_on_preprocessed_phantoms(workspace, tmp_path):
    """The real path: phantoms -> ingest -> preprocess -> load_packed, no loader stand-in."""
    from synthct.datasets import cases_in_split, ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import load_packed, preprocess_workspace

    src = write_phantom_set(tmp_path / "src" / "cases", n=14, seed=4, scale=0.125)[0].parent.parent
    ingest(src, workspace, test_fraction=0.5, seed=0, workers=1)
    preprocess_workspace(workspace, CFG, split="all", workers=1, progress=False)
    train_ids = [c.case_id for c in cases_in_split(workspace, "train")]
    test_ids = [c.case_id for c in cases_in_split(workspace, "test")]
    write_blob_synthetic_set(workspace, "blob", 8, CFG, 3, train_ids)
    r = _cli(
        [
            "eval",
            "train-encoder",
            "--size",
            "16",
            "--epochs",
            "2",
            "--workspace",
            str(workspace.root),
        ]
    )
    assert r.exit_code == 0, r.output
    trained = json.loads(r.stdout[r.stdout.index("{") :])
    opts = E.EvalConfig(synthetic="blob", n_boot=5, msssim_pairs=5)
    out, res = E.run_evaluation(workspace, opts, progress=False)
    assert res["extractor"]["weights_sha256"] == trained["sha256"]  # the cached encoder is reused
    assert res["real"]["n"] == len(test_ids) and res["train"]["n"] == len(train_ids)
    assert res["metrics"]["privacy"]["voxel"]["n_holdout"] == len(test_ids)
    test = load_packed(workspace, CFG, split="test")
    hu, _ = E.real_hu_and_masks(E.load_real_set(workspace, CFG, "test"), CFG)
    assert hu.shape == (len(test_ids), 16, 16, 8) and len(test.case_ids) == len(test_ids)
    emb = pd.read_csv(out / "embedding.csv")
    assert sorted(emb.query("group == 'real-test'")["id"]) == sorted(test_ids)


def test_fid_for_run_on_a_trained_checkpoint(workspace, monkeypatch):
    """The HPO hook on a real (2-step) HA-GAN run, checked against a recomputation."""
    from types import SimpleNamespace

    import synthct.preprocess
    from synthct.checkpoint import load_generator
    from synthct.config import ModelConfig, RunConfig, TrainConfig
    from synthct.train import train

    cfg = DataConfig(size=32)
    sets = {"train": blob_set(6, cfg, 1, "TRAIN"), "test": blob_set(6, cfg, 2, "TEST")}

    def fake_load_packed(ws, c, split="train"):
        v = sets[split]
        return SimpleNamespace(
            arrays=v.arrays, case_ids=v.ids, centres=v.centres, spacing=v.spacing, manifest={}
        )

    monkeypatch.setattr(synthct.preprocess, "load_packed", fake_load_packed)
    tcfg = TrainConfig(
        steps=2, batch_size=2, checkpoint_every=2, snapshot_every=2, collapse_every=2
    )
    run_cfg = RunConfig(data=cfg, model=ModelConfig(latent_dim=16, width=0.125), train=tcfg)
    train(run_cfg, workspace, "r")
    out = E.fid_for_run(workspace, "r", n=4, real_split="test", extractor="random", device="cpu")
    assert out["n"] == 6 and out["m"] == 4 and out["checkpoint"]["step"] == 2
    system, _, _ = load_generator(workspace.runs / "r", "latest", ema=True, device="cpu")
    z = system.sample_latent(4, generator=torch.Generator().manual_seed(0))
    fake = system.generate(z).clamp(-1, 1).numpy()
    fx = build_random_extractor(device="cpu")
    ref = compute_fid(fx.extract(sets["test"].arrays[:, None]), fx.extract(fake))
    assert out["fid_raw"] == pytest.approx(ref, rel=1e-6)
