"""`synthct bench train`: speed, memory, achieved TFLOP/s and MFU of training iterations.

One iteration is exactly what the loop runs: `system.train_step` with the loop's `ctx.update`
(zero grad, backward, optimiser step) and its autocast. FLOPs are counted with PyTorch's
`FlopCounterMode` over one eager iteration (matmul/conv forward + backward; optimiser arithmetic
is not counted), so the model-FLOP utilisation (MFU) is achieved FLOP/s over the device's dense
peak. Input is a random packed pair batch (B, 1, S, S, S), or for the 2D systems (FastGAN,
StyleGAN2, whose view is a `SliceView`) a random slice-pair batch (B, 2, R, R) — the model's
view makes it (`DataView.random_batch`): the content does not change the cost.

Recipes: `reference` = fp32, eager, no channels_last, unfused Adam (the official HA-GAN code);
`fast` = bf16 autocast + channels_last_3d + torch.compile + fused Adam. Neither changes whether
the encoder is trained (`--no-encoder` does, for both).

`bench_step` (via `time_train_steps`) is the plain rate of a 2D system: iterations per second of
its `train_step` on random slice pairs with plain optimiser updates, no FLOP counting.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from collections.abc import Callable

import torch

from synthct.config import DataConfig, ModelConfig
from synthct.errors import ConfigError
from synthct.models import thesis_model_config
from synthct.models.base import StepContext
from synthct.models.registry import build_model
from synthct.runtime import pick_device
from synthct.train import autocast_for, make_update

# Dense peak TFLOP/s by device-name substring (vendor datasheets, no sparsity).
# Note: PyTorch lets cuDNN use TF32 tensor cores for fp32 convolutions by default, so an "fp32"
# run can exceed the fp32 (non-tensor-core) peak; MFU is then > what plain fp32 allows.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


@dataclasses.dataclass(frozen=True)
class TrainBenchConfig:
    """One `synthct bench train` measurement: the model, its size and the recipe it runs with."""

    model: str = "hagan"
    size: int = 32
    batch: int = 2
    steps: int = 5
    precision: str = "fp32"  # fp32 | bf16
    compile: bool = False
    width: float = 1.0
    latent: int = 1024
    train_encoder: bool = True
    channels_last: bool = False
    fused: bool = False
    warmup: int = 2
    label: str = "custom"


def recipe_config(config: TrainBenchConfig, recipe: str) -> TrainBenchConfig:
    """`config` with the precision/layout/compile/fused settings of a named recipe."""
    if recipe == "reference":
        return dataclasses.replace(
            config, precision="fp32", compile=False, channels_last=False, fused=False,
            label="reference",
        )  # fmt: skip
    if recipe == "fast":
        return dataclasses.replace(
            config, precision="bf16", compile=True, channels_last=True, fused=True, label="fast"
        )
    raise ConfigError(f"recipe must be 'reference' or 'fast', got {recipe!r}")


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The dense peak TFLOP/s of a known CUDA device at `precision`; None on CPU or unknown GPUs."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks["bf16" if precision == "bf16" else "fp32"]
    return None


def bench_train(config: TrainBenchConfig, model_factory: Callable | None = None) -> dict:
    """Time `config.steps` training iterations after warm-up; returns a dict of figures.

    Keys: label, model, size, batch, precision, compile, channels_last, fused, encoder, device,
    s_per_it, it_per_s, tflop_per_it, tflops (achieved), mfu (None on CPU/unknown GPUs),
    peak_mem_gb (CUDA max allocated; on CPU the process's peak RSS).
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = pick_device()
    torch.manual_seed(0)
    cfg = ModelConfig(kind=config.model, width=config.width, latent_dim=config.latent)
    data_cfg = DataConfig(size=config.size)
    system = (model_factory or build_model)(cfg, data_cfg).to(device).train()
    real = system.view.random_batch(config.batch, torch.Generator().manual_seed(0)).to(device)
    if config.channels_last and device.type == "cuda":
        system.to(memory_format=system.view.memory_format)
        real = real.contiguous(memory_format=system.view.memory_format)
    opts = system.configure_optimizers(fused=config.fused)
    gen = torch.Generator().manual_seed(0)
    autocast = autocast_for(config.precision, device)

    def iteration(i: int) -> None:
        ctx = StepContext(i, device, gen, make_update(opts, i, 1), autocast, config.train_encoder)
        system.train_step(real, ctx)

    flops_note = "one eager iteration (step 0)"
    try:
        with FlopCounterMode(display=False) as counter:
            iteration(0)
    except RuntimeError as e:  # autograd.grad(create_graph) (R1 / path length) defeats the counter
        if "_will_engine_execute_node" not in str(e):
            raise
        with FlopCounterMode(display=False) as counter:
            iteration(1)  # StyleGAN2's lazy regularisers run on steps 0 mod 4 / 16 only
        flops_note = "step 1 (without lazy regularisation: double backward is not countable)"
    flops = float(counter.get_total_flops())
    if config.compile:
        for m in system.children():
            m.compile()
    for i in range(config.warmup):
        iteration(2 + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(config.steps):
        iteration(2 + config.warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    s_per_it = (time.perf_counter() - t0) / config.steps
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    tflops = flops / s_per_it / 1e12
    top = peak_tflops(device, config.precision)
    return {
        "label": config.label,
        "model": config.model,
        "size": config.size,
        "batch": config.batch,
        "width": config.width,
        "latent": config.latent,
        "precision": config.precision,
        "compile": config.compile,
        "channels_last": config.channels_last and device.type == "cuda",  # CUDA only
        "fused": config.fused,
        "encoder": config.train_encoder,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "s_per_it": s_per_it,
        "it_per_s": 1.0 / s_per_it,
        "tflop_per_it": flops / 1e12,
        "flops_counted_on": flops_note,
        "tflops": tflops,
        "mfu": tflops / top if top else None,
        "peak_mem_gb": peak,
    }


def format_result(r: dict) -> str:
    """The one line `synthct bench train` prints for a `bench_train` result."""
    mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "n/a"
    mem = "peak CUDA" if r["device"] != "cpu" else "peak RSS"
    return (
        f"[{r['label']}] {r['model']} S={r['size']} B={r['batch']} width={r['width']} "
        f"{r['precision']} compile={int(r['compile'])} channels_last={int(r['channels_last'])} "
        f"fused={int(r['fused'])} encoder={int(r['encoder'])} on {r['device']}: "
        f"{r['it_per_s']:.3f} it/s ({r['s_per_it']:.3f} s/it), "
        f"{r['tflop_per_it']:.4f} TFLOP/it, {r['tflops']:.3f} TFLOP/s, MFU {mfu}, "
        f"{mem} {r['peak_mem_gb']:.2f} GB"
    )


def time_train_steps(system, batch: int, steps: int, warmup: int = 1, seed: int = 0) -> float:
    """Iterations per second of a model's `train_step` on a random batch of its view's shape
    (zero_grad/backward/step updates, as the loop does), after `warmup` untimed iterations, on
    the model's device."""
    device = next(system.parameters()).device
    opts = system.configure_optimizers()

    def update(name: str, loss: torch.Tensor) -> None:
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    g = torch.Generator().manual_seed(seed)
    real = system.view.random_batch(batch, g).to(device)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        ctx = StepContext(step=i, device=device, generator=g, update=update)
        system.train_step(real, ctx)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def bench_step(kind: str = "fastgan", size: int = 32, batch: int = 8, steps: int = 5,
               width: float = 0.25, device: str | None = None) -> float:  # fmt: skip
    """Training iterations per second of a 2D system ("fastgan" | "stylegan2") at size x size
    (thesis optimiser settings, `width` x the reference channels) on CUDA when present, else CPU."""
    dev = pick_device(device or "auto")
    system = build_model(thesis_model_config(kind, width=width), DataConfig(size=size)).to(dev)
    return time_train_steps(system, batch, steps)
