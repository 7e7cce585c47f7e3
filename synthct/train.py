"""The training loop for every `GANSystem` (HA-GAN, vanilla GAN, WGAN), on one device or DDP.

`train()` is one readable loop with named phases (data -> iteration -> EMA -> log/snapshot/
collapse check/checkpoint); the pieces it needs are small pure helpers below it. The model owns
its losses and update order (`GANSystem.train_step`); the loop owns data order, precision, EMA,
gradient averaging across ranks, the NaN guard, logs and checkpoints (see models/base.py).

Data views: a system with `data_view == "slices"` is fed (B, 2, R, R) image+mask slice pairs
drawn from `synthct.slices.SliceDataset` (weighted, tumour over-sampling) instead of packed
volumes; everything else (EMA, logs, checkpoints, resume, DDP, alarm) is shared.

Exact resume: the data order is a pure function of (seed, step) — epoch permutations come from
(seed, epoch), slice draws from (seed, step) — and every RNG the loop or the model touches is checkpointed, so a run killed with
SIGKILL and resumed reproduces on CPU the loss values of an uninterrupted run.

Cancel: the first SIGTERM or SIGINT (a cancelled background job, Ctrl-C) asks the loop to stop at
the next step boundary; it writes a checkpoint there, records the run as `cancelled` in
status.json and raises `synthct.errors.Cancelled`, so `--resume` continues exactly where it
stopped. A second signal stops at once (see `synthct.stopping`).

Mode-collapse alarm (rule): every `collapse_every` steps the loop generates a fixed-seed batch of
8 EMA samples, takes their image halves (average-pooled to <= 16x16x8 voxels) and computes their
diversity: the mean pairwise RMS distance between samples (in [-1, 1] units). The same number is
computed once for a fixed batch of real train cases. 2D systems (FastGAN, StyleGAN2) use the same
rule on their CT slices against a fixed draw of real train slices (`synthct.train_slices`). The
run is flagged when the samples' diversity falls below `COLLAPSE_RATIO` (0.25) of the real
diversity at two consecutive checks: identical samples score 0. A distance, unlike a cosine
around the real mean, is not fooled by a common offset of all samples (e.g. all too bright).

Hand-written because no library offers a loop with this contract (GANSystem interface, exact
resume, explicit flattened gradient all-reduce that allows any call pattern of the networks).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from synthct import checkpoint as ckpt
from synthct.config import RunConfig, from_dict, save_yaml, to_dict
from synthct.errors import Cancelled, ConfigError, LeakageError, SynthctError, WorkspaceError
from synthct.models.base import GANSystem, StepContext
from synthct.stopping import StopRequest, Terminated
from synthct.workspace import Workspace, atomic_write_json, atomic_write_text, check_name

COLLAPSE_RATIO = 0.25  # flag when sample diversity < this fraction of the real diversity
N_SNAPSHOT, N_COLLAPSE = 4, 8
# Settings that may change when a run is resumed (length, bookkeeping, numerics/speed).
RESUMABLE_KEYS = {
    "steps",
    "log_every",
    "snapshot_every",
    "checkpoint_every",
    "keep_checkpoints",
    "collapse_every",
    "num_workers",
    "compile",
    "precision",
    "channels_last",
}
Progress = Callable[[float, str], None]


class TrainingDivergedError(SynthctError):
    """A loss became NaN/inf; the run stopped and its last good checkpoint is kept."""


def train(
    run_cfg: RunConfig,
    ws: Workspace,
    run: str,
    resume: bool = False,
    progress: Progress | None = None,
    allow_split: bool = False,
    system_factory: Callable[[RunConfig], GANSystem] | None = None,
) -> Path:
    """Train `run_cfg` into WS/runs/<run>/ and return that folder.

    Reads the packed *train* split only (`allow_split=True` permits another split and records it
    in train_cases.json). Under `torchrun` (RANK/WORLD_SIZE set) each rank trains on its shard,
    gradients are averaged explicitly, and only rank 0 writes. `system_factory` replaces
    `build_system` (tests). Raises `TrainingDivergedError` on a non-finite loss.
    """
    cfg = run_cfg.train
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world = init_distributed()
    owns_group = owns_group and world > 1
    device = pick_device()
    run_dir = ws.run_dir(check_name(run, "run name"))
    check_new_run(run_dir, resume)
    seed_everything(cfg.seed)  # same initial weights for a seed (and on every rank)
    system = (system_factory or _build_system)(run_cfg).to(device)
    slices = is_slice_system(system)
    data = load_train_data(ws, run_cfg, allow_split, system if slices else None)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        system.to(memory_format=torch.channels_last if slices else torch.channels_last_3d)
    opts = system.configure_optimizers(fused=device.type == "cuda")
    ema = {n: copy.deepcopy(getattr(system, n)).requires_grad_(False) for n in system.ema_modules}
    seed_everything(cfg.seed + rank)
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)
    start, elapsed, alarm = 0, 0.0, {"strikes": 0, "flagged": False}
    if resume and ckpt.list_checkpoints(run_dir):
        state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run_dir), map_location=device)
        if state.get("sampling_only"):
            raise ConfigError(
                f"cannot resume run {run_dir}: its latest checkpoint is a sampling-only export "
                "(no optimiser or RNG state); start a new run instead"
            )
        check_resumable(state["config"], run_cfg, run_dir)
        ckpt.restore_state(state, system, opts, ema, gen, rank, world)
        start, elapsed, alarm = int(state["step"]), float(state["elapsed_s"]), state["collapse"]
    broadcast_state(system, ema, world)
    if cfg.compile:
        for m in system.children():
            m.compile()
    if rank == 0:
        prepare_run_dir(run_dir, run_cfg, data, allow_split)
    log = RunLog(run_dir, rank == 0, start, cfg.steps)
    barrier(world)
    autocast = autocast_for(cfg.precision, device)
    probe = make_probe(data, run_cfg, device)
    wall0 = time.perf_counter() - elapsed
    bar = _tqdm(start, cfg.steps, run, rank)
    saved = start  # the step of the newest checkpoint (0: none)

    def save_checkpoint(done: int) -> Path | None:
        """Phase 4's checkpoint (every rank gathers RNG; rank 0 writes); returns its path."""
        nonlocal saved
        rng = ckpt.gather_rng(gen, world)
        saved = done
        if rank != 0:
            return None
        info = {"spacing": list(data.spacing), "centres": data.centre_names}
        wall = time.perf_counter() - wall0
        state = ckpt.checkpoint_state(run_cfg, done, system, opts, ema, rng, wall, alarm, info)
        path = ckpt.save_checkpoint(state, run_dir, keep=cfg.keep_checkpoints)
        log.status("running", done)
        return path

    stop = StopRequest()
    try:
        with stop:
            if start == 0 and rank == 0:
                log.snapshot(0, probe.snapshot(system, ema))
            for step in range(start, cfg.steps):
                # 0. a stop request (cancel, Ctrl-C) is honoured here, between two steps
                if stop_agreed(stop, world, device):
                    path = save_checkpoint(step) if step > saved else None
                    if path is None and step > 0 and rank == 0:
                        path = ckpt.checkpoint_path(run_dir, step)  # written at this step
                    raise cancelled(run, run_dir, step, cfg.steps, stop, log, path)
                # 1. data: this rank's shard of the global batch, a pure function of (seed, step)
                real, centre = next_batch(
                    data, run_cfg, step, rank, world, gen, device, channels_last
                )
                # 2. one iteration: the model's D/G/E updates all go through ctx.update
                update = make_update(opts, step, world)
                ctx = StepContext(step, device, gen, update, autocast, cfg.train_encoder)
                losses = system.train_step(real, ctx, centre)
                # 3. EMA of the generator weights
                for name, m in ema.items():
                    ema_update(m, getattr(system, name), ema_decay_at(step, cfg.ema_decay))
                done = step + 1
                # 4. log, snapshot, collapse alarm, checkpoint (rank 0 writes; RNG from all)
                wall = time.perf_counter() - wall0
                if rank == 0 and due(done, cfg.log_every, cfg.steps):
                    log.losses(done, wall, losses)
                    if progress:
                        progress(done / cfg.steps, f"step {done}/{cfg.steps}")
                if rank == 0 and due(done, cfg.snapshot_every, cfg.steps):
                    log.snapshot(done, probe.snapshot(system, ema))
                if rank == 0 and due(done, cfg.collapse_every, cfg.steps):
                    log.collapse(done, probe.check(system, ema, alarm))
                if due(done, cfg.checkpoint_every, cfg.steps):
                    save_checkpoint(done)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]})
    except Cancelled:
        raise  # recorded as "cancelled" with its checkpoint; not a failure
    except (Terminated, KeyboardInterrupt) as e:
        if rank == 0:
            if stop.requested is not None:  # a second stop request: stopped at once, on purpose
                kept = f"checkpoint step {saved}" if saved else "no checkpoint"
                why = f"stopped at once ({type(e).__name__}); {kept}"
                log.status("cancelled", log.last_step, why)
            else:
                log.status("failed", log.last_step, f"{type(e).__name__}: {e}")
        raise
    except BaseException as e:
        if rank == 0:
            log.status("failed", log.last_step, f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        log.close()
        if owns_group:
            dist.destroy_process_group()
    if rank == 0:
        log.status("done", cfg.steps, "finished")
    return run_dir


def stop_agreed(stop: StopRequest, world: int, device: torch.device) -> bool:
    """Has a stop been requested (on any rank)? Under DDP every rank must stop at the same
    step, or the others would wait forever in the next all-reduce."""
    flag = stop.requested is not None
    if world > 1:
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = bool(t.item())
    return flag


def cancelled(run, run_dir, step, steps, stop, log, path) -> Cancelled:
    """Record a stop at `step` in status.json and build the exception that ends the run."""
    why = f"stop requested ({stop.describe() or 'on another rank'})"
    kept = f"checkpoint {path.name}" if path is not None else "nothing trained yet"
    message = (
        f"run {run!r} stopped at step {step}/{steps} on a {why}; {kept}; continue it with "
        f"`synthct train --run {run} --resume`"
    )
    log.status("cancelled", step, message)
    return Cancelled(message)


# -- pure helpers ----------------------------------------------------------------------------
def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up (min(decay, (1+t)/(10+t))): early EMA follows the live weights."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    e_params = [p for p in ema.parameters() if p.dtype.is_floating_point]
    m_params = [p.detach() for p in model.parameters() if p.dtype.is_floating_point]
    if e_params:
        torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers(), strict=True):
        eb.copy_(mb)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The shuffled case order of one epoch: a pure function of (seed, epoch)."""
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(mixed))


def batch_indices(seed: int, step: int, batch: int, n: int, rank: int = 0, world: int = 1):
    """Case indices of `rank`'s batch at `step`.

    The global sample stream is the concatenation of epoch permutations; step t takes the next
    batch * world positions and rank r the r-th block of `batch` (a seeded DistributedSampler
    without drop-last). Every epoch shows each case exactly once across all ranks.
    """
    first = (step * world + rank) * batch
    perms: dict[int, torch.Tensor] = {}
    out = []
    for i in range(first, first + batch):
        epoch, pos = divmod(i, n)
        if epoch not in perms:
            perms[epoch] = epoch_permutation(seed, epoch, n)
        out.append(int(perms[epoch][pos]))
    return out


def due(done: int, every: int, total: int) -> bool:
    return every > 0 and (done % every == 0 or done == total)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_for(
    precision: str, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast for "bf16" (or "auto" on CUDA); otherwise a no-op context."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_update(opts: dict[str, torch.optim.Optimizer], step: int, world: int):
    """`ctx.update(name, loss)`: NaN guard, zero grads, backward, DDP grad average, step."""

    def update(name: str, loss: torch.Tensor) -> None:
        if name not in opts:
            raise KeyError(f"train_step used optimiser {name!r}; system has {sorted(opts)}")
        bad = (~torch.isfinite(loss.detach())).any().float()
        if world > 1:  # every rank must stop together, or the others hang in all_reduce
            dist.all_reduce(bad)
        if bad.item() > 0:
            raise TrainingDivergedError(
                f"step {step + 1}: loss {name!r} = {loss.detach().float().cpu().tolist()} is not "
                "finite; the run stopped and its last good checkpoint is kept (resume it with "
                "train.precision fp32, or start a new run with lower learning rates)"
            )
        opt = opts[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            allreduce_grads(opt, world)
        opt.step()

    return update


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


def image_half(x: torch.Tensor, packing: str) -> torch.Tensor:
    """Image part of packed pairs (..., S, S, S) -> (..., S, S, S/2) (contract 2)."""
    return x[..., ::2] if packing == "interleave" else x[..., : x.shape[-1] // 2]


def mask_half(x: torch.Tensor, packing: str) -> torch.Tensor:
    return x[..., 1::2] if packing == "interleave" else x[..., x.shape[-1] // 2 :]


def mean_pairwise_distance(v: torch.Tensor) -> float:
    """Mean RMS distance over distinct pairs of rows of v (n, d): ||a - b|| / sqrt(d)."""
    u = v.double().flatten(1)
    n, d = u.shape
    dist = torch.cdist(u, u) / d**0.5
    return float(dist.sum() / (n * (n - 1)))


def slice_png(batch: torch.Tensor, packing: str) -> tuple[np.ndarray, np.ndarray]:
    """Mid axial slices (radiological: patient left on the right, anterior up) of the image and
    mask halves of (n, 1, S, S, S) pairs, tiled side by side as uint8 (S, n*S) arrays."""
    img, msk = image_half(batch[:, 0], packing), mask_half(batch[:, 0], packing)
    z = img.shape[-1] // 2

    def tile(v: torch.Tensor) -> np.ndarray:
        sl = v[..., z].float().clamp(-1, 1).add(1).mul(127.5).round().byte().cpu().numpy()
        return np.concatenate([s.T[::-1] for s in sl], axis=1)  # (x, y) -> rows y desc, cols x

    return tile(img), tile(msk)


# -- setup pieces ----------------------------------------------------------------------------
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


def broadcast_state(system: nn.Module, ema: dict[str, nn.Module], world: int) -> None:
    """Make every rank start from rank 0's weights (and EMA), whatever the init did."""
    if world == 1:
        return
    for m in (system, *ema.values()):
        for t in m.state_dict().values():
            dist.broadcast(t, src=0)


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def is_slice_system(system: nn.Module) -> bool:
    """True for 2D systems fed (B, 2, R, R) slice pairs (`data_view == "slices"`)."""
    return getattr(system, "data_view", "volumes") == "slices"


