"""The training loop for every model kind, on one device or data-parallel under torchrun.

`train()` sets a run up (`_setup`) and runs one readable loop with named phases (`_loop`: stop
check -> data -> iteration -> EMA -> log/snapshot/collapse check/checkpoint); the pieces it
needs are small helpers below it. The model owns its losses and update order
(`GenerativeModel.train_step`); its view owns batching, the collapse probe and snapshots
(`synthct.views`); the loop owns precision, EMA, gradient averaging across ranks
(`synthct.distributed`), the NaN guard, logs (`synthct.run_log`), checkpoints and the
mode-collapse rule (`synthct.collapse`).

Exact resume: the data order is a pure function of (seed, step) (the views draw batches that
way) and every RNG the loop or the model touches is checkpointed, so a run killed with SIGKILL
and resumed reproduces on CPU the loss values of an uninterrupted run.

Cancel: the first SIGTERM or SIGINT (a cancelled background job, Ctrl-C) asks the loop to stop at
the next step boundary; it writes a checkpoint there, records the run as `cancelled` in
status.json and raises `synthct.errors.Cancelled`, so `--resume` continues exactly where it
stopped. A second signal stops at once (see `synthct.stopping`).

Hand-written because no library offers a loop with this contract (the GenerativeModel interface,
exact resume, an explicit flattened gradient all-reduce that allows any call pattern of the
networks).
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from synthct import checkpoint as ckpt
from synthct import preprocess
from synthct.collapse import N_COLLAPSE, N_SNAPSHOT, check_collapse, probe_samples
from synthct.config import RunConfig, from_dict, save_yaml, to_dict
from synthct.distributed import (
    allreduce_grads,
    barrier,
    broadcast_state,
    init_distributed,
    stop_agreed,
)
from synthct.errors import Cancelled, ConfigError, LeakageError, SynthctError, WorkspaceError
from synthct.models.base import GenerativeModel, StepContext
from synthct.models.registry import build_model
from synthct.run_log import RunLog
from synthct.runtime import case_ids_hash, pick_device
from synthct.stopping import StopRequest, Terminated
from synthct.views import Probe, TrainingData
from synthct.workspace import Workspace, atomic_write_json, check_name

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
ModelFactory = Callable[[RunConfig], GenerativeModel]


class TrainingDivergedError(SynthctError):
    """A loss became NaN/inf; the run stopped and its last good checkpoint is kept."""


def train(
    run_cfg: RunConfig,
    ws: Workspace,
    run: str,
    resume: bool = False,
    progress: Progress | None = None,
    allow_split: bool = False,
    model_factory: ModelFactory | None = None,
) -> Path:
    """Train `run_cfg` into WS/runs/<run>/ and return that folder.

    Reads the packed *train* split only (`allow_split=True` permits another split and records it
    in train_cases.json). Under `torchrun` (RANK/WORLD_SIZE set) each rank trains on its shard,
    gradients are averaged explicitly, and only rank 0 writes. `model_factory` replaces
    `build_model` (tests). Raises `TrainingDivergedError` on a non-finite loss and
    `Cancelled` after a stop request (with its checkpoint written).
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    rank, world = init_distributed()
    owns_group = owns_group and world > 1
    try:
        run_ = _setup(run_cfg, ws, run, resume, allow_split, model_factory, rank, world)
        _loop(run_, progress)
    finally:
        if owns_group:
            dist.destroy_process_group()
    return run_.dir


@dataclass
class _Run:
    """Everything the loop needs, built once by `_setup`."""

    cfg: RunConfig
    name: str
    dir: Path
    rank: int
    world: int
    device: torch.device
    model: GenerativeModel
    data: TrainingData
    opts: dict[str, torch.optim.Optimizer]
    ema: dict[str, nn.Module]
    gen: torch.Generator
    start: int
    elapsed: float
    alarm: dict
    probe: Probe
    log: RunLog
    channels_last: bool


