"""The dashboard labels metrics as evaluation recorded them: MS-SSIM with its kernel, the model
comparison with its protocol and tiers, slice results with their case protocol."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP


def _dashboard() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/dashboard.py").run()
    assert not at.exception, at.exception
    return at


def test_msssim_is_shown_under_its_kernel_and_comparison_under_protocol_and_tier(tiny_ws):
    result = json.loads(next(tiny_ws.evals.glob("*/metrics.json")).read_text())
    keys = [k for k in result["metrics"] if k.startswith("msssim")]
    assert keys == ["msssim_k3_s4"]  # 32^3 pairs: too small for kernel 11 at 5 scales
    ms = result["metrics"]["msssim_k3_s4"]
    assert ms["kernel_size"] == 3 and ms["scales"] == 4 and not ms["standard"]
    at = _dashboard()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "Diversity: 3D MS-SSIM, kernel 3, 4 scales (not standard)" in titles
    assert any("too small for kernel 11" in c.value for c in at.caption)
    at.radio(key="dash-cmplevel").set_value("volume").run()
    shown = next(d.value for d in at.dataframe if "model_kind" in getattr(d.value, "columns", []))
    assert {"protocol", "tier", "fid_low", "fid_high", "kid_low", "kid_high"} <= set(shown.columns)
    assert shown["tier"].tolist() == [1.0]
    assert any("not ranked by FID's point estimate" in c.value for c in at.caption)


def test_evaluation_caption_states_the_slice_protocol():
    from synthct.metrics.results import EvalResult
    from ui.results import evaluation_caption, metric_table

    result = {
        "level": "slice",
        "options": {"part": "pair"},
        "real": {"split": "test", "n_cases": 105, "n": 840},
        "synthetic": {"set": "fg", "m_cases": 105, "case": "group of 8 generated slices"},
        "slices": {"resolution": 128, "slices_per_case": 8},
        "tumour_mix": {"value": "natural", "source": "run fg: train_cases.json"},
        "extractor": {"name": "default", "weights_sha256": "ab" * 32},
        "metrics": {
            "fid": {
                "value": 2.0, "ci": {"low": 1.5, "high": 2.6}, "n": 840, "m": 840, "d": 128,
                "n_cases": 105, "m_cases": 105, "slices_per_case": 8,
                "baseline": {
                    "size": 52, "synthetic_within_real_vs_real": True,
                    "real_vs_real": {"mean": 3.0, "std": 0.2, "low": 2.7, "high": 3.4},
                    "synthetic_vs_real": {"mean": 3.1, "std": 0.2, "low": 2.8, "high": 3.5},
                },
            }
        },
    }  # fmt: skip
    text = evaluation_caption(EvalResult.from_json(result))
    assert "105 real vs 105 synthetic cases (group of 8 generated slices)" in text
    assert "8 slices per case" in text and "tumour mix natural (run fg: train_cases.json)" in text
    row = metric_table(EvalResult.from_json(result)).iloc[0]
    assert row["real_vs_real"] == "3 ± 0.2 [2.7, 3.4]" and bool(row["within_real_vs_real"])
    assert (row["n_cases"], row["m_cases"], row["slices_per_case"]) == (105, 105, 8)
    legacy = {**result, "slices": {"resolution": 128}}
    assert "legacy protocol" in evaluation_caption(EvalResult.from_json(legacy))
