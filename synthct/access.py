"""Who may see what: the researcher password (stored hashed) and role resolution for the app.

Roles: a visitor whose URL carries a valid invite token is a *rater* and may only reach the
Turing-test page; everyone else is a *researcher*, behind a password when one is configured.
The password is configured as an scrypt hash (`synthct password-hash` prints one), either in the
environment (`SYNTHCT_RESEARCHER_PASSWORD_HASH`) or in `.streamlit/secrets.toml`
(`researcher_password_hash = "scrypt$…"`). It is never stored in clear text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping

ENV_PASSWORD_HASH = "SYNTHCT_RESEARCHER_PASSWORD_HASH"
SECRETS_KEY = "researcher_password_hash"

# scrypt parameters (RFC 7914 interactive-login strength: ~16 MiB, ~50 ms here).
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt b64>$<hash b64>` for `password`."""
    if not password:
        raise ValueError("password must not be empty")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a `hash_password` string."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.urlsafe_b64decode(salt_b64)
        expected = base64.urlsafe_b64decode(hash_b64)
        got = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def configured_password_hash(secrets_map: Mapping | None = None) -> str | None:
    """The researcher password hash from the environment, else from Streamlit secrets."""
    env = os.environ.get(ENV_PASSWORD_HASH, "").strip()
    if env:
        return env
    if secrets_map is not None:
        try:
            value = secrets_map.get(SECRETS_KEY)
        except Exception:  # a missing/invalid secrets.toml reads as "not configured"
            value = None
        if value:
            return str(value).strip()
    return None
