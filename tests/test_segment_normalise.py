"""Intensity normalisation: the Auto3DSeg CT recipe by default, fitted on training folds only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthct.errors import ConfigError
from synthct.segment.cases import SegDataset, make_case
from synthct.segment.experiments import ExperimentConfig, run_experiment_cases
from synthct.segment.normalise import Normalisation, apply, fit_normalisation
from synthct.segment.recipe import SegConfig, build_train_transforms

CFG = SegConfig(size=32, init_filters=4, blocks_down=(1, 2, 2), augment=False)
TINY = SegConfig(
    size=32, init_filters=4, blocks_down=(1, 2, 2), epochs=1, folds=2, batch_size=2, seed=3
)


def _case(cid, rng, fg_mean, cfg=CFG, source="real", centre="A", empty=False):
    """HU volume: soft tissue N(40, 30), a box 'tumour' N(fg_mean, 60) labelled 1/2."""
    shape = cfg.volume_shape
    image = rng.normal(40.0, 30.0, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    if not empty:
        label[8:16, 8:15, 4:9] = 1
        label[20:24, 20:24, 10:13] = 2 if cfg.mask == "multiclass" else 1
        image[label > 0] = rng.normal(fg_mean, 60.0, int((label > 0).sum()))
    return make_case(cid, image, label, cfg, source=source, centre=centre)


def _numpy_bounds(cases):
    """Independent: per-case 0.5/99.5 percentiles of the HU inside the label, averaged."""
    per = [np.percentile(c.image_hu[c.label > 0], [0.5, 99.5]) for c in cases if c.label.any()]
    return np.mean(per, axis=0)


def _numpy_recipe(hu, a_min, a_max):
    """ScaleIntensityRange(a_min, a_max, -1, 1, clip=False) then the logistic sigmoid."""
    x = (hu.astype(np.float64) - a_min) / (a_max - a_min) * 2.0 - 1.0
    return 1.0 / (1.0 + np.exp(-x))


def test_default_transform_is_the_auto3dseg_ct_recipe():
    assert SegConfig().normalisation == "auto3dseg-ct"
    rng = np.random.default_rng(0)
    train = [_case(f"A-{i:03d}", rng, fg, centre="A") for i, fg in enumerate((150, 220, 90))]
    norm = fit_normalisation(train, CFG.normalisation, CFG.hu_window)
    a_min, a_max = _numpy_bounds(train)
    assert (norm.a_min, norm.a_max) == pytest.approx((a_min, a_max), rel=1e-5)
    assert norm.mode == "auto3dseg-ct" and norm.source == "real" and norm.n_cases == 3
    # the bounds are the tumour's range, far inside the GAN's [-1024, 600] window
    assert -100 < a_min < 100 < a_max < 450
    expected = _numpy_recipe(train[0].image_hu, a_min, a_max)
    got = apply(norm, train[0].image_hu).numpy()
    assert got.shape == train[0].image_hu.shape
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # the training pipeline applies the same transform first (template order), unclipped
    item, _ = SegDataset(train[:1], build_train_transforms(CFG, norm))[0]
    np.testing.assert_allclose(item[0].numpy(), expected, atol=2e-6)
    assert float(item.min()) > 0.0 and float(item.max()) < 1.0


def test_linear_option_is_the_clipped_hu_window():
    hu = np.array([-3000, -1024, -212, 600, 31743], dtype=np.float32)
    norm = fit_normalisation([], "linear", (-1024.0, 600.0))
    assert norm.to_dict()["mode"] == "linear"
    assert apply(norm, hu).tolist() == pytest.approx([-1, -1, 0, 1, 1])


def test_empty_labels_are_left_out_and_counted():
    rng = np.random.default_rng(1)
    cases = [_case("A-000", rng, 200), _case("A-001", rng, 0, empty=True)]
    norm = fit_normalisation(cases, "auto3dseg-ct", CFG.hu_window)
    assert norm.n_cases == 1 and norm.n_empty_excluded == 1
    assert (norm.a_min, norm.a_max) == pytest.approx(tuple(_numpy_bounds(cases[:1])), rel=1e-5)
    with pytest.raises(ConfigError, match="--normalisation linear"):
        fit_normalisation(cases[1:], "auto3dseg-ct", CFG.hu_window)


def test_synthetic_cases_set_the_bounds_only_without_real_ones():
    rng = np.random.default_rng(2)
    real = [_case("A-000", rng, 100)]
    syn = [_case("SYN-0001", rng, 450, source="synthetic", centre="synthetic")]
    mixed = fit_normalisation(real + syn, "auto3dseg-ct", CFG.hu_window)
    assert mixed.source == "real"
    assert (mixed.a_min, mixed.a_max) == pytest.approx(tuple(_numpy_bounds(real)), rel=1e-5)
    only = fit_normalisation(syn, "auto3dseg-ct", CFG.hu_window)
    assert only.source == "synthetic"
    assert (only.a_min, only.a_max) == pytest.approx(tuple(_numpy_bounds(syn)), rel=1e-5)


def _cohort(seed, test_fg):
    rng = np.random.default_rng(seed)
    trainval = [
        _case(f"{c}-{i:03d}", rng, 100 + 40 * i, cfg=TINY, centre=c) for i, c in enumerate("ABABAB")
    ]
    test_rng = np.random.default_rng(seed + 100)
    test = [
        _case(f"X{c}-{i:03d}", test_rng, test_fg, cfg=TINY, centre=c) for i, c in enumerate("AB")
    ]
    return trainval, test


def test_bounds_come_from_each_folds_training_cases_only(tmp_path):
    trainval, test = _cohort(0, test_fg=-700)
    res = run_experiment_cases(tmp_path / "a", ExperimentConfig(seg=TINY), trainval, test)
    folds = json.loads((tmp_path / "a" / "folds.json").read_text())
    by_id = {c.case_id: c for c in trainval}
    recorded = res["normalisation"]["folds"]
    assert res["normalisation"]["mode"] == "auto3dseg-ct"
    assert res["config"]["seg"]["normalisation"] == "auto3dseg-ct"
    bounds = []
    for f in folds:
        expected = _numpy_bounds([by_id[i] for i in f["train_real"]])
        got = recorded[str(f["fold"])]
        assert (got["a_min"], got["a_max"]) == pytest.approx(tuple(expected), rel=1e-5)
        assert got["n_cases"] == len(f["train_real"]) and got["source"] == "real"
        # a fold's own validation cases would move the bounds: they are not in them
        with_val = _numpy_bounds([by_id[i] for i in f["train_real"] + f["val"]])
        assert abs(with_val[1] - expected[1]) > 1.0
        bounds.append((got["a_min"], got["a_max"]))
        fold_result = json.loads(
            (tmp_path / "a" / "folds" / f"fold-{f['fold']}" / "result.json").read_text()
        )
        assert fold_result["normalisation"] == got
    assert bounds[0] != pytest.approx(bounds[1])  # fitted per fold
    # completely different test (and no other) intensities: identical bounds
    _, other_test = _cohort(0, test_fg=500)
    res_b = run_experiment_cases(tmp_path / "b", ExperimentConfig(seg=TINY), trainval, other_test)
    assert res_b["normalisation"]["folds"] == recorded


def test_linear_normalisation_is_recorded(tmp_path):
    trainval, test = _cohort(1, test_fg=200)
    seg = SegConfig(**{**TINY.__dict__, "normalisation": "linear"})
    res = run_experiment_cases(tmp_path / "lin", ExperimentConfig(seg=seg), trainval, test)
    for rec in res["normalisation"]["folds"].values():
        assert rec["mode"] == "linear" and (rec["a_min"], rec["a_max"]) == (-1024.0, 600.0)


def test_normalisation_survives_torch_pickling():
    norm = Normalisation("auto3dseg-ct", -50.0, 250.0)
    import pickle

    t = build_train_transforms(CFG, norm)
    again = pickle.loads(pickle.dumps(t))  # worker processes receive the transforms pickled
    x = {"image": torch.full((1, *CFG.volume_shape), 100.0), "label": torch.zeros(1, 32, 32, 16)}
    assert torch.allclose(torch.as_tensor(again(x)["image"]), torch.as_tensor(t(x)["image"]))
