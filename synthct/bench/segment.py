"""`synthct bench segment`: seconds per training epoch of the SegResNet recipe.

Random in-memory cases (HU noise with one shared box "tumour") go through the recipe's own
training transforms, network, optimiser, loss and GradScaler (`synthct.segment.recipe`) and the
fold trainer's `train_step`, so the figure is the recipe's cost without disk reads; one
validation inference per validation case is added. A short run extrapolates to a full epoch and
to the thesis protocol (5 folds x 300 epochs).
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from monai.data import DataLoader

from synthct.segment import recipe
from synthct.segment.cases import SegCase, SegDataset
from synthct.segment.fold_training import train_step
from synthct.segment.normalise import Normalisation, apply


def benchmark_epoch(
    size: int,
    cases: int,
    init_filters: int,
    batch_size: int,
    steps: int | None,
    augment: bool,
    device: str | None,
    workers: int = 0,
) -> dict:
    """Time training steps and one validation inference on random in-memory cases.

    Seconds per epoch = measured seconds per step x ceil(cases / batch) (extrapolated when
    `steps` is smaller than an epoch) + inference seconds x validation cases (cases / 5).
    """
    cfg = recipe.SegConfig(
        size=size,
        init_filters=init_filters,
        batch_size=batch_size,
        augment=augment,
        num_workers=workers,
    )
    dev = recipe.select_device(device)
    precision = recipe.resolve_precision(cfg, dev)
    rng = np.random.default_rng(0)
    shape = cfg.volume_shape
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(s // 3, s // 2) for s in shape)] = 1  # one box "tumour" shared by all
    data = [
        SegCase(
            f"B-{i:04d}",
            rng.normal(40.0, 300.0, shape).astype(np.float32),  # HU
            label,
            "real",
            "B",
            (1.5,) * 3,
        )
        for i in range(cases)
    ]
    norm = Normalisation("auto3dseg-ct", -100.0, 300.0)  # the recipe's transform, fixed bounds
    torch.manual_seed(0)
    model = recipe.build_network(cfg).to(dev)
    opt = recipe.build_optimizer(model, cfg)
    scaler = recipe.make_scaler(precision, dev)
    loss_fn = recipe.build_loss(cfg)
    loader = DataLoader(
        SegDataset(data, recipe.build_train_transforms(cfg, norm)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
    )
    per_epoch = math.ceil(cases / batch_size)
    steps = min(steps or per_epoch, per_epoch)
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    times = []
    model.train()
    for i in range(steps + 1):  # step 0 is a warm-up (allocation, cuDNN autotuning), not timed
        image, lab = next(batches)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(model, image.to(dev), lab.to(dev), loss_fn, opt, scaler, precision)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t)
    step_s = float(np.mean(times)) if times else float("nan")

    image = apply(norm, data[0].image_hu[None, None]).to(dev)
    recipe.predict_probs(model, image, cfg, precision)
    t = time.perf_counter()
    recipe.predict_probs(model, image, cfg, precision)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    infer_s = time.perf_counter() - t
    epoch_s = step_s * per_epoch + infer_s * math.ceil(cases / 5)
    return {
        "config": {
            k: getattr(cfg, k)
            for k in (
                "size",
                "init_filters",
                "blocks_down",
                "dsdepth",
                "batch_size",
                "augment",
                "num_workers",
            )
        },
        "volume": list(cfg.volume_shape),
        "device": str(dev),
        "precision": precision,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cases": cases,
        "steps_timed": len(times),
        "seconds_per_step": round(step_s, 4),
        "seconds_inference_per_case": round(infer_s, 4),
        "seconds_per_epoch": round(epoch_s, 2),
        "hours_5_folds_300_epochs": round(epoch_s * 300 * 5 / 3600, 2),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if dev.type == "cuda"
        else None,
    }
