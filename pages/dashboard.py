"""Dashboard: training runs, evaluations of synthetic sets, segmentation experiments.

Reads only what the library wrote (ui/results.py arranges it, ui/charts.py draws it).
"""

import streamlit as st

from ui import auth

auth.require_researcher()

from synthct.display import WINDOWS, extract_slice, render_slice, slice_with_most_mask  # noqa: E402
from synthct.io import encode_png  # noqa: E402
from ui import charts, results  # noqa: E402
from ui.state import workspace  # noqa: E402

ws = workspace()
st.title("Dashboard")


def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(max_entries=16, show_spinner=False)
def _run(root: str, name: str, stamp: float) -> results.RunView:
    return results.load_run(ws, name)


@st.cache_data(max_entries=16, show_spinner=False)
def _eval(root: str, eval_id: str, stamp: float) -> results.EvalView:
    return results.load_eval(ws, eval_id)


@st.cache_data(max_entries=32, show_spinner="Loading the nearest training case…")
def _gallery_pngs(root: str, eval_id: str, syn_id: str, train_id: str) -> tuple[bytes, ...]:
    view = results.load_eval(ws, eval_id)
    syn_hu, train_hu, mask = results.gallery_volumes(ws, view.result, syn_id, train_id)
    z = slice_with_most_mask(mask, "axial")
    win = WINDOWS["soft-tissue"]
    return (
        encode_png(render_slice(syn_hu, mask, "axial", z, win, alpha=0.3)),
        encode_png(render_slice(train_hu, None, "axial", z, win)),
        encode_png(
            charts.difference_rgb(
                extract_slice(syn_hu, "axial", z), extract_slice(train_hu, "axial", z)
            )
        ),
    )


tab_runs, tab_evals, tab_cmp, tab_seg = st.tabs(
    ["Training runs", "Evaluations", "Model comparison", "Segmentation"]
)

# -- training runs --------------------------------------------------------------------------------
with tab_runs:
    runs = ws.list_runs()
    if not runs:
        st.info("No training runs yet. Start one on **Generate & jobs** or with `synthct train`.")
    else:
        name = st.selectbox("Run", runs, key="dash-run")
        run = _run(str(ws.root), name, _mtime(ws.run_dir(name) / "losses.csv"))
        s = run.status
        model = run.config.get("model", {})
        st.caption(
            f"{model.get('kind')} · S={run.config.get('data', {}).get('size')} · "
            f"state **{s.get('state', 'unknown')}** · step {s.get('step', '—')}/"
            f"{s.get('steps', run.config.get('train', {}).get('steps'))} · "
            f"{len(run.checkpoints)} checkpoint(s) · updated {s.get('updated', '—')}"
        )
        if run.collapse_flagged:
            why = "; ".join(w for w in s.get("warnings", []) if "collapse" in w)
            st.error(f"Possible mode collapse: {why or 'flagged in collapse.csv'}")
        elif not run.collapse.empty:
            st.success("No mode collapse flagged.")
        if run.losses.empty:
            st.info("No losses logged yet.")
        else:
            c1, c2 = st.columns([1, 2])
            weight = c1.slider("EMA smoothing", 0.0, 0.99, 0.6, 0.01, key="dash-smooth")
            cols = c2.multiselect(
                "Losses", run.loss_columns, default=run.loss_columns, key=f"dash-cols-{name}"
            )
            st.plotly_chart(charts.loss_figure(run.losses, cols, weight), key="dash-loss")
        if not run.collapse.empty:
            from synthct.run_log import COLLAPSE_RATIO

            st.plotly_chart(charts.collapse_figure(run.collapse, COLLAPSE_RATIO), key="dash-col")
        if run.samples:
            steps = [step for step, _ in run.samples]
            pick = st.select_slider(
                "Sample snapshot (step)", steps, value=steps[-1], key=f"dash-snap-{name}"
            )
            path = dict(run.samples)[pick]
            st.image(path.read_bytes(), width=640, output_format="PNG")
            st.caption(f"EMA samples at step {pick}: image halves (top), masks (bottom).")
        with st.expander("Run config"):
            st.json(run.config)

