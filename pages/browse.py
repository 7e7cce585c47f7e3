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

if ws.root.name == "workspace" or "demo" in ws.root.name:
    st.caption(f"Workspace: `{ws.root}`")

side_by_side = st.toggle("Side by side", value=len(sources) > 1)
columns = st.columns(2) if side_by_side else [st.container()]
real_first = [s for s in sources if s.kind == "real"] + [s for s in sources if s.kind != "real"]
for i, col in enumerate(columns):
    with col:
        default = 0
        if i == 1:  # second column starts on the first synthetic set, if any
            default = next((j for j, s in enumerate(real_first) if s.kind == "synthetic"), 0)
        source = st.selectbox(
            "Data set", real_first, index=default, format_func=lambda s: s.label, key=f"src{i}"
        )
        ids = data.case_ids(ws, source)
        if not ids:
            st.warning(f"{source.label} has no cases.")
            continue
        case_id = st.selectbox("Case", ids, key=f"case{i}-{source.label}")
        case = data.load_case(str(ws.root), source.kind, source.key, case_id)
        width = 460 if side_by_side else 640
        slice_viewer(f"v{i}", case.image_hu, case.mask, width=width, spacing=case.spacing)
        with st.expander("Case details"):
            st.table({k: [str(v)] for k, v in case.meta.items()})
