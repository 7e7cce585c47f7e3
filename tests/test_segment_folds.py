"""Fold assignment and the leakage guard: synthetic cases only in training, test cases nowhere."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import numpy as np
import pytest

from synthct.errors import ConfigError, LeakageError
from synthct.runtime import case_ids_hash
from synthct.segment.folds import (
    FoldPlan,
    assign_folds,
    check_leakage,
    check_plans,
    plan_folds,
)
from synthct.sets import Datacard

EXPERIMENTS = ("real", "synthetic", "mixed", "pretrain-finetune")


def _cohort(sizes: dict[str, int]):
    ids, centres = [], []
    for centre, n in sizes.items():
        for i in range(n):
            ids.append(f"{centre}-{i:03d}")
            centres.append(centre)
    return ids, centres


@pytest.mark.parametrize(
    ("sizes", "n_folds", "seed", "experiment"),
    [
        (sizes, k, seed, exp)
        for (sizes, k), seed, exp in itertools.product(
            [
                ({"CHUM": 11, "CHUP": 14, "MDA": 40, "HMR": 3}, 5),
                ({"A": 3, "B": 2, "C": 1}, 4),  # every centre smaller than k: one pool
                ({"A": 7, "B": 6}, 2),
            ],
            [0, 7],
            EXPERIMENTS,
        )
    ],
)
def test_fold_plans_keep_synthetic_and_test_out_of_validation(sizes, n_folds, seed, experiment):
    ids, centres = _cohort(sizes)
    synthetic = [f"SYN-{i:04d}" for i in range(9)]
    test = [f"TEST-{i:03d}" for i in range(4)]
    plans = plan_folds(ids, centres, synthetic, experiment, n_folds, seed, test)
    assert len(plans) == n_folds
    # every real case is validated exactly once
    assert Counter(i for p in plans for i in p.val) == Counter(ids)
    for p in plans:
        assert not set(p.val) & set(synthetic)
        assert not (set(p.val) | set(p.train_real) | set(p.train_synthetic)) & set(test)
        assert not set(p.val) & set(p.train_real)
        if experiment == "synthetic":
            assert p.train_real == () and set(p.train_synthetic) == set(synthetic)
        else:
            assert set(p.train_real) | set(p.val) == set(ids)
        if experiment == "mixed":
            assert set(p.train_synthetic) == set(synthetic)
        if experiment in ("real", "pretrain-finetune"):
            assert p.train_synthetic == ()


def test_folds_are_stratified_by_centre():
    ids, centres = _cohort({"CHUM": 10, "MDA": 25, "HMR": 2, "CHUV": 1})
    folds = assign_folds(centres, 5, seed=3)
    for centre, n in (("CHUM", 10), ("MDA", 25)):
        per_fold = Counter(folds[[c == centre for c in centres]])
        assert sorted(per_fold.values()) == [n // 5] * 5
    # the pooled small centres are spread, not stacked in one fold
    pooled = folds[[c in ("HMR", "CHUV") for c in centres]]
    assert len(set(pooled.tolist())) == 3
    assert np.array_equal(folds, assign_folds(centres, 5, seed=3))  # seeded


def test_too_few_cases_for_the_folds():
    with pytest.raises(ConfigError, match="3 real train/val cases cannot make 5 folds"):
        assign_folds(["A", "A", "B"], 5, 0)


def test_check_plans_rejects_synthetic_in_validation():
    bad = [FoldPlan(0, ("R1",), ("R2", "SYN-1"), ("SYN-1",))]
    with pytest.raises(LeakageError, match="fold 0: synthetic case.*SYN-1"):
        check_plans(bad, [], ["SYN-1"])
    with pytest.raises(LeakageError, match="test case.*in training: R1"):
        check_plans([FoldPlan(0, ("R1",), ("R2",), ())], ["R1"], [])


def _card(case_ids, split="train", sha=None):
    return Datacard.from_json(
        {
            "run": "hagan-1",
            "training_cases": {
                "split": split,
                "case_ids": case_ids,
                "sha256": sha if sha is not None else case_ids_hash(case_ids),
            },
        }
    )


@pytest.fixture
def cohort():
    ids, centres = _cohort({"A": 6, "B": 6})
    test = ["A-900", "B-901", "B-902"]
    plans = plan_folds(ids, centres, ["SYN-0001"], "mixed", 3, 0, test)
    return ids, test, plans


def test_ids_hash_matches_the_contract():
    ids = ["b", "a", "c"]
    assert case_ids_hash(ids) == hashlib.sha256(b"a\nb\nc").hexdigest()


def test_guard_refuses_generator_trained_on_test_cases(cohort):
    ids, test, plans = cohort
    card = _card(ids + ["B-901", "A-900"], split="all")
    with pytest.raises(LeakageError) as e:
        check_leakage(card, set_name="gan", test_ids=test, plans=plans)
    msg = str(e.value)
    assert "2 test case(s): A-900, B-901" in msg and "B-902" not in msg
    assert "'gan'" in msg and "--allow-leakage" in msg and "train split" in msg


def test_guard_accepts_train_only_generator_unless_strict(cohort):
    ids, test, plans = cohort
    card = _card(ids[:8])  # GAN trained on some of the CV cases, none of the test cases
    record = check_leakage(card, set_name="gan", test_ids=test, plans=plans)
    assert record["checked"] and not record["override"] and record["test_overlap"] == []
    overlapping = {k: v for k, v in record["val_overlap"].items()}
    assert overlapping and all(set(v) <= set(ids[:8]) for v in overlapping.values())
    with pytest.raises(LeakageError, match=r"--strict.*validation case\(s\) of fold"):
        check_leakage(card, set_name="gan", test_ids=test, plans=plans, strict=True)
    # a GAN trained on cases outside the folds passes the strict check
    clean = check_leakage(_card(["Z-1"]), set_name="g", test_ids=test, plans=plans, strict=True)
    assert clean["val_overlap"] == {} and not clean["override"]


def test_override_is_recorded(cohort):
    ids, test, plans = cohort
    with pytest.warns(UserWarning, match="allowed by --allow-leakage"):
        record = check_leakage(
            _card(ids + test), set_name="gan", test_ids=test, plans=plans, allow=True
        )
    assert record["override"] is True and record["allow_leakage"] is True
    assert record["test_overlap"] == sorted(test)


def test_guard_refuses_unverifiable_datacards(cohort):
    _, test, plans = cohort
    with pytest.raises(LeakageError, match="no training_cases.case_ids"):
        check_leakage(Datacard.from_json({"run": "x"}), set_name="g", test_ids=test, plans=plans)
    with pytest.raises(LeakageError, match="sha256 does not match"):
        check_leakage(_card(["Z-1"], sha="0" * 64), set_name="g", test_ids=test, plans=plans)