def _build_system(run_cfg: RunConfig) -> GANSystem:
    from synthct.models import build_system

    return build_system(run_cfg.model, run_cfg.data.size, packing=run_cfg.data.packing)


class TrainData:
    """The packed training pairs in memory: arrays (N, S, S, S) float32, ids, centre indices."""

    def __init__(self, packed, split: str) -> None:
        self.arrays = torch.from_numpy(np.ascontiguousarray(packed.arrays, dtype=np.float32))
        self.case_ids = list(packed.case_ids)
        self.centre_names = sorted(set(packed.centres))
        self.centres = torch.tensor([self.centre_names.index(c) for c in packed.centres])
        self.spacing = tuple(float(s) for s in packed.spacing)
        self.split = split


def load_train_data(
    ws: Workspace, run_cfg: RunConfig, allow_split: bool, slice_system: GANSystem | None = None
):
    """The packed split named in the config; refuses anything but "train"/"gan" unless allowed.

    With a 2D `slice_system` the split is returned as its slice view (`SliceTrainData`, pairs
    at the system's resolution); `train.augment` (3D MONAI sets) is refused for it.
    """
    split = run_cfg.train.split
    if slice_system is not None and run_cfg.train.augment != "none":
        raise ConfigError(
            f"train.augment is {run_cfg.train.augment!r}, but {run_cfg.model.kind} trains on 2D "
            "slices: the affine/elastic sets are 3D MONAI transforms of packed volumes; set "
            "train.augment: none (DiffAugment, model.diffaug, is applied inside the model)"
        )
    if split not in ("train", "gan") and not allow_split:  # gan: the GAN-only split of ingest
        raise LeakageError(
            f"train.split is {split!r}: GAN training reads only the 'train' split (or the GAN-only "
            "'gan' split) (design §5) so "
            "validation/test cases stay unseen; pass --allow-split to train on it anyway "
            "(recorded in the run's train_cases.json)"
        )
    from synthct.preprocess import load_packed

    packed = load_packed(ws, run_cfg.data, split=split)
    if len(packed.case_ids) == 0:
        raise WorkspaceError(f"no packed cases in split {split!r}; run `synthct preprocess`")
    if slice_system is not None:
        from synthct.train_slices import SliceTrainData

        return SliceTrainData(
            packed, split, run_cfg.data, slice_system.resolution, run_cfg.model.slice_layout
        )
    return TrainData(packed, split)