# -- evaluations ----------------------------------------------------------------------------------
with tab_evals:
    evals = ws.list_evals()
    if not evals:
        st.info("No evaluations yet. Evaluate a synthetic set on **Generate & jobs**.")
    else:
        eval_id = st.selectbox("Evaluation", evals, key="dash-eval")
        view = _eval(str(ws.root), eval_id, _mtime(ws.evals / eval_id / "metrics.json"))
        r, m = view.result, view.metrics
        st.caption(results.evaluation_caption(r))
        st.subheader("Distances")
        st.dataframe(
            results.metric_table(r),
            hide_index=True,
            column_config={
                "value": st.column_config.NumberColumn(format="%.4g"),
                "ci_low": st.column_config.NumberColumn("CI 95 % low", format="%.4g"),
                "ci_high": st.column_config.NumberColumn("CI 95 % high", format="%.4g"),
                "real_vs_real": "real vs real (baseline)",
                "synthetic_vs_real_at_baseline_size": "synthetic vs real (same size)",
                "within_real_vs_real": "within real-vs-real range",
            },
        )
        st.caption(
            "CIs resample cases (patients, synthetic volumes, or groups of generated slices), "
            "never slices. n/m = real/synthetic samples (slices at slice level), d = feature "
            "dimension. FID is strongly biased at small n: read each value against the "
            "real-vs-real baseline (mean ± SD [95 % range] over case-disjoint splits). "
            "Definitions: docs/metrics.md."
        )
        if m.get("classifier_is"):
            cis = m["classifier_is"]
            st.caption(
                f"{cis['name']}: synthetic {cis['synthetic']['value']:.3f}, real "
                f"{cis.get('real', {}).get('value', float('nan')):.3f}, both on n = "
                f"{cis['synthetic'].get('n', '—')} in {cis.get('n_splits', 10)} splits"
            )
        method = st.radio(
            "Embedding", ["tsne", "pca"], horizontal=True, key="dash-emb",
            format_func={"tsne": "t-SNE (joint)", "pca": "PCA (real-fitted)"}.get,
        )  # fmt: skip
        if not view.embedding.empty:
            st.plotly_chart(charts.embedding_figure(view.embedding, method), key="dash-embfig")
        c1, c2 = st.columns(2)
        if "precision" in m:
            c1.plotly_chart(charts.prdc_figure(m), key="dash-prdc")
        else:
            c1.info("Precision/recall/density/coverage need at least 12 cases per set.")
        from synthct.metrics.diversity import find_msssim

        found = find_msssim(m)
        if found:
            c2.plotly_chart(charts.msssim_figure(found[1]), key="dash-msssim")
            if not found[1].get("standard", False):
                c2.caption(found[1].get("why", "not standard MS-SSIM"))
        else:
            c2.info("MS-SSIM diversity is computed on volumes (volume level only).")

        st.subheader("Memorisation")
        priv = m.get("privacy", {})
        if "skipped" in priv:
            st.info(priv["skipped"])
        elif not view.privacy.empty:
            space = st.radio("Space", ["feature", "voxel"], horizontal=True, key="dash-space")
            summ = priv.get(space, {})
            st.caption(
                f"{summ.get('flagged', '—')} of {summ.get('n_synthetic', '—')} synthetic cases "
                f"closer to a training case than {100 * summ.get('threshold_quantile', 0.05):.0f} % "
                f"of held-out real cases (flagged fraction {summ.get('flagged_fraction', 0):.2f}; "
                f"expected without memorisation: {summ.get('threshold_quantile', 0.05):.2f})."
            )
            st.plotly_chart(
                charts.dcr_figure(view.privacy, space, summ.get("threshold")), key="dash-dcr"
            )
            gallery = priv.get("gallery", [])
            if gallery:
                labels = [
                    f"{g['synthetic_id']} → {g['nearest_train_id']} (distance {g['distance']:.3g})"
                    for g in gallery
                ]
                i = st.selectbox(
                    "Nearest-neighbour gallery (closest first, "
                    f"{priv.get('gallery_space', 'voxel space')})",
                    range(len(gallery)),
                    format_func=labels.__getitem__,
                    key="dash-gal",
                )
                g = gallery[i]
                try:
                    pngs = _gallery_pngs(
                        str(ws.root), eval_id, g["synthetic_id"], g["nearest_train_id"]
                    )
                except Exception as e:  # noqa: BLE001 - a missing file must not break the page
                    st.warning(f"Cannot show this pair: {e}")
                else:
                    cols = st.columns(3)
                    captions = (
                        f"synthetic {g['synthetic_id']}",
                        f"nearest training case {g['nearest_train_id']}",
                        "difference (red: synthetic brighter, blue: training brighter)",
                    )
                    for col, png, cap in zip(cols, pngs, captions, strict=True):
                        col.image(png, width=280, output_format="PNG", caption=cap)

        st.subheader("HU and tumour statistics")
        st.dataframe(
            results.statistics_table(r),
            hide_index=True,
            column_config={
                k: st.column_config.NumberColumn(format="%.4g")
                for k in ("real_mean", "synthetic_mean", "wasserstein")
            },
        )
        c1, c2 = st.columns(2)
        if not view.hu_histogram.empty:
            c1.plotly_chart(charts.hu_figure(view.hu_histogram), key="dash-hu")
        if not view.case_stats.empty:
            stat = c2.selectbox(
                "Per-case statistic", list(results.STAT_LABELS),
                format_func=results.STAT_LABELS.get, key="dash-stat",
            )  # fmt: skip
            c2.plotly_chart(
                charts.stat_figure(view.case_stats, stat, results.STAT_LABELS[stat]),
                key="dash-statfig",
            )

