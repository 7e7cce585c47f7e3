"""Credentials never reach output: database URLs and any free text (messages, logs, exceptions).

`redact_url` renders a URL with SQLAlchemy's own `hide_password`; `redact` masks every
`scheme://user:password@` and `password=…` it finds in free text (a traceback, a log line, an
error message quoting a malformed URL that SQLAlchemy cannot parse). Both are idempotent, so
text may pass through them more than once.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://user:password@host — the password runs to the '@' (SQLAlchemy's own rule) but never
# across whitespace or quotes, so "http://host:8501/x … a@b" in prose is left alone.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)([^\s@'\"]+)(@)")
# password=…, pwd=…, PGPASSWORD=… (libpq DSNs, URL query parameters, environment dumps)
_KEY_PASSWORD = re.compile(
    r"(\b(?:pg)?(?:password|passwd|pwd)\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s&;,'\"]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every password in a URL or a `password=` pair replaced by ***."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)
    return _KEY_PASSWORD.sub(lambda m: m.group(1) + MASK, text)


def redact_url(url: str) -> str:
    """A database URL safe to show: SQLAlchemy's rendering without the password (free-text
    redaction for a string SQLAlchemy cannot parse)."""
    try:
        from sqlalchemy.engine import make_url  # optional dependency

        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is still shown, masked
        return redact(url)
    return redact(shown)  # query parameters such as ?password=…
