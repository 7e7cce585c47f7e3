"""Streamlit-side helpers shared by streamlit_app.py and pages/ (widgets, caches, role guard).

Kept outside pages/ because Streamlit would register every script in pages/ as a page. Logic
belongs in the synthct library; this package only adapts it to widgets and session state.
"""
