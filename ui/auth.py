"""Role resolution and page guards.

A visitor whose URL has `?token=…` is a rater *only* if the token is valid; the token is copied
into the session and re-checked on every run (a revoked token stops working at once). Everyone
else is a researcher, behind the password when one is configured. Every researcher page calls
`require_researcher()` first: Streamlit may run a script in pages/ directly on a freshly started
server, before any session has called `st.navigation`, and the guard must hold even then.
"""

from __future__ import annotations

import streamlit as st

RATER, RESEARCHER, INVALID, LOGIN = "rater", "researcher", "invalid", "login"


def _secrets():
    try:
        return dict(st.secrets)
    except Exception:  # no secrets.toml
        return {}


def current_token() -> str | None:
    token = st.query_params.get("token")
    if token:
        st.session_state["token"] = token
    return st.session_state.get("token")


def resolve_role() -> str:
    """Decide this session's role for this run and store it in `st.session_state['role']`."""
    from synthct.access import configured_password_hash

    token = current_token()
    if token:
        role = RATER if rater_id_for(token) is not None else INVALID
    elif configured_password_hash(_secrets()) and not st.session_state.get("researcher_ok"):
        role = LOGIN
    else:
        role = RESEARCHER
    st.session_state["role"] = role
    return role


def rater_id_for(token: str) -> int | None:
    """The rater's id for a valid, unrevoked token, else None."""
    from db.session import session_scope
    from synthct.vtt.flow import rater_for_token
    from ui.state import engine

    with session_scope(engine()) as s:
        rater = rater_for_token(s, token)
        return None if rater is None else rater.id


def open_access_note() -> None:
    """The visible note on an open (password-less) researcher app."""
    from synthct.access import configured_password_hash
    from ui.state import workspace

    if not configured_password_hash(_secrets()):
        st.caption(
            f":material/lock_open: Open access: no researcher password is set, so anyone who can "
            f"reach this address sees every page (`synthct password-hash` sets one). "
            f"Workspace `{workspace().root}`."
        )


def require_researcher() -> None:
    """Stop the page unless this session was admitted as a researcher by the router.

    A page reached without the router (Streamlit's pages/ discovery on a freshly started server)
    hands the session over to the router once: the pages/ discovery is switched off and the run
    restarts through streamlit_app.py, which resolves the role and routes the same URL. Anything
    else without the researcher role sees only a refusal.
    """
    role = st.session_state.get("role")
    if role == RESEARCHER:
        return
    if role is None:
        _hand_over_to_router()
    st.error("This page is not available.")
    st.stop()


def _hand_over_to_router() -> None:
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the v1 pages/ discovery
        return
    if PagesManager.uses_pages_directory:
        # What st.navigation itself does on its first call: the router owns routing from now on.
        PagesManager.uses_pages_directory = False
        st.rerun()


def invalid_token_page() -> None:
    st.title("Visual Turing Test")
    st.error(
        "This invitation link is not valid or has been withdrawn. "
        "Please ask the study organiser for a new link."
    )


def login_page() -> None:
    from synthct.access import configured_password_hash, verify_password

    st.title("synthct — sign in")
    with st.form("login"):
        pw = st.text_input("Researcher password", type="password")
        ok = st.form_submit_button("Sign in")
    if ok:
        stored = configured_password_hash(_secrets()) or ""
        if verify_password(pw, stored):
            st.session_state["researcher_ok"] = True
            st.rerun()
        st.error("Wrong password.")
