"""Segmentation experiments: k-fold cross-validation on real cases, synthetic data only in training.

Experiments (design §2, §5):

- real: train on the real fold-train cases;
- synthetic: train on synthetic pairs only, validate on the real fold's validation cases;
- mixed: real fold-train + N synthetic pairs;
- pretrain-finetune: pre-train once on the synthetic pairs, fine-tune on each real fold-train.

Folds split the real non-test cases (splits `train` + `val`), stratified by centre. Synthetic
cases are added to training folds only; validation folds and the ensemble's test set are real.
The fold models (best epoch by validation Dice) are ensembled (mean of softmax) on the held-out
`test` split. Before anything is read, the leakage guard compares the synthetic set's datacard
(`training_cases.case_ids`, the cases its GAN saw) with the test split and, with `strict`, with
every validation fold; it refuses to run unless `allow_leakage` is set, which is then recorded.

Each fold resumes: a finished fold (result.json) is skipped; an unfinished one restarts from its
last epoch checkpoint (model, optimiser, scheduler, scaler, epoch, best score, history, RNG). The
data order and augmentation are re-seeded from (seed, fold, epoch) every epoch, so a resumed run
reproduces an uninterrupted one exactly on CPU.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from synthct.config import from_dict, to_dict
from synthct.errors import ConfigError, LeakageError, WorkspaceError
from synthct.segment.data import SegCase
from synthct.segment.evaluate import RESULTS_FILE, evaluate_cases
from synthct.segment.recipe import SegConfig
from synthct.workspace import (
    Workspace,
    atomic_write_bytes,
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

    def default_name(self) -> str:
        if self.experiment == "real":
            return "real"
        n = f"-n{self.n_synthetic}" if self.n_synthetic is not None else ""
        return f"{self.experiment}-{self.synthetic}{n}"


# -- folds --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """Case ids of one fold: real training, real validation, synthetic training."""

    fold: int
    train_real: tuple[str, ...]
    val: tuple[str, ...]
    train_synthetic: tuple[str, ...]


def assign_folds(centres: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) per case, stratified by centre.

    Centres with fewer cases than folds are pooled into one group; if no group is large enough
    to stratify, an unstratified shuffled KFold is used.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(centres)
    if n < n_folds:
        raise ConfigError(
            f"{n} real train/val cases cannot make {n_folds} folds (need >= {n_folds})"
        )
    counts = Counter(centres)
    groups = [c if counts[c] >= n_folds else "\0rare" for c in centres]
    folds = np.zeros(n, dtype=np.int64)
    x = np.zeros((n, 1))
    if max(Counter(groups).values()) >= n_folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class" for the pool
            split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, groups)
            for k, (_, val) in enumerate(split):
                folds[val] = k
    else:
        for k, (_, val) in enumerate(KFold(n_folds, shuffle=True, random_state=seed).split(x)):
            folds[val] = k
    return folds


def plan_folds(
    real_ids: Sequence[str],
    centres: Sequence[str],
    synthetic_ids: Sequence[str],
    experiment: str,
    n_folds: int,
    seed: int,
    test_ids: Sequence[str] = (),
) -> list[FoldPlan]:
    """The k folds of an experiment; synthetic ids only ever appear in training (checked)."""
    ids = np.asarray(list(real_ids), dtype=object)
    folds = assign_folds(list(centres), n_folds, seed)
    use_real = experiment != "synthetic"
    syn = tuple(sorted(synthetic_ids)) if experiment in ("synthetic", "mixed") else ()
    plans = [
        FoldPlan(
            fold=k,
            train_real=tuple(sorted(ids[folds != k])) if use_real else (),
            val=tuple(sorted(ids[folds == k])),
            train_synthetic=syn,
        )
        for k in range(n_folds)
    ]
    check_plans(plans, test_ids, synthetic_ids)
    return plans


def check_plans(plans: Sequence[FoldPlan], test_ids: Sequence[str], synthetic_ids: Sequence[str]):
    """Raise LeakageError if a fold validates on synthetic or test cases, or trains on test ones."""
    test, syn = set(test_ids), set(synthetic_ids)
    for p in plans:
        for what, bad in (
            ("synthetic case(s) in validation", syn & set(p.val)),
            ("test case(s) in validation", test & set(p.val)),
            ("test case(s) in training", test & set(p.train_real + p.train_synthetic)),
            ("validation case(s) in training", set(p.val) & set(p.train_real)),
        ):
            if bad:
                raise LeakageError(f"fold {p.fold}: {what}: {_ids(bad)}")


def _ids(ids, limit: int = 10) -> str:
    ids = sorted(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _ids_hash(ids: Sequence[str]) -> str:
    """SHA-256 of the sorted ids joined by newlines (the case-index contract's case_ids_hash)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


# -- leakage guard ------------------------------------------------------------------------------
def check_leakage(
    datacard: dict[str, Any],
    *,
    set_name: str,
    test_ids: Sequence[str],
    plans: Sequence[FoldPlan],
    strict: bool = False,
    allow: bool = False,
) -> dict[str, Any]:
    """Compare the cases a synthetic set's GAN was trained on with the test split and the folds.

    Returns the record written into the results; raises LeakageError (naming the cases and the
    fix) when the GAN saw a test case, or with `strict` a validation case, unless `allow`.
    """
    tc = datacard.get("training_cases") or {}
    gan_ids = tc.get("case_ids")
    record: dict[str, Any] = {
        "set": set_name,
        "checked": gan_ids is not None,
        "generator_run": datacard.get("run"),
        "generator_training_split": tc.get("split"),
        "n_generator_training_cases": len(gan_ids) if gan_ids is not None else None,
        "strict": strict,
        "allow_leakage": allow,
        "test_overlap": [],
        "val_overlap": {},
        "override": False,
    }
    problems = []
    if gan_ids is None:
        problems.append("its datacard has no training_cases.case_ids, so leakage cannot be checked")
    else:
        if tc.get("sha256") and tc["sha256"] != _ids_hash(gan_ids):
            problems.append("its datacard's training_cases.sha256 does not match its case_ids")
        gan = set(gan_ids)
        record["test_overlap"] = sorted(gan & set(test_ids))
        record["val_overlap"] = {
            str(p.fold): sorted(gan & set(p.val)) for p in plans if gan & set(p.val)
        }
        if record["test_overlap"]:
            problems.append(
                f"its generator was trained on {len(record['test_overlap'])} test case(s): "
                f"{_ids(record['test_overlap'])}"
            )
        if strict and record["val_overlap"]:
            folds = record["val_overlap"]
            problems.append(
                "(--strict) its generator was trained on validation case(s) of fold(s) "
                + "; ".join(f"{k}: {_ids(v)}" for k, v in folds.items())
            )
    if problems:
        msg = f"synthetic set {set_name!r} (run {datacard.get('run')!r}): " + "; ".join(problems)
        if not allow:
            raise LeakageError(
                msg + ". Fix: retrain the GAN on the train split only (`synthct train` reads "
                "split 'train' by default; with --strict use a split disjoint from the folds) "
                "and generate a new set, or pass --allow-leakage to run anyway and record it"
            )
        warnings.warn(msg + " — allowed by --allow-leakage; recorded in the results", stacklevel=2)
        record["override"] = True
        record["problems"] = problems
    return record


# -- one fold -----------------------------------------------------------------------------------
def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p % 2**32 for p in parts]).generate_state(1)[0])


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_torch(path: Path, device) -> Any:
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def _curve_csv(history: list[dict[str, Any]]) -> str:
    lines = ["epoch,train_loss,val_dice,lr"]
    for h in history:
        vd = "" if h["val_dice"] is None else f"{h['val_dice']:.6f}"
        lines.append(f"{h['epoch']},{h['train_loss']:.6f},{vd},{h['lr']:.8g}")
    return "\n".join(lines) + "\n"


