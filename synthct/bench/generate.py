"""`synthct bench generate` and `synthct bench generate-memory`.

Speed: pairs/s of HA-GAN sampling + postprocessing + NIfTI writing through `write_set` (the path
`synthct generate` takes), with random weights (the cost does not depend on them), after one
untimed warm-up set; then sampling alone on the same batches, to split compute from writing.

Memory: `synthct generate --n N` runs as its own process from a random-weight tiny HA-GAN run
(`make_bench_run`) while its resident memory is sampled from /proc; a run still going after a
time limit is cancelled with SIGTERM, as `synthct jobs cancel` does, which also measures how
fast it exits and whether it leaves partial folders. Generation must hold no per-case state, so
the peak must not grow with N.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from synthct.checkpoint import checkpoint_state, save_checkpoint
from synthct.config import DataConfig, ModelConfig, RunConfig, save_yaml, to_dict
from synthct.generate import GenerateConfig, write_set
from synthct.models import build_model
from synthct.runtime import case_ids_hash, pick_device
from synthct.sets import load_datacard
from synthct.workspace import Workspace


def time_generate(
    size: int = 32,
    n: int = 32,
    batch: int = 4,
    width: float = 0.125,
    latent: int = 128,
    device: str = "auto",
    workers: int = 3,
    out: Path | None = None,
) -> dict:
    """Time `write_set` of `n` HA-GAN pairs (S x S x S/2) and sampling alone.

    Returns device, g_params (generator parameters), batch_used (after any out-of-memory
    halving), total_s (sampling + writing) and sample_s (sampling alone). The set is written to
    `out`, or to a temporary folder that is removed.
    """
    dev = pick_device(device)
    model_cfg = ModelConfig(kind="hagan", latent_dim=latent, width=width)
    system = build_model(model_cfg, DataConfig(size=size)).to(dev)
    n_params = sum(p.numel() for p in system.G.parameters()) if hasattr(system, "G") else 0
    # warm-up (cuDNN autotune, allocator) outside the timing
    write_set_opts = GenerateConfig(n=batch, batch_size=batch, write_workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        write_set(Path(tmp) / "warm", system, (1.5, 1.5, 1.5), write_set_opts, device=dev)
        target = out or Path(tmp) / "bench"
        opts = GenerateConfig(n=n, batch_size=batch, write_workers=workers)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        card = write_set(target, system, (1.5, 1.5, 1.5), opts, device=dev, overwrite=True)
        total = time.perf_counter() - t0
        # sampling alone, same batches, for the split between compute and writing
        t1 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, n, batch):
                out_t = system.generate(system.sample_latent(min(batch, n - i), device=dev))
                out_t.float().cpu()
        sample_only = time.perf_counter() - t1
    return {
        "device": dev,
        "g_params": n_params,
        "batch_used": card.batch_size_used,
        "total_s": total,
        "sample_s": sample_only,
    }


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(current RSS, peak RSS) of process `pid` in MB from /proc, None once it has exited."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    kb = {k: float(v.split()[0]) for k, v in (ln.split(":", 1) for ln in text.splitlines())
          if k in ("VmRSS", "VmHWM")}  # fmt: skip
    if "VmRSS" not in kb:  # a zombie has no memory left to report
        return None
    return kb["VmRSS"] / 1024, kb.get("VmHWM", kb["VmRSS"]) / 1024


def make_bench_run(ws: Workspace, name: str, size: int, width: float, latent: int) -> None:
    """A random-weight HA-GAN run in `ws` (checkpoint, config, training cases) to sample from."""
    cfg = RunConfig(data=DataConfig(size=size), model=ModelConfig(latent_dim=latent, width=width))
    system = build_model(cfg.model, cfg.data)
    run_dir = ws.run_dir(name)
    info = {"spacing": [1.5, 1.5, 3.0], "centres": ["BENCH"]}
    save_checkpoint(checkpoint_state(cfg, 1, system, {}, {}, [], 0.0, {}, info), run_dir)
    save_yaml(to_dict(cfg), run_dir / "config.yaml")
    ids = ["BENCH-000"]
    digest = case_ids_hash(ids)
    (run_dir / "train_cases.json").write_text(
        json.dumps({"split": "train", "case_ids": ids, "sha256": digest})
    )


def measure_generate_memory(
    ws: Workspace, run: str, n: int, seconds: float, batch: int = 4, interval: float = 0.1
) -> dict:
    """Run `synthct generate --n n` as its own process and sample its RSS every `interval` s
    until it ends, or cancel it (SIGTERM, as `synthct jobs cancel` does) after `seconds`.

    Returns n, finished, wall_s, pairs (written, or sampled when cancelled), peak_mb (VmHWM),
    rss_mb at 10 %, 50 % and 100 % of the run, rc, exit_s (SIGTERM to exit, partial folder
    removed) and leftovers (partial folders after exit).
    """
    out = f"mem-{n}"
    cmd = [sys.executable, "-m", "synthct", "generate", "--run", run, "--n", str(n), "--out", out,
           "--device", "cpu", "--batch", str(batch), "-w", str(ws.root)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []
    peak, finished, pairs, exit_s = 0.0, True, 0, 0.0
    while proc.poll() is None:
        got = rss_mb(proc.pid)
        if got is not None:
            samples.append((time.monotonic() - t0, got[0]))
            peak = max(peak, got[1])
        if time.monotonic() - t0 >= seconds:
            finished = False
            pairs = sum(len(list(p.glob("labelsTr/*"))) for p in ws.synthetic.glob(f".{out}.*"))
            t_term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
            exit_s = time.monotonic() - t_term
            break
        time.sleep(interval)
    wall = time.monotonic() - t0
    if finished:
        pairs = (
            int(load_datacard(ws.synthetic_dir(out))["counts"]["written"])
            if proc.returncode == 0
            else 0
        )

    def at(fraction: float) -> float:
        t = fraction * samples[-1][0]
        return next(r for s, r in samples if s >= t) if samples else float("nan")

    return {
        "n": n,
        "finished": finished,
        "rc": proc.returncode,
        "wall_s": wall,
        "pairs": pairs,
        "peak_mb": peak,
        "rss_mb": {f"{int(f * 100)}%": at(f) for f in (0.1, 0.5, 1.0)},
        "exit_s": exit_s,
        "leftovers": [p.name for p in ws.synthetic.iterdir() if p.name.startswith(".")],
    }


def generate_memory(
    sizes: list[int], seconds: float, size: int, width: float, latent: int, batch: int
) -> Iterator[dict]:
    """`measure_generate_memory` for each set size in `sizes`, from one random-weight tiny
    HA-GAN run in a temporary workspace (CPU); yields each result as soon as it is measured."""
    with tempfile.TemporaryDirectory(prefix="synthct-bench-mem-") as tmp:
        ws = Workspace.resolve(Path(tmp) / "ws").ensure()
        make_bench_run(ws, "bench", size, width, latent)
        for k in sizes:
            yield measure_generate_memory(ws, "bench", k, seconds, batch)
