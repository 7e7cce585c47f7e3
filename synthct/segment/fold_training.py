"""Training of one cross-validation fold: resumable, with per-epoch curves and the best checkpoint.

The fold's intensity normalisation is fitted on its own training cases (`normalise.py`: real
ones, never its validation cases), applied first in the training transforms and to every
validation input, and written into result.json and best.pt so the ensemble uses it on the test
split.

A fold whose result.json exists is skipped; an unfinished one resumes from last.pt (model,
optimiser, scheduler, GradScaler, epoch, best score, history, torch RNG). The data order and the
augmentation are re-seeded from (seed, fold, epoch) at the start of every epoch, so a resumed
fold reproduces an uninterrupted one exactly on CPU. Checkpoints hold only tensors and plain data
and load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthct.config import to_dict
from synthct.errors import ConfigError
from synthct.runtime import load_weights, save_weights
from synthct.segment.cases import SegCase
from synthct.segment.normalise import Normalisation, fit_normalisation
from synthct.segment.recipe import SegConfig
from synthct.workspace import atomic_write_json, atomic_write_text, read_json


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p % 2**32 for p in parts]).generate_state(1)[0])


def _curve_csv(history: list[dict[str, Any]]) -> str:
    lines = ["epoch,train_loss,val_dice,lr"]
    for h in history:
        vd = "" if h["val_dice"] is None else f"{h['val_dice']:.6f}"
        lines.append(f"{h['epoch']},{h['train_loss']:.6f},{vd},{h['lr']:.8g}")
    return "\n".join(lines) + "\n"


def validate(
    model, cases: Sequence[SegCase], cfg: SegConfig, device, precision: str, norm: Normalisation
) -> float:
    """Mean per-case Dice of `model` on `cases` (empty ground truths excluded; DSCagg if all
    are empty; 0 if that is undefined too); inputs normalised by `norm`."""
    from synthct.segment.cases import stack_images
    from synthct.segment.recipe import predict_probs
    from synthct.segment.scores import dice_per_case, dsc_agg

    preds = np.stack(
        [
            predict_probs(model, stack_images([c], norm).to(device), cfg, precision)[0]
            .argmax(0)
            .cpu()
            .numpy()
            for c in cases
        ]
    )
    gts = np.stack([c.label for c in cases])
    d = dice_per_case(preds > 0, gts > 0)
    if np.isfinite(d).any():
        return float(np.nanmean(d))
    agg = dsc_agg(preds > 0, gts > 0)
    return agg if math.isfinite(agg) else 0.0


def train_step(model, image, label, loss_fn, optimizer, scaler, precision: str) -> float:
    """One optimiser step on image (B, 1, X, Y, Z), label (B, 1, X, Y, Z); returns the loss."""
    from synthct.segment.recipe import autocast

    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, image.device):
        loss = loss_fn(model(image), label)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def train_fold(
    train_cases: Sequence[SegCase],
    val_cases: Sequence[SegCase],
    cfg: SegConfig,
    fold_dir: Path,
    *,
    fold: int = 0,
    epochs: int | None = None,
    init_state: dict | None = None,
    device=None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one fold (resumable) and return its result; writes into `fold_dir`:

    last.pt (epoch checkpoint, removed when done), best.pt (weights of the best validation epoch;
    the last epoch when there is no validation set, with the fold's normalisation), curve.csv,
    result.json (including `normalisation`).
    """
    import torch
    from monai.data import DataLoader
    from tqdm.auto import tqdm

    from synthct.segment import recipe
    from synthct.segment.cases import SegDataset

    fold_dir = Path(fold_dir)
    if (fold_dir / "result.json").is_file():
        return read_json(fold_dir / "result.json")
    if not train_cases:
        raise ConfigError(f"fold {fold}: no training cases")
    fold_dir.mkdir(parents=True, exist_ok=True)
    device = recipe.select_device(device)
    precision = recipe.resolve_precision(cfg, device)
    epochs = epochs or cfg.epochs
    norm = fit_normalisation(train_cases, cfg.normalisation, cfg.hu_window)

    torch.manual_seed(_seed(cfg.seed, fold))
    model = recipe.build_network(cfg).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = recipe.build_optimizer(model, cfg)
    scheduler = recipe.build_scheduler(optimizer, cfg, epochs)
    scaler = recipe.make_scaler(precision, device)
    loss_fn = recipe.build_loss(cfg)
    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "history": []}
    last = fold_dir / "last.pt"
    if last.is_file():  # resume
        ck = load_weights(last, device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_torch"].cpu())
        state = {k: ck[k] for k in ("epoch", "best", "best_epoch", "history")}
    transforms = recipe.build_train_transforms(cfg, norm)
    dataset = SegDataset(list(train_cases), transforms)
    t0 = time.perf_counter()
    bar = tqdm(range(state["epoch"] + 1, epochs + 1), desc=f"fold {fold}", leave=False)
    for epoch in bar:
        # -- train: data order and augmentation seeded by (seed, fold, epoch) --------------
        # MONAI's DataLoader seeds the transforms (in each worker) from this generator
        gen = torch.Generator().manual_seed(_seed(cfg.seed, fold, epoch))
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=gen,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
        )
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        losses = []
        for image, label in loader:
            losses.append(
                train_step(
                    model, image.to(device), label.to(device), loss_fn, optimizer, scaler, precision
                )
            )
        scheduler.step()
        # -- validate, keep the best ----------------------------------------------------------
        val_dice = None
        if val_cases and (epoch % cfg.val_every == 0 or epoch == epochs):
            val_dice = validate(model, val_cases, cfg, device, precision, norm)
        if (val_dice is not None and val_dice > state["best"]) or (
            not val_cases and epoch == epochs
        ):
            state["best"] = val_dice if val_dice is not None else state["best"]
            state["best_epoch"] = epoch
            save_weights(
                {
                    "model": model.state_dict(),
                    "epoch": epoch,
                    "val_dice": val_dice,
                    "normalisation": norm.to_dict(),
                },
                fold_dir / "best.pt",
            )
        # -- record and checkpoint ------------------------------------------------------------
        state["epoch"] = epoch
        state["history"].append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice, "lr": lr}
        )
        atomic_write_text(fold_dir / "curve.csv", _curve_csv(state["history"]))
        save_weights(
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "config": to_dict(cfg),
            },
            last,
        )
        bar.set_postfix(loss=f"{state['history'][-1]['train_loss']:.3f}", val=val_dice)
        if progress:
            progress(epoch, epochs)
        if on_epoch_end:
            on_epoch_end(epoch, state["history"][-1])
    result = {
        "fold": fold,
        "epochs": epochs,
        "n_train": len(train_cases),
        "n_train_synthetic": sum(c.source == "synthetic" for c in train_cases),
        "n_val": len(val_cases),
        "best_epoch": state["best_epoch"],
        "best_val_dice": state["best"] if math.isfinite(state["best"]) else None,
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "precision": precision,
        "device": str(device),
        "normalisation": norm.to_dict(),
    }
    atomic_write_json(fold_dir / "result.json", result)
    last.unlink(missing_ok=True)
    return result


def load_fold_model(fold_dir: Path, cfg: SegConfig, device=None):
    """The best-epoch network of a finished fold, in eval mode."""
    from synthct.segment import recipe

    device = recipe.select_device(device)
    model = recipe.build_network(cfg).to(device)
    model.load_state_dict(load_weights(Path(fold_dir) / "best.pt", device)["model"])
    return model.eval()


def load_fold_normalisation(fold_dir: Path) -> Normalisation:
    """The normalisation a finished fold trained and validated with (its result.json)."""
    path = Path(fold_dir) / "result.json"
    d = read_json(path).get("normalisation")
    if not isinstance(d, dict):
        raise ConfigError(
            f"{path} records no normalisation (a fold from an older synthct version); "
            "delete the experiment folder and run it again"
        )
    return Normalisation.from_dict(d)
