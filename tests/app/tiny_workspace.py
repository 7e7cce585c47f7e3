"""A complete but tiny workspace built through the library, for the app and browser tests.

Phantoms (14 cases at 0.3 scale) -> ingest (train/val/test) -> preprocess at S = 32 -> a 6-step
HA-GAN run (width 1/16, latent 16) -> an 8-case synthetic set -> an evaluation with the random
extractor -> two 2-fold, 2-epoch segmentation experiments (real, mixed). About 30 s on one core.
Everything the pages read is therefore written by the real code, not by hand.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from synthct.workspace import Workspace

RUN, SET = "tiny", "tiny-set"


def build_tiny_workspace(root: Path, segmentation: bool = True) -> Workspace:
    """Build the workspace in `root/ws` (phantom sources in `root/src`) and return it."""
    from synthct.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from synthct.datasets import ingest
    from synthct.generate import GenerateConfig, generate_from_run
    from synthct.metrics.evaluation import EvalConfig, run_evaluation
    from synthct.phantom import write_phantom_set
    from synthct.preprocess import preprocess_workspace
    from synthct.train import train

    ws = Workspace.resolve(root / "ws").ensure()
    with contextlib.redirect_stderr(io.StringIO()):  # progress bars
        write_phantom_set(root / "src", n=14, seed=0, scale=0.3)
        ingest(root / "src", ws, test_fraction=0.3, val_fraction=0.15, seed=0, workers=1)
        data = DataConfig(size=32)
        preprocess_workspace(ws, data, workers=1, progress=False)
        run_cfg = RunConfig(
            data=data,
            model=ModelConfig(kind="hagan", latent_dim=16, width=1 / 16),
            train=TrainConfig(
                steps=6, batch_size=2, log_every=1, snapshot_every=3, checkpoint_every=3,
                collapse_every=3, keep_checkpoints=2,
            ),
        )  # fmt: skip
        train(run_cfg, ws, RUN)
        generate_from_run(ws, RUN, SET, GenerateConfig(n=8, seed=0, write_workers=1), device="cpu")
        run_evaluation(
            ws,
            EvalConfig(
                synthetic=SET, real="test", extractor="random", n_boot=10, baseline_repeats=2,
                kid_subsets=10, msssim_pairs=10,
            ),
            progress=False,
        )  # fmt: skip
        if segmentation:
            from synthct.segment.experiments import ExperimentConfig, run_experiment
            from synthct.segment.recipe import SegConfig

            seg = SegConfig(
                size=32, init_filters=4, blocks_down=(1, 1, 1), dsdepth=1, epochs=2, folds=2,
                warmup_epochs=0, augment=False, precision="fp32",
            )  # fmt: skip
            run_experiment(ws, ExperimentConfig(experiment="real", seg=seg), device="cpu")
            run_experiment(
                ws, ExperimentConfig(experiment="mixed", synthetic=SET, seg=seg), device="cpu"
            )
    return ws
