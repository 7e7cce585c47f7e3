"""synthct app router: page config, role check, explicit navigation (no pages/ auto-discovery).

Raters (a valid invite token in the URL) get only the Turing-test page; an invalid or revoked
token gets a message and nothing else; researchers get everything (behind a password when one is
configured). Pages not listed for a role are unreachable by URL.
"""

import streamlit as st

from ui import auth

st.set_page_config(page_title="synthct", page_icon="🩻", layout="wide")

role = auth.resolve_role()

if role == auth.RATER:
    pages = [st.Page("pages/turing_test.py", title="Visual Turing Test", url_path="rate")]
    nav = st.navigation(pages, position="hidden")
elif role == auth.INVALID:
    nav = st.navigation([st.Page(auth.invalid_token_page, title="synthct")], position="hidden")
elif role == auth.LOGIN:
    nav = st.navigation([st.Page(auth.login_page, title="Sign in")], position="hidden")
else:
    from ui.demo import ensure_workspace

    ensure_workspace()
    auth.open_access_note()
    nav = st.navigation(
        [
            st.Page(
                "pages/browse.py",
                title="Browse",
                icon=":material/view_in_ar:",
                url_path="browse",
                default=True,
            ),
            st.Page(
                "pages/dashboard.py",
                title="Dashboard",
                icon=":material/monitoring:",
                url_path="dashboard",
            ),
            st.Page(
                "pages/generate.py",
                title="Generate & jobs",
                icon=":material/play_circle:",
                url_path="generate",
            ),
            st.Page(
                "pages/studies.py",
                title="Studies",
                icon=":material/groups:",
                url_path="studies",
            ),
        ],
        position="top",  # .streamlit/config.toml hides the sidebar page list (see there)
    )
nav.run()
