"""Who may see what: the researcher password (stored hashed), where the app may listen, and the
back-off after failed sign-ins.

Roles: a visitor whose URL carries a valid invite token is a *rater* and may only reach the
Turing-test page; everyone else is a *researcher*, behind a password when one is configured.
The password (at least `MIN_PASSWORD_LENGTH` characters) is configured as an scrypt hash
(`synthct password-hash` prints one), either in the environment
(`SYNTHCT_RESEARCHER_PASSWORD_HASH`) or in `.streamlit/secrets.toml`
(`researcher_password_hash = "scrypt$…"`). It is never stored in clear text.

Without a password the app is for this machine only: `exposure_refusal` names the reason a
start on any other address is refused. Failed sign-ins are counted in the database per browser
session and globally (`Backoff`), so guessing slows down exponentially even across reloads and
server processes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import socket
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy.exc import IntegrityError

from db.signin import clear, lock_until, locked_until, prune, record_failure

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ENV_PASSWORD_HASH = "SYNTHCT_RESEARCHER_PASSWORD_HASH"
SECRETS_KEY = "researcher_password_hash"
SECRETS_FILE = Path(".streamlit") / "secrets.toml"
MIN_PASSWORD_LENGTH = 12

# scrypt parameters (RFC 7914 interactive-login strength: ~16 MiB, ~50 ms here).
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt b64>$<hash b64>` for `password` (at least 12 characters)."""
    if not password:
        raise ValueError("password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"password has {len(password)} characters; at least {MIN_PASSWORD_LENGTH} are needed"
        )
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


def password_configured_outside_app(cwd: str | os.PathLike | None = None) -> bool:
    """Whether a researcher password is set where the app started from `cwd` would find it.

    For the CLI, which has no Streamlit secrets: the environment, else `.streamlit/secrets.toml`
    under `cwd` (default: the current directory). An unreadable secrets file counts as unset.
    """
    path = Path(cwd or ".") / SECRETS_FILE
    try:
        found = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        found = {}
    return configured_password_hash(found) is not None


# -- where the app may listen -------------------------------------------------------------------
def is_loopback_address(address: str | None) -> bool:
    """True when a server bound to `address` is reachable from this machine only.

    Loopback IPs (127.0.0.0/8, ::1), and host names that resolve to loopback addresses only
    (e.g. "localhost"). An empty address means Streamlit's default, all interfaces. A Unix socket
    ("unix://…") is not a network address.
    """
    address = (address or "").strip()
    if not address:
        return False
    if address.startswith("unix://"):
        return True
    host = address.strip("[]")
    try:
        return _loopback_ip(host)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    ips = {info[4][0].split("%")[0] for info in infos}
    return bool(ips) and all(_loopback_ip(ip) for ip in ips)


def _loopback_ip(text: str) -> bool:
    """Whether an IP literal is loopback (IPv4-mapped IPv6 included); ValueError if not an IP."""
    ip = ipaddress.ip_address(text)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def exposure_refusal(address: str | None, password_configured: bool) -> str | None:
    """The one-line reason to refuse serving on `address`, or None when it is safe.

    Safe: a researcher password is set, or the address is loopback only.
    """
    if password_configured or is_loopback_address(address):
        return None
    shown = address or "all interfaces (0.0.0.0)"
    return (
        f"synthct: refusing to serve on {shown} without a researcher password: anyone who can "
        "reach it would see every study, result and invite. Set a password first (`synthct "
        "password-hash`, then SYNTHCT_RESEARCHER_PASSWORD_HASH or .streamlit/secrets.toml) or "
        "serve on 127.0.0.1."
    )


# -- sign-in back-off ---------------------------------------------------------------------------
GLOBAL_SCOPE = "global"


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: after `free` consecutive failures, sign-in is refused for
    base_s · 2^(failures − free) seconds, at most `cap_s`; failures older than `window_s`
    (counted from the previous failure) start the count again."""

    free: int
    base_s: float
    cap_s: float
    window_s: float

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2.0 ** (failures - self.free)))


# One browser session: 3 tries, then 5 s, 10 s, 20 s … up to 15 min. Everyone together (a new
# session per guess): 10 tries, then 5 s, 10 s … up to 1 min, so an attacker gets at most about
# one guess a minute while a researcher is never locked out for longer than that.
SESSION_BACKOFF = Backoff(free=3, base_s=5.0, cap_s=900.0, window_s=3600.0)
GLOBAL_BACKOFF = Backoff(free=10, base_s=5.0, cap_s=60.0, window_s=3600.0)


class FailedSignIn(NamedTuple):
    wait_s: float  # seconds until this session may try again (0.0: now)
    tries_left: int  # wrong passwords this session may still enter before its own pause


def new_session_key() -> str:
    """A random key naming one browser session's back-off scope."""
    return "session:" + secrets.token_hex(16)


def _now() -> datetime:
    return datetime.now(UTC)


def sign_in_wait(session: Session, session_key: str, now: datetime | None = None) -> float:
    """Seconds until this session may try to sign in again (0.0: now)."""
    now = now or _now()
    until = locked_until(session, [session_key, GLOBAL_SCOPE])
    return max(0.0, (until - now).total_seconds()) if until else 0.0


def record_failed_sign_in(
    session: Session,
    session_key: str,
    now: datetime | None = None,
    session_policy: Backoff = SESSION_BACKOFF,
    global_policy: Backoff = GLOBAL_BACKOFF,
) -> FailedSignIn:
    """Count a wrong password for this session and globally; commit; return the wait it causes
    and the tries this session has left before its own pause.

    Retries a concurrent first insert of the same scope (another process failing at once).
    """
    now = now or _now()
    for attempt in range(5):
        try:
            wait, counts = 0.0, []
            for scope, policy in ((session_key, session_policy), (GLOBAL_SCOPE, global_policy)):
                failures = record_failure(session, scope, now, policy.window_s)
                delay = policy.delay(failures)
                if delay > 0:
                    lock_until(session, scope, now + timedelta(seconds=delay))
                wait = max(wait, delay)
                counts.append(failures)
            prune(session, now - timedelta(seconds=session_policy.window_s), now)
            session.commit()
            return FailedSignIn(wait, max(0, session_policy.free - counts[0]))
        except IntegrityError:
            session.rollback()
            if attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def record_successful_sign_in(session: Session, session_key: str) -> None:
    """Forget this session's failures (the global count only decays with time); commit."""
    clear(session, session_key)
    session.commit()
