"""The Dashboard's mode-collapse indicator: its three states (never green before the alarm could
have fired), the ratio against the threshold at every check, and the chart's axes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP
from tests.app.tiny_workspace import RUN
from ui import charts
from ui.results import (
    COLLAPSE_FLAGGED,
    NO_COLLAPSE_FLAGGED,
    TOO_FEW_CHECKS,
    collapse_state,
)


def _checks(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["step", "sample_diversity", "real_diversity", "flagged"])


# The shipped demo run's only check: 0.041470 / 0.171027 = 0.2425x real, alarm 0.25x.
ONE_LOW_CHECK = [(6000, 0.041470, 0.171027, 0)]


def test_one_check_is_not_enough_and_never_green():
    s = collapse_state(_checks(ONE_LOW_CHECK), flagged=False, threshold=0.25, needed=2)
    assert s.state == TOO_FEW_CHECKS
    assert s.checks == 1 and s.latest_step == 6000
    assert s.latest_ratio == pytest.approx(0.041470 / 0.171027)
    assert s.latest_below and s.level == "warning"
    assert (
        "1 check, the alarm needs 2 consecutive" in s.message
        and "0.24× real" in s.message
        and "0.25×" in s.message
    )
    # a single check above the alarm level is still "not enough checks", shown neutral
    high = collapse_state(_checks([(200, 0.15, 0.17, 0)]), flagged=False, threshold=0.25, needed=2)
    assert high.state == TOO_FEW_CHECKS and high.level == "info"


def test_no_check_yet():
    s = collapse_state(_checks([]), flagged=False, threshold=0.25, needed=2)
    assert s.state == TOO_FEW_CHECKS and s.latest_ratio is None and s.level == "info"
    assert "no check has run yet" in s.message


def test_flagged():
    rows = [(200, 0.03, 0.17, 0), (400, 0.02, 0.17, 1)]
    s = collapse_state(_checks(rows), flagged=True, threshold=0.25, needed=2)
    assert s.state == COLLAPSE_FLAGGED and s.level == "error"
    assert "mode collapse" in s.message and "2 checks" in s.message
    assert f"{0.02 / 0.17:.2f}× real" in s.message


def test_no_collapse_flagged_after_enough_checks():
    rows = [(200, 0.02, 0.17, 0), (400, 0.12, 0.16, 0), (600, 0.14, 0.175, 0)]
    s = collapse_state(_checks(rows), flagged=False, threshold=0.25, needed=2)
    assert s.state == NO_COLLAPSE_FLAGGED and s.level == "success"
    assert s.message.startswith("No mode collapse flagged (3 checks, latest ratio 0.80× real")
    assert "threshold 0.25×" in s.message
    # enough checks but the last one below the level: not flagged yet, and not green either
    low_last = collapse_state(_checks(rows + [(800, 0.01, 0.17, 0)]), False, 0.25, 2)
    assert low_last.state == NO_COLLAPSE_FLAGGED and low_last.level == "warning"


def test_default_threshold_and_checks_are_the_training_loops():
    from synthct.run_log import COLLAPSE_CHECKS, COLLAPSE_RATIO

    s = collapse_state(_checks(ONE_LOW_CHECK), flagged=False)
    assert (s.threshold, s.needed) == (COLLAPSE_RATIO, COLLAPSE_CHECKS)


def test_collapse_chart_plots_the_ratio_on_the_whole_run():
    fig = charts.collapse_figure(_checks(ONE_LOW_CHECK), 0.25, steps=6000)
    trace = fig.data[0]
    assert list(trace.x) == [6000]
    assert trace.y[0] == pytest.approx(0.041470 / 0.171027)
    lo, hi = fig.layout.xaxis.range
    assert lo == 0 and hi >= 6000  # not a 5999-6001 axis around one point
    ylo, yhi = fig.layout.yaxis.range
    assert ylo == 0 and yhi >= 1.0  # the real level (1x) and the threshold are both in view
    lines = sorted(s.y0 for s in fig.layout.shapes)
    assert lines == [0.25, 1.0]


def test_dashboard_with_one_check_says_not_enough_checks(tiny_ws):
    run_dir = tiny_ws.run_dir(RUN)
    _checks(ONE_LOW_CHECK).to_csv(run_dir / "collapse.csv", index=False)
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "warnings": []}))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/dashboard.py").run()
    assert not at.exception, at.exception
    assert not any("collapse" in s.value for s in at.success)
    warning = next(w.value for w in at.warning if "collapse" in w.value)
    assert "Not enough collapse checks yet" in warning and "0.24× real" in warning
    spec = next(
        json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
        if "Mode-collapse" in json.loads(c.proto.spec)["layout"]["title"]["text"]
    )
    assert spec["layout"]["xaxis"]["range"][0] == 0
