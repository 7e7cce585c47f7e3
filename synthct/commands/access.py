"""`synthct password-hash`: the scrypt hash to configure the researcher password with."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    @app.command("password-hash")
    def password_hash() -> None:
        """Read a researcher password (hidden prompt) and print its scrypt hash.

        Put the hash in $SYNTHCT_RESEARCHER_PASSWORD_HASH or in .streamlit/secrets.toml as
        `researcher_password_hash = "…"`; the password itself is never stored.
        """
        from synthct.access import hash_password

        pw = typer.prompt("Researcher password", hide_input=True, confirmation_prompt=True)
        if not pw:
            raise typer.BadParameter("the password must not be empty")
        typer.echo(hash_password(pw))
