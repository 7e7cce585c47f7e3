"""Experiments end to end on tiny blob phantoms: resume, leakage override, workspace sets, learning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthct.errors import LeakageError, WorkspaceError
from synthct.io import Volume, save_volume, spacing_affine
from synthct.runtime import case_ids_hash
from synthct.segment import cases as segdata
from synthct.segment.cases import make_case
from synthct.segment.experiments import ExperimentConfig, run_experiment, run_experiment_cases
from synthct.segment.fold_training import train_fold
from synthct.segment.recipe import SegConfig
from synthct.sets import Datacard

TINY = SegConfig(
    size=32, init_filters=4, blocks_down=(1, 2, 2), epochs=2, folds=2, batch_size=2, seed=3
)


def blob_pair(rng, shape, radius=None):
    """(image HU, mask): soft-tissue noise with one bright sphere 'tumour' (the mask)."""
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = [rng.integers(r // 4 + 2, r - r // 4 - 2) for r in shape]
    r = radius or rng.uniform(2.5, 4.0)
    mask = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= r * r
    image = rng.normal(40, 40, shape).astype(np.float32)
    image[mask] += 400
    return image, mask.astype(np.uint8)


def phantoms(cfg, n, prefix, centres=("A", "B"), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, mask = blob_pair(rng, cfg.volume_shape)
        centre = centres[i % len(centres)]
        out.append(make_case(f"{prefix}{centre}-{i:03d}", image, mask, cfg, centre=centre))
    return out


def _state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    cfg = SegConfig(**{**TINY.__dict__, "epochs": 3})
    train = phantoms(cfg, 4, "T")
    val = phantoms(cfg, 2, "V", seed=1)
    full = train_fold(train, val, cfg, tmp_path / "full")

    class Killed(Exception):
        pass

    def kill_after_2(epoch, record):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_fold(train, val, cfg, tmp_path / "cut", on_epoch_end=kill_after_2)
    assert (tmp_path / "cut" / "last.pt").is_file()
    assert not (tmp_path / "cut" / "result.json").exists()
    seen = []
    resumed = train_fold(
        train, val, cfg, tmp_path / "cut", on_epoch_end=lambda e, r: seen.append(e)
    )
    assert seen == [3]  # epochs 1-2 are not repeated
    for k in ("best_epoch", "best_val_dice", "epochs", "n_train"):
        assert resumed[k] == full[k]
    cut_curve = (tmp_path / "cut" / "curve.csv").read_text()
    assert cut_curve == (tmp_path / "full" / "curve.csv").read_text()
    assert cut_curve.splitlines()[0] == "epoch,train_loss,val_dice,lr"
    assert len(cut_curve.splitlines()) == 4
    best_cut = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    best_full = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert _state_equal(best_cut["model"], best_full["model"])
    assert not (tmp_path / "cut" / "last.pt").exists()
    # a finished fold is skipped, not retrained
    again = train_fold(train, val, cfg, tmp_path / "cut", on_epoch_end=lambda e, r: seen.append(e))
    assert again == resumed and seen == [3]


def test_worker_processes_are_seeded_reproducibly(tmp_path):
    cfg = SegConfig(**{**TINY.__dict__, "epochs": 1, "num_workers": 1})
    train = phantoms(cfg, 2, "T")
    for run in ("a", "b"):
        train_fold(train, [], cfg, tmp_path / run)
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["model"]
    assert _state_equal(a, b)
    assert (tmp_path / "a" / "curve.csv").read_text() == (tmp_path / "b" / "curve.csv").read_text()


def _card(ids):
    return Datacard.from_json(
        {
            "run": "gan-run",
            "training_cases": {"split": "all", "case_ids": ids, "sha256": case_ids_hash(ids)},
        }
    )


def test_leakage_refused_then_override_recorded(tmp_path):
    trainval = phantoms(TINY, 4, "R")
    test = phantoms(TINY, 2, "X", seed=5)
    synthetic = [
        make_case(
            f"SYN-{i:04d}",
            *blob_pair(np.random.default_rng(9 + i), TINY.volume_shape),
            TINY,
            source="synthetic",
            centre="synthetic",
        )
        for i in range(2)
    ]
    card = _card([c.case_id for c in trainval + test])  # GAN saw the test cases
    cfg = ExperimentConfig(experiment="mixed", synthetic="gan", seg=TINY)
    with pytest.raises(LeakageError, match="XA-000, XB-001"):
        run_experiment_cases(tmp_path / "refused", cfg, trainval, test, synthetic, card)
    assert not (tmp_path / "refused").exists()  # nothing written, so a rerun can allow it

    allowed = ExperimentConfig(experiment="mixed", synthetic="gan", allow_leakage=True, seg=TINY)
    with pytest.warns(UserWarning, match="allow-leakage"):
        res = run_experiment_cases(tmp_path / "allowed", allowed, trainval, test, synthetic, card)
    saved = json.loads((tmp_path / "allowed" / "results.json").read_text())
    assert saved["leakage"]["override"] is True
    assert saved["leakage"]["test_overlap"] == ["XA-000", "XB-001"]
    assert saved["config"]["allow_leakage"] is True
    assert res["test"]["n_cases"] == 2 and len(saved["per_case"]) == 2
    assert [f["n_train_synthetic"] for f in saved["folds"]] == [2, 2]
    folds = json.loads((tmp_path / "allowed" / "folds.json").read_text())
    for f in folds:
        assert not any(i.startswith("SYN") for i in f["val"])


def _write_set(ws, name, cfg, n, training_ids, mask_mode="binary"):
    set_dir = ws.synthetic / name
    rng = np.random.default_rng(11)
    aff = spacing_affine((1.5, 1.5, 1.5))
    for i in range(n):
        image, mask = blob_pair(rng, cfg.volume_shape)
        save_volume(
            Volume(image, aff), set_dir / "imagesTr" / f"SYN-{i + 1:04d}__CT.nii.gz", np.int16
        )
        save_volume(Volume(mask, aff), set_dir / "labelsTr" / f"SYN-{i + 1:04d}.nii.gz", np.uint8)
    card = {**_card(training_ids).to_json(), "name": name, "postprocess": {"mask_mode": mask_mode}}
    (set_dir / "datacard.json").write_text(json.dumps(card))


@pytest.fixture
def real_cases(monkeypatch):
    """Stand-in for the packed arrays: the split registry's cases, as in-memory phantoms."""
    splits = {
        "train": phantoms(TINY, 4, "TR"),
        "val": phantoms(TINY, 2, "VA", seed=1),
        "test": phantoms(TINY, 2, "TE", seed=2),
    }
    monkeypatch.setattr(segdata, "load_real_cases", lambda ws, cfg, split: splits[split])
    return splits