def _setup(run_cfg, ws, run, resume, allow_split, model_factory, rank, world) -> _Run:
    """Model, data, optimisers, EMA, RNG, resumed state and the run folder, in a fixed order
    (the global RNG draws of model initialisation must not depend on anything else)."""
    cfg = run_cfg.train
    device = pick_device()
    run_dir = ws.run_dir(check_name(run, "run name"))
    check_new_run(run_dir, resume)
    seed_everything(cfg.seed)  # same initial weights for a seed (and on every rank)
    model = (model_factory or _build_model)(run_cfg).to(device)
    view = model.view
    view.check_train_config(cfg, run_cfg.model.kind)
    data = view.training_data(load_split(ws, run_cfg, allow_split), cfg.split)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=view.memory_format)
    opts = model.configure_optimizers(fused=device.type == "cuda")
    ema = {n: copy.deepcopy(getattr(model, n)).requires_grad_(False) for n in model.ema_modules}
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
        ckpt.restore_state(state, model, opts, ema, gen, rank, world)
        start, elapsed, alarm = int(state["step"]), float(state["elapsed_s"]), state["collapse"]
    broadcast_state(model, ema, world)
    if cfg.compile:
        for m in model.children():
            m.compile()
    if rank == 0:
        prepare_run_dir(run_dir, run_cfg, data, allow_split)
    log = RunLog(run_dir, rank == 0, start, cfg.steps)
    barrier(world)
    probe = view.probe(data, run_cfg)
    return _Run(run_cfg, run, run_dir, rank, world, device, model, data, opts, ema, gen, start,
                elapsed, alarm, probe, log, channels_last)  # fmt: skip


def _loop(r: _Run, progress: Progress | None) -> None:
    """The training loop (phases 0-4 below); records the run's end in status.json."""
    cfg = r.cfg.train
    autocast = autocast_for(cfg.precision, r.device)
    wall0 = time.perf_counter() - r.elapsed
    bar = _tqdm(r.start, cfg.steps, r.name, r.rank)
    saved = r.start  # the step of the newest checkpoint (0: none)

    def save_checkpoint(done: int) -> Path | None:
        """Phase 4's checkpoint (every rank gathers RNG; rank 0 writes); returns its path."""
        nonlocal saved
        rng = ckpt.gather_rng(r.gen, r.world)
        saved = done
        if r.rank != 0:
            return None
        info = {"spacing": list(r.data.spacing), "centres": r.data.centre_names}
        wall = time.perf_counter() - wall0
        state = ckpt.checkpoint_state(r.cfg, done, r.model, r.opts, r.ema, rng, wall, r.alarm, info)
        path = ckpt.save_checkpoint(state, r.dir, keep=cfg.keep_checkpoints)
        r.log.status("running", done)
        return path

    stop = StopRequest()
    try:
        with stop:
            if r.start == 0 and r.rank == 0:
                r.log.snapshot(0, _snapshot(r))
            for step in range(r.start, cfg.steps):
                # 0. a stop request (cancel, Ctrl-C) is honoured here, between two steps
                if stop_agreed(stop, r.world, r.device):
                    path = save_checkpoint(step) if step > saved else None
                    if path is None and step > 0 and r.rank == 0:
                        path = ckpt.checkpoint_path(r.dir, step)  # written at this step
                    raise cancelled(r.name, r.dir, step, cfg.steps, stop, r.log, path)
                # 1. data: this rank's shard of the global batch, a pure function of (seed, step)
                real, centre = next_batch(r, step)
                # 2. one iteration: the model's updates all go through ctx.update
                update = make_update(r.opts, step, r.world)
                ctx = StepContext(step, r.device, r.gen, update, autocast, cfg.train_encoder)
                losses = r.model.train_step(real, ctx, centre)
                # 3. EMA of the generator weights
                for name, m in r.ema.items():
                    ema_update(m, getattr(r.model, name), ema_decay_at(step, cfg.ema_decay))
                done = step + 1
                # 4. log, snapshot, collapse alarm, checkpoint (rank 0 writes; RNG from all)
                if r.rank == 0 and due(done, cfg.log_every, cfg.steps):
                    r.log.losses(done, time.perf_counter() - wall0, losses)
                    if progress:
                        progress(done / cfg.steps, f"step {done}/{cfg.steps}")
                if r.rank == 0 and due(done, cfg.snapshot_every, cfg.steps):
                    r.log.snapshot(done, _snapshot(r))
                if r.rank == 0 and due(done, cfg.collapse_every, cfg.steps):
                    samples = probe_samples(r.model, r.ema, N_COLLAPSE, cfg.seed, r.device)
                    r.log.collapse(done, check_collapse(r.probe, samples, r.alarm))
                if due(done, cfg.checkpoint_every, cfg.steps):
                    save_checkpoint(done)
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(losses.items())[:4]})
    except Cancelled:
        raise  # recorded as "cancelled" with its checkpoint; not a failure
    except (Terminated, KeyboardInterrupt) as e:
        if r.rank == 0:
            if stop.requested is not None:  # a second stop request: stopped at once, on purpose
                kept = f"checkpoint step {saved}" if saved else "no checkpoint"
                r.log.status(
                    "cancelled", r.log.last_step, f"stopped at once ({type(e).__name__}); {kept}"
                )
            else:
                r.log.status("failed", r.log.last_step, f"{type(e).__name__}: {e}")
        raise
    except BaseException as e:
        if r.rank == 0:
            r.log.status("failed", r.log.last_step, f"{type(e).__name__}: {e}")
        raise
    finally:
        bar.close()
        r.log.close()
    if r.rank == 0:
        r.log.status("done", cfg.steps, "finished")


