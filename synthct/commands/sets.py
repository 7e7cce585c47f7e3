"""Synthetic-set commands: `synthct set dataset-json|zip`.

`dataset-json` adds the Decathlon-format dataset.json (synthct.set_writer) to sets written
before synthct wrote it with every set; `zip` writes a set as one zip file
(synthct.set_archive) and prints its path.
"""

from __future__ import annotations

from typing import Annotated

import typer

from synthct.commands._common import WorkspaceOpt, workspace
from synthct.errors import ConfigError
from synthct.set_archive import archive_set

set_app = typer.Typer(
    help="Synthetic sets: add dataset.json, write a zip of a set.", no_args_is_help=True
)


def dataset_json(
    names: Annotated[
        list[str] | None, typer.Argument(help="Set names in WS/synthetic/ (none: --all).")
    ] = None,
    all_sets: Annotated[bool, typer.Option("--all", help="Every complete set.")] = False,
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Write dataset.json (Medical Segmentation Decathlon format, read by MONAI's
    load_decathlon_datalist) into sets: their imagesTr/labelsTr pairs as training cases."""
    from synthct.set_writer import write_dataset_json  # deferred: loads scipy

    ws = workspace(workspace_path)
    if bool(names) == all_sets:
        raise ConfigError("name one or more sets, or pass --all (not both)")
    for name in ws.list_sets() if all_sets else names or []:
        typer.echo(write_dataset_json(ws.synthetic_dir(name)))


def zip_set(
    name: Annotated[str, typer.Argument(help="Set name in WS/synthetic/.")],
    workspace_path: WorkspaceOpt = None,
) -> None:
    """Write the set as one zip (once per version of the set, kept in WS/archives/<set>/)
    and print its path."""

    typer.echo(archive_set(workspace(workspace_path), name))


def register(app: typer.Typer) -> None:
    set_app.command("dataset-json")(dataset_json)
    set_app.command("zip")(zip_set)
    app.add_typer(set_app, name="set")
