"""The benchmark package (`synthct.bench`) and its `synthct bench …` commands.

The timings themselves are recorded in docs/benchmarks.md, never asserted here; these tests check
what the benchmarks count (FLOPs, rows written, agreement of two FID recipes) on tiny inputs.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from synthct.bench.train import TrainBenchConfig, bench_step, bench_train
from synthct.cli import app

SLICE_KINDS = ("fastgan", "stylegan2")


def test_bench_flops_scale_with_batch_and_encoder():
    """Counted FLOPs per iteration: linear in the batch; the encoder phases add to them."""
    spec = TrainBenchConfig(size=32, width=0.125, latent=64, steps=1, warmup=0, batch=1)
    one = bench_train(spec)
    two = bench_train(TrainBenchConfig(**{**spec.__dict__, "batch": 2}))
    no_enc = bench_train(TrainBenchConfig(**{**spec.__dict__, "train_encoder": False}))
    assert two["tflop_per_it"] == pytest.approx(2 * one["tflop_per_it"], rel=0.05)
    assert no_enc["tflop_per_it"] < 0.9 * one["tflop_per_it"]
    assert one["it_per_s"] > 0 and one["mfu"] is None and one["device"] == "cpu"
    assert one["tflops"] == pytest.approx(one["tflop_per_it"] * one["it_per_s"])


@pytest.mark.parametrize("kind", SLICE_KINDS)
def test_bench_train_feeds_slice_pairs_to_2d_systems(kind):
    one = bench_train(TrainBenchConfig(model=kind, size=32, batch=2, width=0.0625, latent=32,
                                       steps=1, warmup=0))  # fmt: skip
    two = bench_train(TrainBenchConfig(model=kind, size=32, batch=4, width=0.0625, latent=32,
                                       steps=1, warmup=0))  # fmt: skip
    assert one["model"] == kind and one["it_per_s"] > 0 and one["device"] == "cpu"
    # counted FLOPs grow with the batch (per-sample convolutions dominate)
    assert 1.5 * one["tflop_per_it"] < two["tflop_per_it"] < 2.5 * one["tflop_per_it"]


def test_bench_step_reports_a_rate_fastgan():
    rate = bench_step("fastgan", 32, batch=2, steps=1, width=0.125)
    assert 0 < rate < 1e4


def test_bench_step_reports_a_rate_stylegan2():
    assert 0 < bench_step("stylegan2", 32, batch=2, steps=1, width=1 / 16) < 1e4


@pytest.mark.slow
def test_bench_vtt_small_run_loses_nothing(tmp_path):
    from synthct.bench.vtt import run_vtt_bench

    res = run_vtt_bench(tmp_path, raters=4, cases=6)
    assert res["rows"] == res["n"] == 24 and res["errors"] == 0
    assert 0 < res["median_ms"] <= res["p95_ms"] <= res["max_ms"]


def test_bench_vtt_command_reports_every_write():
    res = CliRunner().invoke(app, ["bench", "vtt", "--raters", "2", "--cases", "2"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("- bench vtt — ") and "load average" in lines[0]
    assert "2 concurrent raters x 2 ratings = 4 writes" in lines[1]
    assert lines[1].endswith("; 4 rows, 0 errors")


def test_bench_fid_command_agrees_with_the_sqrtm_recipe():
    res = CliRunner().invoke(app, ["bench", "fid", "--n", "64", "--d", "8", "--no-e2e"])
    assert res.exit_code == 0, res.output
    stable = re.search(r"stable FID \(64 x 64, d=8, float64\): (\S+) in", res.output)
    sqrtm = re.search(r"scipy sqrtm FID: (\S+) in", res.output)
    assert stable and sqrtm, res.output
    assert float(stable[1]) == pytest.approx(float(sqrtm[1]), rel=1e-6) and float(stable[1]) > 0
    assert "evaluate end to end" not in res.output


# The options docs/benchmarks.md and scripts/ use: names, flags and defaults stay as they are.
BENCH_OPTIONS = {
    "data": [("--repeats", 3)],
    "fid": [("--d", 2048), ("--n", 2048), ("--skip-sqrtm", False), ("--e2e", True),
            ("--e2e-size", 16), ("--e2e-real", 100), ("--e2e-synthetic", 200), ("--threads", 0)],
    "generate": [("--size", 32), ("--n", 32), ("--batch", 4), ("--width", 0.125),
                 ("--latent", 128), ("--device", "auto"), ("--workers", 3), ("--out", None)],
    "generate-memory": [("--n", None), ("--seconds", 60.0), ("--size", 32), ("--width", 0.0625),
                        ("--latent", 16), ("--batch", 4)],
    "preprocess": [("--size", 128), ("--repeats", 3), ("--thesis", True), ("--json", False)],
    "segment": [("--size", 32), ("--cases", 8), ("--init-filters", 8), ("--batch-size", 2),
                ("--steps", None), ("--augment", True), ("--workers", 0), ("--threads", None),
                ("--device", None)],
    "vtt": [("--raters", 20), ("--cases", 50)],
    "train": [("--model", "hagan"), ("--size", 32), ("--batch", 2), ("--steps", 5),
              ("--precision", "fp32"), ("--compile", 0), ("--width", 1.0), ("--latent", 1024),
              ("--no-encoder", False), ("--channels-last", 0), ("--recipe", None),
              ("--compare", False), ("--json", False), ("--threads", None)],
}  # fmt: skip


def test_bench_commands_and_options_stay_as_documented():
    import typer.main

    bench = typer.main.get_command(app).commands["bench"]
    assert list(bench.commands) == list(BENCH_OPTIONS)
    for name, expected in BENCH_OPTIONS.items():
        params = bench.commands[name].params
        assert [(p.opts[0], p.default) for p in params] == expected, name
