"""Segmentation experiments: k-fold cross-validation on real cases, synthetic data only in training.

Experiments:

- real: train on the real fold-train cases;
- synthetic: train on synthetic pairs only, validate on the real fold's validation cases;
- mixed: real fold-train + N synthetic pairs;
- pretrain-finetune: pre-train once on the synthetic pairs, fine-tune on each real fold-train.

Folds split the real non-test cases (splits `train` + `val`), stratified by centre. Synthetic
cases are added to training folds only; validation folds and the ensemble's test set are real.
Each fold fits its own intensity normalisation on its training cases (`normalise.py`). The fold
models (best epoch by validation Dice) are ensembled (mean of softmax, each model on the image
normalised its own way) on the held-out `test` split, scored on the preprocessed grid
(`scores.py`) and, for workspace experiments, on each case's original CT grid with HECKTOR
2022's per-class DSCagg (`original_grid.py`), all with case-bootstrap CIs. Before anything is
read, the leakage guard compares the synthetic set's datacard (`training_cases.case_ids`, the
cases its GAN saw) with the test split and, with `strict`, with every validation fold; it
refuses to run unless `allow_leakage` is set, which is then recorded.

Folds and the guard live in folds.py, the resumable training of one fold in fold_training.py;
this module loads the cases, runs the stages and writes WS/segmentation/<name>/.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from synthct import __version__
from synthct.config import from_dict, load_yaml, save_yaml, to_dict
from synthct.csvsafe import to_csv_text
from synthct.errors import ConfigError, WorkspaceError
from synthct.runtime import case_ids_hash, load_weights
from synthct.segment import cases, recipe
from synthct.segment.cases import SegCase, stack_images
from synthct.segment.fold_training import (
    load_fold_model,
    load_fold_normalisation,
    train_fold,
)
from synthct.segment.folds import check_leakage, plan_folds
from synthct.segment.original_grid import SourceGrid, unavailable
from synthct.segment.recipe import SegConfig
from synthct.segment.scores import RESULTS_FILE, evaluate_cases
from synthct.sets import Datacard
from synthct.workspace import (
    Workspace,
    atomic_write_json,
    atomic_write_text,
    check_name,
    read_json,
)

EXPERIMENTS = ("real", "synthetic", "mixed", "pretrain-finetune")
Progress = Callable[[float, str], None]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What to train on. pretrain_epochs: synthetic pre-training length (None = seg.epochs)."""

    experiment: str = "real"
    synthetic: str | None = None
    n_synthetic: int | None = None
    pretrain_epochs: int | None = None
    strict: bool = False
    allow_leakage: bool = False
    seg: SegConfig = dataclasses.field(default_factory=SegConfig)

    def __post_init__(self) -> None:
        if self.experiment not in EXPERIMENTS:
            raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {self.experiment!r}")
        if self.experiment == "real" and self.synthetic:
            raise ValueError("the 'real' experiment uses no synthetic set; drop --synthetic")
        if self.experiment != "real" and not self.synthetic:
            raise ValueError(f"experiment {self.experiment!r} needs --synthetic NAME")
        if self.n_synthetic is not None and self.experiment == "real":
            raise ValueError("--n-synthetic needs a synthetic experiment, not 'real'")
        if self.pretrain_epochs is not None and self.experiment != "pretrain-finetune":
            raise ValueError("--pretrain-epochs applies only to the pretrain-finetune experiment")

    def default_name(self) -> str:
        if self.experiment == "real":
            return "real"
        n = f"-n{self.n_synthetic}" if self.n_synthetic is not None else ""
        return f"{self.experiment}-{self.synthetic}{n}"


