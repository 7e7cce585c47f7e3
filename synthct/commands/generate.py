"""CLI: `synthct generate` and `synthct bench generate`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, bench_header, echo_json, workspace


class _BarProgress:
    """`progress(fraction, message)` driving a tqdm bar (opened on first use, so an early error
    prints no empty bar) and the job row's progress."""

    def __init__(self, total: int, desc: str) -> None:
        from synthct.jobs import job_progress_callback

        self.total, self.desc, self.bar = total, desc, None
        self.to_job = job_progress_callback()

    def __call__(self, fraction: float, message: str = "") -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="pair")
        self.bar.update(max(0, round(fraction * self.total) - self.bar.n))
        self.bar.set_postfix_str(message, refresh=False)
        self.to_job(fraction, message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def generate(
    run: Annotated[str, typer.Option("--run", help="Run folder name under WS/runs/.")],
    n: Annotated[int, typer.Option("--n", help="Number of pairs.")],
    out: Annotated[str, typer.Option("--out", help="Set name under WS/synthetic/.")],
    checkpoint: Annotated[str, typer.Option(help="Checkpoint step or 'latest'.")] = "latest",
    seed: Annotated[int, typer.Option(help="Base seed; case i uses its own derived seed.")] = 0,
    batch: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 4,
    device: Annotated[str, typer.Option(help="auto | cuda | cuda:N | cpu.")] = "auto",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA generator.")] = True,
    mask_postprocess: Annotated[
        str, typer.Option(help="binary | largest | min-size:K (connected components).")
    ] = "binary",
    empty_masks: Annotated[str, typer.Option(help="keep | drop | resample.")] = "keep",
    max_redraws: Annotated[
        int, typer.Option(help="Redraws per case with --empty-masks resample.")
    ] = 10,
    centre: Annotated[
        str | None, typer.Option(help="Centre label for a conditional model.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing set of this name.")] = False,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="nifti | png (2D models: also imagesPng/ + labelsPng/ PNGs beside the NIfTI).",
        ),
    ] = "nifti",
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Sample a synthetic set (HECKTOR layout + datacard.json) from a trained run.

    3D models write (S, S, S/2) pairs; 2D slice models (fastgan, stylegan2) write one-slice
    (R, R, 1) pairs with the in-plane spacing scaled to the same field of view."""
    from synthct.generate import GenerateOptions, sample_from_run
    from synthct.jobs import set_job_result

    ws = workspace(workspace_path)
    step: str | int = int(checkpoint) if checkpoint.isdigit() else checkpoint
    options = GenerateOptions(
        n=n,
        seed=seed,
        batch_size=batch,
        mask_postprocess=mask_postprocess,
        empty_masks=empty_masks,
        max_redraws=max_redraws,
        centre=centre,
        format=format,
    )
    progress = _BarProgress(n, f"generate {out}")
    try:
        out_dir, card = sample_from_run(
            ws, run, out, options, step, ema=ema, device=device, overwrite=overwrite,
            progress=progress,
        )  # fmt: skip
    finally:
        progress.close()
    set_job_result(out_dir)
    echo_json({"set": str(out_dir), "counts": card["counts"]})


# -- benchmark ------------------------------------------------------------------------------------
def bench_generate(
    size: Annotated[int, typer.Option(help="S (pairs are S x S x S/2).")] = 32,
    n: Annotated[int, typer.Option(help="Pairs to generate and write.")] = 32,
    batch: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 4,
    width: Annotated[float, typer.Option(help="HA-GAN width multiplier.")] = 0.125,
    latent: Annotated[int, typer.Option(help="Latent size.")] = 128,
    device: Annotated[str, typer.Option(help="auto | cuda | cpu.")] = "auto",
    workers: Annotated[int, typer.Option(help="NIfTI writer threads.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Keep the set here (default: temp).")] = None,
) -> None:
    """Pairs/s of HA-GAN sampling + postprocessing + NIfTI writing (random weights)."""
    import tempfile

    import torch

    from synthct.config import DataConfig, ModelConfig
    from synthct.generate import GenerateOptions, resolve_device, write_set
    from synthct.models import build_system

    dev = resolve_device(device)
    system = build_system(ModelConfig(kind="hagan", latent_dim=latent, width=width), size).to(dev)
    data = DataConfig(size=size)
    n_params = sum(p.numel() for p in system.G.parameters()) if hasattr(system, "G") else 0
    # warm-up (cuDNN autotune, allocator) outside the timing
    write_set_opts = GenerateOptions(n=batch, batch_size=batch, write_workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        write_set(Path(tmp) / "warm", system, data, (1.5, 1.5, 1.5), write_set_opts, device=dev)
        target = out or Path(tmp) / "bench"
        opts = GenerateOptions(n=n, batch_size=batch, write_workers=workers)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        card = write_set(target, system, data, (1.5, 1.5, 1.5), opts, device=dev, overwrite=True)
        total = time.perf_counter() - t0
        # sampling alone, same batches, for the split between compute and writing
        t1 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, n, batch):
                out_t = system.generate(system.sample_latent(min(batch, n - i), device=dev))
                out_t.float().cpu()
        sample_only = time.perf_counter() - t1
    typer.echo(f"### {bench_header('bench generate')}")
    typer.echo(
        f"- HA-GAN S={size} (pairs {size}x{size}x{size // 2}), width {width}, latent {latent}, "
        f"G {n_params / 1e6:.2f} M params, batch {card['batch_size_used']}, {workers} writer threads, "
        f"device {dev}: {n} pairs in {total:.2f} s = **{n / total:.2f} pairs/s** including NIfTI "
        f"writing (sampling alone {sample_only:.2f} s = {n / sample_only:.2f} pairs/s)"
    )


def _rss_mb(pid: int) -> tuple[float, float] | None:
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


def make_bench_run(ws, name: str, size: int, width: float, latent: int) -> None:
    """A random-weight HA-GAN run in `ws` (checkpoint, config, training cases) to sample from."""
    import hashlib
    import json

    from synthct.checkpoint import checkpoint_state, save_checkpoint
    from synthct.config import DataConfig, ModelConfig, RunConfig, save_yaml, to_dict
    from synthct.models import build_system

    cfg = RunConfig(data=DataConfig(size=size), model=ModelConfig(latent_dim=latent, width=width))
    system = build_system(cfg.model, size)
    run_dir = ws.run_dir(name)
    info = {"spacing": [1.5, 1.5, 3.0], "centres": ["BENCH"]}
    save_checkpoint(checkpoint_state(cfg, 1, system, {}, {}, [], 0.0, {}, info), run_dir)
    save_yaml(to_dict(cfg), run_dir / "config.yaml")
    ids = ["BENCH-000"]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    (run_dir / "train_cases.json").write_text(
        json.dumps({"split": "train", "case_ids": ids, "sha256": digest})
    )


def measure_generate_memory(
    ws, run: str, n: int, seconds: float, batch: int = 4, interval: float = 0.1
) -> dict:
    """Run `synthct generate --n n` as its own process and sample its RSS every `interval` s
    until it ends, or cancel it (SIGTERM, as `synthct jobs cancel` does) after `seconds`.

    Returns n, finished, wall_s, pairs (written, or sampled when cancelled), peak_mb (VmHWM),
    rss_mb at 10 %, 50 % and 100 % of the run, rc, exit_s (SIGTERM to exit, partial folder
    removed) and leftovers (partial folders after exit).
    """
    import os
    import signal
    import subprocess
    import sys

    out = f"mem-{n}"
    cmd = [sys.executable, "-m", "synthct", "generate", "--run", run, "--n", str(n), "--out", out,
           "--device", "cpu", "--batch", str(batch), "-w", str(ws.root)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []
    peak, finished, pairs, exit_s = 0.0, True, 0, 0.0
    while proc.poll() is None:
        got = _rss_mb(proc.pid)
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
        from synthct.generate import load_datacard

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


def bench_generate_memory(
    n: Annotated[
        list[int] | None, typer.Option("--n", help="Set sizes (repeat the option).")
    ] = None,
    seconds: Annotated[
        float, typer.Option(help="Cancel a run still going after this long (SIGTERM).")
    ] = 60.0,
    size: Annotated[int, typer.Option(help="S (pairs are S x S x S/2).")] = 32,
    width: Annotated[float, typer.Option(help="HA-GAN width multiplier.")] = 0.0625,
    latent: Annotated[int, typer.Option(help="Latent size.")] = 16,
    batch: Annotated[int, typer.Option(help="Pairs per forward pass.")] = 4,
) -> None:
    """Peak memory (RSS) of `synthct generate --n N` against N (default 10^3 and 10^6): memory
    must not grow with N. A random-weight tiny HA-GAN run in a temporary workspace, CPU."""
    import tempfile

    from synthct.workspace import Workspace

    sizes = n or [1000, 1_000_000]
    typer.echo(f"### {bench_header('bench generate-memory')}")
    with tempfile.TemporaryDirectory(prefix="synthct-bench-mem-") as tmp:
        ws = Workspace.resolve(Path(tmp) / "ws").ensure()
        make_bench_run(ws, "bench", size, width, latent)
        for k in sizes:
            r = measure_generate_memory(ws, "bench", k, seconds, batch)
            how = (
                f"finished in {r['wall_s']:.1f} s" if r["finished"]
                else f"cancelled (SIGTERM) after {r['wall_s'] - r['exit_s']:.1f} s with "
                f"{r['pairs']} pairs written, exited {r['exit_s']:.1f} s later"
            )  # fmt: skip
            rss = ", ".join(f"{key} {v:.0f} MB" for key, v in r["rss_mb"].items())
            typer.echo(
                f"- `generate --n {k}` (HA-GAN S={size}, width {width}, batch {batch}, CPU): "
                f"{how}; **peak RSS {r['peak_mb']:.0f} MB**; RSS over the run: {rss}; "
                f"exit {r['rc']}; partial folders left: {len(r['leftovers'])}"
            )


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("generate")(generate)
    bench_app.command("generate")(bench_generate)
    bench_app.command("generate-memory")(bench_generate_memory)
