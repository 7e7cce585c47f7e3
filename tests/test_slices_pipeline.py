"""2D sets end to end: generation from a trained 2D run, slice-level evaluation of 2D and 3D sets,
and the model comparison table. Uses the phantom workspace of test_train_slices (S = 32)."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from test_train_slices import packed_ws, tiny  # noqa: F401 (module fixture)

from synthct import generate as gen
from synthct import sets
from synthct.config import DataConfig

S = 32


@pytest.fixture(scope="module")
def fastgan_run(packed_ws):  # noqa: F811
    from synthct.train import train

    return train(tiny("fastgan", steps=2, snapshot_every=0, collapse_every=0), packed_ws, "g2d")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_2d_set_shapes_spacing_datacard_and_reproducibility(packed_ws, fastgan_run):  # noqa: F811
    from synthct.checkpoint import load_generator
    from synthct.preprocess import load_packed

    opts = gen.GenerateConfig(n=5, seed=3, batch_size=2, format="png")
    out = gen.generate_from_run(packed_ws, "g2d", "syn2d", opts, device="cpu")
    card = sets.load_datacard(out)
    assert card["model"]["kind"] == "fastgan" and card["model"]["size"] == S
    assert card["model"]["data_view"] == "slices" and card["model"]["grid"] is None
    assert card["shape"] == [S, S, 1] and card["counts"]["written"] == 5
    packed = load_packed(packed_ws, DataConfig(size=S), "train")
    assert card["spacing"] == pytest.approx(list(packed.spacing))  # R = S: same field of view
    assert card["training_cases"]["case_ids"] == sorted(packed.case_ids)
    system, cfg, _ = load_generator(fastgan_run, device="cpu")
    for i, case in enumerate(card["cases"]):
        img = nib.load(out / "imagesTr" / f"{case['case_id']}__CT.nii.gz")
        lab = nib.load(out / "labelsTr" / f"{case['case_id']}.nii.gz")
        assert img.shape == (S, S, 1) and img.get_data_dtype() == np.int16
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), packed.spacing, rtol=1e-5)
        # independent recomputation from the generator output
        z = system.sample_latent(1, torch.Generator().manual_seed(case["seed"]))
        o = system.generate(z)[0].numpy()
        lo, hi = cfg.data.hu_window
        want_hu = np.rint(np.clip((o[0] * 0.5 + 0.5) * (hi - lo) + lo, lo, hi))
        assert np.abs(np.asarray(img.dataobj)[..., 0] - want_hu).max() <= 1
        assert np.array_equal(np.asarray(lab.dataobj)[..., 0], (o[1] > 0).astype(np.uint8))
        assert case["seed"] == gen.case_seed(3, i)
        assert (out / "imagesPng" / f"{case['case_id']}.png").is_file()
        assert (out / "labelsPng" / f"{case['case_id']}.png").is_file()
    again = gen.generate_from_run(
        packed_ws,
        "g2d",
        "syn2d-again",
        gen.GenerateConfig(n=5, seed=3, batch_size=5),
        device="cpu",
    )
    for sub in ("imagesTr", "labelsTr"):
        a = sorted((out / sub).iterdir())
        b = sorted((again / sub).iterdir())
        assert [p.name for p in a] == [p.name for p in b]
        assert [_sha(p) for p in a] == [_sha(p) for p in b]


def test_half_resolution_2d_model_scales_the_in_plane_spacing():
    from synthct.models import build_model, model_config

    system = build_model(model_config(kind="stylegan2", latent_dim=8, width=1 / 32,
                                      resolution=32, diffaug=""), DataConfig(size=64))  # fmt: skip
    assert system.view.output_spacing((1.5, 1.2, 3.0)) == (3.0, 2.4, 3.0)
    img, msk = gen.sample_pairs(system, [1, 2])
    assert img.shape == (2, 32, 32, 1) and msk.shape == (2, 32, 32, 1) and msk.dtype == np.uint8


def test_mosaic_output_is_cut_back_into_a_volume():
    from synthct.slices import mosaic
    from synthct.views.slices import slices_to_volumes

    vol = torch.rand(2, 2, 4, 8, 8) * 2 - 1  # (B, channel, Z, X, Y)
    vol[:, 1] = torch.sign(vol[:, 1])
    tiles = mosaic(vol, 2, 2)  # (B, 2, 16, 16)
    img, msk = slices_to_volumes(tiles.numpy(), (-1000.0, 1000.0), grid=(2, 2))
    assert img.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(img, vol[:, 0].permute(0, 2, 3, 1).numpy() * 1000, atol=1e-3)
    assert np.array_equal(msk, (vol[:, 1] > 0).permute(0, 2, 3, 1).numpy())


def test_png_format_is_refused_for_3d_models(tmp_path):
    from synthct.config import ModelConfig
    from synthct.errors import ConfigError
    from synthct.models import build_model

    system = build_model(ModelConfig(kind="hagan", latent_dim=8, width=1 / 16), DataConfig(size=S))
    with pytest.raises(ConfigError, match="png"):
        gen.write_set(tmp_path / "x", system, (1, 1, 1),
                      gen.GenerateConfig(n=1, format="png"))  # fmt: skip
    with pytest.raises(ConfigError, match="format"):
        gen.GenerateConfig(n=1, format="jpeg")
    assert not (tmp_path / "x").exists()


# -- slice-level evaluation ---------------------------------------------------------------------
def _body_slices(image_unit: np.ndarray, window=(-1024.0, 600.0)) -> int:
    """Independent count: axial slices (last axis) with any voxel above -500 HU."""
    lo, hi = window
    level = (-500.0 - lo) / (hi - lo) * 2 - 1
    return int((image_unit > level).any(axis=(-3, -2)).sum())


@pytest.fixture(scope="module")
def slice_evals(packed_ws, fastgan_run):  # noqa: F811
    """A 2D set (6 FastGAN pairs = 3 cases of 2 slices) and a 3D set (3 random-weight HA-GAN
    pairs), both evaluated at slice level against all 6 real cases, 2 slices per case: the 2D
    set with the random extractor, the 3D set with the default one."""
    from synthct.config import ModelConfig, RunConfig, to_dict
    from synthct.metrics.evaluation import EvalConfig, run_evaluation
    from synthct.models import build_model

    gen.generate_from_run(packed_ws, "g2d", "set2d", gen.GenerateConfig(n=6), device="cpu")
    torch.manual_seed(0)
    hagan = build_model(ModelConfig(kind="hagan", latent_dim=8, width=1 / 16), DataConfig(size=S))
    train_ids = json.loads((fastgan_run / "train_cases.json").read_text())["case_ids"]
    prov = {
        "run_config": to_dict(RunConfig(data=DataConfig(size=S))),
        "training_cases": {"split": "train", "case_ids": train_ids},
    }
    gen.write_set(packed_ws.synthetic_dir("set3d"), hagan, (1.5, 1.5, 3.0),
                  gen.GenerateConfig(n=3), provenance=prov)  # fmt: skip
    common = dict(real="all", n_boot=5, baseline_repeats=3, kid_subsets=10, seed=0,
                  slices_per_case=2)  # fmt: skip
    r2 = run_evaluation(packed_ws, EvalConfig("set2d", extractor="random", **common), False)
    r3 = run_evaluation(packed_ws, EvalConfig("set3d", extractor="default", level="slice",
                                               encoder_epochs=1, **common), False)  # fmt: skip
    return r2, r3


def test_slice_evaluation_of_a_2d_set_is_labelled_and_counted(packed_ws, slice_evals):  # noqa: F811
    from synthct.metrics.features import build_random_slice_extractor
    from synthct.preprocess import load_packed

    (folder, result), _ = slice_evals
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["level"] == "slice" and saved["options"]["level"] == "slice"  # forced for 2D
    assert saved["model"] == {"kind": "fastgan", "data_view": "slices"}
    real = load_packed(packed_ws, DataConfig(size=S), "all")
    n_cases = len(real.case_ids)
    assert saved["real"]["n_cases"] == n_cases and saved["real"]["n"] == 2 * n_cases
    # 6 generated slices = 3 cases of 2 (fewer than the 6 real cases the protocol would take)
    assert saved["synthetic"]["m"] == 6 and saved["synthetic"]["m_cases"] == 3
    assert saved["synthetic"]["case"] == "group of 2 generated slices"
    assert saved["slices"] == {"resolution": S, "slices_per_case": 2,
                               "protocol": saved["slices"]["protocol"]}  # fmt: skip
    # the run trained on the natural mix (the default) and says so in train_cases.json
    assert saved["tumour_mix"]["value"] == "natural"
    assert saved["tumour_mix"]["source"] == "run g2d: train_cases.json"
    fx = build_random_slice_extractor()
    for key in ("fid", "kid"):
        m = saved["metrics"][key]
        assert (m["n"], m["m"], m["d"]) == (2 * n_cases, 6, 128)
        assert (m["n_cases"], m["m_cases"], m["rounds"]) == (n_cases, 3, 2)
        assert m["extractor"]["weights_sha256"] == fx.weights_sha256
    assert "precision" not in saved["metrics"]  # k-NN radii need >= 12 cases a side
    assert saved["metrics"]["classifier_is"] is None  # random extractor: no classifier head
    emb = __import__("pandas").read_csv(folder / "embedding.csv")
    assert sorted(emb["group"].unique()) == ["real-all", "synthetic"]
    assert len(emb) == 2 * n_cases + 6
    card = sets.load_datacard(packed_ws.synthetic_dir("set2d"))
    assert card["metrics"][result["id"]]["level"] == "slice"
    assert card["metrics"][result["id"]]["tumour_mix"] == "natural"


def test_slice_evaluation_fid_is_the_mean_over_rounds_of_one_slice_per_case(packed_ws, slice_evals):  # noqa: F811
    """Independent recomputation: the drawn slices are body slices of their cases, and FID is
    the mean of the per-round FIDs of their features."""
    from synthct.metrics.distances import compute_fid
    from synthct.metrics.features import build_random_slice_extractor
    from synthct.metrics.slice_level import volume_case_slices
    from synthct.metrics.volume_sets import load_real_set

    (folder, saved), _ = slice_evals
    cfg = DataConfig(size=S)
    real = volume_case_slices(load_real_set(packed_ws, cfg, "all"), cfg, S, 2, None, 0)
    assert real.pairs.shape == (6, 2, 2, S, S)
    packed = load_real_set(packed_ws, cfg, "all")
    for c in range(6):
        image_half = packed.arrays[c][..., : S // 2]
        for j in range(2):
            hits = [z for z in range(S // 2)
                    if np.abs(image_half[..., z] - real.pairs[c, j, 0]).max() < 2e-3]  # fmt: skip
            assert hits and _body_slices(image_half[..., hits[0] : hits[0] + 1]) == 1
        assert not np.array_equal(real.pairs[c, 0], real.pairs[c, 1])  # without replacement
    card = sets.load_datacard(packed_ws.synthetic_dir("set2d"))
    from synthct.views import view_class

    info = sets.Datacard.from_json(card).model
    syn = view_class(info.data_view).set_case_slices(
        packed_ws.synthetic_dir("set2d"), info, cfg, S, 2, 6, None, 0, progress=False
    )
    fx = build_random_slice_extractor()
    fr = fx.extract(real.flat).reshape(6, 2, -1)
    fs = fx.extract(syn.flat).reshape(3, 2, -1)
    want = np.mean([max(compute_fid(fr[:, j], fs[:, j]), 0.0) for j in range(2)])
    assert saved["metrics"]["fid"]["value"] == pytest.approx(want, rel=1e-6)


def test_slice_evaluation_of_a_3d_set_with_the_default_2d_encoder(packed_ws, slice_evals):  # noqa: F811
    _, (folder, saved) = slice_evals
    assert saved["level"] == "slice" and saved["model"]["data_view"] == "volumes"
    assert saved["synthetic"]["m"] == 3 * 2 and saved["synthetic"]["m_cases"] == 3
    assert saved["synthetic"]["case"] == "synthetic volume"
    assert saved["tumour_mix"]["value"] == "natural"
    assert saved["extractor"]["name"] == "default" and saved["extractor"]["level"] == "slice"
    cis = saved["metrics"]["classifier_is"]
    train_centres = sorted({c.split("-")[0] for c in saved_ids(packed_ws)})
    assert saved["extractor"]["classes"] == train_centres
    # real and synthetic scored on the same number of cases (the smaller side's) per round
    assert cis["synthetic"]["n"] == cis["real"]["n"] == 3 and cis["real"]["n_total"] == 6
    assert cis["rounds"] == 2 and 1.0 <= cis["synthetic"]["value"] <= len(train_centres)
    assert list((packed_ws.evals / "encoders").glob("slices-*-e1-s0.pt"))


def saved_ids(ws) -> list[str]:
    from synthct.preprocess import load_packed

    return list(load_packed(ws, DataConfig(size=S), "train").case_ids)


def test_identical_real_slices_give_fid_zero_and_max_slices_caps(packed_ws):  # noqa: F811
    from synthct.metrics.distances import compute_prdc
    from synthct.metrics.evaluation import EvalConfig, distance_metrics
    from synthct.metrics.features import build_random_slice_extractor
    from synthct.metrics.resampling import round_mean
    from synthct.metrics.slice_level import volume_case_slices, volume_slices
    from synthct.metrics.volume_sets import load_real_set

    cfg = DataConfig(size=S)
    real = load_real_set(packed_ws, cfg, "all")
    a, b = volume_case_slices(real, cfg, S, 3, seed=2), volume_case_slices(real, cfg, S, 3, seed=2)
    fx = build_random_slice_extractor()
    fa = fx.extract(a.flat).reshape(len(real.ids), 3, -1)
    fb = fx.extract(b.flat).reshape(len(real.ids), 3, -1)
    opts = EvalConfig("x", n_boot=3, baseline_repeats=2, kid_subsets=5)
    out = distance_metrics(fa, fb, fx.describe(), opts)
    assert out["fid"]["value"] == 0.0 and "precision" not in out  # PRDC needs 12 cases
    prdc = round_mean(compute_prdc, fa, fb)
    assert prdc["precision"] == 1.0 and prdc["coverage"] == 1.0
    every = volume_slices(real, cfg, S)
    assert len(every.pairs) == sum(_body_slices(x[..., : S // 2]) for x in real.arrays)
    capped = volume_slices(real, cfg, 16, max_slices=10, seed=1)
    assert capped.pairs.shape == (10, 2, 16, 16) and capped.n_cases <= len(real.ids)
    assert set(capped.case_ids) <= set(real.ids)


def test_level_volume_is_refused_for_2d_sets_and_medicalnet_at_slice_level(packed_ws, slice_evals):  # noqa: F811
    from synthct.errors import ConfigError
    from synthct.metrics.evaluation import EvalConfig, run_evaluation

    with pytest.raises(ConfigError, match="only be evaluated with --level slice"):
        run_evaluation(packed_ws, EvalConfig("set2d", extractor="random", level="volume"), False)
    with pytest.raises(ConfigError, match="3D network"):
        EvalConfig("set2d", extractor="medicalnet", weights="w.pth", level="slice")
    with pytest.raises(ConfigError, match="tumour-mix"):
        EvalConfig("set2d", tumour_mix="half")
    with pytest.raises(ConfigError, match="slices-per-case"):
        EvalConfig("set2d", slices_per_case=0)


def test_tumour_mix_comes_from_the_run_or_the_option(packed_ws, slice_evals):  # noqa: F811
    from synthct.errors import ConfigError
    from synthct.metrics.slice_level import training_tumour_mix

    card = sets.load_datacard(packed_ws.synthetic_dir("set2d"))
    mix = lambda c, requested: training_tumour_mix(  # noqa: E731
        packed_ws, sets.Datacard.from_json(c), requested
    )
    assert mix(card, "auto") == (None, "run g2d: train_cases.json")
    assert mix(card, "0.5") == (0.5, "--tumour-mix")
    old_run = {**card, "run": "gone"}  # the run folder is missing: no silent guess
    with pytest.raises(ConfigError, match="--tumour-mix natural"):
        mix(old_run, "auto")
    recorded = {**old_run, "training_cases": {**card["training_cases"], "tumour_fraction": 0.5}}
    assert mix(recorded, "auto") == (0.5, "datacard")
    # real slices drawn on a 0.5 mix show tumour far more often than on the natural one
    from synthct.metrics.slice_level import volume_case_slices
    from synthct.metrics.volume_sets import load_real_set

    real = load_real_set(packed_ws, DataConfig(size=S), "all")
    natural = volume_case_slices(real, DataConfig(size=S), S, 4, None, 0).tumour_fraction
    half = volume_case_slices(real, DataConfig(size=S), S, 4, 0.5, 0).tumour_fraction
    assert natural < 0.3 and half > 2 * natural


def test_compare_models_lists_2d_and_3d_side_by_side(packed_ws, slice_evals):  # noqa: F811
    from synthct.metrics.comparison import COLUMNS, compare_models

    df = compare_models(packed_ws, "slice")
    assert list(df.columns) == COLUMNS and len(df) == 2
    by_set = df.set_index("set")
    assert by_set.loc["set2d", "dims"] == "2D" and by_set.loc["set2d", "model_kind"] == "fastgan"
    assert by_set.loc["set3d", "dims"] == "3D" and by_set.loc["set3d", "model_kind"] == "hagan"
    for _folder, saved in slice_evals:
        row = df[df["eval"] == saved["id"]].iloc[0]
        m = saved["metrics"]
        assert row["fid"] == m["fid"]["value"] and row["kid"] == m["kid"]["value"]
        assert row["fid_low"] == m["fid"]["ci"]["low"] and row["n"] == saved["real"]["n"]
        assert row["kid_high"] == m["kid"]["ci"]["high"] and row["level"] == "slice"
        assert row["slices_per_case"] == 2 and row["tumour_mix"] == "natural"
        assert row["fid_real_vs_real"] == m["fid"]["baseline"]["real_vs_real"]["median"]
    # different extractors (random vs default): different protocols, never ranked together
    assert by_set.loc["set2d", "protocol"] != by_set.loc["set3d", "protocol"]
    assert list(df["tier"]) == [1.0, 1.0]
    assert compare_models(packed_ws, "volume").empty
