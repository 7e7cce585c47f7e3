"""`synthct bench …`: the benchmarks (results go to docs/benchmarks.md with machine and date).

Each command parses its options, runs one module of `synthct.bench` and prints the figures in
the format docs/benchmarks.md records. The benchmark modules import torch, MONAI or scipy at
module level, so each command imports its module when it runs: `synthct --help` stays fast.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from synthct.bench.machine import bench_header
from synthct.commands._common import echo_json

Opt = typer.Option

bench_app = typer.Typer(help="Benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)


def bench_data(
    repeats: Annotated[int, Opt(min=1, help="Timed runs per item (median kept).")] = 3,
) -> None:
    """Time phantom generation (full size and scale 0.25) and reading one full-size case
    (header only vs all voxels); prints one line per item for docs/benchmarks.md."""
    from synthct.bench import data  # imports scipy (phantoms) and nibabel

    typer.echo(f"- {bench_header('bench data')} — load average {os.getloadavg()[0]:.2f}")
    for cid, scale in data.PHANTOM_CASES:
        shape, secs = data.time_phantom(cid, scale, repeats)
        typer.echo(f"  - make_case {cid} scale {scale}: {shape} in {secs:.2f} s")
    r = data.time_nifti(repeats)
    typer.echo(
        f"  - {r['shape']} int16 .nii.gz: write {r['write_s']:.2f} s, header "
        f"{r['header_s'] * 1000:.1f} ms, full read {r['read_s']:.2f} s"
    )


def bench_fid(
    d: Annotated[int, Opt(help="Feature dimension.")] = 2048,
    n: Annotated[int, Opt(help="Samples per set.")] = 2048,
    skip_sqrtm: Annotated[bool, Opt(help="Skip the scipy sqrtm recipe.")] = False,
    e2e: Annotated[bool, Opt("--e2e/--no-e2e", help="Also time `evaluate` end to end.")] = True,
    e2e_size: Annotated[int, Opt(help="S of the tiny end-to-end cases.")] = 16,
    e2e_real: Annotated[int, Opt(help="Real cases in the end-to-end run.")] = 100,
    e2e_synthetic: Annotated[int, Opt(help="Synthetic cases in the end-to-end run.")] = 200,
    threads: Annotated[
        int, Opt(help="Limit torch and BLAS threads (0 = leave as configured).")
    ] = 0,
) -> None:
    """Stable FID vs the scipy sqrtm recipe on n x d random features; evaluate end to end."""
    from synthct.bench import fid  # imports torch (the evaluation's encoder)

    fid.limit_threads(threads)
    typer.echo(bench_header("bench fid"))
    typer.echo(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    x, y = fid.random_features(n, d)
    value, t_stable = fid.time_stable_fid(x, y)
    typer.echo(f"stable FID ({n} x {n}, d={d}, float64): {value:.6f} in {t_stable:.2f} s")
    if not skip_sqrtm:
        ref, t_sqrtm, imag = fid.time_sqrtm_fid(x, y)
        typer.echo(
            f"scipy sqrtm FID: {ref:.6f} in {t_sqrtm:.2f} s (imaginary part max "
            f"{imag:.2e}); speed-up {t_sqrtm / t_stable:.1f}x; "
            f"relative difference {abs(value - ref) / abs(value):.2e}"
        )
    if e2e:
        secs, folder_note = fid.time_end_to_end(e2e_size, e2e_real, e2e_synthetic)
        typer.echo(
            f"evaluate end to end: {e2e_synthetic} synthetic vs {e2e_real} real pairs at "
            f"{e2e_size}^3 (default encoder trained in the run): {secs:.1f} s; {folder_note}"
        )


def bench_generate(
    size: Annotated[int, Opt(help="S (pairs are S x S x S/2).")] = 32,
    n: Annotated[int, Opt(help="Pairs to generate and write.")] = 32,
    batch: Annotated[int, Opt(help="Pairs per forward pass.")] = 4,
    width: Annotated[float, Opt(help="HA-GAN width multiplier.")] = 0.125,
    latent: Annotated[int, Opt(help="Latent size.")] = 128,
    device: Annotated[str, Opt(help="auto | cuda | cpu.")] = "auto",
    workers: Annotated[int, Opt(help="NIfTI writer threads.")] = 3,
    out: Annotated[Path | None, Opt(help="Keep the set here (default: temp).")] = None,
) -> None:
    """Pairs/s of HA-GAN sampling + postprocessing + NIfTI writing (random weights)."""
    from synthct.bench import generate  # imports torch

    r = generate.time_generate(size, n, batch, width, latent, device, workers, out)
    typer.echo(f"### {bench_header('bench generate')}")
    typer.echo(
        f"- HA-GAN S={size} (pairs {size}x{size}x{size // 2}), width {width}, latent {latent}, "
        f"G {r['g_params'] / 1e6:.2f} M params, batch {r['batch_used']}, {workers} writer "
        f"threads, device {r['device']}: {n} pairs in {r['total_s']:.2f} s = "
        f"**{n / r['total_s']:.2f} pairs/s** including NIfTI writing (sampling alone "
        f"{r['sample_s']:.2f} s = {n / r['sample_s']:.2f} pairs/s)"
    )


def bench_generate_memory(
    n: Annotated[list[int] | None, Opt("--n", help="Set sizes (repeat the option).")] = None,
    seconds: Annotated[
        float, Opt(help="Cancel a run still going after this long (SIGTERM).")
    ] = 60.0,
    size: Annotated[int, Opt(help="S (pairs are S x S x S/2).")] = 32,
    width: Annotated[float, Opt(help="HA-GAN width multiplier.")] = 0.0625,
    latent: Annotated[int, Opt(help="Latent size.")] = 16,
    batch: Annotated[int, Opt(help="Pairs per forward pass.")] = 4,
) -> None:
    """Peak memory (RSS) of `synthct generate --n N` against N (default 10^3 and 10^6): memory
    must not grow with N. A random-weight tiny HA-GAN run in a temporary workspace, CPU."""
    from synthct.bench import generate  # imports torch

    sizes = n or [1000, 1_000_000]
    typer.echo(f"### {bench_header('bench generate-memory')}")
    for k, r in zip(
        sizes, generate.generate_memory(sizes, seconds, size, width, latent, batch), strict=True
    ):
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


def bench_preprocess(
    size: Annotated[int, Opt(help="S of the packed pair.")] = 128,
    repeats: Annotated[int, Opt(help="Timed runs of synthct's pipeline.")] = 3,
    thesis: Annotated[bool, Opt(help="Also time the thesis's method.")] = True,
    as_json: Annotated[bool, Opt("--json", help="Print JSON.")] = False,
) -> None:
    """Time one 512x512x200 CT + mask .nii.gz -> packed S^3 pair, vs the thesis's method."""
    from synthct.bench import preprocess  # imports torch and scipy

    result = preprocess.bench_preprocess(size=size, repeats=repeats, thesis=thesis)
    if as_json:
        echo_json(result)
        return
    for line in preprocess.format_preprocess(result, thesis):
        typer.echo(line)


