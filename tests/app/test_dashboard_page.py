"""AppTest: the Dashboard shows what the library wrote for runs, evaluations and segmentation."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.app.helpers import APP, ROOT
from tests.app.tiny_workspace import RUN, SET


def _dashboard() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("pages/dashboard.py").run()
    assert not at.exception, at.exception
    return at


def _figures(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _array(v) -> np.ndarray:
    """A plotly JSON array: a plain list or a typed array {"dtype", "bdata" (base64)}."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)


def test_dashboard_runs_evals_and_segmentation(tiny_ws):
    at = _dashboard()
    assert at.title[0].value == "Dashboard"

    # -- run: status caption, collapse flag from collapse.csv, loss curves, snapshot
    status = json.loads((tiny_ws.run_dir(RUN) / "status.json").read_text())
    collapse = pd.read_csv(tiny_ws.run_dir(RUN) / "collapse.csv")
    assert f"step {status['step']}/{status['steps']}" in at.caption[0].value
    if collapse["flagged"].any():
        assert any("mode collapse" in e.value for e in at.error)
    else:
        assert any("No mode collapse" in s.value for s in at.success)
    losses = pd.read_csv(tiny_ws.run_dir(RUN) / "losses.csv")
    loss_fig = _figures(at)[0]
    names = {t.get("name") for t in loss_fig["data"]}
    assert {c for c in losses.columns if c not in ("step", "wall_s")} <= names
    at.slider(key="dash-smooth").set_value(0.0).run()  # no smoothing: the curve is the raw log
    g = next(t for t in _figures(at)[0]["data"] if t.get("name") == "g_loss")
    np.testing.assert_allclose(_array(g["y"]), losses["g_loss"].to_numpy())
    assert any("EMA samples at step" in c.value for c in at.caption)

    # -- evaluation: the metric table holds metrics.json's values with n, m, d and the baseline
    eval_dir = next(tiny_ws.evals.iterdir())
    result = json.loads((eval_dir / "metrics.json").read_text())
    table = at.dataframe[0].value
    fid = table.set_index("metric").loc["FID"]
    m = result["metrics"]["fid"]
    assert fid["value"] == pytest.approx(m["value"])
    assert (fid["n"], fid["m"], fid["d"]) == (m["n"], m["m"], m["d"])
    assert fid["ci_low"] == pytest.approx(m["ci"]["low"])
    assert f"{m['baseline']['real_vs_real']['mean']:.4g}" in fid["real_vs_real"]
    assert fid["weights_sha256"] == m["extractor"]["weights_sha256"][:12]
    # embedding scatter: one trace per group (real-train, real-test, synthetic)
    emb = pd.read_csv(eval_dir / "embedding.csv")
    groups = set(emb["group"])
    scatter = next(f for f in _figures(at) if f["layout"]["title"]["text"].startswith("t-SNE"))
    assert {t["name"] for t in scatter["data"]} == groups
    # nearest-neighbour gallery: synthetic / nearest training case / difference
    gallery = result["metrics"]["privacy"]["gallery"]
    captions = [img.proto.imgs[0].caption for img in at.image]
    assert f"synthetic {gallery[0]['synthetic_id']}" in captions
    assert f"nearest training case {gallery[0]['nearest_train_id']}" in captions
    # statistics with Wasserstein distances
    stats = at.dataframe[1].value.set_index("quantity")
    w = result["metrics"]["statistics"]["tumour_ml"]["wasserstein"]
    assert stats.loc["Tumour volume (mL)", "wasserstein"] == pytest.approx(w)

    # -- segmentation: the side-by-side test scores
    seg = at.dataframe[2].value.set_index("experiment")
    for name in ("real", f"mixed-{SET}"):
        res = json.loads((tiny_ws.segmentation / name / "results.json").read_text())
        assert seg.loc[name, "mean_dice"] == pytest.approx(res["test"]["mean_dice"])
        assert seg.loc[name, "dsc_agg_union"] == pytest.approx(res["test"]["dsc_agg_union"])
        ci = res["test"]["ci"]["mean_dice"]
        assert seg.loc[name, "mean_dice_ci_low"] == pytest.approx(ci["low"])
    curves = next(f for f in _figures(at) if "Per-fold" in f["layout"]["title"]["text"])
    assert len(curves["data"]) == 4  # 2 experiments x 2 folds


def test_dashboard_without_results_explains_what_to_do(tiny_ws):
    import shutil

    for folder in (tiny_ws.runs, tiny_ws.evals, tiny_ws.segmentation):
        shutil.rmtree(folder)
    at = _dashboard()
    texts = " ".join(i.value for i in at.info)
    assert "No training runs yet" in texts
    assert "No evaluations yet" in texts
    assert "No segmentation experiments yet" in texts


@pytest.mark.parametrize("page", ["dashboard.py", "generate.py", "studies.py"])
def test_page_scripts_refuse_a_session_without_role(workspace, page):
    """Run directly (a fresh server, before the router), a page shows nothing but the refusal."""
    at = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=60).run()
    assert "not available" in at.error[0].value
    assert len(at.title) == 0 and len(at.button) == 0


def test_dashboard_compares_models_at_volume_level(tiny_ws):
    from synthct.metrics.comparison import compare_models

    at = _dashboard()
    at.radio(key="dash-cmplevel").set_value("volume").run()
    expected = compare_models(tiny_ws, level="volume")
    assert not expected.empty
    shown = next(d.value for d in at.dataframe if "model_kind" in getattr(d.value, "columns", []))
    assert list(shown["set"]) == list(expected["set"])
    np.testing.assert_allclose(shown["fid"].to_numpy(), expected["fid"].to_numpy())
