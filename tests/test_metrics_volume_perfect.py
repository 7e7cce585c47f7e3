"""Volume level (one feature vector per case): a perfect generator — held-out real cases posing
as synthetic — reads as real-vs-real on every distance metric, every interval contains its own
estimate, and a shifted generator is told apart."""

from __future__ import annotations

import numpy as np
import pytest

from synthct.metrics.distance_block import distance_metrics
from synthct.metrics.evaluation import EvalConfig

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
INFO = {"name": "fixed", "version": "1", "weights_sha256": "0" * 64}


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(11)
    cases = rng.normal(size=(70, 8))  # one distribution of patients
    real, held_out = cases[:40], cases[40:]  # the held-out 30 pose as the synthetic set
    shifted = rng.normal(size=(30, 8)) + 1.5
    opts = EvalConfig(synthetic="perfect", n_boot=200, baseline_repeats=20, kid_subsets=20)
    return {
        "perfect": distance_metrics(real, held_out, INFO, opts),
        "shifted": distance_metrics(real, shifted, INFO, opts),
    }


@pytest.mark.parametrize("key", METRICS)
def test_a_perfect_generator_reads_as_real_vs_real(results, key):
    base = results["perfect"][key]["baseline"]
    assert base["synthetic_within_real_vs_real"], (key, base)


@pytest.mark.parametrize("name", ["perfect", "shifted"])
def test_every_interval_contains_its_own_estimate(results, name):
    for key in METRICS:
        m = results[name][key]
        assert m["ci"]["low"] <= m["value"] <= m["ci"]["high"], key


def test_a_shifted_generator_is_told_apart(results):
    assert not results["shifted"]["fid"]["baseline"]["synthetic_within_real_vs_real"]
