"""synthct app router: page config, role check, explicit navigation (no pages/ auto-discovery)."""

import streamlit as st

st.set_page_config(page_title="synthct", page_icon="🩻", layout="wide")


def _home() -> None:
    st.title("synthct")
    st.write("Synthetic head-and-neck CT image + tumour-mask pairs.")


st.navigation([st.Page(_home, title="Home", default=True)]).run()
