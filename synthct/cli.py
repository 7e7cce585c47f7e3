"""The `synthct` command line (Typer).

Commands live in `synthct/commands/<area>.py`: each module defines its command functions at
module level and one `register(app)` that only adds them (and its sub-apps) to `app`; the
modules are discovered here, in name order. Command modules import heavy libraries (torch,
MONAI) inside the command functions so that `synthct --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys
from typing import NoReturn

import typer
from sqlalchemy.exc import ArgumentError, OperationalError

import synthct.commands as pkg
from db.session import database_url
from synthct import __version__
from synthct.errors import Cancelled, SynthctError, environment_error_message
from synthct.redact import redact, redact_url
from synthct.stopping import Terminated, raise_terminated

app = typer.Typer(
    name="synthct",
    help="Synthetic head-and-neck CT image + tumour-mask pairs: data, GANs, metrics, studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the synthct version."""

    typer.echo(__version__)


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"synthct.commands.{info.name}")
        module.register(app)


_register_commands()


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(redact(message), err=True)
    sys.exit(code)


def _database_error_message(e: BaseException) -> str | None:
    """One line for a database that cannot be reached or named (no traceback, no password)."""
    if not type(e).__module__.startswith("sqlalchemy"):
        return None

    if isinstance(e, OperationalError):
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        return f"database {redact_url(database_url())} cannot be used: {reason}"
    if isinstance(e, ArgumentError):
        return f"database URL is not valid ({e}); check $SYNTHCT_DATABASE_URL"
    return None


def main(args: list[str] | None = None) -> None:
    """Console entry point. Exit status: 0 done; 2 a usage or user error (one line, or Typer's
    short usage message; `synthct` or a command group alone prints its help); 130 interrupted
    or cancelled; 143 terminated (SIGTERM; partial outputs are removed first). Nothing a user can trigger prints a traceback, and no output holds a secret.
    """

    signal.signal(signal.SIGTERM, raise_terminated)  # unwind: partial outputs are removed
    try:
        code = app(args=args, prog_name="synthct", standalone_mode=False)
    except SynthctError as e:
        _fail(f"error: {e}", 2)
    except Cancelled as e:
        _fail(f"cancelled: {e}", 130)
    except typer.TyperException as e:  # Typer's own (vendored click) usage errors
        show = getattr(e, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", 130)
    except Terminated:
        _fail("terminated", 143)
    except Exception as e:  # a full disk, a permission or database problem is one line;
        message = environment_error_message(e) or _database_error_message(e)  # a defect is not
        if message is None:
            raise
        _fail(f"error: {message}", 2)
    # standalone_mode=False returns the status of a `raise typer.Exit(n)` (or Ctrl-C: 130)
    sys.exit(code if isinstance(code, int) else 0)