def _snapshot(r: _Run):
    return r.probe.snapshot(probe_samples(r.model, r.ema, N_SNAPSHOT, r.cfg.train.seed, r.device))


def next_batch(r: _Run, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(real batch on the device, centre indices (B,) or None) of this rank at `step`."""
    real, cases = r.model.view.batch(r.data, r.cfg, step, r.rank, r.world, r.gen, r.device)
    if r.channels_last:
        real = real.contiguous(memory_format=r.model.view.memory_format)
    centre = r.data.centres[cases].to(r.device) if r.model.n_centres > 0 else None
    return real, centre


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
            raise KeyError(f"train_step used optimiser {name!r}; the model has {sorted(opts)}")
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


# -- setup pieces ----------------------------------------------------------------------------
def _build_model(run_cfg: RunConfig) -> GenerativeModel:
    return build_model(run_cfg.model, run_cfg.data)


def load_split(ws: Workspace, run_cfg: RunConfig, allow_split: bool):
    """The packed split named in the config (`preprocess.PackedSet`); refuses anything but
    "train" or the GAN-only "gan" split unless allowed."""
    split = run_cfg.train.split
    if split not in ("train", "gan") and not allow_split:
        raise LeakageError(
            f"train.split is {split!r}: GAN training reads only the 'train' split (or the "
            "GAN-only 'gan' split reserved by `ingest --gan-fraction`) so validation/test cases "
            "stay unseen; pass --allow-split to train on it anyway (recorded in the run's "
            "train_cases.json)"
        )
    packed = preprocess.load_packed(ws, run_cfg.data, split=split)
    if len(packed.case_ids) == 0:
        raise WorkspaceError(f"no packed cases in split {split!r}; run `synthct preprocess`")
    return packed


def check_new_run(run_dir: Path, resume: bool) -> None:
    """Refuse to overwrite an existing run unless resuming."""
    exists = (run_dir / "config.yaml").exists() or ckpt.list_checkpoints(run_dir)
    if exists and not resume:
        raise WorkspaceError(
            f"run {run_dir.name!r} already exists in {run_dir.parent}; "
            "pass --resume to continue it or choose another --run name"
        )


def prepare_run_dir(
    run_dir: Path, run_cfg: RunConfig, data: TrainingData, allow_split: bool
) -> None:
    """config.yaml (the frozen RunConfig) + train_cases.json (which real cases trained it)."""
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
            **data.record,
        },
    )


def check_resumable(saved: dict, run_cfg: RunConfig, run_dir: Path) -> None:
    """A resumed run must keep its config except RESUMABLE_KEYS (e.g. a larger `steps`)."""
    new = to_dict(run_cfg)
    old = to_dict(from_dict(RunConfig, saved, where="checkpoint config"))
    diffs = [
        f"{sec}.{k}: {old[sec].get(k)!r} -> {v!r}"
        for sec, d in new.items()
        for k, v in d.items()
        if old.get(sec, {}).get(k) != v and not (sec == "train" and k in RESUMABLE_KEYS)
    ]
    if diffs:
        raise ConfigError(
            f"cannot resume run {run_dir}: config differs from its checkpoint ({'; '.join(diffs)});"
            f" only train.{{{', '.join(sorted(RESUMABLE_KEYS))}}} may change"
        )


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
