"""Hyper-parameter grid search: each grid point is an ordinary run, ranked by a pluggable metric.

A grid file (YAML)::

    name: hpo-thesis                  # run names: <name>-01 ... (stage 1), <name>-s2-01 ...
    base: hagan-128.yaml              # run config, relative to the grid file
    overrides: {train.steps: 80000}   # optional, applied to every point
    stages:
      - grid:                         # full product, first key outermost (thesis numbering:
          model.lr_g: [1e-4, 2e-4, 3e-4]   #  G x D x E, so HPO17 = G 2e-4, D 4e-4, E 2e-4)
          model.lr_d: [2e-4, 3e-4, 4e-4]
          model.lr_e: [1e-4, 2e-4, 3e-4]
      - grid: {model.latent_dim: [1280, 1536, 1792]}
        from_best: true               # start from the best point of the previous stages

Runs that are already done are skipped and half-finished ones resumed, so a grid can be
re-launched after an interruption. The ranking metric is a function `run_dir -> float` (lower is
better) looked up in `METRICS`: the default `fid` (synthct.metrics, offline default encoder,
validation split — or train when there is none — never test), or the cheaper proxy `hu_w1`: the
Wasserstein-1 distance in HU between the intensity histograms of a fixed batch of EMA samples
(image halves) and of fixed real train cases.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from synthct.config import RunConfig, from_dict, load_yaml
from synthct.csvsafe import csv_text
from synthct.errors import ConfigError
from synthct.workspace import (
    NAME_MAX_LENGTH,
    Workspace,
    atomic_write_json,
    atomic_write_text,
    check_name,
)

Metric = Callable[[Path], float]
N_METRIC_SAMPLES = 8
MAX_VALUES = 200_000  # voxels per side entering the 1-D Wasserstein distance


# -- grid -------------------------------------------------------------------------------------
def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and check a grid file; `base` becomes the loaded run-config dict."""
    path = Path(path)
    spec = load_yaml(path)
    unknown = sorted(set(spec) - {"name", "base", "overrides", "stages"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {unknown}; expected name, base, overrides, stages"
        )
    for key in ("name", "base", "stages"):
        if key not in spec:
            raise ConfigError(f"{path}: missing {key!r}")
    check_name(str(spec["name"]), "grid name", max_length=NAME_MAX_LENGTH - 8)  # + "-s2-01"
    stages = spec["stages"]
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list of {{grid: {{key: [..]}}}}")
    for i, st in enumerate(stages, 1):
        grid = st.get("grid") if isinstance(st, dict) else None
        if not isinstance(grid, dict) or not grid:
            raise ConfigError(f"{path}: stage {i} needs a non-empty 'grid' mapping")
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(
                    f"{path}: stage {i} grid {k!r} must be a non-empty list, got {v!r}"
                )
    base_path = (path.parent / spec["base"]).resolve()
    base = load_yaml(base_path)
    out = {
        **spec,
        "base": base,
        "base_path": str(base_path),
        "overrides": spec.get("overrides") or {},
    }
    for st in stages:  # fail early on a bad key or value, before hours of training
        run_config(out, {k: v[0] for k, v in st["grid"].items()})
    return out


def apply_overrides(cfg: dict, overrides: dict[str, Any]) -> dict:
    """Copy of a run-config dict with dotted keys set: "model.lr_g", or a key of the model
    kind's own section, "model.hagan.lr_e" (0.1.0 grids wrote it "model.lr_e"; still read)."""
    cfg = json.loads(json.dumps(cfg))
    for key, value in overrides.items():
        section, *path = key.split(".")
        if not path or section not in ("data", "model", "train"):
            raise ConfigError(f"grid key {key!r}: expected 'data.X', 'model.X' or 'train.X'")
        where = cfg.setdefault(section, {})
        for part in path[:-1]:
            where = where.setdefault(part, {})
        where[path[-1]] = value
    return cfg


def run_config(spec: dict, overrides: dict[str, Any]) -> RunConfig:
    merged = apply_overrides(spec["base"], {**spec["overrides"], **overrides})
    return from_dict(RunConfig, merged, where=f"grid {spec['name']} point {overrides}")


def expand_stage(spec: dict, index: int, best: dict[str, Any]) -> list[tuple[str, dict]]:
    """(run name, overrides) of every point of stage `index` (0-based), first key outermost.

    A `from_best` stage starts from `best` (the winning overrides of the earlier stages).
    """
    stage = spec["stages"][index]
    keys = list(stage["grid"])
    start = dict(best) if stage.get("from_best") else {}
    prefix = spec["name"] if index == 0 else f"{spec['name']}-s{index + 1}"
    points = itertools.product(*(stage["grid"][k] for k in keys))
    return [
        (f"{prefix}-{i:02d}", {**start, **dict(zip(keys, values, strict=True))})
        for i, values in enumerate(points, 1)
    ]


# -- ranking metrics --------------------------------------------------------------------------
def wasserstein_hu(
    fake_unit: np.ndarray, real_unit: np.ndarray, window: tuple[float, float]
) -> float:
    """W1 distance (HU) between the value distributions of two arrays of [-1, 1] intensities."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(0)

    def values(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a, np.float64).ravel()
        return rng.choice(v, MAX_VALUES, replace=False) if v.size > MAX_VALUES else v

    lo, hi = window
    scale = (hi - lo) / 2.0  # [-1, 1] -> HU is affine with this slope
    return float(wasserstein_distance(values(fake_unit), values(real_unit)) * scale)


def hu_w1(run_dir: Path) -> float:
    """Default ranking proxy: HU-histogram W1 of 8 fixed-seed EMA samples vs 8 real train cases."""
    import torch

    from synthct.checkpoint import load_generator
    from synthct.preprocess import load_packed
    from synthct.views.volumes import image_half

    run_dir = Path(run_dir)
    system, cfg, _ = load_generator(run_dir, "latest", ema=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        fake = system.generate(system.sample_latent(N_METRIC_SAMPLES, generator=g))
    ws = Workspace(run_dir.parent.parent)
    real = load_packed(ws, cfg.data, split=cfg.train.split).arrays
    pick = np.random.default_rng(0).permutation(len(real))[:N_METRIC_SAMPLES]
    real_img = image_half(torch.from_numpy(np.asarray(real)[pick]), cfg.data.packing)
    fake_img = image_half(fake[:, 0].float(), cfg.data.packing)
    return wasserstein_hu(fake_img.numpy(), real_img.numpy(), cfg.data.hu_window)


def fid(run_dir: Path) -> float:
    """FID (offline default encoder, pairs) of 64 EMA samples vs the real `val` split.

    Falls back to the train split when the workspace has no validation cases: the test split is
    never used for model selection.
    """
    from synthct.datasets import cases_in_split
    from synthct.metrics.evaluation import fid_for_run

    run_dir = Path(run_dir)
    ws = Workspace(run_dir.parent.parent)
    split = "val" if cases_in_split(ws, "val") else "train"
    return float(fid_for_run(ws, run_dir.name, real_split=split)["fid"])


METRICS: dict[str, Metric] = {"fid": fid, "hu_w1": hu_w1}


def register_metric(name: str, fn: Metric) -> None:
    """Make `fn(run_dir) -> score` (lower is better) available as `--metric name`."""
    METRICS[name] = fn


# -- running ----------------------------------------------------------------------------------
def run_state(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return "new"


def final_losses(run_dir: Path, last: int = 10) -> dict[str, float]:
    """Mean of each loss over the last `last` logged rows of losses.csv."""
    try:
        with open(run_dir / "losses.csv", newline="") as f:
            rows = list(csv.DictReader(f))[-last:]
    except OSError:
        return {}
    keys = [k for k in (rows[0] if rows else {}) if k not in ("step", "wall_s")]
    return {k: float(np.mean([float(r[k]) for r in rows if r[k] != ""])) for k in keys}


def run_hpo(
    grid_path: str | Path,
    ws: Workspace,
    steps: int | None = None,
    max_stages: int | None = None,
    metric: str | Metric = "fid",
    progress: Callable[[float, str], None] | None = None,
    model_factory: Callable | None = None,
) -> Path:
    """Train every grid point (skipping done runs), score them, write the ranked summary.

    Returns WS/evals/hpo-<name>/summary.csv (also summary.json). `metric` is a METRICS name or a
    function `run_dir -> score`; lower is better.
    """
    from synthct.train import train

    spec = load_grid(grid_path)
    score_fn = metric if callable(metric) else METRICS.get(metric)
    if score_fn is None:
        raise ConfigError(f"unknown ranking metric {metric!r}; available: {sorted(METRICS)}")
    metric_name = getattr(score_fn, "__name__", str(metric))
    n_stages = len(spec["stages"]) if max_stages is None else min(max_stages, len(spec["stages"]))
    rows: list[dict] = []
    best: dict[str, Any] = {}
    for index in range(n_stages):
        points = expand_stage(spec, index, best)
        for j, (name, overrides) in enumerate(points):
            if steps is not None:
                overrides = {**overrides, "train.steps": steps}
            cfg = run_config(spec, overrides)
            run_dir = ws.run_dir(name)
            state = run_state(run_dir)
            if state != "done":
                train(cfg, ws, name, resume=state != "new", model_factory=model_factory)
            score = float(score_fn(run_dir))
            rows.append(
                {
                    "run": name,
                    "stage": index + 1,
                    "overrides": overrides,
                    "score": score,
                    "losses": final_losses(run_dir),
                    "steps": cfg.train.steps,
                }
            )
            if progress:
                progress(
                    (j + 1) / len(points), f"stage {index + 1}: {name} {metric_name}={score:.4g}"
                )
            write_summary(ws, spec["name"], rows, metric_name)
        stage_rows = [r for r in rows if r["stage"] == index + 1]
        best = {
            k: v
            for k, v in min(stage_rows, key=lambda r: r["score"])["overrides"].items()
            if k != "train.steps"
        }
    return write_summary(ws, spec["name"], rows, metric_name)


def write_summary(ws: Workspace, name: str, rows: list[dict], metric: str) -> Path:
    """Ranked CSV (rank 1 = lowest score) + JSON in WS/evals/hpo-<name>/ (atomic)."""
    out = ws.confine(ws.evals / f"hpo-{name}")
    ranked = sorted(rows, key=lambda r: r["score"])
    keys = list(dict.fromkeys(k for r in ranked for k in r["overrides"]))
    loss_keys = list(dict.fromkeys(k for r in ranked for k in r["losses"]))
    table = [
        [
            rank,
            r["run"],
            r["stage"],
            *(r["overrides"].get(k, "") for k in keys),
            r["steps"],
            f"{r['score']:.6g}",
            *(f"{r['losses'].get(k, float('nan')):.5g}" for k in loss_keys),
        ]
        for rank, r in enumerate(ranked, 1)
    ]
    header = ["rank", "run", "stage", *keys, "steps", metric, *loss_keys]
    atomic_write_json(out / "summary.json", {"grid": name, "metric": metric, "rows": ranked})
    return atomic_write_text(out / "summary.csv", csv_text(table, header))


def read_summary(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def format_table(rows: list[dict[str, str]]) -> str:
    """A fixed-width text table of summary rows (for the terminal)."""
    if not rows:
        return "(no runs)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda vals: "  ".join(str(v).rjust(widths[c]) for c, v in zip(cols, vals, strict=True))  # noqa: E731
    return "\n".join([line(cols), *(line([r[c] for c in cols]) for r in rows)])
