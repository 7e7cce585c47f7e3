"""Data-parallel training across processes (torchrun): process group, weight broadcast, gradient
averaging and agreement on stopping.

Gradients are averaged with one explicit flattened all-reduce per optimiser (not DDP's module
wrapper), so a model may call its networks in any pattern inside `train_step` (HA-GAN runs G
three times per step with different networks frozen).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from synthct.stopping import StopRequest


def init_distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def broadcast_state(model: nn.Module, ema: dict[str, nn.Module], world: int) -> None:
    """Make every rank start from rank 0's weights (and EMA), whatever the init did."""
    if world == 1:
        return
    for m in (model, *ema.values()):
        for t in m.state_dict().values():
            dist.broadcast(t, src=0)


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def allreduce_grads(opt: torch.optim.Optimizer, world: int) -> None:
    """Average this optimiser's gradients over ranks in one flattened all-reduce."""
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world
    for g, avg in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(avg)


def any_rank_flag(flag: bool, world: int, device: torch.device) -> bool:
    """`flag` OR-ed over every rank (each rank must take the same branch after a check)."""
    if world > 1:
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = bool(t.item())
    return flag


def stop_agreed(stop: StopRequest, world: int, device: torch.device) -> bool:
    """Has a stop been requested (on any rank)? Under DDP every rank must stop at the same
    step, or the others would wait forever in the next all-reduce."""
    return any_rank_flag(stop.requested is not None, world, device)
