"""Reading the workspace's results for the dashboard: runs, evaluations, segmentation experiments.

No Streamlit here: every function takes a `Workspace` (or a parsed result) and returns plain
data or DataFrames, so the dashboard's content is testable without a running app. The files read
are the ones the library writes (synthct.train RunLog, synthct.metrics.evaluation,
synthct.segment); nothing here computes a metric, it only arranges stored values for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synthct.metrics.results import Baseline, EvalResult, load_result
from synthct.workspace import Workspace, read_json

LOSS_META_COLUMNS = ("step", "wall_s")
STAT_LABELS = {
    "tumour_ml": "Tumour volume (mL)",
    "n_components": "Tumour components",
    "centroid_x": "Tumour centroid x (fraction)",
    "centroid_y": "Tumour centroid y (fraction)",
    "centroid_z": "Tumour centroid z (fraction)",
    "body_mean_hu": "Mean body HU",
}


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV as a DataFrame; an absent or empty file gives an empty frame."""
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


# -- training runs --------------------------------------------------------------------------------
@dataclass
class RunView:
    """What the dashboard shows of one run (WS/runs/<name>/)."""

    name: str
    config: dict[str, Any]
    status: dict[str, Any]
    losses: pd.DataFrame  # step, wall_s, one column per loss
    collapse: pd.DataFrame  # step, sample_diversity, real_diversity, flagged
    samples: list[tuple[int, Path]] = field(default_factory=list)  # (step, PNG), oldest first
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)

    @property
    def loss_columns(self) -> list[str]:
        return [c for c in self.losses.columns if c not in LOSS_META_COLUMNS]

    @property
    def collapse_flagged(self) -> bool:
        """True when the training loop's mode-collapse alarm fired (collapse.csv or status)."""
        flags = self.collapse.get("flagged")
        if flags is not None and bool((flags.astype(int) > 0).any()):
            return True
        return any("mode collapse" in w for w in self.status.get("warnings", []))


def load_run(ws: Workspace, name: str) -> RunView:
    from synthct.checkpoint import list_checkpoints
    from synthct.config import load_yaml

    run_dir = ws.run_dir(name)
    status = {}
    if (run_dir / "status.json").is_file():
        status = read_json(run_dir / "status.json")
    samples = []
    for p in sorted((run_dir / "samples").glob("step-*.png")):
        digits = p.stem.removeprefix("step-")
        if digits.isdigit():
            samples.append((int(digits), p))
    return RunView(
        name=name,
        config=load_yaml(run_dir / "config.yaml"),
        status=status,
        losses=_read_csv(run_dir / "losses.csv"),
        collapse=_read_csv(run_dir / "collapse.csv"),
        samples=samples,
        checkpoints=list_checkpoints(run_dir),
    )


# -- evaluations ----------------------------------------------------------------------------------
@dataclass
class EvalView:
    """One evaluation folder (WS/evals/<id>/): metrics.json and its per-sample tables."""

    id: str
    result: EvalResult
    embedding: pd.DataFrame
    privacy: pd.DataFrame
    case_stats: pd.DataFrame
    hu_histogram: pd.DataFrame

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics


def load_eval(ws: Workspace, eval_id: str) -> EvalView:
    folder = ws.eval_dir(eval_id)
    return EvalView(
        id=eval_id,
        result=load_result(ws, eval_id),
        embedding=_read_csv(folder / "embedding.csv"),
        privacy=_read_csv(folder / "privacy.csv"),
        case_stats=_read_csv(folder / "case_stats.csv"),
        hu_histogram=_read_csv(folder / "hu_histogram.csv"),
    )


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def metric_table(result: EvalResult) -> pd.DataFrame:
    """One row per distance metric: value, 95 % CI, real-vs-real baseline, sizes, extractor.

    The CI resamples cases (the unit of independence; at slice level a case contributes its k
    slices). The baseline columns are the mean ± SD [central interval] of the same metric
    between two case-disjoint real halves and between synthetic and real at that same smaller
    size, so the value can be read against the small-sample bias (FID is strongly biased at
    small n); `within_real_vs_real` says whether the synthetic value at that size lies in the
    real-vs-real interval. n/m count slices at slice level (n_cases x slices per case), cases
    otherwise.
    """
    rows = []
    for e in result.distances():
        base = e.baseline or Baseline()
        rows.append(
            {
                "metric": e.name.upper() if e.name in ("fid", "kid") else e.name,
                "value": e.value,
                "ci_low": e.ci_low,
                "ci_high": e.ci_high,
                "real_vs_real": _baseline_text(base.real_vs_real),
                "synthetic_vs_real_at_baseline_size": _baseline_text(base.synthetic_vs_real),
                "within_real_vs_real": base.synthetic_within_real_vs_real,
                "baseline_size": base.size,
                "n_cases": e.n_cases,
                "m_cases": e.m_cases,
                "slices_per_case": e.slices_per_case,
                "n": e.n,
                "m": e.m,
                "d": e.d,
                "extractor": f"{e.extractor.get('name')} {e.extractor.get('version') or ''}".strip(),
                "weights_sha256": (e.extractor.get("weights_sha256") or "")[:12],
            }
        )
    return pd.DataFrame(rows)


