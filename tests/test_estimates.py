"""Training-time estimates come from measured benchmarks only, and add stages up."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthct.config import load_run_config, load_yaml
from synthct.estimates import TABLE, human, train_estimate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_every_benchmarked_config_exists_and_every_figure_is_positive():
    table = load_yaml(TABLE)
    assert table["machine"] and table["measured"]
    for name, segments in table["configs"].items():
        assert (CONFIGS / name).is_file(), name
        assert segments[-1][0] is None and all(s > 0 for _, s in segments)


def test_a_one_stage_config_is_steps_times_seconds_per_step():
    est = train_estimate(CONFIGS / "hagan-demo-64.yaml")
    steps = load_run_config(CONFIGS / "hagan-demo-64.yaml").train.steps
    assert est.steps == steps and est.seconds == pytest.approx(steps * 0.83)
    assert train_estimate(CONFIGS / "hagan-demo-64.yaml", steps=10).seconds == pytest.approx(8.3)


def test_a_two_stage_config_adds_both_stages():
    cfg = load_run_config(CONFIGS / "ldm-tiny.yaml")
    ae = cfg.model.section.autoencoder_steps
    assert ae == 150  # the table's stage boundary is this config's
    est = train_estimate(CONFIGS / "ldm-tiny.yaml")
    assert est.seconds == pytest.approx(ae * 0.029 + (cfg.train.steps - ae) * 0.041)
    assert train_estimate(CONFIGS / "ldm-tiny.yaml", steps=100).seconds == pytest.approx(2.9)


def test_an_unmeasured_config_gets_no_estimate():
    assert train_estimate(CONFIGS / "hagan-128.yaml") is None


def test_human_durations():
    assert (human(40), human(840), human(7200)) == ("40 s", "14 min", "2.0 h")
