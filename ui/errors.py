"""Unexpected errors in the app: logged with a short reference, shown in detail only to
researchers.

`client.showErrorDetails = "none"` (.streamlit/config.toml) makes Streamlit show only a generic
message for any exception it catches itself, to everyone: the option is process-wide, so it
cannot differ per visitor. The router runs every page through `guarded`, which logs the full
traceback with a reference (server log, logger "synthct.app") and shows it to a researcher in an
expander; a rater or a stranger sees one sentence with the reference and nothing else.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

import streamlit as st

from ui.auth import RESEARCHER

LOG = logging.getLogger("synthct.app")
if not LOG.handlers:  # `streamlit run` configures only Streamlit's own loggers
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    LOG.addHandler(_handler)
    LOG.propagate = False


def report(exc: BaseException, what: str = "unexpected error") -> str:
    """Log `exc` with its traceback under a new short reference and return the reference."""
    ref = secrets.token_hex(4)
    LOG.error("%s [ref %s]", what, ref, exc_info=(type(exc), exc, exc.__traceback__))
    return ref


def show_unexpected(exc: Exception) -> str:
    """Report `exc`; show the details to a researcher, one sentence to anyone else."""
    ref = report(exc)
    if st.session_state.get("role") == RESEARCHER:
        st.error(f"Something went wrong (reference `{ref}`; the server log has the same details).")
        with st.expander("Error details", expanded=False):
            st.exception(exc)
    else:
        st.error(
            f"Something went wrong on the server (reference {ref}). Please try again in a "
            "moment; if it keeps happening, tell the study organiser this reference."
        )
    return ref


def guarded(run: Callable[[], object]) -> None:
    """Run a page; an exception (not Streamlit's stop/rerun signals) goes to `show_unexpected`."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - nobody but a researcher sees details
        show_unexpected(exc)