def make_probe(data, run_cfg: RunConfig, device: torch.device) -> CollapseProbe:
    """The collapse probe for the data view (volumes, or 2D slice pairs)."""
    if getattr(data, "view", "volumes") == "slices":
        from synthct.train_slices import SliceCollapseProbe

        return SliceCollapseProbe(data.dataset, run_cfg, device)
    return CollapseProbe(data.arrays, run_cfg, device)


def next_batch(data, run_cfg, step, rank, world, gen, device, channels_last):
    """(real (B, 1, S, S, S) on device, centre indices (B,) or None) for this rank and step;
    for slice data (real (B, 2, R, R), None) (`train_slices.next_slice_batch`)."""
    cfg = run_cfg.train
    if getattr(data, "view", "volumes") == "slices":
        from synthct.train_slices import next_slice_batch

        return next_slice_batch(data, cfg, step, rank, world, device, channels_last), None
    idx = batch_indices(cfg.seed, step, cfg.batch_size, len(data.case_ids), rank, world)
    real = data.arrays[idx].unsqueeze(1)
    if cfg.augment != "none":
        from synthct.augment import augment_packed

        seeds = torch.randint(0, 2**31 - 1, (len(idx),), generator=gen).tolist()
        real = torch.stack(
            [
                augment_packed(r, cfg.augment, s, run_cfg.data)
                for r, s in zip(real, seeds, strict=True)
            ]
        )
    real = real.to(device, non_blocking=True)
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last_3d)
    centre = data.centres[idx].to(device) if run_cfg.model.n_centres > 0 else None
    return real, centre