def test_workspace_experiment_reads_synthetic_set(workspace, real_cases):
    train_ids = [c.case_id for c in real_cases["train"]]
    _write_set(workspace, "gan", TINY, 3, train_ids)
    cfg = ExperimentConfig(experiment="mixed", synthetic="gan", n_synthetic=2, seg=TINY)
    updates = []
    res = run_experiment(workspace, cfg, progress=lambda f, m: updates.append(f))
    assert res["name"] == "mixed-gan-n2"
    assert res["synthetic"]["n"] == 2 and len(set(res["synthetic"]["case_ids"])) == 2
    assert set(res["synthetic"]["case_ids"]) <= {"SYN-0001", "SYN-0002", "SYN-0003"}
    assert res["leakage"]["checked"] and not res["leakage"]["override"]
    assert res["n_train_val"] == 6 and res["test"]["n_cases"] == 2
    assert updates[-1] == 1.0 and updates == sorted(updates)
    exp = workspace.segmentation / "mixed-gan-n2"
    for f in ("config.yaml", "folds.json", "per_case.csv", "results.json"):
        assert (exp / f).is_file()
    assert (exp / "folds" / "fold-1" / "curve.csv").is_file()
    # same name, different config: refused
    other = ExperimentConfig(
        experiment="mixed",
        synthetic="gan",
        n_synthetic=2,
        seg=SegConfig(**{**TINY.__dict__, "epochs": 3}),
    )
    with pytest.raises(WorkspaceError, match="different config"):
        run_experiment(workspace, other, name="mixed-gan-n2")
    # strict: the GAN trained on cases of the validation folds
    strict = ExperimentConfig(experiment="mixed", synthetic="gan", strict=True, seg=TINY)
    with pytest.raises(LeakageError, match="--strict"):
        run_experiment(workspace, strict, name="strict")


def test_pretrain_finetune_and_cli(workspace, real_cases, tmp_path):
    from typer.testing import CliRunner

    from synthct.cli import app
    from synthct.segment.recipe import save_seg_config

    _write_set(workspace, "gan", TINY, 2, ["ELSEWHERE-1"])
    save_seg_config(TINY, tmp_path / "seg.yaml")
    runner = CliRunner()
    args = [
        "segment",
        "--experiment",
        "pretrain-finetune",
        "--synthetic",
        "gan",
        "--config",
        str(tmp_path / "seg.yaml"),
        "--epochs",
        "1",
        "--pretrain-epochs",
        "2",
        "--name",
        "pf",
        "--workspace",
        str(workspace.root),
    ]
    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output[out.output.index("{") :])
    assert summary["experiment"] == "pf" and summary["test"]["n_cases"] == 2
    exp = workspace.segmentation / "pf"
    pre = (exp / "folds" / "pretrain" / "curve.csv").read_text().splitlines()
    assert len(pre) == 3  # header + 2 synthetic pre-training epochs
    res = json.loads((exp / "results.json").read_text())
    assert res["config"]["seg"]["epochs"] == 1 and res["config"]["pretrain_epochs"] == 2
    # the synthetic pre-training has no real case: its bounds come from the synthetic pairs
    assert res["normalisation"]["pretrain"]["source"] == "synthetic"
    assert {f["source"] for f in res["normalisation"]["folds"].values()} == {"real"}
    assert "HECKTOR 2022 per-class DSCagg not computed" in summary["note"]
    # a leaking set is refused through the CLI with the error, not a traceback
    _write_set(workspace, "leaky", TINY, 2, ["TEA-000"])
    bad = runner.invoke(
        app,
        [
            "segment",
            "--experiment",
            "synthetic",
            "--synthetic",
            "leaky",
            "--config",
            str(tmp_path / "seg.yaml"),
            "--workspace",
            str(workspace.root),
        ],
    )
    assert isinstance(bad.exception, LeakageError) and "TEA-000" in str(bad.exception)