def validate(model, cases: Sequence[SegCase], cfg: SegConfig, device, precision: str) -> float:
    """Mean per-case Dice of `model` on `cases` (empty ground truths excluded; DSCagg if all
    are empty; 0 if that is undefined too)."""
    from synthct.segment.data import stack_images
    from synthct.segment.evaluate import dice_per_case, dsc_agg
    from synthct.segment.recipe import predict_probs

    preds = np.stack(
        [
            predict_probs(model, stack_images([c]).to(device), cfg, precision)[0]
            .argmax(0)
            .cpu()
            .numpy()
            for c in cases
        ]
    )
    gts = np.stack([c.label for c in cases])
    d = dice_per_case(preds > 0, gts > 0)
    if np.isfinite(d).any():
        return float(np.nanmean(d))
    agg = dsc_agg(preds > 0, gts > 0)
    return agg if math.isfinite(agg) else 0.0


def train_fold(
    train_cases: Sequence[SegCase],
    val_cases: Sequence[SegCase],
    cfg: SegConfig,
    fold_dir: Path,
    *,
    fold: int = 0,
    epochs: int | None = None,
    init_state: dict | None = None,
    device=None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one fold (resumable) and return its result; writes into `fold_dir`:

    last.pt (epoch checkpoint, removed when done), best.pt (weights of the best validation epoch;
    the last epoch when there is no validation set), curve.csv, result.json.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from synthct.segment import recipe
    from synthct.segment.data import SegDataset

    fold_dir = Path(fold_dir)
    if (fold_dir / "result.json").is_file():
        return read_json(fold_dir / "result.json")
    if not train_cases:
        raise ConfigError(f"fold {fold}: no training cases")
    fold_dir.mkdir(parents=True, exist_ok=True)
    device = recipe.select_device(device)
    precision = recipe.resolve_precision(cfg, device)
    epochs = epochs or cfg.epochs

    torch.manual_seed(_seed(cfg.seed, fold))
    model = recipe.build_network(cfg).to(device)
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = recipe.build_optimizer(model, cfg)
    scheduler = recipe.build_scheduler(optimizer, cfg, epochs)
    scaler = recipe.make_scaler(precision, device)
    loss_fn = recipe.build_loss(cfg)
    state = {"epoch": 0, "best": -math.inf, "best_epoch": 0, "history": []}
    last = fold_dir / "last.pt"
    if last.is_file():  # resume
        ck = _load_torch(last, device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_torch"].cpu())
        state = {k: ck[k] for k in ("epoch", "best", "best_epoch", "history")}
    transforms = recipe.build_train_transforms(cfg)
    dataset = SegDataset(list(train_cases), transforms)
    t0 = time.perf_counter()
    bar = tqdm(range(state["epoch"] + 1, epochs + 1), desc=f"fold {fold}", leave=False)
    for epoch in bar:
        # -- train: data order and augmentation seeded by (seed, fold, epoch) --------------
        transforms.set_random_state(seed=_seed(cfg.seed, fold, epoch))
        gen = torch.Generator().manual_seed(_seed(cfg.seed, fold, epoch, 1))
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        losses = []
        for image, label in loader:
            image, label = image.to(device), label.to(device)
            optimizer.zero_grad(set_to_none=True)
            with recipe.autocast(precision, device):
                loss = loss_fn(model(image), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        scheduler.step()
        # -- validate, keep the best ----------------------------------------------------------
        val_dice = None
        if val_cases and (epoch % cfg.val_every == 0 or epoch == epochs):
            val_dice = validate(model, val_cases, cfg, device, precision)
        if (val_dice is not None and val_dice > state["best"]) or (
            not val_cases and epoch == epochs
        ):
            state["best"] = val_dice if val_dice is not None else state["best"]
            state["best_epoch"] = epoch
            _save_torch(
                {"model": model.state_dict(), "epoch": epoch, "val_dice": val_dice},
                fold_dir / "best.pt",
            )
        # -- record and checkpoint ------------------------------------------------------------
        state["epoch"] = epoch
        state["history"].append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice, "lr": lr}
        )
        atomic_write_text(fold_dir / "curve.csv", _curve_csv(state["history"]))
        _save_torch(
            {
                **state,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "config": to_dict(cfg),
            },
            last,
        )
        bar.set_postfix(loss=f"{state['history'][-1]['train_loss']:.3f}", val=val_dice)
        if progress:
            progress(epoch, epochs)
        if on_epoch_end:
            on_epoch_end(epoch, state["history"][-1])
    result = {
        "fold": fold,
        "epochs": epochs,
        "n_train": len(train_cases),
        "n_train_synthetic": sum(c.source == "synthetic" for c in train_cases),
        "n_val": len(val_cases),
        "best_epoch": state["best_epoch"],
        "best_val_dice": state["best"] if math.isfinite(state["best"]) else None,
        "seconds_this_session": round(time.perf_counter() - t0, 2),
        "precision": precision,
        "device": str(device),
    }
    atomic_write_json(fold_dir / "result.json", result)
    last.unlink(missing_ok=True)
    return result


def load_fold_model(fold_dir: Path, cfg: SegConfig, device=None):
    """The best-epoch network of a finished fold, in eval mode."""
    from synthct.segment import recipe

    device = recipe.select_device(device)
    model = recipe.build_network(cfg).to(device)
    model.load_state_dict(_load_torch(Path(fold_dir) / "best.pt", device)["model"])
    return model.eval()


# -- whole experiment ---------------------------------------------------------------------------
def run_experiment_cases(
    exp_dir: Path,
    cfg: ExperimentConfig,
    trainval: Sequence[SegCase],
    test: Sequence[SegCase],
    synthetic: Sequence[SegCase] = (),
    datacard: dict[str, Any] | None = None,
    *,
    device=None,
    progress: Progress | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an experiment on in-memory cases and write results.json into `exp_dir`."""
    from synthct import __version__
    from synthct.segment import recipe
    from synthct.segment.data import stack_images

    seg = cfg.seg
    exp_dir = Path(exp_dir)
    _claim_dir(exp_dir, cfg)
    real_ids = [c.case_id for c in trainval]
    test_ids = [c.case_id for c in test]
    syn_ids = [c.case_id for c in synthetic]
    if not test:
        raise WorkspaceError("no real test cases: the split registry has no 'test' cases")
    if cfg.experiment != "real" and not synthetic:
        raise ConfigError(f"experiment {cfg.experiment!r} needs synthetic cases, got none")
    plans = plan_folds(
        real_ids,
        [c.centre for c in trainval],
        syn_ids,
        cfg.experiment,
        seg.folds,
        seg.seed,
        test_ids,
    )
    leakage: dict[str, Any] = {"checked": False, "override": False, "reason": "no synthetic data"}
    if cfg.experiment != "real":
        leakage = check_leakage(
            datacard or {},
            set_name=str(cfg.synthetic),
            test_ids=test_ids,
            plans=plans,
            strict=cfg.strict,
            allow=cfg.allow_leakage,
        )
    atomic_write_json(exp_dir / "folds.json", [dataclasses.asdict(p) for p in plans])

    by_id = {c.case_id: c for c in [*trainval, *synthetic]}
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
        train_fold(
            synthetic,
            [],
            seg,
            exp_dir / "folds" / "pretrain",
            fold=-1,
            epochs=pre_epochs,
            device=device,
            progress=tick("pretrain"),
            on_epoch_end=on_epoch_end,
        )
        done[0] += pre_epochs
        pre = _load_torch(exp_dir / "folds" / "pretrain" / "best.pt", "cpu")
        init_state = pre["model"]
    fold_results = []
    for p in plans:
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
            )
        )
        done[0] += seg.epochs

    # -- fold ensemble on the held-out test split ------------------------------------------
    dev = recipe.select_device(device)
    precision = recipe.resolve_precision(seg, dev)
    models = [load_fold_model(exp_dir / "folds" / f"fold-{p.fold}", seg, dev) for p in plans]
    preds = np.stack(
        [
            recipe.ensemble_probs(models, stack_images([c]).to(dev), seg, precision)[0]
            .argmax(0)
            .cpu()
            .numpy()
            .astype(np.uint8)
            for c in test
        ]
    )
    spacing = test[0].spacing
    summary, table = evaluate_cases(
        test_ids, preds, np.stack([c.label for c in test]), spacing, seg.out_channels
    )
    atomic_write_text(exp_dir / "per_case.csv", table.to_csv(index=False))
    results = {
        "name": exp_dir.name,
        "experiment": cfg.experiment,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "synthct_version": __version__,
        "config": to_dict(cfg),
        "n_train_val": len(trainval),
        "test_case_ids_sha256": _ids_hash(test_ids),
        "synthetic": None
        if cfg.experiment == "real"
        else {
            "set": cfg.synthetic,
            "n": len(syn_ids),
            "case_ids": syn_ids,
            "run": (datacard or {}).get("run"),
            "checkpoint": (datacard or {}).get("checkpoint"),
        },
        "leakage": leakage,
        "folds": fold_results,
        "test": summary,
        "per_case": table.replace({np.nan: None}).to_dict(orient="records"),
    }
    atomic_write_json(exp_dir / RESULTS_FILE, results)
    if progress:
        progress(1.0, "done")
    return results


def _claim_dir(exp_dir: Path, cfg: ExperimentConfig) -> None:
    """Create the experiment folder with config.yaml, or check an existing one has the same config."""
    from synthct.config import load_yaml, save_yaml

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
    from synthct.config import load_yaml

    return from_dict(ExperimentConfig, load_yaml(path), where=str(path))


def run_experiment(
    ws: Workspace,
    cfg: ExperimentConfig,
    name: str | None = None,
    *,
    device=None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load the workspace's cases, check leakage, run or resume experiment `name`.

    Results go to WS/segmentation/<name>/ (config.yaml, folds.json, folds/fold-k/{best.pt,
    curve.csv, result.json}, per_case.csv, results.json).
    """
    from synthct.segment import data

    name = check_name(name or cfg.default_name(), "experiment name")
    exp_dir = ws.confine(ws.segmentation / name)
    seg = cfg.seg
    trainval = data.load_real_cases(ws, seg, "train") + data.load_real_cases(ws, seg, "val")
    test = data.load_real_cases(ws, seg, "test")
    synthetic: list[SegCase] = []
    datacard = None
    if cfg.experiment != "real":
        datacard = data.load_datacard(ws, str(cfg.synthetic))
        set_dir = data.synthetic_set_dir(ws, str(cfg.synthetic))
        ids = data.choose_synthetic(data.synthetic_case_ids(set_dir), cfg.n_synthetic, seg.seed)
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
        check_leakage(
            datacard,
            set_name=str(cfg.synthetic),
            test_ids=[c.case_id for c in test],
            plans=plans,
            strict=cfg.strict,
            allow=cfg.allow_leakage,
        )
        synthetic = data.load_synthetic_cases(ws, str(cfg.synthetic), seg, ids)
    return run_experiment_cases(
        exp_dir, cfg, trainval, test, synthetic, datacard, device=device, progress=progress
    )