# -- whole experiment ---------------------------------------------------------------------------
def run_experiment_cases(
    exp_dir: Path,
    cfg: ExperimentConfig,
    trainval: Sequence[SegCase],
    test: Sequence[SegCase],
    synthetic: Sequence[SegCase] = (),
    datacard: Datacard | None = None,
    *,
    device=None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    source_grid: SourceGrid | None = None,
    source_grid_reason: str = "in-memory cases: no source CT grid to resample to",
    only_fold: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) an experiment on in-memory cases and write results.json into `exp_dir`.

    `only_fold` k trains fold k only (-1: only the synthetic pre-training) and returns
    {name, fold, result} without the ensemble: folds run in parallel this way (a SLURM array),
    and a later run without `only_fold` finds them done and ensembles.

    results.json (read by the dashboard): name, experiment, created, synthct_version, config
    (ExperimentConfig as a dict), n_train_val, test_case_ids_sha256, synthetic {set, n, case_ids,
    run, checkpoint} or null, leakage {checked, test_overlap, val_overlap, strict,
    allow_leakage, override, ...}, normalisation {mode, folds: {fold: bounds and provenance}},
    folds [train_fold results], test (`evaluate_cases` summary on the preprocessed grid, with
    labels and case-bootstrap CIs), test_original_grid (HECKTOR 2022 per-class DSCagg on each
    case's CT grid via `source_grid`; {available: false, reason} without one), per_case (rows
    of per_case.csv; original-grid volumes as orig_* columns).
    """

    seg, exp_dir = cfg.seg, Path(exp_dir)
    plans, leakage = _plan(exp_dir, cfg, trainval, test, synthetic, datacard, only_fold)
    pre_epochs = cfg.pretrain_epochs or seg.epochs
    total = seg.epochs * seg.folds + (pre_epochs if cfg.experiment == "pretrain-finetune" else 0)
    done = [0]

    def tick(stage: str):
        def f(epoch: int, epochs: int) -> None:
            if progress:
                progress(min((done[0] + epoch) / total, 1.0), f"{stage}: epoch {epoch}/{epochs}")

        return f

    init_state = None
    if cfg.experiment == "pretrain-finetune":
        train_fold(synthetic, [], seg, exp_dir / "folds" / "pretrain", fold=-1, epochs=pre_epochs,
                   device=device, progress=tick("pretrain"), on_epoch_end=on_epoch_end)  # fmt: skip
        done[0] += pre_epochs
        if only_fold == -1:
            return {"name": exp_dir.name, "fold": -1, "result": read_json_result(exp_dir, -1)}
        init_state = load_weights(exp_dir / "folds" / "pretrain" / "best.pt", "cpu")["model"]
    by_id = {c.case_id: c for c in [*trainval, *synthetic]}
    fold_results = []
    for p in plans:
        if only_fold is not None and p.fold != only_fold:
            continue
        train = [by_id[i] for i in p.train_real + p.train_synthetic]
        val = [by_id[i] for i in p.val]
        fold_results.append(
            train_fold(
                train,
                val,
                seg,
                exp_dir / "folds" / f"fold-{p.fold}",
                fold=p.fold,
                init_state=init_state,
                device=device,
                progress=tick(f"fold {p.fold}"),
                on_epoch_end=on_epoch_end,
            )  # fmt: skip
        )
        done[0] += seg.epochs
    if only_fold is not None:
        return {"name": exp_dir.name, "fold": only_fold, "result": fold_results[0]}

    summary, table, original, norms = _ensemble_on_test(
        exp_dir, plans, seg, test, device, source_grid, source_grid_reason, progress
    )
    atomic_write_text(exp_dir / "per_case.csv", to_csv_text(table))
    results = _results(exp_dir, cfg, trainval, test, synthetic, datacard, leakage, plans, norms)
    results.update(folds=fold_results, test=summary, test_original_grid=original,
                   per_case=table.replace({np.nan: None}).to_dict(orient="records"))  # fmt: skip
    atomic_write_json(exp_dir / RESULTS_FILE, results)
    if progress:
        progress(1.0, "done")
    return results


def _results(exp_dir, cfg, trainval, test, synthetic, datacard, leakage, plans, norms) -> dict:
    """results.json without the scores: what ran, on which cases, with which normalisation."""
    seg = cfg.seg
    syn_ids = [c.case_id for c in synthetic]
    return {
        "name": exp_dir.name,
        "experiment": cfg.experiment,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthct_version": __version__,
        "config": to_dict(cfg),
        "n_train_val": len(trainval),
        "test_case_ids_sha256": case_ids_hash([c.case_id for c in test]),
        "synthetic": None
        if cfg.experiment == "real"
        else {
            "set": cfg.synthetic,
            "n": len(syn_ids),
            "case_ids": syn_ids,
            "run": datacard.run if datacard else None,
            "checkpoint": to_dict(datacard.checkpoint)
            if datacard and datacard.checkpoint
            else None,
        },
        "leakage": leakage,
        "normalisation": {
            "mode": seg.normalisation,
            "fitted_on": "each fold's real training cases (synthetic ones only when a stage has "
            "no real training case); never validation or test cases",
            "folds": {str(p.fold): n.to_dict() for p, n in zip(plans, norms, strict=True)},
            "pretrain": load_fold_normalisation(exp_dir / "folds" / "pretrain").to_dict()
            if cfg.experiment == "pretrain-finetune"
            else None,
        },
    }


def _plan(exp_dir, cfg, trainval, test, synthetic, datacard, only_fold):
    """Check the inputs, plan the folds, refuse leakage (before any data is read), claim the
    folder and write folds.json; returns (plans, the leakage record)."""
    seg = cfg.seg
    test_ids = [c.case_id for c in test]
    if not test:
        raise WorkspaceError("no real test cases: the split registry has no 'test' cases")
    if cfg.experiment != "real" and not synthetic:
        raise ConfigError(f"experiment {cfg.experiment!r} needs synthetic cases, got none")
    plans = plan_folds([c.case_id for c in trainval], [c.centre for c in trainval],
                       [c.case_id for c in synthetic], cfg.experiment, seg.folds, seg.seed,
                       test_ids)  # fmt: skip
    leakage: dict[str, Any] = {"checked": False, "override": False, "reason": "no synthetic data"}
    if cfg.experiment != "real":
        leakage = check_leakage(datacard, set_name=str(cfg.synthetic), test_ids=test_ids,
                                plans=plans, strict=cfg.strict, allow=cfg.allow_leakage)  # fmt: skip
    _claim_dir(exp_dir, cfg)  # only once the plan is known to be clean (or explicitly allowed)
    atomic_write_json(exp_dir / "folds.json", [dataclasses.asdict(p) for p in plans])
    if only_fold is not None and only_fold not in [-1, *(p.fold for p in plans)]:
        raise ConfigError(
            f"fold {only_fold} does not exist: the plan has folds 0..{len(plans) - 1}"
        )
    if only_fold == -1 and cfg.experiment != "pretrain-finetune":
        raise ConfigError("fold -1 (the synthetic pre-training) exists only in pretrain-finetune")
    return plans, leakage


def _ensemble_on_test(exp_dir, plans, seg, test, device, source_grid, reason, progress):
    """The fold ensemble's predictions on the held-out test cases, scored on the packed grid
    and (with `source_grid`) on each case's original CT grid. Returns (summary, per-case table,
    original-grid summary, each fold's normalisation)."""
    dev = recipe.select_device(device)
    precision = recipe.resolve_precision(seg, dev)
    fold_dirs = [exp_dir / "folds" / f"fold-{p.fold}" for p in plans]
    models = [load_fold_model(d, seg, dev) for d in fold_dirs]
    norms = [load_fold_normalisation(d) for d in fold_dirs]
    preds = np.stack([
        recipe.ensemble_probs(models, stack_images([c]).to(dev), seg, precision, norms)[0]
        .argmax(0).cpu().numpy().astype(np.uint8)
        for c in test
    ])  # fmt: skip
    test_ids = [c.case_id for c in test]
    summary, table = evaluate_cases(test_ids, preds, np.stack([c.label for c in test]),
                                    test[0].spacing, seg.out_channels, seed=seg.seed)  # fmt: skip
    if source_grid is None:
        return summary, table, unavailable(reason), norms
    if progress:
        progress(1.0, "scoring on the original CT grids")
    original, orig_table = source_grid.score(test_ids, preds, seed=seg.seed)
    table = table.merge(
        orig_table.rename(columns=lambda c: c if c == "case_id" else f"orig_{c}"),
        on="case_id",
        how="left",
    )
    return summary, table, original, norms