@pytest.mark.slow
def test_training_learns_blob_tumours(tmp_path):
    cfg = SegConfig(
        size=32,
        init_filters=8,
        blocks_down=(1, 2, 2),
        epochs=25,
        folds=2,
        batch_size=2,
        warmup_epochs=1,
        lr=3e-3,
        augment=False,
        seed=0,
    )
    trainval = phantoms(cfg, 8, "R")
    test = phantoms(cfg, 4, "X", seed=42)
    res = run_experiment_cases(tmp_path / "learn", ExperimentConfig(seg=cfg), trainval, test)

    from synthct.segment import recipe
    from synthct.segment.cases import stack_images
    from synthct.segment.normalise import Normalisation
    from synthct.segment.scores import dsc_agg

    torch.manual_seed(0)
    untrained = recipe.build_network(cfg)
    norm = Normalisation.from_dict(res["normalisation"]["folds"]["0"])
    probs = recipe.predict_probs(untrained, stack_images(test, norm), cfg)
    gts = np.stack([c.label for c in test])
    base = dsc_agg(probs.argmax(1).numpy() > 0, gts > 0)
    assert res["test"]["dsc_agg_union"] > 0.6
    assert res["test"]["mean_dice"] > 0.6
    assert res["test"]["dsc_agg_union"] > base + 0.4


def test_real_experiment_on_preprocessed_phantoms(workspace, tmp_path):
    """The real data path: phantoms -> ingest -> preprocess -> load_packed, no stand-in."""
    from synthct.datasets import cases_in_split, ingest
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace

    src = write_phantom_set(tmp_path / "src" / "cases", n=8, seed=2, scale=0.125)[0].parent.parent
    ingest(src, workspace, test_fraction=0.25, val_fraction=0.25, seed=0, workers=1)
    cfg = SegConfig(**{**TINY.__dict__, "epochs": 1})
    preprocess_workspace(workspace, cfg.data_config(), split="all", workers=1, progress=False)
    res = run_experiment(workspace, ExperimentConfig(seg=cfg), name="real-phantoms")
    test_ids = sorted(c.case_id for c in cases_in_split(workspace, "test"))
    trainval = cases_in_split(workspace, "train") + cases_in_split(workspace, "val")
    assert [r["case_id"] for r in res["per_case"]] == test_ids
    assert res["n_train_val"] == len(trainval)
    assert res["test_case_ids_sha256"] == case_ids_hash(test_ids)
    folds = json.loads((workspace.segmentation / "real-phantoms" / "folds.json").read_text())
    validated = sorted(i for f in folds for i in f["val"])
    assert validated == sorted(c.case_id for c in trainval)
    # binary masks: scored on the original CT grids as the union only
    orig = res["test_original_grid"]
    assert orig["available"] and orig["n_cases"] == len(test_ids)
    assert orig["per_class_available"] is False and "--mask multiclass" in orig["per_class_reason"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"experiment": "real", "synthetic": "gan"}, "uses no synthetic set"),
        ({"experiment": "mixed"}, "needs --synthetic"),
        ({"experiment": "real", "n_synthetic": 4}, "--n-synthetic needs"),
        ({"experiment": "mixed", "synthetic": "g", "pretrain_epochs": 3}, "only to the pretrain"),
        ({"experiment": "augmented"}, "experiment must be one of"),
    ],
)
def test_experiment_config_rejects_inconsistent_options(fields, message):
    from synthct.config import from_dict
    from synthct.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        from_dict(ExperimentConfig, fields)


def test_experiment_config_round_trip(tmp_path):
    from synthct.config import save_yaml, to_dict
    from synthct.segment.experiments import load_experiment_config

    cfg = ExperimentConfig(
        experiment="pretrain-finetune", synthetic="g", pretrain_epochs=7, seg=TINY
    )
    save_yaml(to_dict(cfg), tmp_path / "config.yaml")
    assert load_experiment_config(tmp_path / "config.yaml") == cfg
    assert cfg.default_name() == "pretrain-finetune-g"
