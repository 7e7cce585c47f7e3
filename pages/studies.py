"""Studies: create a Visual Turing Test from a synthetic set, invite and revoke raters, follow
their progress, read the results and export the ratings (researchers only)."""

import streamlit as st

from ui import auth

auth.require_researcher()

from db.session import session_scope  # noqa: E402
from synthct.errors import SynthctError  # noqa: E402
from synthct.vtt import results  # noqa: E402
from ui import charts  # noqa: E402
from ui import studies as ui_studies  # noqa: E402
from ui.serve import password_configured  # noqa: E402
from ui.state import engine, workspace  # noqa: E402

ws = workspace()
st.title("Studies")

with session_scope(engine()) as s:
    overview = results.study_overviews(s)

# -- create ---------------------------------------------------------------------------------------
with st.expander("Create a study", expanded=not overview):
    from synthct.display import WINDOWS
    from synthct.vtt.render import SLABS

    sets = ws.list_sets()
    if not sets:
        st.info("No synthetic sets yet: generate one on **Generate & jobs** first.")
    else:
        with st.form("create-study"):
            c1, c2, c3 = st.columns(3)
            name = c1.text_input("Study name", key="st-name")
            syn_set = c2.selectbox("Synthetic set", sets, key="st-set")
            seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="st-seed")
            n_real = c1.number_input("Real cases (test split)", 1, 1000, 5, key="st-nreal")
            n_syn = c2.number_input("Synthetic cases", 1, 1000, 5, key="st-nsyn")
            dups = c3.number_input("Duplicates (shown twice)", 0, 100, 0, key="st-dups")
            slab = c1.selectbox(
                "Slab", SLABS, key="st-slab",
                format_func={"third": "middle third (thesis)", "full": "full volume"}.get,
            )  # fmt: skip
            window = c2.selectbox("Window", list(WINDOWS), key="st-window")
            create = st.form_submit_button("Create and seal", type="primary")
        if create:
            from synthct.vtt.design import create_study_from_workspace
            from synthct.vtt.render import RenderConfig

            try:
                with (
                    st.spinner("Rendering and sealing the study…"),
                    session_scope(engine()) as s,
                ):
                    info = create_study_from_workspace(
                        s, ws, name.strip(), syn_set, n_real=int(n_real), n_synthetic=int(n_syn),
                        duplicates=int(dups), seed=int(seed),
                        params=RenderConfig(slab=slab, window=window),
                    )  # fmt: skip
            except SynthctError as e:
                st.error(str(e))
            else:
                st.success(
                    f"Study {info.name!r} sealed: {info.n_cases} cases "
                    f"(manifest SHA-256 {info.manifest_sha256[:16]}…)."
                )
                st.session_state["st-study"] = info.name
                with session_scope(engine()) as s:
                    overview = results.study_overviews(s)

if not overview:
    st.info("No studies yet.")
    st.stop()

st.dataframe(ui_studies.overview_rows(overview), hide_index=True)
names = [o.name for o in overview]
if st.session_state.get("st-study") not in names:
    st.session_state["st-study"] = names[0]
study = st.selectbox("Study", names, key="st-study")

tab_raters, tab_results = st.tabs(["Raters", "Results"])

