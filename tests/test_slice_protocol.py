"""The slice-level protocol end to end on phantoms: perfect 2D and 3D generators (held-out real
cases posing as synthetic) read as real and are not ranked apart; a degraded one is told apart.

Phantoms (32 cases, S = 16) -> ingest -> preprocess; the `test` split is the real side, the
other 19 cases are the "generators": a 3D set of their volumes, a 2D set of independent slices
drawn from them, and a 3D set of the same volumes 800 HU brighter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthct.config import DataConfig, to_dict
from synthct.io import Volume, save_volume, spacing_affine
from synthct.workspace import atomic_write_json

S, K = 16, 4
CFG = DataConfig(size=S)
METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def _write_set(ws, name, images, masks, model, training_ids):
    folder = ws.synthetic / name
    aff = spacing_affine((1.5, 1.5, 3.0))
    for i, (img, msk) in enumerate(zip(images, masks, strict=True)):
        cid = f"SYN-{i + 1:04d}"
        save_volume(Volume(img, aff), folder / "imagesTr" / f"{cid}__CT.nii.gz", dtype=np.int16)
        save_volume(Volume(msk, aff), folder / "labelsTr" / f"{cid}.nii.gz", dtype=np.uint8)
    atomic_write_json(folder / "datacard.json", {
        "name": name, "model": model, "run_config": {"data": to_dict(CFG)},
        "training_cases": {"split": "train", "case_ids": training_ids, "tumour_fraction": None},
        "spacing": [1.5, 1.5, 3.0], "metrics": {},
    })  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from synthct.datasets import ingest
    from synthct.metrics.evaluation import EvalConfig, run_evaluation
    from synthct.metrics.volume_sets import load_real_set, real_hu_and_masks
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.workspace import Workspace

    root = tmp_path_factory.mktemp("protocol")
    src = write_phantom_set(root / "cases", n=32, seed=4, scale=0.125)[0].parent.parent
    ws = Workspace.resolve(root / "ws").ensure()
    ingest(src, ws, test_fraction=0.4, val_fraction=0.3, seed=0, workers=1)
    preprocess_workspace(ws, CFG, workers=1, progress=False)
    held = [load_real_set(ws, CFG, s) for s in ("train", "val")]
    hu = np.concatenate([real_hu_and_masks(v, CFG)[0] for v in held])
    masks = np.concatenate([real_hu_and_masks(v, CFG)[1] for v in held])
    ids = sum((v.ids for v in held), [])
    model3d = {"kind": "perfect3d", "size": S}
    _write_set(ws, "perfect3d", hu, masks, model3d, ids)
    _write_set(ws, "bright3d", np.clip(hu + 800, -1024, 3000), masks, model3d, ids)
    # 2D: independent slices, each from a random held-out case and a random body slice of it
    rng = np.random.default_rng(1)
    n_test = len(load_real_set(ws, CFG, "test").ids)
    slices, slice_masks = [], []
    for _ in range(n_test * K):
        c = rng.integers(len(hu))
        body = np.flatnonzero((hu[c] > -500).any(axis=(0, 1)))
        z = rng.choice(body)
        slices.append(hu[c][:, :, z : z + 1])
        slice_masks.append(masks[c][:, :, z : z + 1])
    model2d = {"kind": "perfect2d", "size": S, "data_view": "slices", "layout": "slices"}
    _write_set(ws, "perfect2d", slices, slice_masks, model2d, ids)
    common = dict(real="test", extractor="random", level="slice", slices_per_case=K, n_boot=40,
                  baseline_repeats=30, kid_subsets=20, seed=0)  # fmt: skip
    results = {
        name: run_evaluation(ws, EvalConfig(name, **common), progress=False)[1]
        for name in ("perfect3d", "perfect2d", "bright3d")
    }
    return ws, results, n_test


def test_results_record_the_case_protocol(evaluated):
    ws, results, n_test = evaluated
    for res in results.values():
        assert res["level"] == "slice" and res["slices"]["slices_per_case"] == K
        assert res["real"]["n_cases"] == n_test and res["real"]["n"] == n_test * K
        assert res["synthetic"]["m_cases"] == n_test  # as many synthetic cases as real ones
        assert res["tumour_mix"]["value"] == "natural"
        for key in METRICS:
            m = res["metrics"][key]
            assert (m["n_cases"], m["m_cases"], m["slices_per_case"]) == (n_test, n_test, K)
            assert m["ci"]["unit"] == "case" and m["baseline"]["unit"] == "case"
        saved = json.loads((ws.evals / res["id"] / "metrics.json").read_text())
        assert saved["tumour_mix"] == res["tumour_mix"]
    assert results["perfect3d"]["synthetic"]["case"] == "synthetic volume"
    assert results["perfect2d"]["synthetic"]["case"] == f"group of {K} generated slices"
    assert results["perfect2d"]["tumour_mix"]["source"] == "datacard"
    assert results["perfect3d"]["tumour_mix"]["source"].startswith("3D model")


@pytest.mark.parametrize("name", ["perfect3d", "perfect2d"])
def test_perfect_generators_read_as_real(evaluated, name):
    _, results, _ = evaluated
    for key in METRICS:
        base = results[name]["metrics"][key]["baseline"]
        assert base["synthetic_within_real_vs_real"], (key, base)


def test_2d_and_3d_perfect_generators_share_a_tier_and_fid_within_ci(evaluated):
    from synthct.metrics.comparison import compare_models

    ws, results, _ = evaluated
    table = compare_models(ws, "slice").set_index("set")
    assert table.loc["perfect3d", "protocol"] == table.loc["perfect2d", "protocol"]
    assert table.loc["perfect3d", "tier"] == table.loc["perfect2d", "tier"] == 1
    a, b = (results[n]["metrics"] for n in ("perfect3d", "perfect2d"))
    for key in METRICS:
        assert a[key]["ci"]["low"] <= b[key]["ci"]["high"], key
        assert b[key]["ci"]["low"] <= a[key]["ci"]["high"], key
    assert a["fid"]["ci"]["low"] <= b["fid"]["value"] <= a["fid"]["ci"]["high"] or (
        b["fid"]["ci"]["low"] <= a["fid"]["value"] <= b["fid"]["ci"]["high"]
    )


def test_a_degraded_generator_is_told_apart(evaluated):
    from synthct.metrics.comparison import compare_models

    ws, results, _ = evaluated
    fid = results["bright3d"]["metrics"]["fid"]
    assert not fid["baseline"]["synthetic_within_real_vs_real"]
    table = compare_models(ws, "slice").set_index("set")
    assert table.loc["bright3d", "tier"] > table.loc["perfect3d", "tier"]
    assert list(compare_models(ws, "slice")["set"])[-1] == "bright3d"


def test_every_interval_contains_its_own_estimate(evaluated):
    _, results, _ = evaluated
    for res in results.values():
        for key in METRICS:
            m = res["metrics"][key]
            assert m["ci"]["low"] <= m["value"] <= m["ci"]["high"], key
            for side in ("real_vs_real", "synthetic_vs_real"):
                s = m["baseline"][side]
                assert s["low"] <= s["median"] <= s["high"], (key, side)
