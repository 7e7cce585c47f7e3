"""Browse real and synthetic cases slice by slice, with mask overlays, side by side."""

import streamlit as st

from ui import auth, data
from ui.state import workspace
from ui.viewer import slice_viewer

auth.require_researcher()

ws = workspace()
st.title("Browse")
sources = data.sources(ws)
if not sources:
    st.info(
        "No data yet. Ingest cases with `synthct ingest SRC` (or build the demo with "
        "`synthct demo`), then reload this page."
    )
    st.stop()

side_by_side = st.toggle("Side by side", value=len(sources) > 1)
columns = st.columns(2) if side_by_side else [st.container()]
# Left starts on real cases on the preprocessed grid (the GAN's view), right on a synthetic set.
first_synthetic = next((j for j, s in enumerate(sources) if s.kind == "synthetic"), 0)
for i, col in enumerate(columns):
    with col:
        source = st.selectbox(
            "Data set",
            sources,
            index=first_synthetic if i == 1 else 0,
            format_func=lambda s: s.label,
            key=f"src{i}",
        )
        ids = data.case_ids(ws, source)
        if not ids:
            st.warning(f"{source.label} has no cases.")
            continue
        case_id = st.selectbox("Case", ids, key=f"case{i}-{source.label}")
        case = data.load_case(str(ws.root), source.kind, source.key, case_id)
        width = 460 if side_by_side else 640
        # One viewer state per case: a new case opens on its own tumour slice.
        key = f"v{i}-{source.kind}-{source.key}-{case_id}"
        slice_viewer(key, case.image_hu, case.mask, width=width, spacing=case.spacing)
        with st.expander("Case details"):
            st.table({k: [str(v)] for k, v in case.meta.items()})
