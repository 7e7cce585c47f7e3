"""Cross-validation folds over the real non-test cases, and the leakage guard.

Folds split the real train + val cases, stratified by centre (scikit-learn StratifiedKFold; centres
with fewer cases than folds are pooled). Synthetic cases are only ever added to training folds,
and `check_plans` raises if any plan breaks that. `check_leakage` compares the cases a synthetic
set's GAN was trained on (datacard `training_cases.case_ids`) with the test split and, with
`strict`, with every validation fold; it refuses unless the user explicitly allows the leak, in
which case the returned record (written into the results) says so. The folds cover every real
train + val case, so `strict` passes only for a GAN trained on cases outside them: the GAN-only
`gan` split (`synthct ingest --gan-fraction F`, then `train.split: gan`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from synthct.errors import ConfigError, LeakageError
from synthct.runtime import case_ids_hash
from synthct.sets import Datacard


@dataclasses.dataclass(frozen=True)
class FoldPlan:
    """Case ids of one fold: real training, real validation, synthetic training."""

    fold: int
    train_real: tuple[str, ...]
    val: tuple[str, ...]
    train_synthetic: tuple[str, ...]


def assign_folds(centres: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0..n_folds-1) per case, stratified by centre.

    Centres with fewer cases than folds are pooled into one group (StratifiedKFold cannot spread
    them otherwise); when every centre is small the pool is the whole cohort, i.e. a shuffled
    KFold.
    """
    from sklearn.model_selection import StratifiedKFold

    n = len(centres)
    if n < n_folds:
        raise ConfigError(
            f"{n} real train/val cases cannot make {n_folds} folds (need >= {n_folds})"
        )
    counts = Counter(centres)
    groups = [c if counts[c] >= n_folds else "\0pooled" for c in centres]
    folds = np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" for the pool
        split = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(np.zeros(n), groups)
        for k, (_, val) in enumerate(split):
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


# -- leakage guard ------------------------------------------------------------------------------
def check_leakage(
    datacard: Datacard | None,
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
    tc = datacard.training_cases if datacard is not None else None
    gan_ids = tc.case_ids if tc is not None else None
    record: dict[str, Any] = {
        "set": set_name,
        "checked": gan_ids is not None,
        "generator_run": datacard.run if datacard is not None else None,
        "generator_training_split": tc.split if tc is not None else None,
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
        if tc.sha256 and tc.sha256 != case_ids_hash(gan_ids):
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
        run = datacard.run if datacard is not None else None
        msg = f"synthetic set {set_name!r} (run {run!r}): " + "; ".join(problems)
        if not allow:
            raise LeakageError(
                msg + ". Fix: retrain the GAN on the train split only (`synthct train` reads "
                "split 'train' by default; for --strict, which the folds over train + val "
                "always overlap, reserve a GAN-only split with `synthct ingest --gan-fraction F` "
                "and train with train.split: gan) and generate a new set, or pass "
                "--allow-leakage to run anyway and record it"
            )
        warnings.warn(msg + " — allowed by --allow-leakage; recorded in the results", stacklevel=2)
        record["override"] = True
        record["problems"] = problems
    return record