def bench_segment(
    size: Annotated[int, Opt(help="Packed size S (volumes S x S x S/2); 128 = thesis.")] = 32,
    cases: Annotated[int, Opt(help="Training cases held in memory; 419 = thesis.")] = 8,
    init_filters: Annotated[int, Opt(help="SegResNetDS width; 32 = recipe.")] = 8,
    batch_size: Annotated[int, Opt(help="Batch size.")] = 2,
    steps: Annotated[
        int | None, Opt(help="Timed steps (default one epoch); the epoch is extrapolated.")
    ] = None,
    augment: Annotated[bool, Opt(help="Include the CPU augmentation in the step time.")] = True,
    workers: Annotated[int, Opt(help="Data-loading worker processes.")] = 0,
    threads: Annotated[int | None, Opt(help="torch CPU threads.")] = None,
    device: Annotated[str | None, Opt(help="cuda | cpu (default: CUDA when present).")] = None,
) -> None:
    """Seconds per training epoch of the SegResNet recipe (random in-memory cases).

    Tiny CPU config: defaults. Thesis GPU config: --size 128 --cases 419 --init-filters 32
    --steps 30 --workers 8.
    """
    import torch

    from synthct.bench import segment  # imports torch and MONAI

    if threads:
        torch.set_num_threads(threads)
    typer.echo(bench_header("bench segment"))
    echo_json(
        segment.benchmark_epoch(
            size, cases, init_filters, batch_size, steps, augment, device, workers
        )
    )


