"""`synthct password-hash`: the scrypt hash to configure the researcher password with."""

from __future__ import annotations

import typer

from synthct.access import MIN_PASSWORD_LENGTH, hash_password
from synthct.errors import ConfigError


def password_hash() -> None:
    """Read a researcher password (hidden prompt, at least 12 characters) and print its
    scrypt hash.

    Put the hash in $SYNTHCT_RESEARCHER_PASSWORD_HASH or in .streamlit/secrets.toml as
    `researcher_password_hash = "…"`; the password itself is never stored.
    """
    pw = typer.prompt("Researcher password", hide_input=True, confirmation_prompt=True)
    if len(pw) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"the password has {len(pw)} characters; at least {MIN_PASSWORD_LENGTH} are "
            "needed (a passphrase of a few words is easiest)"
        )
    typer.echo(hash_password(pw))


def register(app: typer.Typer) -> None:
    app.command("password-hash")(password_hash)
