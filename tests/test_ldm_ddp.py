"""The latent diffusion model under two-process DDP on CPU (gloo), across its stage switch: every
network and the latent scale factor stay identical on both ranks, and the scale factor is the
ranks' average — without averaging it, each rank would keep the one of its own batch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from tests.ddp_spawn import spawn_ranks

TESTS_DIR = Path(__file__).resolve().parent
TINY = TESTS_DIR.parent / "configs" / "ldm-tiny.yaml"


def _worker(rank: int, world: int, port: int, ws_root: str, out: str, average: bool) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    import dataclasses

    import test_train as t

    import synthct.models.ldm
    import synthct.preprocess
    import synthct.train
    from synthct.config import load_run_config
    from synthct.workspace import Workspace

    synthct.preprocess.load_packed = lambda ws, cfg, split="train": t.packed_set(8, 16)
    if not average:  # the control: a scale factor that is not averaged across ranks
        synthct.models.ldm.dist.all_reduce = lambda tensor, *a, **k: None
    cfg = load_run_config(TINY)
    section = dataclasses.replace(cfg.model.section, autoencoder_steps=2, adv_start=1)
    model = dataclasses.replace(cfg.model, ldm=section)
    steps = dict(steps=4, checkpoint_every=2, snapshot_every=2, collapse_every=2, log_every=1)
    cfg = dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, **steps))
    built = []

    def factory(run_cfg):
        from synthct.models.registry import build_model

        built.append(build_model(run_cfg.model, run_cfg.data))
        return built[-1]

    synthct.train.train(cfg, Workspace(Path(ws_root)), "ddp", model_factory=factory)
    torch.save(built[0].state_dict(), Path(out) / f"rank{rank}.pt")


def _run(tmp_path: Path, average: bool) -> tuple[dict, dict]:
    out = spawn_ranks(_worker, tmp_path, average)
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))


@pytest.mark.slow
def test_two_ranks_stay_identical_across_the_stage_switch(tmp_path):
    a, b = _run(tmp_path, average=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs across ranks")
    scale = [k for k in a if k.endswith("scale_factor")]
    assert scale and float(a[scale[0]]) not in (0.0, 1.0)  # computed at the switch


@pytest.mark.slow
def test_without_averaging_the_scale_factor_the_ranks_differ(tmp_path):
    a, b = _run(tmp_path, average=False)
    scale = [k for k in a if k.endswith("scale_factor")][0]
    assert not torch.equal(a[scale], b[scale])
