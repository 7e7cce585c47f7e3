"""Browse real and synthetic cases: NiiVue (multiplanar + 3D, linked side by side) or PNG slices."""

import streamlit as st

from ui import auth, data
from ui.state import workspace
from ui.viewer import niivue_viewer, slice_viewer, viewer_case

auth.require_researcher()

NIIVUE, PNG = "NiiVue (3D)", "Slices (PNG)"

ws = workspace()
head, c1, c2 = st.columns([2, 1, 2], vertical_alignment="bottom")
head.title("Browse")
sources = data.sources(ws)
if not sources:
    st.info(
        "No data yet. Ingest cases with `synthct ingest SRC` (or build the demo with "
        "`synthct demo`), then reload this page."
    )
    st.stop()

side_by_side = c1.toggle("Side by side", value=len(sources) > 1)
mode = c2.segmented_control(
    "Viewer",
    [NIIVUE, PNG],
    default=NIIVUE,
    key="viewer-mode",
    label_visibility="collapsed",
    help="NiiVue runs in the browser (WebGL 2): wheel scroll, zoom, pan, drag window/level, "
    "3D. The PNG slices are rendered on the server and work in any browser.",
)
columns = st.columns(2) if side_by_side else [st.container()]
# Left starts on real cases on the preprocessed grid (the GAN's view), right on a synthetic set.
first_synthetic = next((j for j, s in enumerate(sources) if s.kind == "synthetic"), 0)
chosen = []
for i, col in enumerate(columns):
    with col:
        pick_set, pick_case = st.columns([3, 2])
        source = pick_set.selectbox(
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
        case_id = pick_case.selectbox("Case", ids, key=f"case{i}-{source.label}")
        chosen.append((i, source, case_id))
        if mode == PNG:
            case = data.load_case(str(ws.root), source.kind, source.key, case_id)
            width = 460 if side_by_side else 640
            # One viewer state per case: a new case opens on its own tumour slice.
            key = f"v{i}-{source.kind}-{source.key}-{case_id}"
            slice_viewer(key, case.image_hu, case.mask, width=width, spacing=case.spacing)

if mode != PNG and chosen:
    cases = [
        viewer_case(str(ws.root), s.kind, s.key, cid, f"{s.label} · {cid}") for _, s, cid in chosen
    ]
    niivue_viewer(cases, key="niivue", min_height=380)

details = st.columns(len(columns))
for i, source, case_id in chosen:
    with details[i], st.expander(f"Case details · {case_id}"):
        case = data.load_case(str(ws.root), source.kind, source.key, case_id)
        st.table({k: [str(v)] for k, v in case.meta.items()})