def check_new_run(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run unless resuming."""
    exists = (run_dir / "config.yaml").exists() or ckpt.list_checkpoints(run_dir)
    if exists and not resume:
        raise WorkspaceError(
            f"run {run_dir.name!r} already exists in {run_dir.parent}; "
            "pass --resume to continue it or choose another --run name"
        )


def prepare_run_dir(run_dir: Path, run_cfg: RunConfig, data: TrainData, allow_split: bool) -> None:
    """config.yaml (the frozen RunConfig) + train_cases.json (contract 4)."""
    ckpt.remove_stale_temps(run_dir)
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    save_yaml(to_dict(run_cfg), run_dir / "config.yaml")
    ids = sorted(data.case_ids)
    atomic_write_json(
        run_dir / "train_cases.json",
        {
            "split": data.split,
            "case_ids": ids,
            "sha256": case_ids_hash(ids),
            "allow_split": bool(allow_split),
            "centres": data.centre_names,
            "spacing": list(data.spacing),
            **getattr(data, "record", {}),
        },
    )


def case_ids_hash(ids) -> str:
    try:
        from synthct.datasets import case_ids_hash as h
    except ImportError:  # the case index module is optional for training from packed arrays
        import hashlib

        return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return h(ids)


def check_resumable(saved: dict, run_cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run must keep its config except RESUMABLE_KEYS (e.g. a larger `steps`)."""
    new = to_dict(run_cfg)
    from_dict(RunConfig, saved, where="checkpoint config")
    diffs = [
        f"{sec}.{k}: {saved[sec].get(k)!r} -> {v!r}"
        for sec, d in new.items()
        for k, v in d.items()
        if saved.get(sec, {}).get(k) != v and not (sec == "train" and k in RESUMABLE_KEYS)
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume run {run_dir}: config differs from its checkpoint ({'; '.join(diffs)});"
            f" only train.{{{', '.join(sorted(RESUMABLE_KEYS))}}} may change"
        )


# -- logs, snapshots, collapse ---------------------------------------------------------------
@contextlib.contextmanager
def ema_swapped(system: GANSystem, ema: dict[str, nn.Module]):
    """Temporarily put the EMA networks into the system, in eval mode, RNG untouched."""
    live = {n: getattr(system, n) for n in ema}
    was_training = system.training
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            for n, m in ema.items():
                setattr(system, n, m)
            system.eval()
            yield system
        finally:
            for n, m in live.items():
                setattr(system, n, m)
            system.train(was_training)


class CollapseProbe:
    """Fixed latents and a fixed real reference for snapshots and the mode-collapse alarm."""

    def __init__(self, arrays: torch.Tensor, run_cfg: RunConfig, device: torch.device) -> None:
        self.packing = run_cfg.data.packing
        self.seed = run_cfg.train.seed
        self.device = device
        pick = torch.randperm(len(arrays), generator=torch.Generator().manual_seed(self.seed))
        self.set_reference(self.features(arrays[pick[:N_COLLAPSE]].unsqueeze(1)))

    def set_reference(self, ref: torch.Tensor) -> None:
        """Real diversity of the reference feature rows `ref` (k, d)."""
        self.real_div = mean_pairwise_distance(ref) if len(ref) > 1 else 0.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, S, S, S) -> image halves average-pooled to at most 16x16x8, as (n, d) float32."""
        img = image_half(x.float(), self.packing)
        size = tuple(min(s, t) for s, t in zip(img.shape[-3:], (16, 16, 8), strict=True))
        return F.adaptive_avg_pool3d(img, size).flatten(1).cpu()

    def samples(self, system: GANSystem, ema: dict, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 12345)
        with ema_swapped(system, ema):
            z = system.sample_latent(n, generator=g, device=self.device)
            centre = None
            if getattr(system, "n_centres", 0) > 0:
                centre = torch.arange(n, device=self.device) % system.n_centres
            return system.generate(z, centre).float()

    def snapshot(self, system, ema) -> np.ndarray:
        """uint8 (2S, n*S): mid axial image slices over mask slices of fixed-latent samples."""
        return np.concatenate(slice_png(self.samples(system, ema, N_SNAPSHOT), self.packing))

    def check(self, system, ema, alarm: dict) -> tuple[float, float, bool]:
        """(sample diversity, real diversity, flagged) and update the alarm's strike count."""
        fake_div = mean_pairwise_distance(self.features(self.samples(system, ema, N_COLLAPSE)))
        alike = fake_div < COLLAPSE_RATIO * self.real_div
        alarm["strikes"] = alarm["strikes"] + 1 if alike else 0
        alarm["flagged"] = bool(alarm["flagged"] or alarm["strikes"] >= 2)
        return fake_div, self.real_div, alarm["strikes"] >= 2


