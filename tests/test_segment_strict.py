"""`synthct segment --strict` end to end: the documented recipe (a GAN-only split) passes, a GAN
trained on the train split is still refused."""

from __future__ import annotations

import contextlib
import io
import json

from typer.testing import CliRunner

from synthct.cli import app
from synthct.errors import LeakageError


def _run_config(path, split):
    from synthct.config import DataConfig, ModelConfig, RunConfig, TrainConfig, save_yaml, to_dict

    cfg = RunConfig(
        data=DataConfig(size=32),
        model=ModelConfig(kind="hagan", latent_dim=16, width=1 / 16),
        train=TrainConfig(
            steps=2, batch_size=2, split=split, log_every=1, snapshot_every=2,
            checkpoint_every=2, collapse_every=2,
        ),
    )  # fmt: skip
    save_yaml(to_dict(cfg), path)
    return path


def test_strict_passes_with_a_gan_only_split_and_refuses_otherwise(tmp_path, workspace):
    from synthct.datasets import cases_in_split
    from synthct.phantom import write_phantom_set
    from synthct.segment.recipe import SegConfig, save_seg_config

    runner = CliRunner()
    ws = ["--workspace", str(workspace.root)]

    def cli(*args):
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars
            out = runner.invoke(app, [*args, *ws])
        assert out.exit_code == 0, out.output + repr(out.exception)
        return out

    write_phantom_set(tmp_path / "src", n=21, seed=0, scale=0.125)
    cli("ingest", str(tmp_path / "src"), "--test-fraction", "0.2", "--gan-fraction", "0.4")
    gan_ids = {c.case_id for c in cases_in_split(workspace, "gan")}
    fold_ids = {c.case_id for c in cases_in_split(workspace, "train")}
    assert len(gan_ids) >= 4 and len(fold_ids) >= 4 and not gan_ids & fold_ids
    cli("preprocess", "--size", "32", "--workers", "1")
    for run, split in (("gan-only", "gan"), ("on-train", "train")):
        cli("train", "--config", str(_run_config(tmp_path / f"{run}.yaml", split)), "--run", run)
        cli("generate", "--run", run, "--n", "2", "--out", f"syn-{run}", "--device", "cpu")
    run_cases = json.loads((workspace.run_dir("gan-only") / "train_cases.json").read_text())
    assert run_cases["split"] == "gan" and run_cases["allow_split"] is False  # no override
    card = json.loads((workspace.synthetic_dir("syn-gan-only") / "datacard.json").read_text())
    assert set(card["training_cases"]["case_ids"]) == gan_ids
    seg = SegConfig(
        size=32, init_filters=4, blocks_down=(1, 2, 2), epochs=1, folds=2, augment=False
    )
    save_seg_config(seg, tmp_path / "seg.yaml")
    common = ["segment", "--experiment", "mixed", "--config", str(tmp_path / "seg.yaml")]

    # the recipe: a GAN trained on the GAN-only split passes --strict
    cli(*common, "--synthetic", "syn-gan-only", "--strict", "--name", "strict")
    res = json.loads((workspace.segmentation / "strict" / "results.json").read_text())
    leak = res["leakage"]
    assert leak["strict"] and leak["checked"] and not leak["override"]
    assert leak["val_overlap"] == {} and leak["test_overlap"] == []
    assert leak["generator_training_split"] == "gan"

    # the old situation: a GAN trained on the train split is refused under --strict ...
    with contextlib.redirect_stderr(io.StringIO()):
        out = runner.invoke(
            app, [*common, "--synthetic", "syn-on-train", "--strict", "--name", "old", *ws]
        )
    assert isinstance(out.exception, LeakageError)
    assert "--strict" in str(out.exception) and "--gan-fraction" in str(out.exception)
    assert not (workspace.segmentation / "old").exists()
    # ... and accepted without it (it never saw a test case)
    cli(*common, "--synthetic", "syn-on-train", "--name", "lenient")
    lenient = json.loads((workspace.segmentation / "lenient" / "results.json").read_text())
    assert lenient["leakage"]["val_overlap"] and not lenient["leakage"]["override"]
