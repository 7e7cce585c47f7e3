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

Each stage is an Optuna study (GridSampler) in the project database, so any number of workers
— this process, background jobs, SLURM jobs on other nodes — share it and every point runs once
(synthct.hpo_study). A file with `search: {key: {low, high, log}}` and `n_trials` instead of
`stages` is an open search with Optuna's TPE. Runs that are already done are skipped and
half-finished ones resumed, so a grid can be re-launched after an interruption. The ranking metric is a function `run_dir -> float` (lower is
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
    unknown = sorted(set(spec) - {"name", "base", "overrides", "stages", "search", "n_trials"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {unknown}; expected name, base, overrides, stages "
            "(a grid) or search and n_trials (open search)"
        )
    for key in ("name", "base"):
        if key not in spec:
            raise ConfigError(f"{path}: missing {key!r}")
    check_name(str(spec["name"]), "grid name", max_length=NAME_MAX_LENGTH - 8)  # + "-s2-01"
    if "search" in spec:
        return _load_search(path, spec)
    if "stages" not in spec:
        raise ConfigError(f"{path}: missing 'stages' (a grid) or 'search' (open search)")
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


def _load_search(path: Path, spec: dict) -> dict[str, Any]:
    """An open-search file: `search: {key: {low, high[, log, step]} | {choices: [..]}}` and
    `n_trials` (sampled by Optuna's TPE; see synthct.hpo_study)."""
    search, n_trials = spec["search"], spec.get("n_trials", 20)
    if "stages" in spec:
        raise ConfigError(f"{path}: give either 'stages' (a grid) or 'search', not both")
    if not isinstance(search, dict) or not search:
        raise ConfigError(f"{path}: 'search' must map keys to {{low, high}} or {{choices}}")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"{path}: n_trials must be a positive integer, got {n_trials!r}")
    for key, dist in search.items():
        ok = isinstance(dist, dict) and (
            (set(dist) == {"choices"} and isinstance(dist["choices"], list) and dist["choices"])
            or ({"low", "high"} <= set(dist) <= {"low", "high", "log", "step"}
                and float(dist["low"]) < float(dist["high"]))
        )  # fmt: skip
        if not ok:
            raise ConfigError(
                f"{path}: search {key!r} = {dist!r}; expected {{low: A, high: B (> A)[, log: "
                "true][, step: S]}} or {choices: [..]}"
            )
    base_path = (path.parent / spec["base"]).resolve()
    out = {**spec, "base": load_yaml(base_path), "base_path": str(base_path),
           "overrides": spec.get("overrides") or {}, "n_trials": n_trials}  # fmt: skip
    first = {k: d["choices"][0] if "choices" in d else d["low"] for k, d in search.items()}
    run_config(out, first)  # fail early on a bad key
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
    from scipy.stats import wasserstein_distance  # deferred: loads scipy

    rng = np.random.default_rng(0)

    def values(a: np.ndarray) -> np.ndarray:
        v = np.asarray(a, np.float64).ravel()
        return rng.choice(v, MAX_VALUES, replace=False) if v.size > MAX_VALUES else v

    lo, hi = window
    scale = (hi - lo) / 2.0  # [-1, 1] -> HU is affine with this slope
    return float(wasserstein_distance(values(fake_unit), values(real_unit)) * scale)


def hu_w1(run_dir: Path) -> float:
    """Default ranking proxy: HU-histogram W1 of 8 fixed-seed EMA samples vs 8 real train cases."""
    import torch  # deferred: loads torch

    from synthct.checkpoint import load_generator  # deferred: loads torch
    from synthct.preprocess import load_packed  # deferred: loads scipy
    from synthct.views.volumes import image_half  # deferred: loads scipy, torch

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
    from synthct.datasets import cases_in_split  # deferred: loads scipy
    from synthct.metrics.evaluation import fid_for_run  # deferred: loads scipy, torch

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