# -- raters ---------------------------------------------------------------------------------------
with tab_raters:
    from synthct.vtt import flow

    default_url = ui_studies.default_base_url(
        st.context.url, st.get_option("server.baseUrlPath") or ""
    )
    if not password_configured():
        st.warning(
            "No researcher password is set: this app serves only this machine, so invite links "
            "work only here, and anyone who reached it without a token would see every page. "
            "Before inviting raters elsewhere, set a password (`synthct password-hash`) and "
            "serve the app behind TLS (README, “Multi-site setup”).",
            icon=":material/warning:",
        )
    with st.form("invite"):
        c1, c2 = st.columns(2)
        rater_name = c1.text_input("Rater name", key="st-rater")
        base_url = c2.text_input("App address for the link", value=default_url, key="st-base")
        invite = st.form_submit_button("Invite", type="primary")
    links = st.session_state.setdefault("st-links", {})
    if invite:
        try:
            with session_scope(engine()) as s:
                inv = flow.invite(s, study, rater_name, base_url=base_url.strip() or default_url)
        except SynthctError as e:
            st.error(str(e))
        else:
            links[(study, inv.name)] = inv.link
    shown = {r: link for (sname, r), link in links.items() if sname == study}
    if shown:
        st.caption(
            "Invite links: each is personal to its rater and works in any browser, any number "
            "of times, until you revoke it; anyone holding it rates as that rater. Copy them "
            "now: the token is stored only as a hash and cannot be shown again after you leave "
            "this page."
        )
        for r, link in shown.items():
            st.markdown(f"**{r}**")
            st.code(link, language="text")

    with session_scope(engine()) as s:
        progress = results.rater_progress(s, study)
    if progress:
        st.dataframe(
            ui_studies.progress_rows(progress),
            hide_index=True,
            column_config={
                "progress": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0),
                "invited": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            },
        )
        active = [r.name for r in progress if not r.revoked]
        if active:
            c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
            who = c1.selectbox("Revoke the link of", active, key="st-revoke-who")
            if c2.button("Revoke", key="st-revoke"):
                try:
                    with session_scope(engine()) as s:
                        flow.revoke(s, study, who)
                except SynthctError as e:
                    st.error(str(e))
                else:
                    links.pop((study, who), None)
                    st.rerun()
    else:
        st.caption("No raters invited yet.")

# -- results --------------------------------------------------------------------------------------
with tab_results:
    threshold = st.slider(
        "Threshold: scores above it count as a 'synthetic' call", 0, 9, 5, key="st-thr"
    )
    try:
        with session_scope(engine()) as s:
            ratings = results.study_ratings(s, ws, study)
        stats = ratings.statistics(threshold)
    except SynthctError as e:
        st.error(str(e))
        st.stop()
    if not stats.ratings:
        st.info("No ratings yet.")
        st.stop()
    if stats.warning:
        st.warning(stats.warning)
    st.caption(
        f"{stats.ratings} ratings · {stats.n_real} real and {stats.n_synthetic} synthetic "
        f"cases · {stats.threshold_rule} · AUC CI: {stats.auc_ci_method}"
    )
    st.subheader("Per rater")
    st.dataframe(
        ui_studies.rater_table(stats),
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.3f")
            for k in (
                "mean real",
                "mean synthetic",
                "AUC",
                "accuracy",
                "sensitivity",
                "specificity",
                "Mann–Whitney p",
                "binomial p",
                "median s/case",
            )
        },  # fmt: skip
    )
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.rater_means_figure(stats.raters), key="st-means")
    c2.plotly_chart(charts.roc_figure(ratings.frame()), key="st-roc")

    ag = stats.agreement
    m1, m2, m3 = st.columns(3)
    k, a = ag.fleiss_kappa_calls, ag.krippendorff_alpha_interval
    m1.metric("Fleiss κ (calls)", "n/a" if k is None else f"{k:.3f}")
    m2.metric("Krippendorff α (interval)", "n/a" if a is None else f"{a:.3f}")
    m3.metric("Median seconds per case", f"{stats.median_seconds_per_case:.1f}")
    if ag.raters < 2:
        st.caption("Agreement needs at least two raters.")

    st.subheader("Scores per case")
    c1, c2 = st.columns(2)
    for col, truth in ((c1, "real"), (c2, "synthetic")):
        col.markdown(f"**{truth.capitalize()} cases** (rows: cases, last row: mean)")
        col.dataframe(ui_studies.score_frame(stats, truth))
    st.dataframe(ui_studies.per_case_frame(stats), hide_index=True)
    if stats.intra_rater:
        st.subheader("Intra-rater consistency (duplicates)")
        st.dataframe(ui_studies.intra_rater_rows(stats), hide_index=True)

    st.download_button(
        "Download ratings (CSV)",
        ratings.export_csv().encode(),  # no cell a spreadsheet would run as a formula
        file_name=f"{study}-ratings.csv",
        mime="text/csv",
        key="st-export",
    )