# -- 2D and 3D models side by side -----------------------------------------------------------
with tab_cmp:
    from synthct.metrics.comparison import compare_models

    level = st.radio(
        "Level", ["slice", "volume"], horizontal=True, key="dash-cmplevel",
        format_func={"slice": "axial slices (2D and 3D models)", "volume": "volumes (3D)"}.get,
    )  # fmt: skip
    table = compare_models(ws, level=level)
    if table.empty:
        st.info(
            f"No {level}-level evaluations yet: run `synthct evaluate --synthetic SET "
            f"--level {level}` (2D sets are always evaluated on slices)."
        )
    else:
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "tier": st.column_config.NumberColumn("FID tier", format="%d"),
                "fid_within_real_vs_real": "FID within real-vs-real range",
            },
        )
        st.caption(
            "Rows are grouped by protocol: only rows with the same protocol id (extractor, real "
            "cases, resolution, slices per case, tumour mix, numbers of cases) are comparable. "
            "Within a protocol, models are not ranked by FID's point estimate: tier 1 holds the "
            "models whose FID intervals (case bootstrap, 95 %) overlap, directly or through "
            "another model, with the lowest one; each further tier lies wholly above the one "
            "before. Models in one tier are tied and listed by name. fid_real_vs_real is the "
            "real-vs-real baseline at the same number of cases. Protocol 'legacy': slice "
            "results from before the case protocol, not comparable; re-evaluate them."
        )

# -- segmentation ---------------------------------------------------------------------------------
with tab_seg:
    from synthct.segment.scores import COMPARE_LABELS, compare_experiments

    names = ws.list_experiments()
    if not names:
        st.info("No segmentation experiments yet. Start one on **Generate & jobs**.")
    else:
        table = compare_experiments(ws, names)
        st.subheader("Test-set scores")
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                k: st.column_config.NumberColumn(COMPARE_LABELS.get(k, k), format="%.4f")
                for k in table.columns
                if k.startswith(("mean_dice", "dsc_agg", "hecktor_", "hd95_mm"))
            },
        )
        st.caption(
            "Fold-ensemble scores on the held-out real test split (the layout of the thesis's "
            "Table 5.25), with 95 % bootstrap intervals over test cases (_ci_low/_ci_high). The "
            "HECKTOR 2022 score is the mean of the per-class DSCagg (GTVp, GTVn) on each case's "
            "original CT grid; it needs multiclass masks and is empty for binary ones. Mean Dice "
            "(empty ground truth excluded) and DSCagg (GTVp∪GTVn) are on the preprocessed grid. "
            "See docs/segmentation.md."
        )
        st.plotly_chart(charts.seg_scores_figure(table), key="dash-segbars")
        chosen = st.multiselect("Curves of", names, default=names, key="dash-segexp")
        value = st.radio(
            "Curve", ["val_dice", "train_loss"], horizontal=True, key="dash-segval",
            format_func={"val_dice": "validation Dice", "train_loss": "training loss"}.get,
        )  # fmt: skip
        import pandas as pd

        curves = [results.fold_curves(ws, n) for n in chosen]
        curves = [c for c in curves if not c.empty]
        if curves:
            st.plotly_chart(
                charts.fold_curve_figure(pd.concat(curves, ignore_index=True), value),
                key="dash-segcurves",
            )
