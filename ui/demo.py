"""First start: a workspace with no data is filled with the built-in demo, with progress shown."""

from __future__ import annotations

import streamlit as st

from ui.state import workspace


def ensure_workspace() -> None:
    """Build the demo workspace (synthct.demo) when the workspace holds no ingested cases."""
    ws = workspace()
    if ws.case_index.exists():
        return
    try:
        from synthct.demo import build_demo
    except ImportError:
        return
    import fcntl

    with st.status("First start: building the demo workspace…", expanded=True) as status:
        bar = st.progress(0.0)

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=message)

        # One builder at a time: a second visitor waits, then finds every stage done.
        with open(ws.root / ".demo.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                build_demo(ws, progress=progress)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        status.update(label="Demo workspace ready", state="complete", expanded=False)