def bench_vtt(
    raters: Annotated[int, Opt(min=1, help="Concurrent raters (threads).")] = 20,
    cases: Annotated[int, Opt(min=2, help="Cases each rater answers.")] = 50,
) -> None:
    """Rating-write latency (submit, own session per action) at N concurrent raters, SQLite WAL."""
    from synthct.bench import vtt  # imports SQLAlchemy, numpy and scipy (rendering)

    with tempfile.TemporaryDirectory(prefix="synthct-bench-vtt-") as tmp:
        res = vtt.run_vtt_bench(Path(tmp), raters=raters, cases=cases)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    typer.echo(f"- {bench_header('bench vtt')} — load average {load}")
    typer.echo(
        f"  - SQLite WAL, {raters} concurrent raters x {cases} ratings = {res['n']} writes in "
        f"{res['wall_s']:.1f} s: submit latency median {res['median_ms']:.1f} ms, p95 "
        f"{res['p95_ms']:.1f} ms, max {res['max_ms']:.1f} ms (goal: median < 20 ms); "
        f"{res['rows']} rows, {res['errors']} errors"
    )


def bench_train(
    model: Annotated[str, Opt(help="hagan | vanilla | wgan | fastgan | stylegan2")] = "hagan",
    size: Annotated[int, Opt(help="Volume size S (2D systems: slice side R = S).")] = 32,
    batch: Annotated[int, Opt(help="Batch size.")] = 2,
    steps: Annotated[int, Opt(help="Timed iterations.")] = 5,
    precision: Annotated[str, Opt(help="fp32 | bf16")] = "fp32",
    compile: Annotated[int, Opt("--compile", help="1 = torch.compile")] = 0,
    width: Annotated[float, Opt(help="Channel multiplier.")] = 1.0,
    latent: Annotated[int, Opt(help="Latent dimension.")] = 1024,
    no_encoder: Annotated[bool, Opt("--no-encoder", help="Skip HA-GAN's E/Sub_E phases.")] = False,
    channels_last: Annotated[int, Opt("--channels-last", help="1 = channels_last_3d (CUDA)")] = 0,
    recipe: Annotated[
        str | None,
        Opt(help="reference (fp32 eager) | fast (bf16 + channels_last + compile)"),
    ] = None,
    compare: Annotated[
        bool, Opt("--compare", help="Run reference and fast; print the ratio.")
    ] = False,
    as_json: Annotated[bool, Opt("--json", help="Print JSON only.")] = False,
    threads: Annotated[int | None, Opt(help="torch CPU threads (default: torch's choice).")] = None,
) -> None:
    """Iterations/s, peak memory, TFLOP/s and MFU of training iterations."""
    import torch

    from synthct.bench import train  # imports torch

    if threads is not None:
        torch.set_num_threads(threads)

    config = train.TrainBenchConfig(
        model=model, size=size, batch=batch, steps=steps, precision=precision,
        compile=bool(compile), width=width, latent=latent, train_encoder=not no_encoder,
        channels_last=bool(channels_last),
    )  # fmt: skip
    configs = [config]
    if recipe is not None:
        configs = [train.recipe_config(config, recipe)]
    if compare:
        configs = [train.recipe_config(config, "reference"), train.recipe_config(config, "fast")]
    if not as_json:
        typer.echo(bench_header("bench train"))
    results = [train.bench_train(c) for c in configs]
    if as_json:
        echo_json(results)
        return
    for r in results:
        typer.echo(train.format_result(r))
    if compare:
        ratio = results[1]["it_per_s"] / results[0]["it_per_s"]
        typer.echo(f"fast / reference: {ratio:.2f}x iterations/s")


def register(app: typer.Typer) -> None:
    bench_app.command("data")(bench_data)
    bench_app.command("fid")(bench_fid)
    bench_app.command("generate")(bench_generate)
    bench_app.command("generate-memory")(bench_generate_memory)
    bench_app.command("preprocess")(bench_preprocess)
    bench_app.command("segment")(bench_segment)
    bench_app.command("vtt")(bench_vtt)
    bench_app.command("train")(bench_train)
    app.add_typer(bench_app, name="bench")
