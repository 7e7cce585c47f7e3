"""First start: an empty workspace becomes the built-in demo; researchers see what it is.

`ensure_workspace` runs only the stages Browse and the demo study need (synthct.demo), with a
progress bar, and submits the slow ones (evaluation, segmenter) as background jobs; an
interrupted build continues on the next visit or server start. `demo_notice` tells a researcher
what the demo workspace holds, how its background jobs are doing and the demo raters' links.
Both are called only on the researcher branch of the router: raters never see them.
"""

from __future__ import annotations

import fcntl

import streamlit as st

from synthct import demo  # through the module: tests stand in for its functions
from synthct.workspace import Workspace
from ui.state import workspace

ABOUT = (
    "This workspace is synthct's **built-in demo**: {n_cases} procedural head-and-neck CT "
    "phantoms with tumour masks from seven simulated centres (no patient data), split into "
    "train and test cases and preprocessed at S = {size}; a small HA-GAN trained on CPU on the "
    "train split (the checkpoint shipped with synthct, or one trained here); a synthetic set of "
    "{n_synthetic} generated image + mask pairs; and a Visual Turing Test study with two demo "
    "raters. Compare real and synthetic cases in **Browse**; the evaluation and a small "
    "segmenter run as background jobs in **Generate & jobs** and then appear in **Dashboard**."
)


def ensure_workspace() -> None:
    """Build or resume the demo when the workspace needs it (see synthct.demo), then make sure
    its background stages are submitted."""
    try:
        from synthct import demo  # optional dependency
    except ImportError:
        return
    ws = workspace()
    if demo.first_start_needed(ws):
        _first_start(ws)
    if demo.is_demo(ws) and demo.pending_stages(ws, background=True):
        _resubmit_once(str(ws.root))


def _first_start(ws) -> None:
    label = "First start: building the demo workspace…"
    with st.status(label, expanded=True) as status:
        st.caption(
            "Only what Browse needs is built now; the evaluation and a small segmenter follow "
            "as background jobs. Closing the tab is safe: the build continues where it stopped "
            "on the next visit."
        )
        bar = st.progress(0.0)

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=message)

        # One builder at a time: a second visitor waits, then finds every stage done.
        with open(ws.demo_lock, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                demo.build_demo(ws, progress=progress, background="jobs")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        status.update(label="Demo workspace ready", state="complete", expanded=False)
    st.session_state["demo-fresh"] = True


@st.cache_resource(max_entries=4, show_spinner=False)
def _resubmit_once(root: str) -> dict[str, int]:
    """Once per server process: background stages whose job ended without finishing (an
    earlier server stopped, the machine restarted) are submitted again."""

    return demo.submit_background(Workspace.resolve(root), retry_ended=True)


def demo_notice() -> None:
    """What the demo is, its background jobs and the demo study's rater links (researchers)."""

    ws = workspace()
    if not demo.is_demo(ws) or demo.pending_stages(ws, background=False):
        return
    s = demo.load_settings(ws)
    fresh = st.session_state.get("demo-fresh", False)  # open for the session that built it
    with st.expander("About this demo workspace", expanded=fresh, icon=":material/info:"):
        st.markdown(ABOUT.format(n_cases=s.n_cases, size=s.size, n_synthetic=s.n_synthetic))
        _jobs_line(ws)
        _links(ws)


def _jobs_line(ws) -> None:
    parts = []
    for name in ("evaluate", "segment"):
        if demo.stage_done(ws, name):
            parts.append(f"{name}: done")
            continue
        job = demo.stage_job(ws, name)
        parts.append(f"{name}: job {job.id} {job.status}" if job else f"{name}: not submitted")
    st.caption("Background stages — " + " · ".join(parts) + " (see Generate & jobs).")


def _links(ws) -> None:
    from ui.studies import default_base_url  # deferred: loads pandas, scipy

    base = default_base_url(st.context.url, st.get_option("server.baseUrlPath") or "")
    links = demo.invite_links(ws, base)
    if not links:
        st.caption(f"The demo study `{demo.DEMO_STUDY}` has no active demo rater links.")
        return
    st.markdown(
        f"**Demo study `{demo.DEMO_STUDY}` — rater links.** Each opens only the rating page, as a "
        "rater sees it (try one in a private window). They are personal: whoever holds one "
        "rates as that rater. Invite real raters in **Studies**."
    )
    for name, link in links.items():
        st.text(name)
        st.code(link, language="text")