class RunLog:
    """losses.csv, collapse.csv, samples/*.png, status.json (rank 0 only; others no-ops)."""

    def __init__(self, run_dir: Path, active: bool, start: int, steps: int) -> None:
        self.dir, self.active, self.last_step, self.steps = run_dir, active, start, steps
        self.warnings: list[str] = []
        self._files: dict[str, tuple] = {}
        self.tb = None
        if not active:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("losses.csv", "collapse.csv"):
            truncate_csv(run_dir / name, start)  # drop rows a killed run wrote after its checkpoint
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if start > 0:
                self.warnings = list(json.loads((run_dir / "status.json").read_text())["warnings"])
        with contextlib.suppress(ImportError):
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.status("running", start, "resumed" if start else "started")

    def _append(self, name: str, row: dict) -> None:
        if name not in self._files:
            path = self.dir / name
            new = not path.exists() or path.stat().st_size == 0
            f = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (kept open)
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            self._files[name] = (f, w)
        f, w = self._files[name]
        w.writerow(row)
        f.flush()

    def losses(self, step: int, wall: float, losses: dict) -> None:
        self.last_step = step
        self._append("losses.csv", {"step": step, "wall_s": f"{wall:.3f}", **losses})
        if self.tb is not None:
            for k, v in losses.items():
                self.tb.add_scalar(f"loss/{k}", v, step)

    def snapshot(self, step: int, picture: np.ndarray) -> None:
        from synthct.io import save_png

        save_png(picture, self.dir / "samples" / f"step-{step:08d}.png")

    def collapse(self, step: int, result: tuple[float, float, bool]) -> None:
        fake_div, real_div, flagged = result
        self._append(
            "collapse.csv",
            {
                "step": step,
                "sample_diversity": f"{fake_div:.6f}",
                "real_diversity": f"{real_div:.6f}",
                "flagged": int(flagged),
            },
        )
        if flagged:
            self.warnings.append(
                f"possible mode collapse at step {step}: samples' mean pairwise distance "
                f"{fake_div:.3f} vs {real_div:.3f} among real cases "
                f"(alarm below {COLLAPSE_RATIO:g} x real)"
            )
            self.status("running", step)

    def status(self, state: str, step: int, message: str = "") -> None:
        if not self.active:
            return
        self.last_step = max(self.last_step, step)
        atomic_write_json(
            self.dir / "status.json",
            {
                "state": state,
                "step": step,
                "steps": self.steps,
                "message": message,
                "warnings": self.warnings,
                "pid": os.getpid(),
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )

    def close(self) -> None:
        for f, _ in self._files.values():
            f.close()
        self._files.clear()
        if self.tb is not None:
            self.tb.close()


def truncate_csv(path: Path, last_step: int) -> None:
    """Keep the header and rows with step <= last_step (atomic rewrite); drop a torn last line."""
    if not path.exists():
        return
    if last_step == 0:
        path.unlink()
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = lines[:1] + [
        ln
        for ln in lines[1:]
        if ln.endswith("\n")
        and ln.split(",", 1)[0].isdigit()
        and int(ln.split(",", 1)[0]) <= last_step
    ]
    atomic_write_text(path, "".join(keep))


def _tqdm(start: int, total: int, run: str, rank: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=start,
        desc=f"train {run}",
        disable=rank != 0,
        dynamic_ncols=True,
        unit="it",
    )
