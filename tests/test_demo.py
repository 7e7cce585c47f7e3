"""The demo workspace: every artefact exists and loads (tiny settings)."""

from __future__ import annotations

import numpy as np
import pytest

from synthct.demo import DEMO_RUN, DEMO_SET, DEMO_STUDY, DemoConfig, build_demo


@pytest.mark.slow
def test_tiny_demo_builds_every_artefact(workspace):
    seen = []
    result = build_demo(workspace, DemoConfig.tiny(), progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)

    # data: index, splits, packed pairs
    from synthct.config import DataConfig
    from synthct.datasets import load_cases, load_splits
    from synthct.preprocess import load_packed

    cases = load_cases(workspace)
    assert len(cases) == 20 and set(load_splits(workspace).values()) >= {"train", "test"}
    packed = load_packed(workspace, DataConfig(size=32), split="train")
    assert packed.arrays.shape[1:] == (32, 32, 32)

    # GAN run: checkpoint loads and samples
    from synthct.checkpoint import list_checkpoints, load_generator

    run_dir = workspace.run_dir(DEMO_RUN)
    assert list_checkpoints(run_dir)
    system, run_cfg, meta = load_generator(run_dir)
    assert run_cfg.data.size == 32 and len(meta["sha256"]) == 64

    # synthetic set: datacard + a pair on the packed grid
    from synthct.sets import load_datacard, load_synthetic_pair

    set_dir = workspace.synthetic_dir(DEMO_SET)
    card = load_datacard(set_dir)
    assert card["counts"]["written"] == 6
    image, mask = load_synthetic_pair(set_dir, card["cases"][0]["case_id"])
    assert image.shape == (32, 32, 16) and set(np.unique(mask.array)) <= {0, 1}
    assert card["metrics"], "the evaluation writes its results into the datacard"

    # evaluation
    from synthct.workspace import read_json

    metrics = [read_json(p) for p in workspace.evals.glob("*/metrics.json")]
    assert len(metrics) == 1

    # segmentation
    results = read_json(workspace.segmentation / "real" / "results.json")
    assert results["experiment"] == "real"

    # study with two invited raters whose links carry a valid token
    from db.session import database_url, make_engine, session_scope
    from synthct.vtt.flow import next_case, rater_for_token

    assert len(result.invite_links) == 2
    engine = make_engine(database_url(workspace.database))
    for link in result.invite_links.values():
        token = link.split("token=", 1)[1]
        with session_scope(engine) as s:
            rater = rater_for_token(s, token)
            assert rater is not None and next_case(s, rater) is not None
    assert (workspace.studies / DEMO_STUDY).is_dir()

    # a second build finds everything done and changes nothing
    again = build_demo(workspace, DemoConfig.tiny())
    assert again.invite_links == {}
    assert load_datacard(set_dir)["created"] == card["created"]


def test_shipped_checkpoint_installs_only_for_its_training_split(workspace):
    """The shipped demo generator goes in only when the train split's hash matches its own."""
    from synthct.checkpoint import load_checkpoint, load_generator
    from synthct.datasets import cases_in_split, ingest
    from synthct.demo import install_shipped_run, shipped_checkpoint
    from synthct.phantom import write_phantom_set
    from synthct.runtime import case_ids_hash
    from synthct.workspace import read_json

    ckpt = shipped_checkpoint()
    assert ckpt is not None and ckpt.stat().st_size <= 25 * 2**20
    assert load_checkpoint(ckpt)["sampling_only"]
    s = DemoConfig()
    src = workspace.root / "sources" / "phantom"
    write_phantom_set(src, n=s.n_cases, seed=s.seed, scale=s.scale)
    ingest(src, workspace, test_fraction=0.5, seed=s.seed)  # a different split: refused
    assert not install_shipped_run(workspace, workspace.run_dir("a"))
    ingest(src, workspace, test_fraction=s.test_fraction, seed=s.seed)  # the demo's split
    run_dir = workspace.run_dir(DEMO_RUN)
    assert install_shipped_run(workspace, run_dir)
    train_ids = [r.case_id for r in cases_in_split(workspace, "train")]
    assert read_json(run_dir / "train_cases.json")["sha256"] == case_ids_hash(train_ids)
    system, cfg, meta = load_generator(run_dir)
    assert cfg.data.size == 64 and meta["step"] == 1000
    import torch

    out = system.generate(system.sample_latent(1, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (1, 1, 64, 64, 64)
