"""The shipped demo generator is varied: collapse-probe diversity and tumour masks, recomputed.

The demo workspace's data (40 phantoms, seed 0, scale 0.25, 32 train / 8 test, S = 64) is built
in tmp_path as `synthct demo` builds it, the shipped checkpoint is installed the way the demo
installs it (only for that train split), and its EMA generator is sampled on one thread:

- diversity: the training loop's own collapse check (synthct.collapse: the view's probe, the
  fixed-seed probe samples, `check_collapse`), cross-checked against the same definition written
  out with scipy (image halves averaged over 4 x 4 x 4 blocks -> 16 x 16 x 8, mean pairwise RMS
  distance = pdist / sqrt(d)) for the samples and for the probe's 8 fixed real train cases; it
  must be >= 0.6 x real, and equal what the shipped collapse.csv and status.json say;
- masks: the first 100 cases of a generated set with seed 0 (`case_seed(0, i)`); at least 80 %
  must have a non-empty tumour mask. The first 20 are the demo's own set, where the shipped
  model reaches only 14 of 20 (synthct/assets/demo/README.md): at least 70 % is asserted there.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

MIN_DIVERSITY_RATIO = 0.6
MIN_NONEMPTY = 0.8
N_MASK_CASES = 100
MIN_NONEMPTY_DEMO_SET = 0.7  # what the shipped model achieves on the demo's 20 cases


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """(model, run config, training data) of the shipped run in a fresh demo workspace."""
    from synthct.checkpoint import load_generator
    from synthct.datasets import ingest
    from synthct.demo import DEMO_RUN, DemoConfig, demo_run_config, install_shipped_run
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import load_packed, preprocess_workspace
    from synthct.workspace import Workspace

    torch.set_num_threads(1)
    s = DemoConfig()
    ws = Workspace.resolve(tmp_path_factory.mktemp("demo") / "ws").ensure()
    src = ws.sources / "phantom"
    write_phantom_set(src, n=s.n_cases, seed=s.seed, scale=s.scale)
    ingest(src, ws, test_fraction=s.test_fraction, seed=s.seed)
    run_dir = ws.run_dir(DEMO_RUN)
    assert install_shipped_run(ws, run_dir), "the shipped checkpoint must fit the demo's split"
    model, run_cfg, meta = load_generator(run_dir, ema=True)
    assert run_cfg.data == demo_run_config(s).data
    preprocess_workspace(ws, run_cfg.data, progress=False)
    data = model.view.training_data(load_packed(ws, run_cfg.data, split="train"), "train")
    return model, run_cfg, data, run_dir


def pooled_image_halves(x: np.ndarray) -> np.ndarray:
    """(n, 64, 64, 64) packed pairs -> (n, 2048): means of 4^3 blocks of the image half z < 32."""
    img = np.asarray(x, dtype=np.float64)[..., :32]
    n = img.shape[0]
    return img.reshape(n, 16, 4, 16, 4, 8, 4).mean(axis=(2, 4, 6)).reshape(n, -1)


def diversity(features: np.ndarray) -> float:
    """Mean RMS distance over distinct pairs of rows."""
    return float(np.mean(pdist(features)) / np.sqrt(features.shape[1]))


def test_shipped_generator_is_as_varied_as_the_probe_demands(demo_model):
    from synthct.collapse import N_COLLAPSE, check_collapse, probe_samples
    from synthct.views.volumes import N_PROBE

    model, run_cfg, data, run_dir = demo_model
    seed = run_cfg.train.seed
    probe = model.view.probe(data, run_cfg)
    samples = probe_samples(model, {}, N_COLLAPSE, seed, torch.device("cpu"))
    fake_div, real_div, _ = check_collapse(probe, samples, {"strikes": 0, "flagged": False})

    # the same numbers from the definition, independently
    pick = torch.randperm(len(data.items), generator=torch.Generator().manual_seed(seed))
    real = data.items[pick[:N_PROBE]].numpy()
    assert real_div == pytest.approx(diversity(pooled_image_halves(real)), rel=1e-6)
    assert fake_div == pytest.approx(
        diversity(pooled_image_halves(samples[:, 0].numpy())), rel=1e-6
    )

    ratio = fake_div / real_div
    assert ratio >= MIN_DIVERSITY_RATIO, (
        f"demo generator diversity {fake_div:.4f} is {ratio:.2f} x the real {real_div:.4f}; "
        f"expected >= {MIN_DIVERSITY_RATIO} x"
    )
    # what the shipped run folder says is what the checkpoint does
    with open(run_dir / "collapse.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["sample_diversity"]) == pytest.approx(fake_div, abs=2e-6)
    assert float(last["real_diversity"]) == pytest.approx(real_div, abs=2e-6)
    assert int(last["flagged"]) == 0


def test_shipped_generator_draws_tumour_masks(demo_model):
    from synthct.demo import DemoConfig
    from synthct.generate import case_seed, sample_pairs

    model, _, _, _ = demo_model
    s = DemoConfig()
    seeds = [case_seed(s.seed, i) for i in range(N_MASK_CASES)]
    voxels = []
    for i in range(0, N_MASK_CASES, 10):
        _, masks = sample_pairs(model, seeds[i : i + 10])
        voxels += [int((m > 0).sum()) for m in masks]
    assert len(voxels) == N_MASK_CASES
    found = np.asarray(voxels) > 0
    for n, least in ((N_MASK_CASES, MIN_NONEMPTY), (s.n_synthetic, MIN_NONEMPTY_DEMO_SET)):
        nonempty = float(np.mean(found[:n]))
        assert nonempty >= least, f"only {nonempty:.0%} of {n} masks are non-empty"
