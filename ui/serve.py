"""Start-up check of `streamlit run streamlit_app.py`: no open network service without a password.

`.streamlit/config.toml` makes the app listen on 127.0.0.1 only. Starting it on any other address
(`--server.address 0.0.0.0`, STREAMLIT_SERVER_ADDRESS, another config file) without a researcher
password is refused here with one line on stderr and exit status 2. streamlit_app.py calls this
when `streamlit run` imports it as an `st.App`, which happens once, before the server answers
any request.
"""

from __future__ import annotations

import sys

import streamlit as st
from streamlit import config

from synthct.access import configured_password_hash, exposure_refusal

EXIT_REFUSED = 2


def secrets_map() -> dict:
    """The app's secrets (.streamlit/secrets.toml) as a dict; empty when there are none."""
    try:
        return dict(st.secrets)
    except Exception:  # no secrets.toml
        return {}


def configured_address() -> str | None:
    """The address the server binds (Streamlit's `server.address`; None: all interfaces)."""
    return config.get_option("server.address")


def password_configured() -> bool:
    return configured_password_hash(secrets_map()) is not None


def refuse_unsafe_start() -> None:
    """Exit with one line on stderr when the server would be open to the network without a
    password."""
    reason = exposure_refusal(configured_address(), password_configured())
    if reason:
        print(reason, file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