def _baseline_text(entry: Any) -> str:
    if entry is None:
        return "—"
    if isinstance(entry, dict):
        mean, sd = entry.get("mean"), entry.get("std")
        text = f"{_fmt(mean)} ± {_fmt(sd, 2)}" if sd is not None else _fmt(mean)
        if entry.get("low") is not None and entry.get("high") is not None:
            text += f" [{_fmt(entry['low'])}, {_fmt(entry['high'])}]"
        return text
    return _fmt(entry)


def evaluation_caption(result: EvalResult) -> str:
    """One line on what was compared: sets, sizes, protocol, tumour mix, extractor."""
    syn, real, ex = result.synthetic, result.real, result.extractor
    text = (
        f"Synthetic set **{syn.get('set')}** vs real **{real.get('split')}** · "
        f"part {result.options.get('part')} · "
    )
    if result.level == "slice" and result.slices_per_case is not None:
        mix = result.tumour_mix or {}
        text += (
            f"slice level: {real.get('n_cases')} real vs {syn.get('m_cases')} synthetic cases "
            f"({syn.get('case', 'case')}), {result.slices_per_case} slices per case at "
            f"{(result.slices or {}).get('resolution')}², tumour mix {mix.get('value')} "
            f"({mix.get('source')}) · "
        )
    elif result.level == "slice":
        text += "slice level, legacy protocol (slices pooled as independent samples) · "
    else:
        text += f"volumes: n = {real.get('n')} real, m = {syn.get('m')} synthetic cases · "
    text += (
        f"extractor {ex.get('name')} {ex.get('version', '')}, d = {ex.get('dim', '—')}, "
        f"weights SHA-256 `{(ex.get('weights_sha256') or '')[:16]}` · {result.created}"
    )
    return text


def statistics_table(result: EvalResult) -> pd.DataFrame:
    """HU/tumour statistics: real mean, synthetic mean and the Wasserstein-1 distance per quantity."""
    stats = result.metrics.get("statistics", {})
    rows = []
    for key, label in STAT_LABELS.items():
        e = stats.get(key)
        if not e:
            continue
        rows.append(
            {
                "quantity": label,
                "real_mean": e.get("real_mean"),
                "synthetic_mean": e.get("synthetic_mean"),
                "wasserstein": e.get("wasserstein"),
                "n_real": e.get("n_real"),
                "n_synthetic": e.get("n_synthetic"),
            }
        )
    hu = stats.get("hu_body", {})
    if "wasserstein_hu" in hu:
        rows.append(
            {
                "quantity": "Body HU histogram",
                "real_mean": None,
                "synthetic_mean": None,
                "wasserstein": hu["wasserstein_hu"],
                "n_real": None,
                "n_synthetic": None,
            }
        )
    return pd.DataFrame(rows)


def gallery_volumes(
    ws: Workspace, result: EvalResult, synthetic_id: str, train_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(synthetic image HU, nearest training image HU, synthetic mask), each (S, S, S/2).

    Both come on the packed grid the evaluation compared them on: the synthetic case from its
    set's NIfTI files, the training case from the packed arrays of the GAN's training split.
    """
    from synthct.config import DataConfig, from_dict
    from synthct.preprocess import load_packed, unpack
    from synthct.sets import load_synthetic_pair, read_datacard

    cfg = from_dict(DataConfig, result.data_config, "metrics.json data_config")
    set_dir = ws.synthetic_dir(result.synthetic["set"])
    image, mask = load_synthetic_pair(set_dir, synthetic_id)
    tc = read_datacard(set_dir, cases=False).training_cases
    split = (tc.split if tc else None) or "train"
    packed = load_packed(ws, cfg, split=split)
    if train_id not in packed.case_ids:
        from synthct.errors import WorkspaceError

        raise WorkspaceError(f"training case {train_id!r} is not in the packed {split} split")
    train_hu, _ = unpack(np.asarray(packed.arrays[packed.case_ids.index(train_id)]), cfg)
    return image.array.astype(np.float32), train_hu.astype(np.float32), mask.array


# -- segmentation ---------------------------------------------------------------------------------
def fold_curves(ws: Workspace, experiment: str) -> pd.DataFrame:
    """Per-fold training curves of an experiment: experiment, fold, epoch, train_loss, val_dice."""
    from synthct.workspace import ID_MAX_LENGTH, check_name

    folds_dir = (
        ws.segmentation
        / check_name(experiment, "experiment name", max_length=ID_MAX_LENGTH)
        / "folds"
    )
    frames = []
    for d in sorted(folds_dir.glob("fold-*")):
        df = _read_csv(d / "curve.csv")
        if df.empty:
            continue
        frames.append(df.assign(experiment=experiment, fold=d.name.removeprefix("fold-")))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
