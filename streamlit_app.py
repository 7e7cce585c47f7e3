"""synthct app router: page config, role check, explicit navigation (no pages/ auto-discovery).

Raters (a valid invite token in the URL) get only the Turing-test page; an invalid or revoked
token gets a message and nothing else; researchers get everything (behind a password when one is
configured). Pages not listed for a role are unreachable by URL. Every page runs through
`ui.errors.guarded`: only a researcher ever sees an error's details.

`streamlit run streamlit_app.py` finds `app` below and first imports this file once as a module
(Streamlit's `st.App` mode), before the server answers any request: that import refuses a start on
a network address without a researcher password (ui/serve.py). Each browser session then runs
this same file as the app script, where `__name__ == "__main__"`.
"""

import streamlit as st

if __name__ != "__main__":
    from ui.serve import refuse_unsafe_start

    refuse_unsafe_start()
    app = st.App(__file__)
else:
    from ui import auth
    from ui.demo import demo_notice, ensure_workspace
    from ui.errors import guarded

    # (script, title, icon, URL path) of the researcher pages, in menu order.
    RESEARCHER_PAGES = (
        ("pages/browse.py", "Browse", ":material/view_in_ar:", "browse"),
        ("pages/dashboard.py", "Dashboard", ":material/monitoring:", "dashboard"),
        ("pages/generate.py", "Generate & jobs", ":material/play_circle:", "generate"),
        ("pages/studies.py", "Studies", ":material/groups:", "studies"),
    )

    def _home() -> None:
        st.switch_page(RESEARCHER_PAGES[0][0])

    def route() -> None:
        role = auth.resolve_role()
        if role == auth.RATER:
            pages = [st.Page("pages/turing_test.py", title="Visual Turing Test", url_path="rate")]
            nav = st.navigation(pages, position="hidden")
        elif role == auth.INVALID:
            nav = st.navigation(
                [st.Page(auth.invalid_token_page, title="synthct")], position="hidden"
            )
        elif role == auth.LOGIN:
            # The sign-in form answers every researcher URL, so a deep link (/dashboard) shows
            # the form instead of "Page not found" and, after signing in, the page it named.
            sign_in = [st.Page(auth.login_page, title="Sign in", url_path="sign-in", default=True)]
            sign_in += [
                st.Page(auth.login_page, title="Sign in", url_path=path, visibility="hidden")
                for _, _, _, path in RESEARCHER_PAGES
            ]
            nav = st.navigation(sign_in, position="hidden")
        elif role == auth.LOCAL_ONLY:
            nav = st.navigation([st.Page(auth.local_only_page, title="synthct")], position="hidden")
        else:
            ensure_workspace()  # first start: the demo workspace (slow parts as background jobs)
            auth.open_access_note()
            demo_notice()
            pages = [
                st.Page(script, title=title, icon=icon, url_path=path)
                for script, title, icon, path in RESEARCHER_PAGES
            ]
            # The app's root opens Browse under its own address (/browse), so that every page,
            # Browse included, has a URL that works as a deep link (Streamlit serves its default
            # page at the root only).
            home = st.Page(_home, title="synthct", url_path="home", default=True,
                           visibility="hidden")  # fmt: skip
            nav = st.navigation(
                [home, *pages],
                position="top",  # .streamlit/config.toml hides the sidebar page list (see there)
            )
        nav.run()

    st.set_page_config(page_title="synthct", page_icon="🩻", layout="wide")
    guarded(route)
