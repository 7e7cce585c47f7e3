"""Two-process DDP on CPU (gloo): parameters stay identical across ranks; only rank 0 writes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from tests.ddp_spawn import spawn_ranks

TESTS_DIR = Path(__file__).resolve().parent


def _worker(rank: int, world: int, port: int, ws_root: str, out: str, allreduce: bool) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    import test_train as t

    import synthct.preprocess
    import synthct.train
    from synthct.workspace import Workspace

    synthct.preprocess.load_packed = lambda ws, cfg, split="train": t.packed_set(8, 16)
    if not allreduce:  # the control: without gradient averaging the ranks must drift apart
        synthct.train.allreduce_grads = lambda opt, world: None
    built = []

    def factory(run_cfg):
        built.append(t.TinyGAN(run_cfg.data.size, run_cfg.model.latent_dim))
        return built[-1]

    cfg = t.tiny_cfg(steps=4, checkpoint_every=2)
    synthct.train.train(cfg, Workspace(Path(ws_root)), "ddp", model_factory=factory)
    torch.save(built[0].state_dict(), Path(out) / f"rank{rank}.pt")


def _run(tmp_path: Path, allreduce: bool) -> tuple[dict, dict, Path]:
    out = spawn_ranks(_worker, tmp_path, allreduce)
    a, b = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    return a, b, out / "ws" / "runs" / "ddp"


def test_two_process_gloo_keeps_ranks_identical(tmp_path):
    from synthct.checkpoint import list_checkpoints, load_checkpoint

    a, b, run_dir = _run(tmp_path, allreduce=True)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{k} differs across ranks")
    ckpts = list_checkpoints(run_dir)
    assert [s for s, _ in ckpts] == [2, 4]
    state = load_checkpoint(ckpts[-1][1])
    assert len(state["rng"]) == 2  # both ranks' RNG streams, for an exact DDP resume
    for k in a:
        torch.testing.assert_close(state["model"][k], a[k], rtol=0, atol=0)
    rows = (run_dir / "losses.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # one log, written once (rank 0)


def test_without_gradient_averaging_ranks_drift(tmp_path):
    a, b, _ = _run(tmp_path, allreduce=False)
    assert any(not torch.equal(a[k], b[k]) for k in a)
