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
    from ui.errors import guarded

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
            nav = st.navigation([st.Page(auth.login_page, title="Sign in")], position="hidden")
        elif role == auth.LOCAL_ONLY:
            nav = st.navigation([st.Page(auth.local_only_page, title="synthct")], position="hidden")
        else:
            from ui.demo import demo_notice, ensure_workspace

            ensure_workspace()  # first start: the demo workspace (slow parts as background jobs)
            auth.open_access_note()
            demo_notice()
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

    st.set_page_config(page_title="synthct", page_icon="🩻", layout="wide")
    guarded(route)
