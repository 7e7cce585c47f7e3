"""Role resolution, page guards and the sign-in form.

A visitor whose URL has `?token=…` is a rater *only* if the token is valid; the token is copied
into the session and re-checked on every run (a revoked token stops working at once). Everyone
else is a researcher, behind the password when one is configured; without a password only a
browser on this machine is (anyone else gets `local_only_page`). Wrong passwords pause sign-in
(synthct.access back-off, kept in the database). Every researcher page calls
`require_researcher()` first: Streamlit may run a script in pages/ directly on a freshly started
server, before any session has called `st.navigation`, and the guard must hold even then.
"""

from __future__ import annotations

import math

import streamlit as st

from db.session import session_scope
from ui.state import engine

RATER, RESEARCHER, INVALID, LOGIN = "rater", "researcher", "invalid", "login"
LOCAL_ONLY = "local-only"  # a researcher page asked for from another machine, with no password


def secrets_map():
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

    st.session_state.pop("role", None)  # an error while resolving leaves no stale role
    token = current_token()
    if token:
        role = RATER if rater_id_for(token) is not None else INVALID
    elif configured_password_hash(secrets_map()):
        role = RESEARCHER if st.session_state.get("researcher_ok") else LOGIN
    else:
        role = RESEARCHER if local_client() else LOCAL_ONLY
    st.session_state["role"] = role
    return role


def local_client() -> bool:
    """Whether this session's browser connects from this machine.

    The WebSocket peer address, or the client a trusted local proxy names in X-Forwarded-For
    (uvicorn's default), so a password-less app behind a reverse proxy still serves researcher
    pages to this machine only. No connection (AppTest) counts as local.
    """
    from synthct.access import is_loopback_address

    ip = st.context.ip_address
    return ip is None or is_loopback_address(ip)


def rater_id_for(token: str) -> int | None:
    """The rater's id for a valid, unrevoked token, else None."""
    from synthct.vtt.flow import rater_for_token

    with session_scope(engine()) as s:
        rater = rater_for_token(s, token)
        return None if rater is None else rater.id


def open_access_note() -> None:
    """The visible note on an open (password-less) researcher app: it serves this machine only."""
    from synthct.access import configured_password_hash
    from ui.serve import configured_address
    from ui.state import workspace

    if not configured_password_hash(secrets_map()):
        st.caption(
            f":material/lock_open: Open access for this machine only: no researcher password is "
            f"set, so the app listens on `{configured_address() or '127.0.0.1'}` and refuses to "
            f"start on a network address. To serve raters elsewhere, set a password "
            f"(`synthct password-hash`) and see “Multi-site setup” in the README. "
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


def local_only_page() -> None:
    st.title("synthct")
    st.error(
        "This synthct app has no researcher password, so it serves its researcher pages only on "
        "the machine it runs on. Ask its administrator to set a password (README, “Multi-site "
        "setup”)."
    )


def login_page() -> None:
    """The researcher sign-in form, with the back-off of `synthct.access` (database-backed)."""
    from synthct.access import (
        configured_password_hash,
        new_session_key,
        record_failed_sign_in,
        record_successful_sign_in,
        sign_in_wait,
        verify_password,
    )

    st.title("synthct — sign in")
    box = st.columns([2, 3])[0]  # a password field of a sensible width in the wide layout
    with box.form("login", clear_on_submit=True):  # the password never stays in the page
        pw = st.text_input("Researcher password", type="password")
        ok = st.form_submit_button("Sign in", type="primary")
    if not ok:
        return
    key = st.session_state.setdefault("sign-in-key", new_session_key())
    with session_scope(engine()) as s:
        wait = sign_in_wait(s, key)
    if wait > 0:
        box.error(_paused(wait))
        return
    stored = configured_password_hash(secrets_map()) or ""
    if isinstance(pw, str) and verify_password(pw, stored):
        with session_scope(engine()) as s:
            record_successful_sign_in(s, key)
        st.session_state["researcher_ok"] = True
        st.rerun()
    with session_scope(engine()) as s:
        failed = record_failed_sign_in(s, key)
    if failed.wait_s > 0:
        box.error("Wrong password. " + _paused(failed.wait_s))
    else:
        tries = "1 more try" if failed.tries_left == 1 else f"{failed.tries_left} more tries"
        box.error(f"Wrong password ({tries}, then signing in pauses for a while).")


def _paused(wait: float) -> str:
    return (
        f"Too many failed sign-in attempts: signing in is paused for {max(1, math.ceil(wait))} s."
    )
