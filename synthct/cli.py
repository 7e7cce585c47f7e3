"""The `synthct` command line (Typer).

Commands live in `synthct/commands/<area>.py`; each module exposes `register(app, bench_app)`
and is discovered here. Command modules import heavy libraries (torch, MONAI) inside the command
functions so that `synthct --help` stays fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from synthct.errors import SynthctError

app = typer.Typer(
    name="synthct",
    help="Synthetic head-and-neck CT image + tumour-mask pairs: data, GANs, metrics, studies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.command()
def version() -> None:
    """Print the synthct version."""
    from synthct import __version__

    typer.echo(__version__)


def _register_commands() -> None:
    import synthct.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"synthct.commands.{info.name}")
        module.register(app, bench_app)


_register_commands()


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except SynthctError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
