"""Training checkpoints: atomic save, listing, safe loading, and a generator loader for sampling.

A checkpoint is one `torch.save` file `runs/<run>/checkpoints/step-<8 digits>.pt` holding only
plain data (dicts, lists, numbers, strings, tensors), so it loads with
`torch.load(weights_only=True)` and a downloaded checkpoint cannot run code (design §9)::

    {"format": 2, "step": int, "config": RunConfig as dict, "model": model.state_dict(),
     "ema": {name: state_dict}, "optimizers": {name: state_dict}, "rng": [per-rank states],
     "loader": {...}, "elapsed_s": float, "data": {"spacing": [...], "centres": [...]},
     "collapse": {...}, "synthct_version": str}

Writes go to a temporary file in the same folder, are fsynced, then `os.replace`d into place, so
a crash (even SIGKILL) never leaves a half-written checkpoint under the final name.

Format 1 (synthct 0.1.0) stored the model config as one flat mapping; `run_config_of` reads
it into today's per-kind sections (`ModelConfig.upgrade_dict`), so old checkpoints still load,
sample and resume.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from synthct import __version__
from synthct.config import RunConfig, from_dict, to_dict
from synthct.errors import WorkspaceError
from synthct.models.base import GenerativeModel
from synthct.models.registry import build_model
from synthct.runtime import file_sha256, load_weights, save_weights

CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)  # 1: synthct 0.1.0 (flat model config)
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint of a run, oldest first (temp files ignored)."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(state: dict[str, Any], run_dir: str | os.PathLike, keep: int = 0) -> Path:
    """Write `state` (must contain "step") atomically; keep only the newest `keep` (0 = all)."""
    path = save_weights(state, checkpoint_path(run_dir, int(state["step"])))
    if keep > 0:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return path


SAMPLING_KEYS = ("format", "step", "config", "model", "ema", "data", "elapsed_s")


def export_for_sampling(src: str | os.PathLike, dst_run_dir: str | os.PathLike) -> Path:
    """Write a sampling-only copy of checkpoint `src` into `dst_run_dir`/checkpoints/.

    Keeps the config, model and EMA weights and data metadata; drops optimiser and RNG states
    (about a third of the size). `load_generator` reads it; resuming training from it is refused.
    """
    state = load_checkpoint(src)
    slim = {k: state[k] for k in SAMPLING_KEYS if k in state}
    slim["sampling_only"] = True
    return save_checkpoint(slim, dst_run_dir)


def remove_stale_temps(run_dir: str | os.PathLike) -> None:
    """Delete temp files left by a checkpoint write that was killed."""
    d = checkpoint_dir(run_dir)
    if d.is_dir():
        for p in d.glob(".step-*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint file with `weights_only=True`; clear errors for missing/corrupt files."""
    path = Path(path)
    state = load_weights(path, map_location, what="checkpoint")
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise WorkspaceError(
            f"checkpoint {path}: expected a synthct checkpoint of format "
            f"{' or '.join(map(str, READABLE_FORMATS))}"
        )
    return state


def resolve_checkpoint(run_dir: str | os.PathLike, checkpoint: str | int = "latest") -> Path:
    """Path of checkpoint `"latest"`, a step number (int or digit string) or a file name."""
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise WorkspaceError(f"run {run_dir} has no checkpoints in {checkpoint_dir(run_dir)}")
    if checkpoint == "latest":
        return ckpts[-1][1]
    if isinstance(checkpoint, int) or str(checkpoint).isdigit():
        step = int(checkpoint)
        for s, p in ckpts:
            if s == step:
                return p
        raise WorkspaceError(
            f"run {run_dir} has no checkpoint at step {step}; available: {[s for s, _ in ckpts]}"
        )
    for _, p in ckpts:
        if p.name == str(checkpoint):
            return p
    raise WorkspaceError(
        f"checkpoint {checkpoint!r} not found in {checkpoint_dir(run_dir)}; "
        "expected 'latest', a step number or a file name"
    )


def run_config_of(state: dict) -> RunConfig:
    return from_dict(RunConfig, state["config"], where="checkpoint config")


def load_generator(
    run_dir: str | os.PathLike,
    checkpoint: str | int = "latest",
    ema: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[GenerativeModel, RunConfig, dict]:
    """Rebuild a run's model from a checkpoint for sampling.

    With `ema=True` the networks the loop kept an EMA of (`model.ema_modules`, usually the
    generator) get the EMA weights. The model is returned in eval mode on `device`; call
    `model.generate(model.sample_latent(n, gen, device))` for samples in its view's shape
    ((n, 1, S, S, S) packed pairs, or (n, 2, R, R) slice pairs).

    Returns (model, run_cfg, meta) with meta = {path, step, sha256, ema, spacing, centres}.
    """
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)
    cfg = run_config_of(state)
    model = build_model(cfg.model, cfg.data)
    model.load_state_dict(state["model"])
    if ema:
        for name, sd in state.get("ema", {}).items():
            getattr(model, name).load_state_dict(sd)
    model.to(device).eval()
    data = state.get("data", {})
    meta = {
        "path": str(path),
        "step": int(state["step"]),
        "sha256": file_sha256(path),
        "ema": bool(ema and state.get("ema")),
        "spacing": data.get("spacing"),
        "centres": data.get("centres", []),
    }
    return model, cfg, meta


# -- RNG and checkpoint state ----------------------------------------------------------------
def rng_state(gen: torch.Generator) -> dict:
    """All RNG states as plain tensors/numbers (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": py[0],
            "state": torch.tensor(py[1], dtype=torch.int64),
            "gauss": py[2],
        },
        "ctx": gen.get_state(),
    }


def set_rng_state(s: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(s["torch"].cpu())
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"].cpu())
    n = s["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"]), p["gauss"]))
    gen.set_state(s["ctx"].cpu())


def gather_rng(gen: torch.Generator, world: int) -> list[dict]:
    """RNG states of every rank (rank order), so a DDP run resumes exactly too."""
    mine = rng_state(gen)
    if world == 1:
        return [mine]
    out: list = [None] * world
    dist.all_gather_object(out, mine)
    return out


def checkpoint_state(run_cfg, step, model, opts, ema, rng, elapsed, alarm, data_info) -> dict:
    """The plain-data checkpoint dict (layout in the module docstring)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "config": to_dict(run_cfg),
        "model": model.state_dict(),
        "ema": {n: m.state_dict() for n, m in ema.items()},
        "optimizers": {n: o.state_dict() for n, o in opts.items()},
        "rng": rng,
        "loader": {"seed": run_cfg.train.seed, "samples_seen": step * run_cfg.train.batch_size},
        "elapsed_s": float(elapsed),
        "collapse": dict(alarm),
        "data": dict(data_info),
        "synthct_version": __version__,
    }


def restore_state(state, model, opts, ema, gen, rank, world) -> None:
    """Load model, EMA, optimisers and this rank's RNG streams from a checkpoint dict."""
    model.load_state_dict(state["model"])
    for n, m in ema.items():
        m.load_state_dict(state["ema"][n])
    for n, o in opts.items():
        o.load_state_dict(state["optimizers"][n])
    rngs = state["rng"]
    if len(rngs) == world:
        set_rng_state(rngs[rank], gen)
    else:  # a different number of ranks cannot continue the same random streams
        warnings.warn(
            f"checkpoint has RNG states for {len(rngs)} rank(s), this run has {world}: "
            "random streams restart from seeds (not an exact continuation)",
            stacklevel=2,
        )