def read_json_result(exp_dir: Path, fold: int) -> dict[str, Any]:
    """result.json of fold `fold` (-1: the pre-training)."""

    sub = "pretrain" if fold == -1 else f"fold-{fold}"
    return read_json(exp_dir / "folds" / sub / "result.json")


def _claim_dir(exp_dir: Path, cfg: ExperimentConfig) -> None:
    """Create the experiment folder with config.yaml, or check an existing one has the same config."""

    path = exp_dir / "config.yaml"
    if path.is_file():
        old = load_yaml(path)
        if old != to_dict(cfg):
            raise WorkspaceError(
                f"{exp_dir} holds an experiment with a different config ({path}); "
                "choose another --name or delete that folder"
            )
        return
    exp_dir.mkdir(parents=True, exist_ok=True)
    save_yaml(to_dict(cfg), path)


def load_experiment_config(path: Path) -> ExperimentConfig:
    return from_dict(ExperimentConfig, load_yaml(path), where=str(path))


def run_experiment(
    ws: Workspace,
    cfg: ExperimentConfig,
    name: str | None = None,
    *,
    device=None,
    progress: Progress | None = None,
    only_fold: int | None = None,
) -> dict[str, Any]:
    """Load the workspace's cases, check leakage, run or resume experiment `name` (`only_fold`:
    see `run_experiment_cases`).

    Results go to WS/segmentation/<name>/ (config.yaml, folds.json, folds/fold-k/{best.pt,
    curve.csv, result.json}, per_case.csv, results.json).
    """
    name = check_name(name, "experiment name") if name else cfg.default_name()
    exp_dir = ws.experiment_dir(name)
    seg = cfg.seg
    trainval = cases.load_real_cases(ws, seg, "train") + cases.load_real_cases(ws, seg, "val")
    test = cases.load_real_cases(ws, seg, "test")
    synthetic: list[SegCase] = []
    datacard = None
    if cfg.experiment != "real":
        datacard = cases.load_datacard(ws, str(cfg.synthetic))
        set_dir = cases.synthetic_set_dir(ws, str(cfg.synthetic))
        ids = cases.choose_synthetic(cases.synthetic_case_ids(set_dir), cfg.n_synthetic, seg.seed)
        # guard before reading any synthetic volume
        plans = plan_folds(
            [c.case_id for c in trainval],
            [c.centre for c in trainval],
            ids,
            cfg.experiment,
            seg.folds,
            seg.seed,
            [c.case_id for c in test],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an allowed leak is warned about once, below
            check_leakage(
                datacard,
                set_name=str(cfg.synthetic),
                test_ids=[c.case_id for c in test],
                plans=plans,
                strict=cfg.strict,
                allow=cfg.allow_leakage,
            )
        mode = datacard.postprocess.get("mask_mode")
        if mode is not None and mode != seg.mask:
            raise ConfigError(
                f"synthetic set {cfg.synthetic!r} has {mode!r} masks (datacard postprocess."
                f"mask_mode) but the segmentation config uses mask {seg.mask!r}"
            )
        synthetic = cases.load_synthetic_cases(ws, str(cfg.synthetic), seg, ids)
    source_grid, reason = _source_grid(ws, seg, [c.case_id for c in test])
    return run_experiment_cases(
        exp_dir,
        cfg,
        trainval,
        test,
        synthetic,
        datacard,
        device=device,
        progress=progress,
        source_grid=source_grid,
        source_grid_reason=reason,
        only_fold=only_fold,
    )


def _source_grid(ws: Workspace, seg: SegConfig, test_ids: list[str]):
    """(SourceGrid, "") for the test cases, or (None, reason) when their source files or
    preprocessing records cannot be used (warned: original-grid scores will be missing)."""
    try:
        return SourceGrid.from_workspace(ws, seg.data_config(), test_ids), ""
    except (WorkspaceError, KeyError) as e:
        reason = f"original-grid scoring unavailable: {e}"
        warnings.warn(reason, stacklevel=3)
        return None, reason
